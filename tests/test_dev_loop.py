"""The developer loop: `helix-e2e sim up` keeps a simulator running, `--target` points at it,
and `--initial-state stack_up` reuses the running VM and stack (teardown leaves them up)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from childrun import outcomes, run_pytest

EXE = Path(sys.executable).parent / "helix-e2e"


def pytest_run(tmp_path, target, *args):
    return run_pytest("--target", str(target), "-q", *args, report_dir=tmp_path / "r", stream_duration=3, timeout=240)


def test_sim_up_then_reuse_the_running_stack(tmp_path):
    proc = subprocess.Popen([str(EXE), "sim", "up", "--json", "--root", str(tmp_path / "sim")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        target = Path(info["target_file"])
        first = pytest_run(tmp_path, target, "--keep-vm")
        assert first.returncode == 0, first.tail()
        status = subprocess.run([info["utmctl"], "status", info["vm_id"]], capture_output=True, text=True).stdout
        assert status.strip() == "started"  # --keep-vm left it up
        again = pytest_run(tmp_path, target, "--initial-state", "stack_up", "-k", "fps_in_band")
        assert again.returncode == 0, again.tail()
        assert outcomes(again.junit()) == {"test_stream_fps_in_band": "passed"}, again.tail()
        phases = again.metrics()["phases"]
        assert "session" in phases and "boot" not in phases and "stack" not in phases, phases  # reused, not rebooted
        status = subprocess.run([info["utmctl"], "status", info["vm_id"]], capture_output=True, text=True).stdout
        assert status.strip() == "started"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    leftovers = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(tmp_path) in " ".join(p.info["cmdline"] or []):
                leftovers.append(p.info["cmdline"])
        except psutil.Error:
            continue
    assert not leftovers, leftovers  # stopping `sim up` stopped sshd and everything else it started
