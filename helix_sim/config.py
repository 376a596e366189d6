"""The simulator's configuration and its one table of injectable faults."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import SimConfigError

QEMU_BEHAVIOURS = ("feb5-reject", "v7-fallback", "v10-ignore")
VIDEO_MODES = ("scanout", "shm")
#: The helix CLI generations the guest can build (upstream-corrections.md §2): ``2026-08`` has ``-a/--agent``;
#: ``2026-11`` (the default) has no ``--agent`` and has ``--runtime ubuntu-desktop|headless-ubuntu``.
CLI_GENERATIONS = ("2026-08", "2026-11")
#: Who runs the VM on the simulated Mac: UTM.app (utmctl), or Helix.app's bundled QEMU (a real QEMU here).
PROVIDERS = ("utm", "helix-app")

#: The QEMU VERSION marker each behaviour's build prints (`[HELIX] VERSION: ...`).
QEMU_VERSIONS = {
    "feb5-reject": "2026-02-05-reject-resource-id-zero",
    "v7-fallback": "2026-02-08-v7-gpu-blit",
    "v10-ignore": "2026-02-15-v10-ipa-granule-test",
}


@dataclass(frozen=True, slots=True)
class Fault:
    """An injectable fault: its public name, the cause a triage must name (a row of the harness's table of
    causes, ``harness/causes.py``, which gives its layer; ``None``: not a fault, the run must pass), and
    who implements it."""

    name: str
    cause: str | None
    place: str  # the helix_sim module that implements it (host.utm_app, stack.api, desktop.pipeline, …)
    description: str


_FAULT_ROWS = [
    ("vm_crash_boot", "vm_crashed_boot", "host.utm_app", "the VM goes to `stopped` during boot and a QEMULauncher-*.ips appears"),
    ("vm_crash_stream", "vm_crashed", "host.utm_app", "the VM goes to `stopped` mid-stream and a QEMULauncher-*.ips appears"),
    ("utmctl_osstatus", "utmctl_osstatus", "host.utm_app", "utmctl prints `Error from event: ... OSStatus -1743` and exits 0"),
    ("utmctl_no_gui", "utmctl_no_gui", "host.utm_app", "utmctl fails: does not work from SSH sessions or before logging in"),
    ("ssh_refused", "ssh_refused", "vm.sshd", "the guest's SSH port refuses connections"),
    ("ssh_blackhole", "ssh_unresponsive", "vm.sshd", "the guest's SSH port accepts and never answers"),
    ("host_key_changed", "host_key_changed", "vm.sshd", "the guest presents a different host key"),
    ("stack_fails", "stack_start_failed", "stack.docker_engine", "`./stack start` exits non-zero with compose output"),
    ("api_5xx", "api_5xx", "stack.api", "/api/v1/status answers 502"),
    ("no_container", "no_container", "stack.api", "the session never gets dev_container_id"),
    ("no_agent", "no_agent", "stack.api",
     "the task has no agent: it is marked failed (status `backlog`, metadata.error `no agent configured - set "
     "DefaultHelixAppID on project`) and `spectask start --wait` times out, exits 0 and prints the spt_ id"),
    ("exec_forbidden", "exec_forbidden", "desktop.exec", "exec answers 403 `command not allowed: vkcube`"),
    ("vkcube_dies", "vkcube_dies", "desktop.exec",
     "exec succeeds, then vkcube crashes and stays a zombie (`State:\tZ (zombie)` in /proc/<pid>/status); "
     "`pkill -0 -f vkcube` still exits 0"),
    ("ws_503", "ws_upgrade_refused", "stack.api", "plain-text `HTTP/1.1 503 ... Sandbox not connected` instead of upgrading"),
    ("stream_error", "stream_error", "desktop.session", "a 0x31 StreamError, then an abrupt TCP close"),
    ("frames_stop", "frames_stop", "desktop.pipeline", "frames stop but pings continue and the socket stays open"),
    ("qemu_unexpected_msg", "qemu_unexpected_msg", "desktop.pipeline",
     "on scanout QEMU sends a message other than FRAME_RESPONSE: every viewer gets 0x31 "
     "`unexpected msg_type: 0x22` and frames stop"),
    ("no_first_frame", "no_first_frame", "desktop.pipeline",
     "the stream starts but no frame ever comes: text StreamStatus `starting_video` every few seconds"),
    ("superseded", "superseded", "stack.api", "close code 4000 \"superseded\""),
    ("low_fps", "low_fps", "desktop", "20 fps"),
    ("frozen", "frozen", "desktop.pipeline", "identical content for 3 s"),
    ("black", "black", "desktop.pipeline", "black frames for 2 s"),
    ("corrupt_h264", "corrupt_h264", "desktop.pipeline", "damaged AUs"),
    ("replay_burst", None, "desktop.pipeline", "a GOP replay burst at join (not a fault: must pass)"),
    ("resource_ids_zero", "resource_ids_zero", "desktop.logs",
     "every resource_id is 0: QEMU's [FRAME_READY] lines on scanout; on the vsockenc path (shm, native, zerocopy) "
     "vsockenc's `Buffer is not DMA-BUF backed` and resource_id=0 are what upstream always logs"),
    ("qemu_ignores_zero", "qemu_ignored", "host.qemu", "v10 behaviour: FRAME_REQUEST gets no reply"),
    ("qemu_accepts_zero", "qemu_accepted", "host.qemu", "v7 behaviour: FRAME_REQUEST with resource_id=0 is answered"),
    ("stale_qemu", "stale_qemu", "host.qemu", "the host log's VERSION differs from the expected one"),
    ("sysroot_paths", "qemu_dylib_paths", "host.qemu_binary", "the QEMU binary has sysroot load commands"),
    ("container_oom", "container_oom", "desktop.session", "the desktop container restarts with OOMKilled"),
    ("slow_after_running", "slow_after_running", "stack.api", "each successive session is 30 % slower"),
    # provider "helix-app": Helix.app's bundled QEMU is a real qemu-system-aarch64 (host/helix_app.py)
    ("qemu_exit_at_start", "qemu_exit_at_start", "host.helix_app",
     "the bundled QEMU exits as it starts: a real QEMU rejects the app's `-spice … gl=es`"),
    ("qemu_deadlock", "qemu_deadlock", "host.helix_app", "once the guest booted QEMU's main loop stops (SIGSTOP): "
     "SSH, HTTP and the QMP greeting time out at 0 % CPU while `[HELIX] … dropping frame` lines go on"),
    ("edk2_no_boot", "edk2_no_boot", "host.helix_app",
     "QEMU runs and answers QMP, the guest never boots: EDK2 `Out Of Resource!` and a UEFI shell on the console"),
    ("stale_qemu_pid", "stale_qemu_pid", "host.helix_app",
     "a real QEMU left over holds the QMP port and is named in the data dir's qemu.pid"),
    ("helix_app_running", "helix_app_running", "host.helix_app",
     "Helix.app (`Helix for Mac`) runs with the same data dir: its killStaleQEMU would kill the harness's QEMU"),
]
#: Faults only the helix-app provider has (they need a real qemu-system-aarch64).
HELIX_APP_FAULTS = frozenset({"qemu_exit_at_start", "qemu_deadlock", "edk2_no_boot", "stale_qemu_pid",
                              "helix_app_running"})

FAULTS: dict[str, Fault] = {row[0]: Fault(*row) for row in _FAULT_ROWS}


def parse_faults(spec: str | list[str] | tuple[str, ...] | frozenset[str] | None) -> frozenset[str]:
    """`"a,b"` or a list of names → validated frozenset. Unknown names raise SimConfigError."""
    if not spec:
        return frozenset()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = frozenset(n.strip() for item in items for n in str(item).split(",") if n.strip())
    unknown = sorted(names - FAULTS.keys())
    if unknown:
        raise SimConfigError(
            f"unknown sim fault(s): {', '.join(unknown)}",
            hint=f"known faults: {', '.join(FAULTS)}",
        )
    return names


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes one simulator instance. Ports of 0 are picked free at start."""

    root: Path
    fps: float = 40.0
    width: int = 1280
    height: int = 720
    video_mode: str = "scanout"
    qemu_behaviour: str = "feb5-reject"
    gop: int = 120
    bitrate_kbps: int = 4000
    faults: frozenset[str] = frozenset()
    vm_id: str = "17DC4F96-F1A9-4B51-962B-03D85998E0E7"
    vm_name: str = "Linux"
    boot_delay_s: float = 1.0
    sandbox_delay_s: float = 1.0
    session_delay_s: float = 1.5
    qemu_idle_timeout_s: float = 60.0
    video_grace_s: float = 5.0
    #: Multiplies every modelled delay: boot, sandbox, session start and the faults' timings
    #: (when a freeze, an OOM kill or a mid-stream crash happens). < 1 makes fault runs fast.
    delay_scale: float = 1.0
    #: utmctl_osstatus: how many start/stop Apple Events fail before UTM answers again. More than the
    #: driver's retries (3), so the first run fails and a rerun on the same simulator succeeds.
    osstatus_failures: int = 4
    #: The API's WebSocket stream pings every this many seconds (ws_stream.go: 5 s).
    ws_ping_interval_s: float = 5.0
    #: The guest's helix CLI, as spectask.go has them: ``start --wait`` polls every ``cli_wait_poll_s``
    #: (scaled by ``delay_scale``) for ``cli_wait_timeout_s``; ``stream`` prints its statistics every
    #: ``cli_stats_interval_s``. The VM passes them to the CLI in the guest's environment.
    cli_wait_poll_s: float = 2.0
    cli_wait_timeout_s: float = 180.0
    cli_stats_interval_s: float = 2.0
    #: Which helix CLI the guest's ``go build`` makes (:data:`CLI_GENERATIONS`): its flags and help text.
    cli: str = "2026-11"
    #: desktop-bridge's viewer registry (``session_registry.go``): a viewer that sent no data message for
    #: ``stale_client_timeout_s`` is dropped by the sweep that runs every ``stale_sweep_interval_s`` (30 s /
    #: 10 s upstream; server constants, not scaled by ``delay_scale``).
    stale_client_timeout_s: float = 30.0
    stale_sweep_interval_s: float = 10.0
    #: Newer upstream: until a viewer's first frame the stream sends a text StreamStatus ``starting_video``
    #: every ``stream_status_interval_s``; after ``first_frame_timeout_s`` without one it sends 0x31 (the
    #: retryable "no video frame ... within 10s") and drops the connection. Protocol timers, not scaled.
    stream_status_interval_s: float = 2.0
    first_frame_timeout_s: float = 10.0
    api_key: str = field(default_factory=lambda: "hl-" + secrets.token_hex(16))
    project_id: str = "prj_01jsimsimsimsimsimsimsimsi"
    agent_id: str = "app_01jsimsimsimsimsimsimsimsi"
    ssh_port: int = 0
    api_port: int = 0
    frame_export_port: int = 0
    seed: int = 0
    #: "utm" (UTM.app and utmctl) or "helix-app" (Helix.app's bundled QEMU: a real qemu-system-aarch64).
    provider: str = "utm"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "faults", parse_faults(self.faults))
        if self.qemu_behaviour not in QEMU_BEHAVIOURS:
            raise SimConfigError(
                f"unknown sim QEMU behaviour {self.qemu_behaviour!r}", hint=f"use one of {', '.join(QEMU_BEHAVIOURS)}"
            )
        if self.provider not in PROVIDERS:
            raise SimConfigError(f"unknown sim provider {self.provider!r}", hint=f"use one of {', '.join(PROVIDERS)}")
        wrong = sorted(self.faults & HELIX_APP_FAULTS) if self.provider != "helix-app" else []
        if wrong:
            raise SimConfigError(f"sim fault(s) {', '.join(wrong)} need provider helix-app",
                                 hint="pass --provider helix-app (pytest: --sim-provider helix-app)")
        if self.video_mode not in VIDEO_MODES:
            raise SimConfigError(f"unknown sim video mode {self.video_mode!r}", hint=f"use one of {', '.join(VIDEO_MODES)}")
        if not (1 <= self.fps <= 240):
            raise SimConfigError(f"sim fps must be within 1..240, got {self.fps}")
        if self.width % 16 or self.height % 16 or not (64 <= self.width <= 4096) or not (64 <= self.height <= 2304):
            raise SimConfigError(f"sim resolution must be multiples of 16 within 64..4096x2304, got {self.width}x{self.height}")
        if self.gop < 1:
            raise SimConfigError(f"sim gop must be >= 1, got {self.gop}")
        if not (0.01 <= self.delay_scale <= 10):
            raise SimConfigError(f"sim delay_scale must be within 0.01..10, got {self.delay_scale}")
        if self.osstatus_failures < 0:
            raise SimConfigError(f"sim osstatus_failures must be >= 0, got {self.osstatus_failures}")
        if self.cli not in CLI_GENERATIONS:
            raise SimConfigError(f"unknown sim CLI generation {self.cli!r}", hint=f"use one of {', '.join(CLI_GENERATIONS)}")
        for name, high in (("ws_ping_interval_s", 3600.0), ("cli_wait_poll_s", 3600.0),
                           ("cli_wait_timeout_s", 86400.0), ("cli_stats_interval_s", 3600.0),
                           ("stale_client_timeout_s", 86400.0), ("stale_sweep_interval_s", 3600.0),
                           ("stream_status_interval_s", 3600.0), ("first_frame_timeout_s", 86400.0)):
            value = getattr(self, name)
            if not (0.001 <= value <= high):
                raise SimConfigError(f"sim {name} must be within 0.001..{high:g} s, got {value}")

    @property
    def effective_qemu_behaviour(self) -> str:
        """Faults override the configured behaviour (qemu_ignores_zero = v10, qemu_accepts_zero = v7)."""
        if "qemu_ignores_zero" in self.faults:
            return "v10-ignore"
        if "qemu_accepts_zero" in self.faults:
            return "v7-fallback"
        return self.qemu_behaviour

    @property
    def effective_fps(self) -> float:
        return 20.0 if "low_fps" in self.faults else self.fps

    @property
    def qemu_version(self) -> str:
        """The VERSION marker the simulated QEMU binary carries."""
        return QEMU_VERSIONS[self.effective_qemu_behaviour]

    @property
    def logged_qemu_version(self) -> str:
        """The VERSION marker the running QEMU logs (differs from the binary's under `stale_qemu`)."""
        if "stale_qemu" in self.faults:
            return "2026-02-04-stale-build"
        return self.qemu_version

    def delay(self, seconds: float) -> float:
        """A modelled delay, scaled by :attr:`delay_scale`."""
        return seconds * self.delay_scale

    def has(self, fault: str) -> bool:
        if fault not in FAULTS:
            raise SimConfigError(f"unknown sim fault {fault!r}")
        return fault in self.faults

    def with_(self, **changes) -> "SimConfig":
        return replace(self, **changes)
