"""The Helix.app provider: the harness runs the app's bundled QEMU itself and drives it over QMP
(helix-app-vm.md §5, Option B), with the app's command line (:mod:`.command`) and its boot stages.

- **Boot** (:meth:`HelixAppVm.power_on`): refuse while Helix.app runs, or a stale QEMU holds the QMP
  port or ``qemu.pid`` (:mod:`.conflicts`); start QEMU in its own process group, stdout (the serial
  console) and stderr (``helix:``, ``[HELIX]``, ``[FRAME_READY]``, ``[KEEPALIVE]`` lines) to files under
  the run's artifacts; wait for the QMP greeting and ``query-status`` = running; then "Booting VM...":
  until the guest's sshd answers on the SSH forward with its banner.
- **Stop** (:meth:`HelixAppVm.power_off`): ``system_powerdown``, a bounded wait, QMP ``quit``, and
  SIGKILL of the process group last.
- **Evidence**: QEMU's stderr file is the host log (instead of helix-debug.log); new
  ``qemu-system-aarch64-*.ips`` reports are crashes; when QEMU dies, its exit status or signal and its
  last 20 stderr lines go into the error. A phase that fails while QEMU is alive is examined
  (:meth:`HelixAppVm.explain`): no QMP greeting at ~0 % CPU while SSH and HTTP time out is the BQL
  deadlock (``qemu_deadlock``); QMP fine but never any SSH during boot is ``edk2_no_boot``.
- **Adoption**: the QEMU's PID and QMP port go to ``<data dir>/helix-e2e-qemu.pid``, so a run after a
  killed one (or ``--keep-vm``) finds its own QEMU, reports it running and powers it off like any VM.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ...config import TargetConfig, expand
from ...deadline import Deadline
from ...errors import HarnessError
from ..base import VmHealth, VmProvider
from ..host import HostArtifacts
from ..qmp import QmpError, QmpMonitor
from . import command as qemu_command
from .conflicts import OWN_PID_FILE, find_conflicts, read_pid_file

log = logging.getLogger(__name__)

#: Crash reports of Helix.app's QEMU (macOS names them after the process).
CRASH_GLOB = "qemu-system-aarch64-*.ips"
#: How many of QEMU's last stderr lines go into an error when it dies (as the app's own error message).
STDERR_TAIL = 20
#: QMP: each connection attempt while QEMU starts, and each exchange, waits at most this long.
QMP_TIMEOUT_S = 2.0
#: The hang diagnosis: how long the CPU is sampled, and the SSH/HTTP probes wait.
CPU_SAMPLE_S = 0.5
PROBE_TIMEOUT_S = 1.5
#: Below this CPU share a QEMU that does not greet is deadlocked (the BQL deadlock idles at ~0 %).
DEADLOCK_CPU_PERCENT = 5.0
#: Console (serial) text of EDK2 running out of PCI resources (hostmem=512M on M1, helix-app-vm.md §6).
EDK2_MARKERS = ("Out Of Resource", "PciHostBridgeResourceConflict", "Shell>", "UEFI Interactive Shell")


class HelixAppError(HarnessError):
    """Helix.app's QEMU could not be started, reached or stopped; the cause says which way."""

    default_phase = "boot"

    def __init__(self, message: str, *, evidence: "list[str] | tuple[str, ...]" = (), **kw) -> None:
        super().__init__(message, **kw)
        #: Lines that prove it (QEMU's exit, its last stderr lines, the probes), beyond the message.
        self.evidence = list(evidence)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _tail_lines(path: Path, start: int, count: int) -> list[str]:
    """The last ``count`` non-empty lines written to ``path`` after byte ``start``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(start, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-count:]


def ssh_banner(host: str, port: int, timeout: float) -> str:
    """What the SSH port says within ``timeout``: ``banner`` (an sshd answered), ``refused``, ``closed`` (the
    forward accepted and hung up: nothing listens in the guest yet), ``silent`` (accepted, never a byte)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = sock.recv(64)
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "silent"
    except OSError:
        return "closed"
    return "banner" if data.startswith(b"SSH-") else ("closed" if not data else "garbage")


