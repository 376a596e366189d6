"""Teardown always runs, and afterwards nothing of the run is left.

Each case runs the streaming suite in a child pytest (tests/childrun.py watches every process it
starts, their listening ports and the simulator's temp root) and ends it a different way: it
passes, a test fails, a phase times out, or Ctrl-C (SIGINT) arrives mid-stream, while the
simulator starts, while a guest command runs, or twice. Afterwards the child has exited, its
teardown phases ran, and no process that it started (or whose command line or environment
names its temp dirs, e.g. ``helix_sim`` or ``sshd -D -e -f <sim root>/…``) survives, nothing
listens on the simulator's ports and the simulator's temp root is gone. This machine's PID 1
does not reap orphans: the harness must own and wait() every child, which this also checks
(a zombie counts as a leftover).

A run that ends by itself records its outcomes in junit.xml and its phases (teardown's included)
in metrics.json, and those are what is checked. An interrupted run's teardown ends after
metrics.json was written, so there the progress lines are the record of it.
"""

from __future__ import annotations

import json
import signal
import tomllib
from pathlib import Path

import pytest

from childrun import CASE_TIMEOUT, REPO, ChildPytest, finished_run

pytestmark = pytest.mark.timeout(CASE_TIMEOUT + 30)

TEARDOWN_DONE = "boot_down ok"  # the last teardown phase: `utmctl stop`, status `stopped` (progress line)
LAST_TEARDOWN_PHASE = "boot_down"


def assert_clean(run: ChildPytest, leftovers: list[str] | None = None, *, sim_was_up: bool = True) -> None:
    leftovers = run.leftovers if leftovers is None else leftovers
    assert run.seen, "the watcher saw no process of the child (is psutil working?)"
    if sim_was_up:
        assert run.sims and all(s.ports for s in run.sims.values()), "the watcher never saw the simulator's root"
    assert not leftovers, "left behind:\n" + "\n".join(leftovers) + "\n--- child output:\n" + run.tail()
    if run.open_at_vm_stop is not None:  # teardown itself closed them, before the process exited
        assert run.open_at_vm_stop == [], f"still open when the VM was being stopped: {run.open_at_vm_stop}"
    assert run.duration_s <= CASE_TIMEOUT, f"the case took {run.duration_s:.0f}s"


def teardown_done(run: ChildPytest) -> bool:
    """metrics.json records the last teardown phase, and it succeeded."""
    timeline = run.metrics()["phase_timeline"]
    return any(p["name"] == LAST_TEARDOWN_PHASE and p["outcome"] == "ok" for p in timeline)


def _toml(data: dict, prefix: str = "") -> str:
    """A minimal TOML writer (str/int/float/bool values and nested tables) for derived targets."""
    scalars, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            scalars.append(f"{key} = {json.dumps(value)}")
    out = "\n".join(scalars) + "\n"
    for key, value in tables:
        name = f"{prefix}{key}"
        out += f"\n[{name}]\n" + _toml(value, prefix=f"{name}.")
    return out


def derived_target(path: Path, **tables: dict) -> Path:
    """fixtures/targets/sim.toml with some keys of some tables replaced."""
    data = tomllib.loads((REPO / "fixtures/targets/sim.toml").read_text())
    for table, values in tables.items():
        data.setdefault(table, {}).update(values)
    path.write_text(_toml(data))
    return path


def test_after_a_passing_run(passing_run: ChildPytest) -> None:
    assert passing_run.returncode == 0, passing_run.tail()
    assert teardown_done(passing_run), passing_run.tail()
    assert passing_run.open_at_vm_stop == []  # not only gone with the process: teardown closed them
    assert_clean(passing_run)


def test_after_a_failing_run(failing_run: ChildPytest) -> None:
    assert failing_run.returncode == 1, failing_run.tail()
    failed = [c.nodeid for c in failing_run.junit() if c.outcome == "failed"]
    assert "tests/streaming/test_streaming.py::test_stream_fps_in_band" in failed, failing_run.tail()
    assert teardown_done(failing_run), failing_run.tail()
    assert_clean(failing_run)


