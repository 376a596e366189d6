"""The run record: everything a run learned, as typed data.

The strategy fills it in through its drivers (each transition writes its layer's part; evidence
such as the resource_id=0 probe and the post-stream crash evidence is collected once, on request).
Checks, triage, reports and soak read it; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - types only
    from .analysis.logscan import ScanResult
    from .drivers.capture import CaptureResult
    from .drivers.docker import ContainerState
    from .drivers.frame_export import ProbeResult
    from .drivers.helix_cli import CliStream
    from .drivers.host import CrashReport, HostSnapshot


@dataclass
class BootRecord:
    """The vm_up transition: what UTM said, and what the host showed once the VM was up."""

    status_at_start: str = ""
    vm_version: str = ""  # `utmctl version` (or the provider's own version)
    host_snapshot: "HostSnapshot | None" = None  # crash reports and log size before the VM started
    status_after: str = ""  # the VM's status once booted
    running_after: bool = False  # whether that status means running (the provider decides)
    status_source: str = "utmctl status"  # where the status came from (the provider says)
    running_status: str = "started"  # the status that means running
    provider: str = "utm"  # the VM provider's name
    vm_pid: int | None = None  # the VM's process, when the harness runs it (Helix.app's QEMU)
    crash_reports: list["CrashReport"] = field(default_factory=list)  # new .ips reports during boot
    host_log: bytes = b""  # bytes QEMU appended to its log during boot


@dataclass
class StackRecord:
    output_tail: str = ""  # the end of `./stack start`'s output
    helix_git_sha: str = ""
    sandbox: dict[str, Any] = field(default_factory=dict)  # id, status, desktop_versions, gpu_vendor, helix_version
    sandbox_container: str = ""
    sandbox_baseline: "ContainerState | None" = None


@dataclass
class SessionRecord:
    session_id: str
    own: bool = False  # started by us (so stopped by us)
    name: str = ""
    cli_built: bool | None = None
    started_wall: float = 0.0  # time.time() when `spectask start` was sent
    start_s: float = 0.0  # `spectask start --wait` plus the container lookup
    container: str = ""  # the desktop container (name, else id)
    desktop_baseline: "ContainerState | None" = None
    active: bool = True  # False once the session was stopped (the record is kept for the report)


@dataclass
class StreamRecord:
    """Everything the `streaming` transition measured."""

    session_id: str
    capture: "CaptureResult | None" = None
    session_start_s: float = 0.0  # how long `spectask start --wait` and the container took
    session_started_wall: float = 0.0
    cli: "CliStream | None" = None
    cli_error: str = ""
    cli_h264: str = ""
    cli_h264_head: bytes = b""  # the first 64 KiB of the CLI's .h264
    desktop_logs: str = ""
    host_log: str = ""
    vkcube_pid: int = 0  # what the exec API gave back when it started vkcube (0: unknown)
    vkcube_running_before: bool = False
    vkcube_running_after: bool = False
    vkcube_state_after: str = ""  # running | gone | zombie (a crashed vkcube stays a zombie)
    vkcube_error: str = ""  # launching vkcube failed (exec refused or errored)
    vkcube_after_error: str = ""  # checking vkcube after the stream failed (the desktop was unreachable)
    cli_skipped: str = ""  # why the CLI cross-check did not run (no helix CLI configured): the test skips
    #: The latest :class:`harness.verdict.checks.Finding` of each stream check, by check name.
    findings: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def desktop_scan(self) -> "ScanResult":
        from .analysis.logscan import scan_text

        return scan_text(self.desktop_logs)

    @cached_property
    def host_scan(self) -> "ScanResult":
        from .analysis.logscan import scan_text

        return scan_text(self.host_log)


@dataclass
class ProbeRecord:
    """The resource_id=0 probe of QEMU's frame export, and what QEMU logged meanwhile."""

    result: "ProbeResult"
    log: str = ""


@dataclass(frozen=True)
class ContainerProblem:
    """Something wrong with a container after streaming. ``kind``: oom, restarted, not_running, unreadable."""

    container: str
    kind: str
    text: str