def http_probe(host: str, port: int, timeout: float) -> str:
    """``GET /api/v1/status`` with no credentials: the status line, or how it failed (no secret involved)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET /api/v1/status HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = sock.recv(128)
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return f"accepted, no answer within {timeout:.1f}s"
    except OSError as exc:
        return f"failed ({exc.strerror or type(exc).__name__})"
    first = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    return f"answered {first}" if first else "closed without an answer"


class HelixAppVm(VmProvider):
    """Helix.app's bundled QEMU, run and stopped by the harness, driven over QMP."""

    name = "helix-app"
    status_source = "QEMU (QMP query-status)"
    running_status = "running"
    boot_label = "QEMU running (QMP) and the guest's SSH answering (the app's \"Booting VM...\")"
    stop_label = "QMP system_powerdown, quit, SIGKILL last: QEMU gone"

    def __init__(self, target: TargetConfig, host: HostArtifacts, *, artifacts_dir: Path,
                 command_timeout: float = 60.0) -> None:
        self.target = target
        self.cfg = target.vm
        self.host = host
        self.artifacts_dir = Path(artifacts_dir)
        self.command_timeout = command_timeout
        self.stderr_path = self.artifacts_dir / "qemu-stderr.log"
        self.console_path = self.artifacts_dir / "qemu-console.log"
        host.use_log(self.stderr_path)  # QEMU's stderr replaces helix-debug.log as the host log
        host.use_crash_globs(CRASH_GLOB)
        self.data_dir = Path(expand(self.cfg.data_dir))
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # ours: started here, or adopted from OWN_PID_FILE
        self.monitor = QmpMonitor("127.0.0.1", self.cfg.qmp_port)
        self.exit_line = ""  # how QEMU ended ("exit status 1", "killed by SIGKILL")
        self._stderr_start = 0
        self._stopping = False
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"HelixAppVm(qemu={self.cfg.qemu_path!r}, pid={self.pid})"

    # -- the process ----------------------------------------------------------------------------------------
    @property
    def own_pid_file(self) -> Path:
        return self.data_dir / OWN_PID_FILE

    def _adopt(self) -> None:
        """Our QEMU from a run that did not stop it (killed, or --keep-vm): its PID and QMP port match."""
        if self.pid is not None or self.proc is not None:
            return
        recorded = read_pid_file(self.own_pid_file)
        if recorded is None:
            return
        pid, rest = recorded
        if rest[:1] != [str(self.cfg.qmp_port)] or not self._alive(pid):
            self.own_pid_file.unlink(missing_ok=True)
            return
        log.info("adopting the harness's own QEMU pid %d (from %s)", pid, self.own_pid_file)
        self.pid = pid

    def _alive(self, pid: int | None = None) -> bool:
        pid = self.pid if pid is None else pid
        if pid is None:
            return False
        if self.proc is not None and pid == self.proc.pid:
            return self.proc.poll() is None
        import psutil

        try:
            p = psutil.Process(pid)
            return p.status() != psutil.STATUS_ZOMBIE and "qemu" in " ".join(p.cmdline()[:1] or [p.name()])
        except psutil.Error:
            return False

    def _exited(self) -> bool:
        """QEMU was ours and is gone (recording how it ended)."""
        if self.proc is not None:
            rc = self.proc.poll()
            if rc is None:
                return False
            if not self.exit_line:
                self.exit_line = f"killed by {_signal_name(-rc)}" if rc < 0 else f"exit status {rc}"
            return True
        return self.pid is not None and not self._alive()

    def stderr_tail(self, count: int = STDERR_TAIL) -> list[str]:
        return _tail_lines(self.stderr_path, self._stderr_start, count)

    def _exit_evidence(self) -> list[str]:
        tail = self.stderr_tail()
        lines = [f"QEMU pid {self.pid} {self.exit_line or 'exited'}"]
        if tail:
            lines.append(f"QEMU's last {len(tail)} stderr lines ({self.stderr_path}):")
            lines += [f"  {line}" for line in tail]
        return lines

    # -- VmProvider -------------------------------------------------------------------------------------------
    def version(self) -> str:
        try:
            res = subprocess.run([self.cfg.qemu_path, "--version"], capture_output=True, text=True,
                                 timeout=min(20.0, self.command_timeout), stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HelixAppError(f"`{self.cfg.qemu_path} --version` failed: {exc}", cause="helix_app_bundle") from None
        first = (res.stdout or res.stderr).strip().splitlines()[:1]
        if res.returncode != 0 or not first:
            raise HelixAppError(f"`{self.cfg.qemu_path} --version` exited {res.returncode}", cause="helix_app_bundle")
        return first[0]

    def is_running(self, status: str) -> bool:
        return status == "running"

    def status(self) -> str:
        """``stopped`` (no QEMU of ours), ``exited`` (it died), ``unresponsive`` (no QMP answer), else QMP's
        ``query-status`` (running, paused, shutdown, guest-panicked, …)."""
        with self._lock:
            self._adopt()
            if self.pid is None:
                return "stopped"
            if self._exited():
                return "exited"
            try:
                return self.monitor.query_status(timeout=QMP_TIMEOUT_S) or "unknown"
            except QmpError as exc:
                return "unresponsive" if exc.kind in ("timeout", "no_greeting") else f"qmp-{exc.kind}"

    def power_on(self, *, timeout: float, on_wait: Callable[[str], None] | None = None) -> None:
        say = on_wait or (lambda message: None)
        deadline = Deadline(timeout)
        with self._lock:
            self._refuse_conflicts()
            self._spawn(say)
            self._await_qmp(deadline, say)
            self._await_guest(deadline, say)

    def power_off(self, *, timeout: float, phase: str, on_wait: Callable[[str], None] | None = None) -> None:
        say = on_wait or (lambda message: None)
        deadline = Deadline(timeout)
        with self._lock:
            self._adopt()
            if self.pid is None:
                return
            self._stopping = True
            try:
                if not self._exited():
                    self._stop(deadline, say)
            finally:
                self.monitor.close()
                self._release()

    def close(self) -> None:
        self.monitor.close()

    def process_id(self) -> int | None:
        return self.pid

    # -- boot -----------------------------------------------------------------------------------------------
    def _refuse_conflicts(self) -> None:
        conflicts = find_conflicts(self.target)
        if conflicts:
            first = conflicts[0]
            raise HelixAppError(
                f"cannot start Helix.app's QEMU: {first.finding}", cause=first.cause,
                evidence=[c.finding for c in conflicts] + [f"to stop it: {c.fix}" for c in conflicts],
                hint=f"{first.fix} (then rerun)")

    def _spawn(self, say: Callable[[str], None]) -> None:
        qemu = self.cfg.qemu_path
        if not (os.path.isfile(qemu) and os.access(qemu, os.X_OK)):
            raise HelixAppError(f"Helix.app's QEMU is missing or not executable: {qemu}", cause="helix_app_bundle",
                                hint="install Helix.app, or set [vm] app (the bundle) or [vm] qemu")
        argv = qemu_command.command_line(self.target)
        env = qemu_command.environment(self.target)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.unlink(qemu_command.spice_socket())  # the app's Start() removes a stale one too
        except OSError:
            pass
        with open(self.stderr_path, "ab") as err, open(self.console_path, "ab") as out:
            self._stderr_start = err.tell()
            try:
                # Its own process group (the app's Setpgid): SIGKILL of -pgid takes everything QEMU started.
                # stdin is a pipe we hold, as the app's console input is.
                self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env,
                                             start_new_session=True, close_fds=True)
            except OSError as exc:
                raise HelixAppError(f"cannot run {qemu}: {exc.strerror or exc}", cause="qemu_exit_at_start") from None
        self.pid = self.proc.pid
        self.exit_line = ""
        self._stopping = False
        self.own_pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.own_pid_file.write_text(f"{self.pid} {self.cfg.qmp_port}\n")
        log.info("QEMU pid %d: %s", self.pid, " ".join(argv))
        say(f"QEMU pid {self.pid} started; waiting for QMP on 127.0.0.1:{self.cfg.qmp_port}")

    def _died(self, when: str, cause: str) -> HelixAppError:
        evidence = self._exit_evidence()
        tail = " | ".join(self.stderr_tail(3))
        hint = None
        text = "\n".join(self.stderr_tail())
        if cause == "qemu_exit_at_start":
            if "-spice" in text or "invalid option" in text or "not found" in text and "Property" in text:
                hint = ("QEMU rejected the app's command line: this is not Helix.app's qemu-utm build (SPICE with "
                        "gl=es, helix-port): set [vm] qemu to the bundled qemu-system-aarch64")
            elif "SIGKILL" in self.exit_line or "Code Signature" in text:
                hint = ("QEMU was killed as it started (an ad-hoc or broken code signature is killed with "
                        "`SIGKILL (Code Signature Invalid)`): re-sign Helix.app (codesign --force --deep -s - "
                        "/Applications/Helix.app) or reinstall it")
            elif "edk2" in text or "firmware" in text.lower() or "Could not open" in text:
                hint = ("a file on QEMU's command line is missing (EDK2 firmware or the VM disk): reinstall "
                        "Helix.app, let it download the VM image, or fix [vm] firmware_dir / vm_dir")
        return HelixAppError(f"QEMU {when} ({self.exit_line}){': ' + tail if tail else ''}", cause=cause,
                             evidence=evidence, hint=hint)

    def _await_qmp(self, deadline: Deadline, say: Callable[[str], None]) -> None:
        greeted_nothing = 0
        while True:
            if self._exited():
                raise self._died("exited at start", "qemu_exit_at_start")
            try:
                greeting = self.monitor.connect(timeout=min(QMP_TIMEOUT_S, max(0.1, deadline.remaining)))
                break
            except QmpError as exc:
                if exc.kind == "no_greeting":
                    greeted_nothing += 1
                if deadline.expired:
                    if self._exited():
                        raise self._died("exited at start", "qemu_exit_at_start") from None
                    raise self._hang_error("boot", f"QMP never came up within {deadline.timeout:.0f}s",
                                           booting=False) from exc
                time.sleep(min(0.1, deadline.remaining))
        version = ((greeting or {}).get("QMP") or {}).get("version", {}).get("qemu", {})
        if version:
            say(f"QMP greeting: QEMU {version.get('major')}.{version.get('minor')}.{version.get('micro')}")
        status = self.monitor.query_status(timeout=min(QMP_TIMEOUT_S, max(0.1, deadline.remaining)))
        if status not in ("running", "prelaunch", "inmigrate"):
            raise HelixAppError(f"QEMU is `{status}` right after start (QMP query-status)", cause="qmp_failed",
                                evidence=self.stderr_tail(5))

    def _await_guest(self, deadline: Deadline, say: Callable[[str], None]) -> None:
        """The app's "Booting VM..." stage: until the guest's sshd answers on the SSH forward."""
        host, port = self.target.ssh.host, self.cfg.ssh_port
        say(f"Booting VM... (waiting for the guest's SSH on {host}:{port})")
        seen = ""
        while True:
            if self._exited():
                raise self._died("exited while the VM booted", "vm_crashed_boot")
            if self.monitor.seen("GUEST_PANICKED"):
                raise HelixAppError("the guest panicked while booting (QMP GUEST_PANICKED)", cause="guest_panicked",
                                    evidence=[e.line() for e in self.monitor.seen("GUEST_PANICKED")])
            state = ssh_banner(host, port, min(QMP_TIMEOUT_S, max(0.2, deadline.remaining)))
            if state == "banner":
                say(f"SSH answers on {host}:{port}")
                return
            if state != seen:
                seen = state
                say(f"Booting VM... (SSH on :{port}: {state})")
            if deadline.expired:
                raise self._hang_error("boot", f"no SSH banner on {host}:{port} within {deadline.timeout:.0f}s "
                                       f"(last: {state})", booting=True)
            time.sleep(min(0.3, deadline.remaining))

    # -- stop -----------------------------------------------------------------------------------------------
    def _wait_exit(self, timeout: float) -> bool:
        end = time.monotonic() + max(0.0, timeout)
        while True:
            if self._exited():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.05)

    def _stop(self, deadline: Deadline, say: Callable[[str], None]) -> None:
        for command, wait in (("system_powerdown", self.cfg.powerdown_wait), ("quit", 5.0)):
            say(f"QMP {command}")
            try:
                self.monitor.execute(command, timeout=min(QMP_TIMEOUT_S, max(0.1, deadline.remaining)))
            except QmpError as exc:
                log.info("QMP %s failed (%s): going on", command, exc.kind)
                if exc.kind in ("timeout", "no_greeting"):
                    break  # QEMU's main loop does not answer: only a signal helps
                continue
            if self._wait_exit(min(wait, deadline.remaining / 2)):
                return
        say(f"SIGKILL to QEMU's process group {self.pid}")
        for target in (-1, 1):  # the group first, then the process (an adopted QEMU may lead no group)
            try:
                if target < 0:
                    os.killpg(self.pid, signal.SIGKILL)
                else:
                    os.kill(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if not self._wait_exit(max(5.0, deadline.remaining)):
            raise HelixAppError(f"QEMU pid {self.pid} survived SIGKILL", phase="teardown", cause="power_off_failed")

    def _release(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        recorded = read_pid_file(self.own_pid_file)
        if recorded is not None and recorded[0] == self.pid:
            self.own_pid_file.unlink(missing_ok=True)
        self.pid = None

    # -- what a failure means -----------------------------------------------------------------------------
    def diagnose(self) -> tuple[str | None, list[str]]:
        """Is QEMU dead, hung or fine? ``(cause or None, evidence lines)``. Probes in parallel: the CPU over
        :data:`CPU_SAMPLE_S`, a fresh QMP greeting, the SSH banner and ``GET /api/v1/status``."""
        if self.pid is None:
            return None, []
        if self._exited():
            return "vm_crashed", self._exit_evidence()
        import psutil

        def cpu() -> tuple[float | None, str]:
            try:
                p = psutil.Process(self.pid)
                return p.cpu_percent(interval=CPU_SAMPLE_S), p.status()
            except psutil.Error:
                return None, "gone"

        def greeting() -> str:
            try:
                self.monitor.probe_greeting(timeout=QMP_TIMEOUT_S)
                return "ok"
            except QmpError as exc:
                return exc.kind

        host = self.target.ssh.host
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="qemu-diagnose") as pool:
            f_cpu = pool.submit(cpu)
            f_qmp = pool.submit(greeting)
            f_ssh = pool.submit(ssh_banner, host, self.cfg.ssh_port, PROBE_TIMEOUT_S)
            f_http = pool.submit(http_probe, "127.0.0.1", self.cfg.api_port, PROBE_TIMEOUT_S)
            (percent, state), qmp, ssh, http = f_cpu.result(), f_qmp.result(), f_ssh.result(), f_http.result()
        if self._exited():
            return "vm_crashed", self._exit_evidence()
        cpu_text = f"{percent:.1f}% CPU over {CPU_SAMPLE_S:.1f}s" if percent is not None else "CPU unknown"
        qmp_text = {"ok": "answers", "no_greeting": f"accepts connections but sends no greeting within "
                    f"{QMP_TIMEOUT_S:.0f}s", "refused": "refuses connections", "timeout": "timed out"}.get(qmp, qmp)
        ssh_text = {"banner": "answers with its banner", "silent": f"accepts, no banner within {PROBE_TIMEOUT_S:.1f}s",
                    "refused": "refuses connections", "closed": "accepts and hangs up"}.get(ssh, ssh)
        lines = [f"QEMU pid {self.pid} is alive ({state}) at {cpu_text}",
                 f"QMP 127.0.0.1:{self.cfg.qmp_port}: {qmp_text}",
                 f"SSH {host}:{self.cfg.ssh_port}: {ssh_text}",
                 f"HTTP 127.0.0.1:{self.cfg.api_port} GET /api/v1/status: {http}"]
        if qmp in ("no_greeting", "timeout"):
            lines += [f"QEMU stderr: {line}" for line in self.stderr_tail(4)]
            deadlocked = percent is None or percent < DEADLOCK_CPU_PERCENT
            return ("qemu_deadlock" if deadlocked else "qemu_hung"), lines
        status = ""
        if qmp == "ok":
            try:
                status = self.monitor.query_status(timeout=QMP_TIMEOUT_S)
            except QmpError:
                status = ""
            lines.append(f"QMP query-status: {status or 'no answer'}")
        panics = self.monitor.seen("GUEST_PANICKED")
        if status == "guest-panicked" or panics:
            return "guest_panicked", lines + [e.line() for e in panics]
        return None, lines

    def _hang_error(self, phase: str, what: str, *, booting: bool) -> HelixAppError:
        """Why a boot wait ran out: QEMU died, hung, or (``booting``: QMP fine, no SSH ever) EDK2 never booted."""
        cause, lines = self.diagnose()
        if cause == "vm_crashed":
            return self._died("exited while the VM booted" if phase == "boot" else f"exited during {phase}",
                              "vm_crashed_boot" if phase == "boot" else "vm_crashed")
        if cause is None:
            if booting:
                console = [line for line in _tail_lines(self.console_path, 0, 200)
                           if any(m in line for m in EDK2_MARKERS)][-4:]
                return HelixAppError(f"the VM did not boot: {what}; QEMU runs and answers QMP (Helix.app: `boot "
                                     "timed out`)", cause="edk2_no_boot",
                                     evidence=lines + [f"console: {line}" for line in console])
            cause = "qmp_failed"
        return HelixAppError(f"{what}; {lines[1] if len(lines) > 1 else ''}", cause=cause, phase=phase,
                             evidence=lines)

    def explain(self, phase: str, error: BaseException) -> BaseException | None:
        """After a failed phase: a dead QEMU (exit and stderr), a hung one (the deadlock signature) or a
        panicked guest names the cause; else ``None`` (the phase's own error stands)."""
        if self.pid is None or self._stopping or isinstance(error, HelixAppError):
            return None
        cause, lines = self.diagnose()
        if cause is None:
            return None
        if cause == "vm_crashed":
            return self._died(f"exited during the {phase} phase", "vm_crashed")
        what = {"qemu_deadlock": "QEMU's main loop is deadlocked", "qemu_hung": "QEMU spins without answering QMP",
                "guest_panicked": "the guest kernel panicked"}[cause]
        return HelixAppError(f"the {phase} phase failed because {what} ({lines[0]})", cause=cause, phase=phase,
                             evidence=lines)

    def health(self) -> VmHealth:
        """After a run: a dead QEMU's exit and stderr, a hang's probes, a panic's event."""
        if self.pid is None:
            return VmHealth()
        cause, lines = self.diagnose()
        if cause == "vm_crashed":
            return VmHealth(None, tuple(lines))  # the checks call a VM gone mid-run vm_crashed
        stops = [e.line() for e in self.monitor.seen("STOP", "GUEST_PANICKED")]
        return VmHealth(cause, tuple(lines + stops) if cause else tuple(stops))

    # -- what differs from UTM ------------------------------------------------------------------------------
    def make_stack(self, runner, guest):
        from .stack import HelixAppStack

        return HelixAppStack(runner, guest, self.cfg)

    def api_base_url(self, ssh, guest_api_port: int) -> str:
        return f"http://127.0.0.1:{self.cfg.api_port}"  # QEMU's hostfwd, as the app polls it

    def make_cli(self, ssh, guest, *, api, env):
        from ..helix_cli import ApiOnlyCli, HostHelixCli
        from ..local import LocalRunner

        if self.cfg.helix_cli:
            return HostHelixCli(self.cfg.helix_cli, LocalRunner(env=env))
        return ApiOnlyCli(api)
