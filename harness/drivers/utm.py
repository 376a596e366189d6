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

from ..config import VmConfig
from ..deadline import Deadline
from ..errors import CommandError, HarnessError, PhaseTimeout
from ..protocols import utmctl as fmt
from ..protocols.errors import RemoteProtocolError

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
    default_phase = PHASE

    def __init__(self, message: str, *, osstatus: int | None = None, transient: bool = False, **kw) -> None:
        super().__init__(message, **kw)
        self.osstatus = osstatus
        self.transient = transient


class UtmNoGuiError(UtmError):
    """utmctl cannot reach UTM.app: no GUI login session, or no Automation permission."""


class UtmDriver:
    def __init__(self, cfg: VmConfig, *, command_timeout: float = 30.0, sleep=time.sleep) -> None:
        if not cfg.id:
            raise UtmError("no VM id configured", hint="set [vm] id to the VM's UUID (see `utmctl list`)")
        self.cfg = cfg
        self.command_timeout = command_timeout
        self._sleep = sleep
        self.calls: list[str] = []

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
            out_b, err_b = proc.communicate(timeout=self.command_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise UtmError(
                f"`utmctl {' '.join(args)}` did not return within {self.command_timeout:.0f}s",
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
            raise UtmError(
                f"`utmctl {' '.join(args)}` reported an Apple Event error (exit {proc.returncode}): {event.line.strip()}",
                osstatus=event.osstatus,
                transient=event.osstatus in TRANSIENT_OSSTATUS,
                hint="utmctl exits 0 on Apple Event failures; OSStatus errors are retried",
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

    def wait_status(self, wanted: str, *, timeout: float, phase: str, on_wait=None, crashed_if=()) -> None:
        """Poll ``status`` until it reads ``wanted``. A status in ``crashed_if`` fails at once."""
        deadline = Deadline(timeout)
        pause = 0.2
        seen: list[str] = []
        while True:
            status = self.status()
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == wanted:
                return
            if status in crashed_if:
                raise HarnessError(
                    f"the VM went to `{status}` while waiting for `{wanted}` (status history: {' → '.join(seen)})",
                    phase=phase,
                    hint="QEMU probably crashed: look for a new QEMULauncher-*.ips crash report",
                )
            if deadline.expired:
                raise PhaseTimeout(
                    f"VM status still `{status}` after {timeout:.0f}s (wanted `{wanted}`; history: {' → '.join(seen)})",
                    phase=phase,
                    hint="check UTM's window for errors",
                )
            if on_wait:
                on_wait(f"utmctl status: {status}")
            self._sleep(min(pause, deadline.remaining))
            pause = min(pause * 1.5, 2.0)
