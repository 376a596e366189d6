"""The boot-to-stream state machine (labgrid-style strategy).

``off → vm_up → ssh_ready → stack_up → session_ready → streaming``

- ``transition(s)`` is idempotent: already there → nothing to do. Going up reaches the state
  below first, then does exactly one layer's work through the drivers; going down undoes one
  layer at a time (teardown reuses it). ``status`` is set only after the work succeeded.
- ``ensure(s)`` goes up to ``s`` but never down (fixtures use it).
- ``force(s)`` records a state without side effects (the developer loop: reuse what is up).
- The first failure breaks the strategy for good: later calls raise ``StrategyBroken`` naming the
  original phase and cause, and the plugin skips tests that need the strategy.
The strategy does no I/O itself: every effect goes through a driver.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import shlex
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TargetConfig
from .drivers.capture import CaptureResult, capture_stream
from .drivers.docker import ContainerState, DockerDriver
from .drivers.frame_export import ProbeResult, probe_resource_id_zero
from .drivers.helix_api import HelixApi
from .drivers.helix_cli import CliStream, HelixCliDriver
from .drivers.host import HostArtifacts, HostSnapshot
from .drivers.ssh import SshDriver
from .drivers.stack import StackDriver
from .drivers.utm import UtmDriver
from .deadline import Deadline, poll_until
from .errors import CheckFailed, HarnessError, PhaseTimeout
from .analysis.logscan import ScanResult, scan_text
from .timeline import Timeline
from .protocols import stream as sp
from .usercreds import Usercreds, parse_usercreds

log = logging.getLogger(__name__)


class Status(enum.Enum):
    unknown = 0
    off = 1
    vm_up = 2
    ssh_ready = 3
    stack_up = 4
    session_ready = 5
    streaming = 6

    @classmethod
    def coerce(cls, value: "Status | str") -> "Status":
        if isinstance(value, Status):
            return value
        try:
            return cls[str(value)]
        except KeyError:
            raise StrategyError(
                f"unknown state {value!r}", hint=f"one of: {', '.join(s.name for s in cls if s is not cls.unknown)}"
            ) from None


#: The phase name that reaching each state is reported under.
PHASE_OF = {
    Status.off: "power_off",
    Status.vm_up: "boot",
    Status.ssh_ready: "ssh",
    Status.stack_up: "stack",
    Status.session_ready: "session",
    Status.streaming: "stream",
}


class StrategyError(HarnessError):
    default_phase = "strategy"


class StrategyBroken(StrategyError):
    """An earlier transition failed; nothing more is attempted on this target."""


@dataclass
class StreamRun:
    """Everything the `streaming` transition measured."""

    session_id: str
    capture: CaptureResult
    session_start_s: float = 0.0  # how long `spectask start --wait` and the container took
    cli: CliStream | None = None
    cli_error: str = ""
    cli_h264: str = ""
    desktop_logs: str = ""
    desktop_scan: ScanResult | None = None
    host_log: str = ""
    host_scan: ScanResult | None = None
    vkcube_running_before: bool = False
    vkcube_running_after: bool = False
    vkcube_error: str = ""  # launching vkcube failed (exec refused or errored)
    vkcube_after_error: str = ""  # checking vkcube after the stream failed (the desktop was unreachable)
    #: The latest :class:`harness.verdict.checks.Finding` of each run-based check, by check name.
    findings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Strategy:
    target: TargetConfig
    timeline: Timeline = field(default_factory=Timeline)
    artifacts_dir: Path = field(default_factory=lambda: Path("reports/latest/artifacts"))
    keep_vm: bool = False
    status: Status = Status.unknown
    broken: tuple[str, BaseException] | None = None
    forced: Status | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    # drivers and what we learned
    utm: UtmDriver | None = None
    host: HostArtifacts | None = None
    ssh: SshDriver | None = None
    stack: StackDriver | None = None
    cli: HelixCliDriver | None = None
    docker: DockerDriver | None = None
    api: HelixApi | None = None
    creds: Usercreds | None = None
    host_snapshot: HostSnapshot | None = None
    session_id: str = ""
    desktop_container: str = ""
    sandbox_container: str = ""
    desktop_baseline: ContainerState | None = None
    sandbox_baseline: ContainerState | None = None
    session_started: float = 0.0
    stream: StreamRun | None = None
    probe: ProbeResult | None = None
    probe_log: str = ""
    teardown_errors: list[str] = field(default_factory=list)
    own_session: bool = False
    preflight_failure: str = ""
    #: Every streaming run of this strategy, oldest first (``stream`` is the last one).
    streams: list[StreamRun] = field(default_factory=list)
    #: The latest :class:`harness.verdict.checks.Finding` of each check run against this strategy, by check name.
    findings: dict[str, Any] = field(default_factory=dict)
    #: Infra failures this strategy recovered from with :meth:`reset` (``--rerun-infra``), oldest first.
    resets: list[str] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __repr__(self) -> str:  # short: tracebacks print fixtures' reprs
        broken = f", broken in {self.broken[0]}" if self.broken else ""
        return f"Strategy(target={self.target.name!r}, status={self.status.name}{broken})"

    def __post_init__(self) -> None:
        t = self.target
        self.host = HostArtifacts(t.host)
        self.utm = UtmDriver(t.vm, command_timeout=t.timeouts["command"]) if t.vm.id else None
        self.ssh = SshDriver(t.ssh)
        self.stack = StackDriver(self.ssh, t.guest)
        self.cli = HelixCliDriver(self.ssh, t.guest)

    # -- public API ------------------------------------------------------------------
    def transition(self, status: Status | str) -> None:
        wanted = Status.coerce(status)
        with self._lock:
            self._check_broken()
            if wanted is Status.unknown:
                raise StrategyError("cannot transition to `unknown`")
            if wanted is self.status:
                log.debug("already in state %s: nothing to do", wanted.name)
                return
            if self.status is Status.unknown and wanted is not Status.off:
                self.transition(Status.off)
            if wanted.value > self.status.value:
                below = Status(wanted.value - 1)
                if self.status is not below:
                    self.transition(below)
                self._step(wanted, up=True)
            else:
                above = Status(wanted.value + 1)
                if self.status is not above:
                    self.transition(above)
                self._step(wanted, up=False)

    def ensure(self, status: Status | str) -> None:
        """Reach at least ``status``; never go down."""
        wanted = Status.coerce(status)
        with self._lock:
            self._check_broken()
            if self.status.value >= wanted.value and self.status is not Status.unknown:
                return
            self.transition(wanted)

    def force(self, status: Status | str, *, session_id: str = "") -> None:
        """Record a state with no side effects, then connect the drivers that state implies."""
        wanted = Status.coerce(status)
        with self._lock:
            self.forced = wanted
            if session_id:
                self.session_id = session_id
            if wanted.value >= Status.session_ready.value and not self.session_id:
                raise StrategyError("forcing session_ready/streaming needs a session id", hint="pass --session ses_…")
            self._attach(wanted)
            self.status = wanted

    def teardown(self) -> list[str]:
        """Always safe: stop vkcube, stop the session, close tunnels, stop the VM unless kept."""
        floor = Status.off
        if self.keep_vm:
            floor = Status.vm_up
        if self.forced is not None:
            floor = Status(max(floor.value, self.forced.value))
        with self._lock:
            self.broken = None  # teardown must run even on a broken target
            while self.status.value > floor.value and self.status is not Status.unknown:
                below = Status(self.status.value - 1)
                try:
                    self._step(below, up=False)
                except Exception as exc:  # noqa: BLE001 - record and keep going down
                    self.teardown_errors.append(f"{PHASE_OF.get(below, below.name)}: {exc}")
                    self.status = below
            self._close_connections()
        return self.teardown_errors

    def reset(self, reason: str) -> None:
        """Forget a failure and start again from the bottom (``--rerun-infra`` after a transient infra
        failure): tear down whatever is up, power the VM off, clear ``broken``. Never for product failures."""
        with self._lock:
            self.resets.append(reason)
            forced, self.forced = self.forced, None
            keep, self.keep_vm = self.keep_vm, False
            try:
                self.teardown()
            finally:
                self.keep_vm = keep
                self.forced = forced
            self.broken = None
            self.status = Status.unknown
            self.stream = None
            self.findings.clear()

    def phase_timeout(self, phase: str) -> float:
        """The longest a phase may take (its scaled ``[timeouts]``); a run with a fault ends within it (+ slack).

        ``session`` covers the CLI build and ``spectask start``; ``stream`` covers the capture and the
        CLI cross-check; every ``*_down`` step of a teardown gets ``teardown``."""
        t = self.target.timeouts
        if phase in ("power_off", "boot"):
            return t["boot"]
        if phase == "session":
            return t["build"] + t["session"]
        if phase == "stream":
            return self.target.stream.duration + t["first_frame"] + t["stream_extra"]
        if phase.endswith("_down"):
            return t["teardown"]
        return t[phase]

    # -- internals -------------------------------------------------------------------
    def _check_broken(self) -> None:
        if self.broken is not None:
            phase, exc = self.broken
            raise StrategyBroken(f"the {phase} phase failed earlier: {exc}", phase=phase) from exc

    def _timeout(self, phase: str) -> float:
        return self.target.timeouts[phase]

    def _step(self, status: Status, *, up: bool) -> None:
        phase = PHASE_OF[status] if up else f"{PHASE_OF[Status(status.value + 1)]}_down"
        what = _WHAT[status] if up else _WHAT_DOWN[status]
        method = getattr(self, f"_{'up' if up else 'down'}_{status.name}")
        with self.timeline.phase(phase, what) as handle:
            try:
                method(handle)
            except Exception as exc:
                if up:
                    self.broken = (PHASE_OF[status], exc)
                    if isinstance(exc, HarnessError) and exc.phase is None:
                        exc.phase = PHASE_OF[status]
                raise
        self.status = status

    # up ----------------------------------------------------------------------------
    def _require_utm(self) -> UtmDriver:
        if self.utm is None:
            raise StrategyError("no VM id configured", phase="boot", hint="set [vm] id in the target config")
        return self.utm

    def _up_off(self, h) -> None:
        utm = self._require_utm()
        status = utm.status()
        self.facts.setdefault("vm_status_at_start", status)
        if status != "stopped":
            h.update(f"VM is {status}: stopping it for a fresh boot")
            utm.stop("force")
            utm.wait_status("stopped", timeout=self._timeout("boot"), phase="power_off", on_wait=h.update)

    def _up_vm_up(self, h) -> None:
        utm = self._require_utm()
        self.host_snapshot = self.host.snapshot()
        try:
            self.facts["utm_version"] = utm.version()
        except HarnessError as exc:
            log.info("utmctl version unavailable: %s", exc)
        h.update("utmctl start")
        utm.start()
        seen_running = False
        deadline = Deadline(self._timeout("boot"))
        pause = 0.2
        while True:
            status = utm.status()
            if status == "started":
                break
            if status in ("starting", "resuming"):
                seen_running = True
            elif status == "stopped" and (seen_running or deadline.elapsed > 5):
                crashes = self.host.new_crash_reports(self.host_snapshot)
                evidence = f"; crash report: {crashes[0].summary()}" if crashes else ""
                raise HarnessError(
                    f"the VM went to `stopped` during boot{evidence}",
                    phase="boot",
                    hint="QEMU crashed at start: read the .ips report and QEMU's log "
                    "(sysroot dylib paths or a stale QEMU build are the usual causes)",
                )
            if deadline.expired:
                raise PhaseTimeout(f"VM status still `{status}` after {deadline.timeout:.0f}s", phase="boot")
            h.update(f"utmctl status: {status}")
            time.sleep(min(pause, deadline.remaining))
            pause = min(pause * 1.5, 2.0)
        crashes = self.host.new_crash_reports(self.host_snapshot)
        if crashes:
            raise HarnessError(f"new crash report during boot: {crashes[0].summary()}", phase="boot")

    def _up_ssh_ready(self, h) -> None:
        self.ssh.connect(self._timeout("ssh"), on_wait=lambda d: h.update(f"waiting for sshd ({d})"))
        if not self.ssh.ping():
            raise HarnessError("SSH connected but `echo ready` failed", phase="ssh")

    def _up_stack_up(self, h) -> None:
        deadline = Deadline(self.phase_timeout("stack"))
        h.update("./stack start")
        self.facts["stack_output_tail"] = self.stack.start(timeout=deadline.remaining)[-2000:]
        self._attach(Status.stack_up, h)
        h.update("GET /api/v1/status")
        seen: list[int] = []

        def api_up() -> bool:
            code = self.api.status_code()
            if not seen or seen[-1] != code:
                seen.append(code)
            return code < 500

        try:
            poll_until(api_up, timeout=deadline.remaining, what="the Helix API (GET /api/v1/status < 500)",
                       phase="api", on_wait=lambda e: h.update(f"API not up yet ({e:.0f}s)"))
        except PhaseTimeout as exc:
            if not seen:
                raise
            answers = " → ".join(str(c) for c in seen)
            raise PhaseTimeout(
                f"GET /api/v1/status kept answering {seen[-1]} for {deadline.elapsed:.0f}s (answers: {answers})",
                phase="api", hint="the API container runs but answers 5xx: read `docker compose logs api` in the guest",
            ) from exc
        h.update("GET /api/v1/sandboxes")
        sandbox = poll_until(lambda: self.api.ready_sandbox(self.api.sandboxes()), timeout=deadline.remaining,
                             what="a sandbox reporting desktop_versions", phase="stack",
                             on_wait=lambda e: h.update(f"no online sandbox yet ({e:.0f}s)"),
                             hint="COMPOSE_PROFILES=code-macos must be set so the sandbox-macos service runs")
        self.facts["sandbox"] = {k: sandbox.get(k) for k in ("id", "status", "desktop_versions", "gpu_vendor",
                                                              "helix_version")}
        self.sandbox_container = self.docker.find_service_container(self.target.guest.sandbox_service)
        self.sandbox_baseline = self.docker.state(self.sandbox_container)

    def _up_session_ready(self, h) -> None:
        deadline = Deadline(self.phase_timeout("session"))
        h.update("building the helix CLI")
        sha = self.facts.get("helix_git_sha", "")
        self.facts["cli_built"] = self.cli.ensure_built(sha, timeout=min(self._timeout("build"), deadline.remaining))
        name = f"helix-e2e-{uuid.uuid4().hex[:8]}"
        h.update("helix spectask start --wait")
        self.session_started = time.time()
        started = time.monotonic()
        self.session_id = self.cli.start_session(self.creds.project, name,
                                                 timeout=min(self._timeout("session"), deadline.remaining))
        self.own_session = True
        self._attach(Status.session_ready, h, deadline=deadline)
        self.facts["session_start_s"] = round(time.monotonic() - started, 3)

    def _up_streaming(self, h) -> None:
        deadline = Deadline(self.phase_timeout("stream"))
        sid = self.session_id
        cfg = self.target.stream
        run = StreamRun(session_id=sid, capture=None, session_start_s=self.facts.get("session_start_s", 0.0))  # type: ignore[arg-type]
        h.update("starting vkcube")
        try:
            self.api.start_vkcube(sid)
        except HarnessError as exc:
            run.vkcube_error = str(exc)
        else:
            try:
                run.vkcube_running_before = bool(
                    poll_until(lambda: self.api.vkcube_running(sid), timeout=min(3.0, self._timeout("first_frame") / 2),
                               what="vkcube (pkill -0 -f vkcube)", phase="desktop")
                )
            except PhaseTimeout:
                run.vkcube_running_before = False  # launched, then gone: the vkcube check says so
        duration = cfg.duration
        h.update(f"capturing {duration:.0f}s of stream")
        init = sp.Init(session_id=sid, width=cfg.width, height=cfg.height, fps=cfg.fps, bitrate=cfg.bitrate,
                       video_mode=cfg.video_mode or None)
        cli_thread = None
        cli_result: dict[str, Any] = {}
        if cfg.cli_cross_check:
            remote = f"/tmp/helix-e2e-{sid}.h264"

            def run_cli() -> None:
                try:
                    cli_result["stream"] = self.cli.stream(
                        sid, duration=max(1, int(round(duration))), output=remote,
                        timeout=duration + self._timeout("stream_extra"),
                    )
                except Exception as exc:  # noqa: BLE001 - reported by the cross-check test
                    cli_result["error"] = str(exc)

            cli_thread = threading.Thread(target=run_cli, name="helix-cli-stream", daemon=True)
        t_start = time.monotonic()

        def progress(_t_ns: int) -> None:
            h.update(f"streaming {time.monotonic() - t_start:.0f}/{duration:.0f}s")

        headers = self.api.auth_headers
        out_dir = self.artifacts_dir
        capture_coro = capture_stream(
            self.api.stream_url(sid), headers, init, duration=duration, out_dir=out_dir, name="stream",
            connect_timeout=self._timeout("first_frame"), first_frame_timeout=self._timeout("first_frame"),
            warmup_s=cfg.warmup, on_progress=progress,
        )
        if cli_thread is not None:
            # The native client joins first, as the live-pipeline client; the CLI joins shortly after.
            cli_thread.start()
        try:
            run.capture = asyncio.run(capture_coro)
        finally:
            if cli_thread is not None:
                # Own the CLI thread: its SSH command is bounded by its own timeout, and so is this wait.
                cli_thread.join(timeout=max(1.0, deadline.remaining))
        if cli_thread is not None:
            if "stream" in cli_result:
                run.cli = cli_result["stream"]
                local = out_dir / "cli-stream.h264"
                try:
                    self.ssh.get(run.cli.h264_remote, local, phase="stream")
                    run.cli_h264 = str(local)
                except Exception as exc:  # noqa: BLE001 - paramiko raises EOFError on a dead link; the crash checks say why
                    run.cli_error = f"fetching the CLI's .h264 failed: {type(exc).__name__}: {exc}"
            else:
                run.cli_error = cli_result.get("error", "the CLI stream did not finish in time")
            # Leave nothing in the guest, whether or not the CLI finished.
            try:
                self.ssh.run(f"rm -f {shlex.quote(remote)}", timeout=min(20.0, max(1.0, deadline.remaining)),
                             phase="stream", check=False)
            except Exception as exc:  # noqa: BLE001 - cleanup is never the verdict (the crash checks say why SSH died)
                log.info("could not remove the CLI's .h264 in the guest: %s", exc)
        try:
            run.vkcube_running_after = self.api.vkcube_running(sid)
        except HarnessError as exc:
            run.vkcube_after_error = str(exc)
        h.update("collecting container and host logs")
        try:
            run.desktop_logs = self.docker.desktop_logs(self.desktop_container, since=self.session_started - 1)
        except HarnessError as exc:
            run.desktop_logs = f"<could not read desktop logs: {exc}>"
        run.desktop_scan = scan_text(run.desktop_logs)
        host_bytes = self.host.new_log_bytes(self.host_snapshot) if self.host_snapshot else b""
        run.host_log = host_bytes.decode("utf-8", "replace")
        run.host_scan = scan_text(host_bytes)
        self.stream = run
        self.streams.append(run)

    # down --------------------------------------------------------------------------
    def _down_session_ready(self, h) -> None:
        if self.api and self.session_id:
            self.api.stop_vkcube(self.session_id)

    def _down_stack_up(self, h) -> None:
        if self.api and self.session_id and self.own_session:
            self.api.stop_session(self.session_id)
        self.session_id = ""
        self.own_session = False
        self.desktop_container = ""
        self.desktop_baseline = None

    def _down_ssh_ready(self, h) -> None:
        self._close_connections(keep_ssh=True)

    def _down_vm_up(self, h) -> None:
        self.ssh.close()

    def _down_off(self, h) -> None:
        utm = self._require_utm()
        utm.stop("force")
        utm.wait_status("stopped", timeout=self._timeout("teardown"), phase="teardown", on_wait=h.update)

    # connections -------------------------------------------------------------------
    def _attach(self, status: Status, h=None, *, deadline: Deadline | None = None) -> None:
        """Open what a state needs (used by transitions and by force())."""
        if status.value >= Status.ssh_ready.value:
            self.ssh.connect(self._timeout("ssh"))
        if status.value >= Status.stack_up.value and self.api is None:
            creds_text = self.stack.read_usercreds()
            self.creds = parse_usercreds(creds_text)
            fwd = self.ssh.forward(self.target.guest.api_port)
            self.api = HelixApi(fwd.url, self.creds.api_key)
            self.docker = DockerDriver(self.ssh.client, self.ssh, self.target.guest)
            self.facts["helix_git_sha"] = self.stack.git_sha()
        if status.value >= Status.session_ready.value and self.session_id and not self.desktop_container:
            wait = deadline.remaining if deadline is not None else self._timeout("session")
            poll_until(lambda: self.api.container_of(self.api.session(self.session_id))[0], timeout=wait,
                       what="the session's dev_container_id", phase="session",
                       hint="the sandbox never started the session's desktop container: read the sandbox's logs")
            cid, cname = self.api.container_of(self.api.session(self.session_id))
            self.desktop_container = cname or cid
            self.desktop_baseline = self.docker.desktop_state(self.desktop_container)

    def _close_connections(self, keep_ssh: bool = False) -> None:
        if self.docker is not None:
            self.docker.close()
            self.docker = None
        if self.api is not None:
            self.api.close()
            self.api = None
        if self.ssh is not None:
            for fwd in self.ssh.forwards:
                fwd.close()
            self.ssh.forwards.clear()
            if not keep_ssh:
                self.ssh.close()

    # checks used by tests --------------------------------------------------------------
    def run_probe(self) -> ProbeResult:
        before = self.host.snapshot()
        fe = self.target.frame_export
        self.probe = probe_resource_id_zero(fe.host, fe.port, timeout=self._timeout("probe"))
        self.probe_log = self.host.new_log_bytes(before).decode("utf-8", "replace")
        return self.probe

    def crash_findings(self) -> list[str]:
        """Everything that says the VM, QEMU or a container crashed since boot (crash reports first).

        Each probe is independent: a dead VM makes the later ones fail, which must not hide the first."""
        out: list[str] = []
        if self.host_snapshot is not None:
            out += [f"new crash report {c.summary()}" for c in self.host.new_crash_reports(self.host_snapshot)]
        if self.utm is not None:
            try:
                status = self.utm.status()
                if status != "started":
                    out.append(f"utmctl status is `{status}`, not `started`")
            except HarnessError as exc:
                out.append(f"utmctl status failed: {exc}")
        if not self.ssh.ping():
            out.append("SSH no longer answers `echo ready`")
        if self.docker is not None:
            for name, base, read in (
                (self.sandbox_container, self.sandbox_baseline, self.docker.state),
                (self.desktop_container, self.desktop_baseline, self.docker.desktop_state),
            ):
                if not name:
                    continue
                try:
                    out += read(name).problems(base)
                except Exception as exc:  # noqa: BLE001 - docker-py over a dead SSH link raises requests errors
                    out.append(f"cannot read container {name}: {type(exc).__name__}: {exc}")
        return out


_WHAT = {
    Status.off: "the VM powered off",
    Status.vm_up: "utmctl status `started`",
    Status.ssh_ready: "SSH to the guest",
    Status.stack_up: "./stack start, the API and an online sandbox",
    Status.session_ready: "a spectask session with its desktop container",
    Status.streaming: "vkcube and the video stream",
}


_WHAT_DOWN = {
    Status.session_ready: "vkcube stopped",
    Status.stack_up: "the session stopped",
    Status.ssh_ready: "tunnels and API clients closed",
    Status.vm_up: "the SSH connection closed",
    Status.off: "utmctl stop and status `stopped`",
}


def check(condition: bool, message: str, *, phase: str) -> None:
    """Assert a product property with a typed, phase-named failure."""
    if not condition:
        raise CheckFailed(message, phase=phase)
