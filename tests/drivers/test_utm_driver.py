"""UtmDriver against the simulator's "UTM.app" through its utmctl (a real launcher subprocess).

The contract: ``status``/``list``/``version`` parse utmctl's output; ``start``/``stop`` return before
the VM got there and ``wait_status`` polls until it did (or fails at once on a crash status, or at
its deadline naming the history); Apple Event failures that utmctl prints while exiting 0 are errors;
only OSStatus failures are retried (1/2/4 s); "no GUI session" fails at once with its hint.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from harness.config import VmConfig
from harness.drivers.utm import BootError, UtmDriver, UtmError, UtmNoGuiError
from harness.errors import CommandError, HarnessError, PhaseTimeout

pytestmark = pytest.mark.timeout(90)


def test_version_and_list(rig) -> None:
    utm = rig.utm_driver()
    assert utm.version() == "4.6.4"
    [vm] = utm.list()
    assert (vm.uuid, vm.status, vm.name) == (rig.info["vm_id"], "stopped", "Linux")


def test_start_wait_started_stop_wait_stopped(rig) -> None:
    utm = rig.utm_driver()
    assert utm.status() == "stopped"
    utm.start()
    assert utm.status() in ("starting", "started")  # start returns before the guest has booted
    waits: list[str] = []
    utm.wait_status("started", timeout=20, phase="boot", on_wait=waits.append)
    assert utm.status() == "started"
    assert all(w.startswith("utmctl status: ") for w in waits)
    utm.stop("force")
    utm.wait_status("stopped", timeout=20, phase="power_off")
    assert utm.status() == "stopped"
    assert [vm.status for vm in utm.list()] == ["stopped"]


def test_wait_status_times_out_with_the_history(rig) -> None:
    utm = rig.utm_driver()
    with pytest.raises(PhaseTimeout) as err:
        utm.wait_status("started", timeout=0.5, phase="boot")
    assert err.value.phase == "boot"
    assert "still `stopped`" in err.value.message and "wanted `started`" in err.value.message


def test_wait_status_fails_at_once_when_its_check_raises(rig) -> None:
    """The provider's crash rule (a VM back at `stopped`) runs on every status read and ends the wait at once."""
    utm = rig.utm_driver()
    seen: list[tuple[str, list[str]]] = []

    def crashed(status: str, history: list[str], elapsed: float) -> None:
        seen.append((status, list(history)))
        if status == "stopped":
            raise BootError("the VM went to `stopped` during boot", phase="boot")

    started = time.monotonic()
    with pytest.raises(HarnessError) as err:
        utm.wait_status("started", timeout=20, phase="boot", check=crashed)
    assert time.monotonic() - started < 5
    assert not isinstance(err.value, PhaseTimeout)
    assert err.value.phase == "boot" and "went to `stopped`" in err.value.message
    assert seen == [("stopped", ["stopped"])]


def test_errors_exit_0_is_still_a_failure(rig) -> None:
    # utmctl prints "Error: Virtual machine not found." and exits 0.
    utm = UtmDriver(dataclasses.replace(rig.target.vm, id="00000000-0000-0000-0000-000000000000"))
    with pytest.raises(CommandError) as err:
        utm.status()
    assert err.value.phase == "utm" and "not found" in err.value.message
    with pytest.raises(UtmError, match="unknown stop mode"):
        rig.utm_driver().stop("gently")


def test_missing_utmctl_and_missing_vm_id(tmp_path) -> None:
    utm = UtmDriver(VmConfig(id="x", utmctl=str(tmp_path / "no-utmctl")))
    with pytest.raises(UtmError) as err:
        utm.status()
    assert "not found" in err.value.message and err.value.hint
    with pytest.raises(UtmError, match="no VM id"):
        UtmDriver(VmConfig(id=""))


def test_osstatus_is_retried_with_backoff(make_rig) -> None:
    # UTM answers the next 5 start/stop events with OSStatus -1743: the first start fails after
    # its 3 retries (transient, so a rerun may work); the next one succeeds on its first retry.
    rig = make_rig(faults={"utmctl_osstatus"}, osstatus_failures=5)
    pauses: list[float] = []
    utm = rig.utm_driver(sleep=pauses.append)
    with pytest.raises(UtmError) as err:
        utm.start()
    assert (err.value.osstatus, err.value.transient) == (-1743, True)
    assert "OSStatus" in err.value.message
    assert pauses == [1.0, 2.0, 4.0]
    assert utm.status() == "stopped"  # status events are not affected; nothing started
    pauses.clear()
    utm.start()
    assert pauses == [1.0]
    utm.wait_status("started", timeout=20, phase="boot")


def test_no_gui_session_fails_at_once(make_rig) -> None:
    rig = make_rig(faults={"utmctl_no_gui"})
    pauses: list[float] = []
    utm = rig.utm_driver(sleep=pauses.append)
    for call in (utm.status, utm.start):
        with pytest.raises(UtmNoGuiError) as err:
            call()
        assert not err.value.transient and "GUI session" in (err.value.hint or "")
    assert pauses == []  # never retried
