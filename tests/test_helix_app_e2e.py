"""The streaming suite on the Helix.app simulator (``--sim-provider helix-app``): the nine tests pass with a real
``qemu-system-aarch64`` as the VM, it runs while the stream runs, and no QEMU (nor anything else of the run) is
left afterwards, whether the run ended or was interrupted mid-stream.

Each case is a child pytest watched by tests/childrun.py (every process it starts, its ports, the simulator's
root). Skips, saying why, where no qemu-system-aarch64 exists (Debian: qemu-system-arm, `make debs`)."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from childrun import CASE_TIMEOUT, ChildPytest
from harness.runs.provision import real_qemu_missing

pytestmark = [
    pytest.mark.timeout(CASE_TIMEOUT + 30),
    pytest.mark.skipif(real_qemu_missing() is not None, reason=str(real_qemu_missing())),
]

ARGS = ["--sim-provider", "helix-app"]
TEARDOWN_DONE = "boot_down ok"  # QMP system_powerdown / quit / SIGKILL: QEMU gone


def _real_qemus(run: ChildPytest) -> list[int]:
    """The run's processes that are a real QEMU now (the launcher the harness started exec'd
    ``qemu-system-aarch64 -M none``: the PID is the same, the command line is QEMU's)."""
    out = []
    for seen in list(run.seen.values()):
        try:
            if "qemu-system-aarch64 -M none" in " ".join(psutil.Process(seen.pid).cmdline()):
                out.append(seen.pid)
        except psutil.Error:
            continue
    return out


def _during_the_stream(run: ChildPytest) -> int:
    """Once the capture recorded frames: the one real QEMU that runs (its PID)."""
    run.wait_mid_stream()
    running = [pid for pid in _real_qemus(run) if _alive(pid)]
    assert len(running) == 1, (running, run.tail())
    return running[0]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_helix_app_sim_passes_the_nine_tests(tmp_path: Path) -> None:
    with ChildPytest(tmp_path, ARGS) as run:
        qemu_pid = _during_the_stream(run)
        run.wait(CASE_TIMEOUT)
        run.leftovers = run.leaks()
    assert run.returncode == 0, run.tail()
    assert "9 passed" in run.text.strip().splitlines()[-1], run.tail()
    metrics = json.loads((run.latest / "metrics.json").read_text())
    facts = metrics["facts"]
    assert facts["vm_provider"] == "helix-app"
    assert facts["vm_version"].startswith("QEMU emulator version"), facts
    assert qemu_pid == facts["qemu_pid"], facts
    # QMP query-status said `running` after the stream (the crash evidence), so the QEMU ran through it
    assert metrics["tests"]["tests/streaming/test_streaming.py::test_no_crash_after_streaming"] == "passed"
    assert "helix: [FRAME_READY]" in (run.latest / "qemu-stderr.log").read_text()  # QEMU's stderr: the host log
    assert TEARDOWN_DONE in run.text
    assert not run.leftovers, "left behind:\n" + "\n".join(run.leftovers)
    assert not _alive(facts["qemu_pid"])


def test_helix_app_sim_interrupted_mid_stream_leaves_no_qemu(tmp_path: Path) -> None:
    with ChildPytest(tmp_path, ARGS) as run:
        qemu_pid = _during_the_stream(run)
        run.send_sigint()
        run.wait(CASE_TIMEOUT)
        leftovers = run.leaks()
    assert run.returncode == pytest.ExitCode.INTERRUPTED, run.tail()
    assert TEARDOWN_DONE in run.text, run.tail()
    assert not leftovers, "left behind:\n" + "\n".join(leftovers) + "\n--- child output:\n" + run.tail()
    assert not _alive(qemu_pid)
