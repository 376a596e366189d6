"""The boot-to-stream state machine (labgrid-style strategy).

``off → vm_up → ssh_ready → stack_up → session_ready → streaming``

- The strategy is handed its drivers (:class:`harness.drivers.wiring.Drivers`) and does no I/O of
  its own: each transition calls a few driver methods and writes its layer's part of the run record
  (:class:`harness.record.RunRecord`), which checks and reports read.
- ``transition(s)`` is idempotent: already there → nothing to do. Going up reaches the state
  below first, then does exactly one layer's work; going down undoes one layer at a time
  (teardown reuses it). ``status`` is set only after the work succeeded.
- ``ensure(s)`` goes up to ``s`` but never down (fixtures use it).
- ``force(s)`` records a state without side effects (the developer loop: reuse what is up).
- The first failure breaks the strategy for good: later calls raise ``StrategyBroken`` naming the
  original phase and cause, and the plugin skips tests that need the strategy.
- Evidence that is not part of a transition (the resource_id=0 probe, the post-stream crash
  evidence) is collected once, on request, through the drivers, into the record.
"""

from __future__ import annotations

import enum
import logging
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .config import TargetConfig
from .deadline import Deadline
from .drivers.helix_cli import TaskWithoutSession
from .drivers.wiring import Drivers
from .errors import CheckFailed, HarnessError
from .protocols import stream as sp
from .record import (BootRecord, ContainerProblem, CrashEvidence, ProbeRecord, RunRecord, SessionRecord, StackRecord,
                     StreamRecord)
