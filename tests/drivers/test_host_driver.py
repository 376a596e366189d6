"""HostArtifacts against the simulated Mac host: QEMU's helix-debug.log and the crash-report dir.

The contract: a snapshot taken before the VM starts makes only what came after it count: the
bytes appended to helix-debug.log since (restarting at 0 when the log was truncated) and the
``QEMULauncher-*.ips`` reports written since, parsed (process, termination, crashed thread).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import HostConfig
from harness.deadline import poll_until
from harness.drivers.frame_export import probe_resource_id_zero
from harness.drivers.host import HostArtifacts
from helix_sim.config import QEMU_VERSIONS

pytestmark = pytest.mark.timeout(90)


def test_appended_log_bytes_only(rig) -> None:
    host = rig.host_driver()
    before = host.snapshot()
    assert before.crash_reports == {}
    rig.boot()
    appended = host.new_log_bytes(before)
    assert f"[HELIX] VERSION: {QEMU_VERSIONS['feb5-reject']}".encode() in appended
    assert host.new_crash_reports(before) == []  # a healthy boot
    after = host.snapshot()
    assert after.log_size == before.log_size + len(appended)
    assert host.new_log_bytes(after) == b""
    assert host.new_log_bytes(after, limit=10) == b""
    assert len(host.new_log_bytes(before, limit=10)) == 10


def _probe_and_settle(rig, log: Path) -> None:
    """One probe, then wait until QEMU logged the client's removal (its last line of the exchange)."""
    removed = log.read_bytes().count(b"[HELIX] Removing client")
    probe_resource_id_zero("127.0.0.1", rig.info["frame_export_port"], timeout=5)
    poll_until(lambda: log.read_bytes().count(b"[HELIX] Removing client") > removed, timeout=10,
               what="QEMU logging the probe's disconnect", interval=0.02, max_interval=0.1)


def test_a_truncated_log_restarts_at_zero(rig) -> None:
    rig.boot()
    host = rig.host_driver()
    log = Path(rig.info["helix_debug_log"])
    for _ in range(3):  # the log before the rotation is longer than what comes after it
        _probe_and_settle(rig, log)
    before = host.snapshot()
    log.write_bytes(b"")  # rotated (the simulated QEMU opens, appends and closes per line)
    assert host.new_log_bytes(before) == b""
    _probe_and_settle(rig, log)
    appended = host.new_log_bytes(before)
    assert 0 < len(appended) < before.log_size and appended == log.read_bytes()
    assert b"resource_id=0 not supported" in appended


def test_new_crash_report_after_a_crash_at_boot(make_rig) -> None:
    rig = make_rig(faults={"vm_crash_boot"})
    host = rig.host_driver()
    before = host.snapshot()
    utm = rig.utm_driver()
    utm.start()
    utm.wait_status("stopped", timeout=20, phase="boot")  # QEMU aborted: the VM is `stopped` again
    [report] = host.new_crash_reports(before)
    name = Path(report.path).name
    assert name.startswith("QEMULauncher-") and name.endswith(".ips")
    assert Path(report.path).parent == Path(rig.info["crash_dir"])
    assert (report.process, report.indicator, report.parse_error) == ("QEMULauncher", "Abort trap: 6", "")
    assert report.frames and "__pthread_kill" not in report.interesting_frames()
    assert name in report.summary() and "Abort trap: 6" in report.summary()
    assert report.as_dict()["path"] == report.path
    assert host.new_crash_reports(host.snapshot()) == []  # seen once, not again


def test_no_crash_dir_and_no_log(tmp_path) -> None:
    host = HostArtifacts(HostConfig(helix_debug_log=str(tmp_path / "none.log"), crash_dir=str(tmp_path / "none")))
    snap = host.snapshot()
    assert (snap.crash_reports, snap.log_size) == ({}, 0)
    assert host.new_crash_reports(snap) == [] and host.new_log_bytes(snap) == b""
