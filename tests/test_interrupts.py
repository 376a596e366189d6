"""An interrupted run is never green, and leaves nothing behind (issue 12).

Real signals at several phases of a child pytest (tests/childrun.py watches every process it starts):
SIGTERM (what CI cancellation and `timeout` send) mid-stream, SIGINT while the VM boots, and a group SIGINT
that the harness ignores (a background job of a script). Afterwards every output says what happened:
the exit status, metrics.json, summary.md, report.html and junit.xml; and the process table holds nothing
of the run.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from childrun import CASE_TIMEOUT, ChildPytest

pytestmark = pytest.mark.timeout(CASE_TIMEOUT + 30)
TESTS = 9


def _outputs(run: ChildPytest) -> dict:
    latest = run.latest
    metrics = json.loads((latest / "metrics.json").read_text())
    return {"metrics": metrics, "summary": (latest / "summary.md").read_text(),
            "html": (latest / "report.html").read_text(), "junit": (latest / "junit.xml").read_text()}


def _assert_incomplete(run: ChildPytest, *, never_ran_at_least: int) -> None:
    assert run.returncode == pytest.ExitCode.INTERRUPTED, run.tail()
    out = _outputs(run)
    m = out["metrics"]
    assert m["complete"] is False and m["interrupted"] is True, m
    assert len(m["not_run"]) >= never_ran_at_least, m["not_run"]
    assert sum(1 for v in m["tests"].values() if v == "not_run") == len(m["not_run"])
    assert m["triage"] and (m["triage"]["layer"], m["triage"]["cause"]) == ("client", "run_interrupted"), m
    assert "✅" not in out["summary"] and "incomplete (interrupted)" in out["summary"], out["summary"]
    assert "All checks passed" not in out["html"] and "run_interrupted" in out["html"]
    assert "<testsuite" in out["junit"]
    assert "INCOMPLETE RUN" in run.text, run.tail()
    leftovers = run.leaks()
    assert not leftovers, "left behind:\n" + "\n".join(leftovers)


def test_sigterm_mid_stream_is_an_interrupted_run(tmp_path):
    with ChildPytest(tmp_path, [], duration=6) as run:
        run.wait_for_output("⏳ stream:", timeout=CASE_TIMEOUT)
        run.proc.send_signal(signal.SIGTERM)
        run.wait(CASE_TIMEOUT)
    assert "boot_down ok" in run.text, run.tail()  # the teardown ran: SIGTERM counts as Ctrl-C
    _assert_incomplete(run, never_ran_at_least=TESTS - 2)


def test_sigint_while_booting_counts_every_test_as_not_run(tmp_path):
    with ChildPytest(tmp_path, []) as run:
        run.wait_for_output("⏳ boot:", timeout=CASE_TIMEOUT)
        run.send_sigint()
        run.wait(CASE_TIMEOUT)
    _assert_incomplete(run, never_ran_at_least=TESTS)


def test_a_group_sigint_the_harness_ignores_does_not_stop_the_simulator(tmp_path):
    # A background job of a script runs with SIGINT ignored; a Ctrl-C in that terminal reaches the whole
    # process group. The harness ignores it, so must the simulator (its own session): the run passes.
    def ignore_sigint() -> None:
        os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    run = ChildPytest(tmp_path, [], duration=4)
    try:
        run.start(preexec_fn=ignore_sigint)
        run.wait_for_output("⏳ stream:", timeout=CASE_TIMEOUT)
        os.killpg(run.proc.pid, signal.SIGINT)
        run.wait(CASE_TIMEOUT)
        leftovers = run.leaks()
    finally:
        run.close()
    assert run.returncode == 0, run.tail()
    m = json.loads((run.latest / "metrics.json").read_text())
    assert m["complete"] is True and m["triage"] is None, m
    assert not leftovers, leftovers