from .timeline import Timeline

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
class Strategy:
    target: TargetConfig
    drivers: Drivers | None = None  # built from the target when not handed one
    timeline: Timeline = field(default_factory=Timeline)
    artifacts_dir: Path = field(default_factory=lambda: Path("reports/latest/artifacts"))
    keep_vm: bool = False
    status: Status = Status.unknown
    broken: tuple[str, BaseException] | None = None
    forced: Status | None = None
    record: RunRecord = field(default_factory=RunRecord)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __repr__(self) -> str:  # short: tracebacks print fixtures' reprs
        broken = f", broken in {self.broken[0]}" if self.broken else ""
        return f"Strategy(target={self.target.name!r}, status={self.status.name}{broken})"

    def __post_init__(self) -> None:
        if self.drivers is None:
            self.drivers = Drivers.for_target(self.target, artifacts_dir=self.artifacts_dir)
        self.record.target_name = self.target.name

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
                self.record.session = SessionRecord(session_id=session_id)
            if wanted.value >= Status.session_ready.value and not self.record.session_id:
                raise StrategyError("forcing session_ready/streaming needs a session id", hint="pass --session ses_…")
            self._attach(wanted, timeout=self.target.timeouts["session"])
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
                    self.record.teardown_errors.append(f"{PHASE_OF.get(below, below.name)}: {exc}")
                    self.status = below
            self.drivers.deactivate("ssh")
            self.drivers.close()
        return self.record.teardown_errors

    def reset(self, reason: str) -> None:
        """Forget a failure and start again from the bottom (``--rerun-infra`` after a transient infra
        failure): tear down whatever is up, power the VM off, clear ``broken``. Never for product failures."""
        with self._lock:
            self.record.resets.append(reason)
            forced, self.forced = self.forced, None
            keep, self.keep_vm = self.keep_vm, False
            try:
                self.teardown()
            finally:
                self.keep_vm = keep
                self.forced = forced
            self.broken = None
            self.status = Status.unknown
            self.record.streams.clear()
            self.record.findings.clear()

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

    # -- evidence collected on request -------------------------------------------------
    def describe_host(self) -> dict:
        """The host's description for provenance (OS, model), read once."""
        if not self.record.provenance:
            self.record.provenance = {**self.drivers.host.describe(),
                                      "vm_provider": self.drivers.vm.name if self.drivers.vm else ""}
        return self.record.provenance

    def probe_frame_export(self) -> ProbeRecord:
        """Send QEMU's frame export a FRAME_REQUEST with resource_id=0 and keep what QEMU logged meanwhile."""
        d = self.drivers
        before = d.host.snapshot()
        result = d.frame_export.probe_resource_id_zero()
        self.record.probe = ProbeRecord(result=result, log=d.host.new_log_bytes(before).decode("utf-8", "replace"))
        return self.record.probe

    def collect_crash_evidence(self, *, complete: bool = True) -> CrashEvidence:
        """Everything that says the VM, QEMU or a container crashed since boot. Each probe is independent:
        a dead VM makes the later ones fail, which must not hide the first. ``complete=False`` (a broken
        target) reads only the crash reports: utmctl, SSH and containers are expected to be down then."""
        d, rec = self.drivers, self.record
        ev = CrashEvidence(complete=complete)
        if rec.host_snapshot is not None:
            ev.crash_reports = d.host.new_crash_reports(rec.host_snapshot)
        if complete:
            if d.vm is not None:
                ev.status_source, ev.running_status = d.vm.status_source, d.vm.running_status
                try:
                    ev.vm_status = d.vm.status()
                    ev.vm_running = d.vm.is_running(ev.vm_status)
                except HarnessError as exc:
                    ev.vm_status_error = str(exc)
                health = d.vm.health()
                ev.vm_cause, ev.vm_lines = health.cause, list(health.lines)
            ev.ssh_alive = d.ssh.ping()
            if d.docker is not None:
                stack, session = rec.stack, rec.session
                for name, base, read in (
                    (stack.sandbox_container if stack else "", stack.sandbox_baseline if stack else None,
                     d.docker.state),
                    (session.container if session else "", session.desktop_baseline if session else None,
                     d.docker.desktop_state),
                ):
                    if not name:
                        continue
                    try:
                        ev.containers += [ContainerProblem(name, kind, text)
                                          for kind, text in read(name).problem_kinds(base)]
                    except Exception as exc:  # noqa: BLE001 - docker-py over a dead SSH link raises requests errors
                        ev.containers.append(ContainerProblem(name, "unreadable",
                                                              f"cannot read container {name}: {type(exc).__name__}: "
                                                              f"{exc}"))
        rec.crash = ev
        return ev

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
        vm = self.drivers.vm
        if vm is not None and (status is Status.vm_up and up or status is Status.off and not up):
            what = vm.boot_label if up else vm.stop_label
        elif status is Status.stack_up and up:
            what = self.drivers.stack.label
        method = getattr(self, f"_{'up' if up else 'down'}_{status.name}")
        with self.timeline.phase(phase, what) as handle:
            try:
                method(handle)
            except Exception as exc:
                if up:
                    if isinstance(exc, HarnessError) and exc.phase is None:
                        exc.phase = PHASE_OF[status]
                    explained = self._explain(PHASE_OF[status], exc)
                    self.broken = (PHASE_OF[status], explained or exc)
                    if explained is not None:
                        raise explained from exc
                raise
        self.status = status

    def _explain(self, phase: str, exc: BaseException) -> BaseException | None:
        """The VM provider's view of a failed phase (a hung or dead QEMU behind an SSH timeout), if it has one."""
        vm = self.drivers.vm
        if vm is None:
            return None
        try:
            explained = vm.explain(phase, exc)
        except Exception:  # noqa: BLE001 - a failed diagnosis must not hide the phase's own error
            log.exception("the VM provider could not examine the failed %s phase", phase)
            return None
        if explained is not None:
            if isinstance(explained, HarnessError) and explained.phase is None:
                explained.phase = phase
            explained.__cause__ = exc
        return explained

    # up ----------------------------------------------------------------------------
    def _up_off(self, h) -> None:
        vm = self.drivers.require_vm()
        status = vm.status()
        if self.record.boot is None:
            self.record.boot = BootRecord(status_at_start=status)
        if status != "stopped":
            h.update(f"VM is {status}: stopping it for a fresh boot")
            vm.power_off(timeout=self._timeout("boot"), phase="power_off", on_wait=h.update)

    def _up_vm_up(self, h) -> None:
        d = self.drivers
        vm = d.require_vm()
        boot = self.record.boot or BootRecord()
        self.record.boot = boot
        boot.host_snapshot = d.host.snapshot()
        try:
            boot.vm_version = vm.version()
        except HarnessError as exc:
            log.info("%s version unavailable: %s", vm.name, exc)
        vm.power_on(timeout=self._timeout("boot"), on_wait=h.update)
        boot.status_source, boot.running_status, boot.provider = vm.status_source, vm.running_status, vm.name
        boot.vm_pid = vm.process_id()
        boot.status_after = vm.status()
        boot.running_after = vm.is_running(boot.status_after)
        boot.crash_reports = d.host.new_crash_reports(boot.host_snapshot)
        boot.host_log = d.host.new_log_bytes(boot.host_snapshot)

    def _up_ssh_ready(self, h) -> None:
        self.drivers.activate("ssh", on_wait=lambda d: h.update(f"waiting for sshd ({d})"))
        if not self.drivers.ssh.ping():
            raise HarnessError("SSH connected but `echo ready` failed", phase="ssh")

    def _up_stack_up(self, h) -> None:
        deadline = Deadline(self.phase_timeout("stack"))
        output = self.drivers.stack.start(timeout=deadline.remaining, on_stage=h.update)  # its stages as progress
        self._attach(Status.stack_up, timeout=deadline.remaining)
        stack = self.record.stack
        stack.output_tail = output[-2000:]
        d = self.drivers
        h.update("GET /api/v1/status")
        d.api.wait_up(timeout=deadline.remaining, on_wait=h.update)
        h.update("GET /api/v1/sandboxes")
        sandbox = d.api.wait_sandbox(timeout=deadline.remaining, on_wait=h.update)
        stack.sandbox = {k: sandbox.get(k) for k in ("id", "status", "desktop_versions", "gpu_vendor", "helix_version")}
        stack.sandbox_container = d.docker.find_service_container(self.target.guest.sandbox_service)
        stack.sandbox_baseline = d.docker.state(stack.sandbox_container)

    def _up_session_ready(self, h) -> None:
        d = self.drivers
        deadline = Deadline(self.phase_timeout("session"))
        if d.cli.build_label:
            h.update(d.cli.build_label)
        built = d.cli.ensure_built(self.record.stack.helix_git_sha if self.record.stack else "",
                                   timeout=min(self._timeout("build"), deadline.remaining))
        name = f"helix-e2e-{uuid.uuid4().hex[:8]}"
        h.update(d.cli.start_label)
        since_start = Deadline(0)  # only its `elapsed`: spectask start plus the container lookup
        try:
            started = d.cli.start_session(d.creds.project, name, agent=d.creds.agent,
                                          timeout=min(self._timeout("session"), deadline.remaining))
        except TaskWithoutSession as exc:  # provisioning still, or failed? The task's status says which.
            failure = d.api.task_failure(exc.task_id)
            if failure is not None:
                raise failure from exc
            raise
        self.record.session = SessionRecord(session_id=started.session_id, own=True, name=name, cli_built=built,
                                            started_wall=started.started_wall)
        self._attach(Status.session_ready, timeout=deadline.remaining)
        self.record.session.start_s = round(since_start.elapsed, 3)

    def _up_streaming(self, h) -> None:
        d, cfg = self.drivers, self.target.stream
        deadline = Deadline(self.phase_timeout("stream"))
        session = self.record.session
        sid = session.session_id
        run = StreamRecord(session_id=sid, session_start_s=session.start_s, session_started_wall=session.started_wall)
        h.update("starting vkcube")
        try:
            run.vkcube_pid = d.api.start_vkcube(sid).pid
        except HarnessError as exc:
            run.vkcube_error = str(exc)
        else:  # launched, then gone: the vkcube check says so
            run.vkcube_running_before = d.api.wait_vkcube(sid, timeout=min(3.0, self._timeout("first_frame") / 2),
                                                          pid=run.vkcube_pid)
        duration = cfg.duration
        h.update(f"capturing {duration:.0f}s of stream")
        init = sp.Init(session_id=sid, width=cfg.width, height=cfg.height, fps=cfg.fps, bitrate=cfg.bitrate,
                       video_mode=cfg.video_mode or None)

        def capture() -> None:
            run.capture = d.capture.capture(
                d.api.stream_url(sid), d.api.auth_headers, init, duration=duration, out_dir=self.artifacts_dir,
                name="stream", on_progress=lambda s: h.update(f"streaming {s:.0f}/{duration:.0f}s"),
                analysis=self.target.analysis_mode)

        if cfg.cli_cross_check and d.cli.available:
            # The native client joins first, as the live-pipeline client; the CLI joins shortly after.
            with d.cli.background_stream(sid, duration=duration, timeout=duration + self._timeout("stream_extra"),
                                         local=self.artifacts_dir / "cli-stream.h264", deadline=deadline) as cli:
                capture()
            run.cli, run.cli_error, run.cli_h264, run.cli_h264_head = cli.result, cli.error, cli.h264_local, cli.h264_head
        else:
            if cfg.cli_cross_check:
                run.cli_skipped = d.cli.unavailable_reason
            capture()
        try:
            run.vkcube_state_after = d.api.vkcube_state(sid, run.vkcube_pid)
            run.vkcube_running_after = run.vkcube_state_after == "running"
        except HarnessError as exc:
            run.vkcube_after_error = str(exc)
        h.update("collecting container and host logs")
        try:
            run.desktop_logs = d.docker.desktop_logs(session.container, since=session.started_wall - 1)
        except HarnessError as exc:
            run.desktop_logs = f"<could not read desktop logs: {exc}>"
        snapshot = self.record.host_snapshot
        run.host_log = d.host.new_log_bytes(snapshot).decode("utf-8", "replace") if snapshot else ""
        self.record.streams.append(run)

    # down --------------------------------------------------------------------------
    def _down_session_ready(self, h) -> None:
        if self.drivers.api and self.record.session_id:
            self.drivers.api.stop_vkcube(self.record.session_id)

    def _down_stack_up(self, h) -> None:
        session = self.record.session
        if self.drivers.api and session is not None and session.own and session.active:
            self.drivers.api.stop_session(session.session_id)
        if session is not None:
            session.active = False

    def _down_ssh_ready(self, h) -> None:
        self.drivers.deactivate("stack")

    def _down_vm_up(self, h) -> None:
        self.drivers.deactivate("ssh")

    def _down_off(self, h) -> None:
        self.drivers.require_vm().power_off(timeout=self._timeout("teardown"), phase="teardown", on_wait=h.update)

    # connections -------------------------------------------------------------------
    def _attach(self, status: Status, *, timeout: float) -> None:
        """Open what a state needs (used by transitions and by force())."""
        d = self.drivers
        if status.value >= Status.ssh_ready.value:
            d.activate("ssh")
        if status.value >= Status.stack_up.value and "stack" not in d.active:
            d.activate("stack")
            if self.record.stack is None:
                self.record.stack = StackRecord()
            self.record.stack.helix_git_sha = d.stack.git_sha()
        session = self.record.session
        if status.value >= Status.session_ready.value and session is not None and not session.container:
            cid, cname = d.api.wait_container(session.session_id, timeout=timeout)
            session.container = cname or cid
            session.desktop_baseline = d.docker.desktop_state(session.container)


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
