"""UTM's utmctl, wrapped defensively.

utmctl talks to UTM.app over Apple Events. Its quirks (prior-art §5): event failures go to
stderr while the process exits 0; it refuses to work from SSH sessions without a GUI login;
``start``/``stop`` return before the guest has booted or stopped. So: any stderr ``Error``/
``OSStatus`` line is a failure, only OSStatus errors are retried (1/2/4 s), and readiness is
polled through ``status``.
"""

from __future__ import annotations

import logging
import subprocess
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from ..config import VmConfig
from ..deadline import Deadline
from ..errors import CommandError, HarnessError, PhaseTimeout
from ..protocols import utmctl as fmt
from ..protocols.errors import RemoteProtocolError
from .base import VmProvider
from .host import CrashReport, HostArtifacts

log = logging.getLogger(__name__)

PHASE = "utm"
RETRY_BACKOFF = (1.0, 2.0, 4.0)
#: Apple Event OSStatus codes worth a retry: -609 (connection invalid: UTM still saving/launching),
#: -600 (app not running yet), -1712 (event timed out), -1743 (not permitted: the permission
#: dialog may just have been answered). Others (e.g. -10000 "Operation not available") are final.
TRANSIENT_OSSTATUS = frozenset({-609, -600, -1712, -1743})
#: What utmctl prints (errAEEventNotPermitted) when there is no GUI login session.
NO_GUI_FRAGMENT = "does not work from SSH sessions"


class UtmError(HarnessError):
    """A utmctl failure. Its cause: ``utmctl_osstatus`` (a transient Apple Event OSStatus),
    ``utmctl_event_error`` (a final one) or ``utmctl_failed``."""

    default_phase = PHASE
    default_cause = "utmctl_failed"

    def __init__(self, message: str, *, osstatus: int | None = None, transient: bool = False, **kw) -> None:
        if osstatus is not None and "cause" not in kw:
            kw["cause"] = "utmctl_osstatus" if transient else "utmctl_event_error"
        super().__init__(message, **kw)
        self.osstatus = osstatus
        self.transient = transient


class UtmNoGuiError(UtmError):
    """utmctl cannot reach UTM.app: no GUI login session, or no Automation permission."""

    default_cause = "utmctl_no_gui"


class BootError(HarnessError):
    """The VM did not come up: it crashed while booting (``vm_crashed_boot``, or ``qemu_dylib_missing``
    when dyld could not load QEMU's libraries) or never reached ``started``."""

    default_phase = "boot"


class UtmDriver:
    def __init__(self, cfg: VmConfig, *, command_timeout: float = 30.0, sleep=time.sleep) -> None:
        if not cfg.id:
            raise UtmError("no VM id configured", hint="set [vm] id to the VM's UUID (see `utmctl list`)")
        self.cfg = cfg
        self.command_timeout = command_timeout
        self._sleep = sleep
        self.calls: list[str] = []
        #: The deadline of the phase being waited for: no retry or call runs past it.
        self._deadline: Deadline | None = None

    def _time_left(self) -> float:
        return self.command_timeout if self._deadline is None else max(0.5, min(self.command_timeout,
                                                                                self._deadline.remaining))

    # -- one utmctl call -------------------------------------------------------------
    def _once(self, args: list[str]) -> str:
        argv = [self.cfg.utmctl, *args]
        self.calls.append(" ".join(args))
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise UtmError(
                f"utmctl not found at {self.cfg.utmctl}", hint="install UTM or set [vm] utmctl in the target config"
            ) from None
        except PermissionError:
            raise UtmError(f"utmctl at {self.cfg.utmctl} is not executable", hint="chmod +x it or fix [vm] utmctl") from None
        try:
            limit = self._time_left()
            out_b, err_b = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise UtmError(
                f"`utmctl {' '.join(args)}` did not return within {limit:.1f}s",
                hint="UTM.app may be hung or waiting on a permission dialog",
            ) from None
        except BaseException:  # Ctrl-C: never leave utmctl behind unreaped
            proc.kill()
            proc.communicate()
            raise
        out = out_b.decode("utf-8", "replace")
        err = err_b.decode("utf-8", "replace")
        combined = out + "\n" + err
        if NO_GUI_FRAGMENT in combined:
            raise UtmNoGuiError(
                "utmctl does not work from SSH sessions or before logging in (OSStatus -1743/-600)",
                hint="run the harness inside the Mac's logged-in GUI session (auto-login user) and grant the "
                "terminal Automation permission to control UTM",
            )
        event = fmt.find_event_error(err)
        if event is not None:
            transient = event.osstatus in TRANSIENT_OSSTATUS
            raise UtmError(
                f"`utmctl {' '.join(args)}` reported an Apple Event error (exit {proc.returncode}): {event.line.strip()}",
                osstatus=event.osstatus,
                transient=transient,
                # a transient one keeps the cause's own hint (rerun); a final one says why it was not retried
                hint=None if transient else "utmctl exits 0 on Apple Event failures; only transient OSStatus "
                "errors are retried",
            )
        if proc.returncode != 0 or "Error" in err:
            raise CommandError(
                f"`utmctl {' '.join(args)}` failed (exit {proc.returncode}): {(err or out).strip()[:400]}",
                command=argv,
                exit_status=proc.returncode,
                stdout=out,
                stderr=err,
                phase=PHASE,
            )
        return out

    def _call(self, args: list[str]) -> str:
        """Run utmctl, retrying only transient OSStatus failures with backoff 1/2/4 s."""
        for attempt, pause in enumerate((*RETRY_BACKOFF, None)):
            try:
                return self._once(args)
            except UtmError as exc:
                if not exc.transient or pause is None:
                    raise
                if self._deadline is not None and pause >= self._deadline.remaining:
                    raise  # no retry past the phase's deadline
                log.warning("utmctl %s: OSStatus %s, retry %d in %.0fs", args[0], exc.osstatus, attempt + 1, pause)
                self._sleep(pause)
        raise AssertionError("unreachable")

    # -- commands --------------------------------------------------------------------
    def version(self) -> str:
        return self._call(["version"]).strip()

    def list(self) -> list[fmt.VmEntry]:
        out = self._call(["list"])
        try:
            return fmt.parse_list(out)
        except RemoteProtocolError as exc:
            raise UtmError(f"cannot parse `utmctl list` output: {exc.message}", hint="unexpected utmctl version?") from None

    def status(self) -> str:
        out = self._call(["status", self.cfg.id])
        try:
            return fmt.parse_status(out)
        except RemoteProtocolError as exc:
            raise UtmError(f"cannot parse `utmctl status` output: {exc.message}") from None

    def start(self) -> None:
        self._call(["start", self.cfg.id])

    def stop(self, mode: str = "force") -> None:
        if mode not in ("force", "kill", "request"):
            raise UtmError(f"unknown stop mode {mode!r}")
        self._call(["stop", self.cfg.id, f"--{mode}"])

    def wait_status(self, wanted: str, *, timeout: float, phase: str, on_wait=None,
                    check: Callable[[str, list[str], float], None] | None = None, cause: str | None = None) -> None:
        """Poll ``status`` until it reads ``wanted``. ``check(status, history, elapsed_s)`` may raise to
        fail at once (a VM that went back to ``stopped`` while booting)."""
        deadline = Deadline(timeout)
        with self.within(deadline):
            self._poll_status(wanted, deadline, phase, on_wait, check, cause)

    @contextmanager
    def within(self, deadline: Deadline) -> Iterator[None]:
        """No utmctl call or retry in the body runs past ``deadline`` (or an outer, earlier one)."""
        outer = self._deadline
        if outer is None or deadline.remaining < outer.remaining:
            self._deadline = deadline
        try:
            yield
        finally:
            self._deadline = outer

    def _poll_status(self, wanted, deadline: Deadline, phase, on_wait, check, cause) -> None:
        timeout = deadline.timeout
        pause = 0.2
        seen: list[str] = []
        while True:
            status = self.status()
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == wanted:
                return
            if check is not None:
                check(status, seen, deadline.elapsed)
            if deadline.expired:
                raise PhaseTimeout(
                    f"VM status still `{status}` when the {phase} phase ran out of time ({timeout:.1f}s; wanted "
                    f"`{wanted}`; history: {' → '.join(seen)})",
                    phase=phase,
                    cause=cause,
                    hint=None if cause else "check UTM's window for errors",
                )
            if on_wait:
                on_wait(f"utmctl status: {status}")
            self._sleep(min(pause, deadline.remaining))
            pause = min(pause * 1.5, 2.0)