@dataclass
class CrashEvidence:
    """Everything that says the VM, QEMU or a container crashed since boot, collected after streaming
    (or, on a broken target, only the crash reports: the rest is expected to be down)."""

    crash_reports: list["CrashReport"] = field(default_factory=list)
    vm_status: str | None = None  # None: not read
    vm_running: bool | None = None  # whether vm_status means running (the provider decides)
    vm_status_error: str = ""
    ssh_alive: bool | None = None  # None: not checked
    containers: list[ContainerProblem] = field(default_factory=list)
    complete: bool = True  # False: only the crash reports were read (the target was broken)
    status_source: str = "utmctl status"  # where vm_status came from (the provider says)
    running_status: str = "started"
    #: What the VM provider itself found (``VmProvider.health``): a cause it recognised (a hung QEMU, a
    #: panicked guest) and its evidence (a dead QEMU's exit status and last stderr lines).
    vm_cause: str | None = None
    vm_lines: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable evidence, crash reports first."""
        out = [f"new crash report {c.summary()}" for c in self.crash_reports]
        if self.vm_status_error:
            out.append(f"{self.status_source} failed: {self.vm_status_error}")
        elif self.vm_status is not None and not self.vm_running:
            out.append(f"{self.status_source} is `{self.vm_status}`, not `{self.running_status}`")
        if self.ssh_alive is False:
            out.append("SSH no longer answers `echo ready`")
        out += [p.text for p in self.containers]
        return out + self.vm_lines  # last: the provider's own lines (a dead QEMU's stderr tail)


@dataclass
class RunRecord:
    """One run against one target: filled by the strategy, read by checks, triage and reports."""

    target_name: str = ""
    preflight: list[dict[str, Any]] = field(default_factory=list)  # doctor checks that did not pass
    preflight_failure: str = ""  # the doctor's summary when a check failed
    qemu_binary_version: str = ""  # the VERSION marker of the installed QEMU (doctor)
    provenance: dict[str, Any] = field(default_factory=dict)
    boot: BootRecord | None = None
    stack: StackRecord | None = None
    session: SessionRecord | None = None
    #: Every streaming run, oldest first (``stream`` is the last one).
    streams: list[StreamRecord] = field(default_factory=list)
    probe: ProbeRecord | None = None
    crash: CrashEvidence | None = None
    #: The latest Finding of each run-level check, by check name.
    findings: dict[str, Any] = field(default_factory=dict)
    teardown_errors: list[str] = field(default_factory=list)
    #: Infra failures the strategy recovered from with ``reset`` (``--rerun-infra``), oldest first.
    resets: list[str] = field(default_factory=list)

    @property
    def stream(self) -> StreamRecord | None:
        return self.streams[-1] if self.streams else None

    @property
    def session_id(self) -> str:
        return self.session.session_id if self.session else ""

    @property
    def host_snapshot(self) -> "HostSnapshot | None":
        return self.boot.host_snapshot if self.boot else None

    def facts(self) -> dict[str, Any]:
        """The ``facts`` of metrics.json (public keys)."""
        out: dict[str, Any] = {}
        if self.boot is not None:
            out["vm_status_at_start"] = self.boot.status_at_start
            if self.boot.provider != "utm":  # Helix.app: its QEMU's version and PID
                out["vm_provider"] = self.boot.provider
                if self.boot.vm_version:
                    out["vm_version"] = self.boot.vm_version
                if self.boot.vm_pid:
                    out["qemu_pid"] = self.boot.vm_pid
            elif self.boot.vm_version:
                out["utm_version"] = self.boot.vm_version
        if self.qemu_binary_version:
            out["qemu_binary_version"] = self.qemu_binary_version
        if self.preflight:
            out["preflight"] = self.preflight
        if self.stack is not None:
            out["helix_git_sha"] = self.stack.helix_git_sha
            if self.stack.sandbox:
                out["sandbox"] = self.stack.sandbox
        if self.session is not None:
            if self.session.cli_built is not None:
                out["cli_built"] = self.session.cli_built
            if self.session.start_s:
                out["session_start_s"] = self.session.start_s
        return out
