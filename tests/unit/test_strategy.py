"""The state machine on an in-process fake target that records every layer's work."""

from __future__ import annotations

import pytest

from harness.config import TargetConfig, VmConfig
from harness.errors import HarnessError
from harness.strategy import Status, Strategy, StrategyBroken, StrategyError


class Recording(Strategy):
    """Every layer's work is a recorded call; `fail_at` makes one layer raise."""

    def __init__(self, fail_at: str | None = None, **kw) -> None:
        super().__init__(target=TargetConfig(vm=VmConfig(id="VM")), **kw)
        self.calls: list[str] = []
        self.fail_at = fail_at

    def _attach(self, status, h=None) -> None:
        self.calls.append(f"attach:{status.name}")

    def _close_connections(self, keep_ssh: bool = False) -> None:
        self.calls.append("close")

    def __getattribute__(self, name):
        if name.startswith(("_up_", "_down_")):
            calls = object.__getattribute__(self, "calls")
            fail_at = object.__getattribute__(self, "fail_at")

            def work(h, _name=name):
                calls.append(_name)
                if _name == fail_at:
                    raise HarnessError(f"{_name} exploded")

            return work
        return object.__getattribute__(self, name)


def test_transition_goes_up_one_layer_at_a_time():
    s = Recording()
    s.transition("stack_up")
    assert s.calls == ["_up_off", "_up_vm_up", "_up_ssh_ready", "_up_stack_up"]
    assert s.status is Status.stack_up
    assert [r.name for r in s.timeline.records] == ["power_off", "boot", "ssh", "stack"]


def test_transition_is_idempotent_and_ensure_never_goes_down():
    s = Recording()
    s.transition(Status.session_ready)
    s.calls.clear()
    s.transition(Status.session_ready)
    s.ensure(Status.vm_up)
    assert s.calls == []
    assert s.status is Status.session_ready


def test_going_down_undoes_layers_in_reverse():
    s = Recording()
    s.transition(Status.streaming)
    s.calls.clear()
    s.transition(Status.ssh_ready)
    assert s.calls == ["_down_session_ready", "_down_stack_up", "_down_ssh_ready"]


def test_first_failure_is_sticky_and_names_the_phase():
    s = Recording(fail_at="_up_stack_up")
    with pytest.raises(HarnessError, match="_up_stack_up exploded") as first:
        s.transition(Status.streaming)
    assert first.value.phase == "stack"
    assert s.status is Status.ssh_ready  # set only after success
    s.calls.clear()
    with pytest.raises(StrategyBroken, match="stack phase failed earlier") as again:
        s.ensure(Status.session_ready)
    assert again.value.phase == "stack"
    assert s.calls == []  # nothing retried


def test_teardown_runs_even_when_broken_and_stops_the_vm():
    s = Recording(fail_at="_up_session_ready")
    with pytest.raises(HarnessError):
        s.transition(Status.streaming)
    s.calls.clear()
    assert s.teardown() == []
    assert s.calls == ["_down_ssh_ready", "_down_vm_up", "_down_off", "close"]
    assert s.status is Status.off


def test_teardown_collects_errors_and_keeps_going():
    s = Recording()
    s.transition(Status.streaming)
    s.fail_at = "_down_stack_up"
    errors = s.teardown()
    assert len(errors) == 1 and "_down_stack_up exploded" in errors[0]
    assert s.calls[-2:] == ["_down_off", "close"]


def test_keep_vm_leaves_the_vm_running():
    s = Recording(keep_vm=True)
    s.transition(Status.stack_up)
    s.calls.clear()
    s.teardown()
    assert "_down_off" not in s.calls
    assert s.status is Status.vm_up


def test_force_records_a_state_without_work_and_teardown_leaves_it_up():
    s = Recording()
    s.force("stack_up")
    assert s.status is Status.stack_up
    assert s.calls == ["attach:stack_up"]
    s.calls.clear()
    s.transition(Status.streaming)
    assert s.calls == ["_up_session_ready", "_up_streaming"]
    s.calls.clear()
    s.teardown()
    assert s.calls == ["_down_session_ready", "_down_stack_up", "close"]
    assert s.status is Status.stack_up


def test_force_session_needs_an_id_and_unknown_states_are_rejected():
    s = Recording()
    with pytest.raises(StrategyError, match="session id"):
        s.force("session_ready")
    with pytest.raises(StrategyError, match="unknown state"):
        s.transition("flying")