def test_after_a_phase_timeout(tmp_path: Path) -> None:
    # The guest's SSH port accepts and never answers; [timeouts] ssh = 2 s ends the ssh phase.
    target = derived_target(tmp_path / "tiny-ssh-timeout.toml", timeouts={"ssh": 2})
    run = finished_run(tmp_path / "case", ["--target", str(target), "--sim-fault", "ssh_blackhole"])
    assert run.returncode == 1, run.tail()
    cases = run.junit()
    said = "\n".join(c.message for c in cases)
    assert "PhaseTimeout" in said and "not ready after 2s" in said, run.tail()
    assert any(c.outcome == "skipped" and c.message.startswith("target broken in the ssh phase") for c in cases)
    assert {"name": "ssh", "outcome": "failed"}.items() <= next(
        p for p in run.metrics()["phase_timeline"] if p["name"] == "ssh").items()
    assert teardown_done(run), run.tail()
    assert_clean(run)


def _interrupted(run: ChildPytest) -> list[str]:
    """Wait for the interrupted child; its exit status is pytest's INTERRUPTED (2)."""
    run.wait(CASE_TIMEOUT)
    leftovers = run.leaks()
    assert run.returncode == pytest.ExitCode.INTERRUPTED, run.tail()
    assert "KeyboardInterrupt" in run.text
    return leftovers


def test_after_sigint_mid_stream(tmp_path: Path) -> None:
    with ChildPytest(tmp_path, []) as run:
        run.wait_mid_stream()
        run.send_sigint()
        leftovers = _interrupted(run)
    assert "stream failed" in run.text and TEARDOWN_DONE in run.text, run.tail()
    assert_clean(run, leftovers)


def test_after_sigint_while_the_simulator_starts(tmp_path: Path) -> None:
    # Before the fixture has registered its finalizer: launch_sim itself must stop what it started.
    with ChildPytest(tmp_path, []) as run:
        run.wait_until(lambda: run.saw("helix_sim up"), timeout=20, what="the simulator process")
        run.send_sigint()
        leftovers = _interrupted(run)
    assert_clean(run, leftovers, sim_was_up=False)


def test_after_sigint_while_a_guest_command_runs(tmp_path: Path) -> None:
    # `helix spectask start --wait` runs in the guest when the SSH connection goes away: the
    # simulated VM must stop (and reap) the command that outlived its session.
    with ChildPytest(tmp_path, []) as run:
        run.wait_until(lambda: run.saw("spectask start"), timeout=CASE_TIMEOUT,
                       what="`helix spectask start` in the guest")
        run.send_sigint()
        leftovers = _interrupted(run)
    assert TEARDOWN_DONE in run.text, run.tail()
    assert_clean(run, leftovers)


def test_after_a_second_sigint_during_teardown(tmp_path: Path) -> None:
    # An impatient second Ctrl-C while the teardown runs must not abandon it halfway.
    with ChildPytest(tmp_path, []) as run:
        run.wait_mid_stream()
        run.send_sigint()
        run.wait_for_output("⏳ stack_down:", timeout=CASE_TIMEOUT)
        run.send_sigint()
        leftovers = _interrupted(run)
    assert TEARDOWN_DONE in run.text, run.tail()
    assert_clean(run, leftovers)


def test_the_simulator_never_outlives_a_killed_pytest(tmp_path: Path) -> None:
    # SIGKILL runs no finalizer: the simulator notices its launcher is gone (stdin EOF) and stops
    # everything it started. Only the launcher's temp dir remains (nobody is left to remove it).
    with ChildPytest(tmp_path, []) as run:
        run.wait_for_output("⏳ stack:", timeout=CASE_TIMEOUT)
        run.proc.send_signal(signal.SIGKILL)
        run.wait(CASE_TIMEOUT)
        sim = run.saw("helix_sim up")
        assert sim is not None
        run.wait_until(lambda: not any(line.startswith(("process", "port")) for line in run.leaks()),
                       timeout=20, what=f"the simulator (pid {sim.pid}) to stop by itself")


def test_a_tunnel_closes_its_socket_when_the_ssh_transport_is_dead() -> None:
    # The VM crashed: closing the channel raises EOFError (paramiko sends a close message). The pump
    # thread must still close the local socket, and the forward's close() must still finish.
    import socket
    import threading

    from harness.drivers.ssh import LocalForward

    class DeadChannel:
        def close(self) -> None:
            raise EOFError()

    local, peer = socket.socketpair()
    fwd = LocalForward.__new__(LocalForward)  # no transport needed for the pump's cleanup
    fwd._closing, fwd._lock, fwd._conns, fwd._chans = threading.Event(), threading.Lock(), {local}, set()
    fwd._closing.set()
    fwd._pump(local, DeadChannel())
    assert local.fileno() == -1 and not fwd._conns
    peer.close()
