from pathlib import Path

from harness.analysis.logscan import PATTERNS, SEVERITIES, scan_file, scan_text

LOGS = Path(__file__).resolve().parents[2] / "fixtures" / "logs"


def test_vsockenc_nonzero_ids():
    r = scan_file(LOGS / "desktop-shm.log")
    ids = r.resource_ids
    assert ids.source == "vsockenc"
    assert (ids.nonzero, ids.zero) == (3, 0)  # the DMA-BUF line and two Sent frame lines
    assert any("resource_id=17" in s for s in ids.samples)


def test_vsockenc_zero_ids_carry_the_reason_and_the_host_error():
    r = scan_file(LOGS / "desktop-shm-zero.log")
    assert (r.resource_ids.nonzero, r.resource_ids.zero) == (0, 1)
    assert any("Buffer is not DMA-BUF backed" in z for z in r.resource_ids.zero_reasons)
    assert any("Host encoder error -2: Error: -2" in x for x in r.rejections)
    assert any(e["pattern"] == "vsockenc_error" for e in r.errors)


def test_qemu_log_versions_frames_drops_hangs_errors():
    r = scan_file(LOGS / "helix-debug-v10.log")
    assert r.versions == ["2026-02-15-v10-ipa-granule-test"]
    assert r.resource_ids.source == "frame_ready" and r.resource_ids.nonzero == 2
    assert r.drops == {"qemu_vt_drop": 12, "qemu_client_drop": 364100}
    assert [h["pattern"] for h in r.hangs] == ["blocked_reentrant_io"]
    assert any(e["pattern"] == "qemu_bind_failed" and e["severity"] == "fatal" for e in r.errors)
    assert r.rejections and "resource_id=0 not supported" in r.rejections[0]


def test_garbage_and_binary_input_is_counted_not_fatal():
    r = scan_text(b"\xff\xfe\x00garbage\n[FRAME_READY] #1 scanout=1 resource=0 has_subscriber=YES\n\xc3")
    assert r.undecodable_lines == 2
    assert r.resource_ids.zero == 1


def test_pattern_table_is_well_formed():
    names = [p.name for p in PATTERNS]
    assert len(names) == len(set(names))
    assert all(p.severity in SEVERITIES for p in PATTERNS)
