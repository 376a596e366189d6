"""The state machine, handed recording fake drivers (tests/unit/fakes.py): the real strategy, no I/O."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.strategy import Status, Strategy, StrategyBroken, StrategyError

from .fakes import Calls, fake_drivers, fake_target


def make(fail: dict[str, BaseException] | None = None, **kw) -> tuple[Strategy, Calls]:
    calls = Calls(fail)
    return Strategy(target=fake_target(), drivers=fake_drivers(calls), **kw), calls


def explode(name: str) -> dict[str, BaseException]:
    return {name: HarnessError(f"{name} exploded")}


def test_transition_goes_up_one_layer_at_a_time():
    s, calls = make()
    s.transition("stack_up")
    assert [r.name for r in s.timeline.records] == ["power_off", "boot", "ssh", "stack"]
    assert s.status is Status.stack_up
    order = [c for c in calls.log if c in ("vm.power_on", "ssh.connect", "stack.start", "api.wait_up",
                                           "api.wait_sandbox", "cli.start_session")]
    assert order == ["vm.power_on", "ssh.connect", "stack.start", "api.wait_up", "api.wait_sandbox"]
    # The record holds each layer's part.
    rec = s.record
    assert rec.boot.status_at_start == "stopped" and rec.boot.running_after and rec.boot.vm_version == "fake 1.0"
    assert rec.stack.sandbox["status"] == "online" and rec.stack.sandbox_container == "helix-sandbox-macos-1"
    assert rec.stack.helix_git_sha == "a" * 40 and rec.session is None


def test_transition_is_idempotent_and_ensure_never_goes_down():
    s, calls = make()
    s.transition(Status.session_ready)
    calls.clear()
    s.transition(Status.session_ready)
    s.ensure(Status.vm_up)
    assert calls.log == []
    assert s.status is Status.session_ready
    assert s.record.session.session_id == "ses_fake" and s.record.session.container == "ubuntu-external-fake"


def test_going_down_undoes_layers_in_reverse():
    s, calls = make()
    s.transition(Status.streaming)
    assert s.record.stream is not None and s.record.stream.capture.end == "duration"
    calls.clear()
    s.transition(Status.ssh_ready)
    assert calls.log == ["api.stop_vkcube", "api.stop_session", "docker.close", "api.close"]
    assert [r.name for r in s.timeline.records][-3:] == ["stream_down", "session_down", "stack_down"]


def test_first_failure_is_sticky_and_names_the_phase():
    s, calls = make(explode("stack.start"))
    with pytest.raises(HarnessError, match="stack.start exploded") as first:
        s.transition(Status.streaming)
    assert first.value.phase == "stack"
    assert s.status is Status.ssh_ready  # set only after success
    calls.clear()
    with pytest.raises(StrategyBroken, match="stack phase failed earlier") as again:
        s.ensure(Status.session_ready)
    assert again.value.phase == "stack"
    assert calls.log == []  # nothing retried


def test_teardown_runs_even_when_broken_and_stops_the_vm():
    s, calls = make(explode("cli.start_session"))
    with pytest.raises(HarnessError):
        s.transition(Status.streaming)
    calls.clear()
    assert s.teardown() == []
    # stack_down, ssh_down, power off; then the final clean-up closes SSH again (idempotent)
    assert calls.log == ["docker.close", "api.close", "ssh.close", "vm.power_off", "ssh.close"]
    assert s.status is Status.off


def test_teardown_collects_errors_and_keeps_going():
    s, calls = make()
    s.transition(Status.streaming)
    calls.fail["api.stop_session"] = HarnessError("api.stop_session exploded")
    errors = s.teardown()
    assert len(errors) == 1 and "api.stop_session exploded" in errors[0] and errors[0].startswith("stack:")
    assert calls.log[-2:] == ["vm.power_off", "ssh.close"] and s.status is Status.off


def test_keep_vm_leaves_the_vm_running():
    s, calls = make(keep_vm=True)
    s.transition(Status.stack_up)
    calls.clear()
    s.teardown()
    assert "vm.power_off" not in calls.log
    assert s.status is Status.vm_up


def test_force_records_a_state_without_work_and_teardown_leaves_it_up():
    s, calls = make()
    s.force("stack_up")
    assert s.status is Status.stack_up
    assert "vm.power_on" not in calls.log and "stack.start" not in calls.log  # attached, nothing started
    assert "ssh.connect" in calls.log and "stack.read_usercreds" in calls.log
    calls.clear()
    s.transition(Status.streaming)
    assert "cli.start_session" in calls.log and "capture.capture" in calls.log and "vm.power_on" not in calls.log
    calls.clear()
    s.teardown()
    assert calls.log[:2] == ["api.stop_vkcube", "api.stop_session"]
    assert "vm.power_off" not in calls.log
    assert s.status is Status.stack_up


def test_force_session_needs_an_id_and_unknown_states_are_rejected():
    s, _ = make()
    with pytest.raises(StrategyError, match="session id"):
        s.force("session_ready")
    with pytest.raises(StrategyError, match="unknown state"):
        s.transition("flying")


def test_evidence_is_collected_once_through_the_drivers():
    s, calls = make()
    s.transition(Status.streaming)
    probe = s.probe_frame_export()
    assert probe.result.verdict == "rejected" and s.record.probe is probe
    ev = s.collect_crash_evidence()
    assert ev.complete and ev.vm_status == "started" and ev.vm_running and ev.ssh_alive and ev.lines() == []
    calls.clear()
    partial = s.collect_crash_evidence(complete=False)
    assert calls.log == ["host.new_crash_reports"] and not partial.complete


def test_a_forced_session_is_never_stopped_by_us():
    s, calls = make()
    s.force("session_ready", session_id="ses_theirs")
    s.transition(Status.streaming)
    calls.clear()
    s.transition(Status.stack_up)
    assert "api.stop_session" not in calls.log  # not ours: only vkcube is stopped
    assert s.record.session.session_id == "ses_theirs" and not s.record.session.own