#: Crash-report text that means dyld could not load QEMU's libraries (sysroot install names).
_DYLD_MARKERS = ("Library missing", "DYLD", "dyld")


def _boot_crash_cause(reports: list[CrashReport]) -> str:
    text = " ".join(r.summary() + " " + r.indicator + " " + r.signal for r in reports)
    return "qemu_dylib_missing" if any(m in text for m in _DYLD_MARKERS) else "vm_crashed_boot"


class UtmVm(VmProvider):
    """The UTM provider: a VM driven by utmctl, its crashes read from the host's crash-report dir."""

    name = "utm"

    def __init__(self, utm: UtmDriver, host: HostArtifacts) -> None:
        self.utm = utm
        self.host = host

    def status(self) -> str:
        return self.utm.status()

    def version(self) -> str:
        return self.utm.version()

    def is_running(self, status: str) -> bool:
        return status == "started"

    def power_on(self, *, timeout: float, on_wait=None) -> None:
        """`utmctl start`, then poll `utmctl status` until `started`. Back to `stopped` after `starting`
        (or 5 s in) means QEMU died at start; a new crash report during boot means the same."""
        before = self.host.snapshot()
        deadline = Deadline(timeout)
        if on_wait:
            on_wait("utmctl start")
        with self.utm.within(deadline):
            self.utm.start()

        def crashed(status: str, history: list[str], elapsed: float) -> None:
            if status == "stopped" and (any(s in ("starting", "resuming") for s in history) or elapsed > 5):
                crashes = self.host.new_crash_reports(before)
                evidence = f"; crash report: {crashes[0].summary()}" if crashes else ""
                raise BootError(
                    f"the VM went to `stopped` during boot{evidence}",
                    cause=_boot_crash_cause(crashes),
                    hint="QEMU crashed at start: read the .ips report and QEMU's log "
                    "(sysroot dylib paths or a stale QEMU build are the usual causes)",
                )

        self.utm.wait_status("started", timeout=deadline.remaining, phase="boot", on_wait=on_wait, check=crashed,
                             cause="boot_timeout")
        crashes = self.host.new_crash_reports(before)
        if crashes:
            raise BootError(f"new crash report during boot: {crashes[0].summary()}", cause=_boot_crash_cause(crashes))

    def power_off(self, *, timeout: float, phase: str, on_wait=None) -> None:
        deadline = Deadline(timeout)
        with self.utm.within(deadline):
            self.utm.stop("force")
        self.utm.wait_status("stopped", timeout=deadline.remaining, phase=phase, on_wait=on_wait)
