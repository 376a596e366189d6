"""scan-logs on one real-format line per log string in the reference (macos-frame-export.md §2–§3)."""

from pathlib import Path

from harness.cli import main
from harness.analysis.logscan import scan_file

SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "logs" / "reference-formats.log"


def test_every_reference_format_is_classified():
    r = scan_file(SAMPLES)
    ids = r.resource_ids
    # DMA-BUF line, Sent frame line, FRAME_READY, Frame request resource_id=0
    assert ids.by_source["vsockenc"] == {"nonzero": 2, "zero": 0}
    assert ids.by_source["frame_ready"] == {"nonzero": 1, "zero": 0}
    assert ids.by_source["frame_request"] == {"nonzero": 0, "zero": 1}
    assert any("Buffer is not DMA-BUF backed" in z for z in ids.zero_reasons)
    assert any("Failed to get resource ID for frame" in z for z in ids.zero_reasons)
    assert any("resource_id=0 not supported" in x for x in r.rejections)
    assert any("Host encoder error -2" in x for x in r.rejections)
    assert r.versions == ["2026-02-15-v10-ipa-granule-test"]
    assert set(r.drops) == {"qemu_vt_drop", "qemu_client_drop", "bridge_frame_dropped"}
    hangs = {h["pattern"] for h in r.hangs}
    assert hangs == {"virtio_gpu_error", "blocked_reentrant_io", "hung_task", "qemu_transfer_read_crash"}
    errors = {e["pattern"] for e in r.errors}
    assert {"vsockenc_error", "qemu_error_reply", "qemu_bind_failed", "qemu_exited", "qemu_vt_encode_failed",
            "bridge_qemu_read_error", "subscribe_rejected"} <= errors
    # every vsockenc ERROR line counts once as an error
    vsock_errors = [e for e in r.errors if e["pattern"] == "vsockenc_error"]
    assert len(vsock_errors) == sum(1 for line in SAMPLES.read_text().splitlines() if " ERROR            vsockenc " in line)
    assert r.undecodable_lines == 0


def test_scan_logs_cli_json_and_ips(tmp_path, capsys):
    ips = tmp_path / "QEMULauncher-2026-02-04-185607.ips"
    ips.write_text('{"app_name":"QEMULauncher","bug_type":"309"}\n'
                   '{"procName":"QEMULauncher","termination":{"flags":0,"code":6,"namespace":"SIGNAL",'
                   '"indicator":"Abort trap: 6"},"threads":[{"triggered":true,"frames":[{"symbol":"__pthread_kill"},'
                   '{"symbol":"abort"},{"symbol":"__assert_rtn"},{"symbol":"qemu_opt_get_bool_helper"},'
                   '{"symbol":"qemu_spice_init"}]}]}\n')
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\xff\xfe" * 1000 + b"\n[FRAME_READY] #1 scanout=1 resource=0 has_subscriber=YES\n")
    assert main(["scan-logs", str(SAMPLES), str(ips), str(garbage), "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["crashes"][0]["indicator"] == "Abort trap: 6"
    assert out["crashes"][0]["frames"][:3] == ["__pthread_kill", "abort", "__assert_rtn"]
    assert out["resource_ids"]["zero"] >= 2 and out["undecodable_lines"] >= 1
    assert {"resource_ids", "rejections", "crashes", "hangs", "errors"} <= set(out)
