"""Target configuration: which Mac/VM (or simulator) the suite drives, and how.

A target is a TOML file (see ``fixtures/targets/utm.example.toml``). Values are layered:
defaults < TOML file < environment (``HELIX_E2E_*``) < explicit overrides (pytest options).
Everything is validated once, here; drivers receive frozen, typed sections.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

UTM_HELIX_DEBUG_LOG = "~/Library/Group Containers/WDNLXAD4W8.com.utmapp.UTM/helix-debug.log"
UTM_CRASH_DIR = "~/Library/Logs/DiagnosticReports"
UTMCTL = "/Applications/UTM.app/Contents/MacOS/utmctl"
#: Helix.app (helix-app-vm.md §1, §4): the bundle and its data dir; QEMU, firmware, ICD and key default inside them.
HELIX_APP = "/Applications/Helix.app"
HELIX_DATA_DIR = "~/Library/Application Support/Helix"
#: The VM providers a target can name in ``[vm] provider`` (or ``kind``).
PROVIDERS = ("utm", "helix-app")
#: Helix.app's hard-coded host ports: SSH, API, QMP, frame export (helix-app-vm.md §4).
HELIX_APP_PORTS = {"ssh_port": 41222, "api_port": 41080, "qmp_port": 41444, "frame_export_port": 41937}
_HOSTMEM_RE = re.compile(r"[1-9][0-9]{0,5}[MG]")
#: The env var naming the target file (the pytest option ``--target`` wins over it).
TARGET_ENV = "HELIX_E2E_TARGET"
#: When a stream's frames are decoded (``[stream] analysis``, ``--analysis``; see ``harness.analysis.modes``).
ANALYSIS_MODES = ("live", "deferred", "sampled")


def _expand(path: str | None) -> str | None:
    return os.path.expanduser(path) if path else path


# ---------------------------------------------------------------- value checks (data, never shell)

#: Characters of a plain path: letters, digits, space and ``_ . / + , @ % = : -``; ``~`` only as a leading
#: ``~`` or ``~/`` (the guest user's home). No shell metacharacters, quotes, backslashes, globs or control
#: characters, so a value can never change the meaning of a command it reaches.
_PLAIN_PATH_RE = re.compile(r"(?:~(?=/|$))?[\w ./+,@%=:-]*")
#: A compose service or profile name.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_HOST_RE = re.compile(r"[A-Za-z0-9._:%\[\]-]{1,253}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_TIMEOUT_S = 86400.0
TIMEOUT_SCALE_RANGE = (0.01, 100.0)


def shown(value: object) -> str:
    """A config value as an error message quotes it: its repr, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:60]}… ({len(value) if isinstance(value, str) else '?'} chars)"


def check_plain_path(value: object, key: str) -> None:
    """``key`` must be a plain path (see ``_PLAIN_PATH_RE``); spaces and a leading ``~/`` are allowed."""
    if not isinstance(value, str) or not value or len(value) > 1024 or value.startswith("-") \
            or not _PLAIN_PATH_RE.fullmatch(value):
        raise ConfigError(
            f"{key} must be a plain path, got {shown(value)}",
            hint="use letters, digits, spaces and _ . / + , @ % = : - (a leading ~/ means the guest user's home); "
                 "no shell metacharacters (; $ ` | & < > ( ) { } * ? [ ] \\), quotes or newlines",
        )


def check_plain_name(value: object, key: str, *, lists: bool = False, empty: bool = False) -> None:
    """``key`` must be a plain name (``A-Z a-z 0-9 _ . -``), or with ``lists`` a comma-separated list of them."""
    ok = isinstance(value, str) and len(value) <= 1024
    if ok and not (empty and value == ""):
        parts = value.split(",") if lists else [value]
        ok = all(_NAME_RE.fullmatch(part) for part in parts)
    if not ok:
        what = "a comma-separated list of plain names" if lists else "a plain name"
        raise ConfigError(f"{key} must be {what} (letters, digits, _ . -), got {shown(value)}")


def check_host(value: object, key: str) -> None:
    """``key`` must be a host name or an IP address."""
    if not isinstance(value, str) or not _HOST_RE.fullmatch(value) or any(len(p) > 63 for p in value.split(".")):
        raise ConfigError(f"{key} must be a host name or IP address (at most 253 characters, labels of at most 63), "
                          f"got {shown(value)}")


def check_number(value: object, key: str, lo: float, hi: float, *, lo_open: bool = False) -> None:
    """``key`` must be a finite number in [lo, hi] (``(lo, hi]`` with ``lo_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        raise ConfigError(f"{key} must be a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value!r}")


def check_int(value: object, key: str, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{key} must be an integer in {lo}..{hi}, got {value!r}")


@dataclass(frozen=True)
class VmConfig:
    id: str = ""
    utmctl: str = UTMCTL
    #: Who runs the VM: "utm" (UTM.app via utmctl) or "helix-app" (Helix.app's bundled QEMU, run by the harness).
    provider: str = "utm"
    #: Other VMs (UUIDs or names) that parallel workers (pytest -n N) may take, one each.
    pool: tuple[str, ...] = ()
    # -- provider "helix-app" (helix-app-vm.md §1 command line, §4 ports and data dir, §5 Option B) --------------
    app: str = HELIX_APP  # the bundle (the doctor checks its Mach-O files)
    qemu: str = ""  # "": <app>/Contents/MacOS/qemu-system-aarch64 (like the app's HELIX_QEMU_PATH when set)
    firmware_dir: str = ""  # "": <app>/Contents/Resources/firmware (edk2-aarch64-code.fd, edk2-arm-vars.fd)
    vulkan_icd: str = ""  # "": <app>/Contents/Resources/vulkan/icd.d/kosmickrisp_mesa_icd.json
    data_dir: str = HELIX_DATA_DIR  # settings.json, qemu.pid, ssh/, vm/helix-desktop/
    vm_dir: str = ""  # "": <data_dir>/vm/helix-desktop (disk.qcow2, zfs-data.qcow2, seed.iso)
    key: str = ""  # "": <data_dir>/ssh/helix_ed25519 (the app's key; the [ssh] key defaults to it)
    ssh_port: int = HELIX_APP_PORTS["ssh_port"]
    api_port: int = HELIX_APP_PORTS["api_port"]
    qmp_port: int = HELIX_APP_PORTS["qmp_port"]
    frame_export_port: int = HELIX_APP_PORTS["frame_export_port"]
    cpus: int = 0  # 0: settings.json vm_cpus, else the app's default (half the host's CPUs, at least 2)
    memory_mb: int = 0  # 0: settings.json vm_memory_mb, else half the host's RAM, at least 6144
    hostmem: str = ""  # "": the app's rule (host RAM <= 16 GB: 256M, else 1024M)
    storage_script: str = ""  # host path of for-mac/scripts/init-zfs-pool.sh; "": import the pool, start Docker
    helix_cli: str = ""  # host path of the darwin helix CLI; "": sessions start over REST, CLI cross-check skipped
    powerdown_wait: float = 10.0  # seconds QEMU gets after system_powerdown before `quit`, then SIGKILL

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ConfigError(f"[vm] provider {self.provider!r} is not supported",
                              hint=f"use one of: {', '.join(repr(p) for p in PROVIDERS)}")
        for name, value in (("id", self.id), *((f"pool[{i}]", v) for i, v in enumerate(self.pool))):
            if not isinstance(value, str) or len(value) > 256 or _CONTROL_RE.search(value):
                raise ConfigError(f"[vm] {name} must be a VM UUID or name without control characters, got "
                                  f"{shown(value)}")
        for name in ("app", "data_dir"):
            check_plain_path(getattr(self, name), f"[vm] {name}")
        for name in ("qemu", "firmware_dir", "vulkan_icd", "vm_dir", "key", "storage_script", "helix_cli"):
            if getattr(self, name):
                check_plain_path(getattr(self, name), f"[vm] {name}")
        ports = {name: getattr(self, name) for name in HELIX_APP_PORTS}
        for name, port in ports.items():
            check_int(port, f"[vm] {name}", 1, 65535)
        if len(set(ports.values())) != len(ports):
            raise ConfigError(f"[vm] ssh_port, api_port, qmp_port and frame_export_port must differ, got {ports}")
        check_int(self.cpus, "[vm] cpus", 0, 256)
        if self.memory_mb:
            check_int(self.memory_mb, "[vm] memory_mb", 1024, 1 << 20)
        if self.hostmem and not _HOSTMEM_RE.fullmatch(self.hostmem):
            raise ConfigError(f"[vm] hostmem must look like 256M or 1G, got {shown(self.hostmem)}")
        check_number(self.powerdown_wait, "[vm] powerdown_wait", 0, 600)

    # The helix-app paths, with the app's defaults filled in (host paths, ~ expanded).
    @property
    def qemu_path(self) -> str:
        return expand(self.qemu) if self.qemu else os.path.join(expand(self.app), "Contents/MacOS/qemu-system-aarch64")

    @property
    def firmware_path(self) -> str:
        return expand(self.firmware_dir) if self.firmware_dir else os.path.join(expand(self.app),
                                                                              "Contents/Resources/firmware")

    @property
    def vulkan_icd_path(self) -> str:
        return expand(self.vulkan_icd) if self.vulkan_icd else os.path.join(
            expand(self.app), "Contents/Resources/vulkan/icd.d/kosmickrisp_mesa_icd.json")

    @property
    def vm_dir_path(self) -> str:
        return expand(self.vm_dir) if self.vm_dir else os.path.join(expand(self.data_dir), "vm/helix-desktop")

    @property
    def key_path(self) -> str:
        return expand(self.key) if self.key else os.path.join(expand(self.data_dir), "ssh/helix_ed25519")


@dataclass(frozen=True)
class SshConfig:
    host: str = "127.0.0.1"
    port: int = 2222
    user: str = "helix"
    key: str = "~/.ssh/id_ed25519"
    known_hosts: str = "~/.ssh/known_hosts"
    trust_on_first_use: bool = False
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536):
            raise ConfigError(f"[ssh] port must be 1..65535, got {self.port}")
        if not self.user:
            raise ConfigError("[ssh] user must not be empty")
        if not isinstance(self.user, str) or not _USER_RE.fullmatch(self.user):
            raise ConfigError(f"[ssh] user must be a plain user name (letters, digits, _ . -), got {shown(self.user)}")
        check_host(self.host, "[ssh] host")
        check_number(self.connect_timeout, "[ssh] connect_timeout", 0, 3600, lo_open=True)


@dataclass(frozen=True)
class GuestConfig:
    helix_dir: str = "~/helix"
    compose_file: str = "docker-compose.dev.yaml"
    sandbox_service: str = "sandbox-macos"
    compose_profiles: str = "code-macos"
    api_port: int = 8080
    cli_path: str = "/tmp/helix"
    usercreds: str = ".env.usercreds"  # relative to helix_dir unless absolute
    #: helix-app: where the guest's helix-drm-manager reads QEMU_ADDR (the app's env injection writes it).
    drm_env_file: str = "/etc/helix-drm-manager.env"

    def __post_init__(self) -> None:
        if not (0 < self.api_port < 65536):
            raise ConfigError(f"[guest] api_port must be 1..65535, got {self.api_port}")
        for name in ("helix_dir", "compose_file", "cli_path", "usercreds", "drm_env_file"):
            check_plain_path(getattr(self, name), f"[guest] {name}")
        check_plain_name(self.sandbox_service, "[guest] sandbox_service")
        check_plain_name(self.compose_profiles, "[guest] compose_profiles", lists=True, empty=True)

    @property
    def usercreds_path(self) -> str:
        """The creds file in the guest (relative paths are under helix_dir)."""
        if self.usercreds.startswith(("/", "~")):
            return self.usercreds
        return f"{self.helix_dir}/{self.usercreds}"

    @property
    def cd_helix(self) -> str:
        """A shell `cd` to helix_dir (quoted; a leading `~` still means the guest user's home)."""
        return f"cd {shell_path(self.helix_dir)}"


def shell_path(path: str) -> str:
    """A guest path as one shell word: quoted, so a config value is data and never shell, with a leading
    ``~`` or ``~/`` kept as the guest user's home (``~/my helix`` → ``"$HOME"/'my helix'``)."""
    import shlex

    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


@dataclass(frozen=True)
class FrameExportConfig:
    host: str = "127.0.0.1"
    port: int = 15937

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536):
            raise ConfigError(f"[frame_export] port must be 1..65535, got {self.port}")
        check_host(self.host, "[frame_export] host")


@dataclass(frozen=True)
class HostConfig:
    helix_debug_log: str = UTM_HELIX_DEBUG_LOG
    crash_dir: str = UTM_CRASH_DIR
    crash_glob: str = "QEMULauncher-*.ips"


@dataclass(frozen=True)
class Timeouts:
    """Per-phase timeouts in seconds; every one is multiplied by ``scale``."""

    scale: float = 1.0
    boot: float = 180.0
    ssh: float = 120.0
    stack: float = 300.0
    session: float = 180.0
    first_frame: float = 30.0
    stream_extra: float = 30.0
    probe: float = 10.0
    command: float = 60.0
    build: float = 300.0
    teardown: float = 60.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"[timeouts] {f.name} must be a positive number, got {value!r}")
            if f.name != "scale" and value > MAX_TIMEOUT_S:
                raise ConfigError(f"[timeouts] {f.name} must be at most {MAX_TIMEOUT_S:g} seconds, got {value!r}")
        lo, hi = TIMEOUT_SCALE_RANGE
        if not lo <= self.scale <= hi:
            raise ConfigError(f"[timeouts] scale must be in [{lo:g}, {hi:g}], got {self.scale!r}",
                              hint="--timeout-scale / HELIX_E2E_TIMEOUT_SCALE multiply every phase timeout")

    def __getitem__(self, phase: str) -> float:
        """The scaled timeout of a phase."""
        if phase == "scale" or phase not in {f.name for f in fields(self)}:
            raise ConfigError(f"unknown timeout phase {phase!r}")
        return float(getattr(self, phase)) * self.scale


#: Seconds of stream the checks need after the warm-up (see StreamConfig's duration check).
MIN_MEASURED_S = 1.0


@dataclass(frozen=True)
class StreamConfig:
    fps_min: float = 30.0
    fps_max: float = 60.0
    duration: float = 30.0
    warmup: float = 2.0
    width: int = 1920
    height: int = 1080
    fps: int = 60
    bitrate: int = 10000
    video_mode: str = ""
    cli_fps_tolerance: float = 0.15
    cli_cross_check: bool = True
    #: When the frames are decoded: live | deferred | sampled; "" = deferred on a real Mac, live on the sim.
    analysis: str = ""

    def __post_init__(self) -> None:
        for name in ("fps_min", "fps_max", "duration", "warmup", "cli_fps_tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"[stream] {name} must be a finite number, got {value!r}")
        if not (0 < self.fps_min <= self.fps_max):
            raise ConfigError(f"[stream] need 0 < fps_min <= fps_max, got {self.fps_min}..{self.fps_max}")
        if self.duration <= 0:
            raise ConfigError(f"[stream] duration must be > 0, got {self.duration}")
        check_number(self.duration, "[stream] duration", 0, MAX_TIMEOUT_S, lo_open=True)
        if self.warmup < 0 or self.warmup >= self.duration:
            raise ConfigError(f"[stream] warmup must be in [0, duration), got {self.warmup}")
        if self.duration < self.warmup + MIN_MEASURED_S:
            raise ConfigError(
                f"[stream] duration must be at least warmup + {MIN_MEASURED_S:g}s = {self.warmup + MIN_MEASURED_S:g}s, "
                f"got {self.duration:g}s",
                hint=f"the FPS check measures whole 1-s windows after the {self.warmup:g}s warm-up, so it needs at "
                f"least {MIN_MEASURED_S:g}s of stream after it; use --stream-duration "
                f"{self.warmup + MIN_MEASURED_S:g} or more")
        check_int(self.width, "[stream] width", 1, 65535)  # u16 in the frame header
        check_int(self.height, "[stream] height", 1, 65535)
        check_int(self.fps, "[stream] fps", 1, 255)  # u8 in StreamInit
        check_int(self.bitrate, "[stream] bitrate", 1, 2**31 - 1)
        check_number(self.cli_fps_tolerance, "[stream] cli_fps_tolerance", 0, 1)
        if self.video_mode not in ("", "scanout", "shm", "native", "zerocopy"):
            raise ConfigError(f"[stream] unknown video_mode {self.video_mode!r}")
        if self.analysis and self.analysis not in ANALYSIS_MODES:
            raise ConfigError(f"[stream] unknown analysis {self.analysis!r}", hint=f"one of: {', '.join(ANALYSIS_MODES)}")


@dataclass(frozen=True)
class TargetConfig:
    name: str = "target"
    source: str = ""  # the file it came from
    vm: VmConfig = field(default_factory=VmConfig)
    ssh: SshConfig = field(default_factory=SshConfig)
    guest: GuestConfig = field(default_factory=GuestConfig)
    frame_export: FrameExportConfig = field(default_factory=FrameExportConfig)
    host: HostConfig = field(default_factory=HostConfig)
    timeouts: Timeouts = field(default_factory=Timeouts)
    stream: StreamConfig = field(default_factory=StreamConfig)
    sim: Mapping[str, Any] | None = None  # the [sim] table (only read by helix_sim); None: a real Mac

    def __post_init__(self) -> None:
        vm = self.vm
        if vm.provider == "helix-app":
            # QEMU forwards [vm] ssh_port and serves helix-port [vm] frame_export_port: the drivers must use the same.
            for key, have, want in (("[ssh] port", self.ssh.port, ("[vm] ssh_port", vm.ssh_port)),
                                    ("[frame_export] port", self.frame_export.port,
                                     ("[vm] frame_export_port", vm.frame_export_port))):
                if have != want[1]:
                    raise ConfigError(f"{key} ({have}) must equal {want[0]} ({want[1]}) with [vm] provider "
                                      "\"helix-app\": QEMU forwards that port", hint=f"set only {want[0]}")

    @property
    def is_helix_app(self) -> bool:
        return self.vm.provider == "helix-app"

    @property
    def is_sim(self) -> bool:
        """A target with a ``[sim]`` table, even an empty one, is a simulator (never silently a real Mac)."""
        return self.sim is not None

    @property
    def analysis_mode(self) -> str:
        """``[stream] analysis``, else ``live`` on the simulator and ``deferred`` on a real Mac (where the
        harness would compete with the VM it measures)."""
        return self.stream.analysis or ("live" if self.is_sim else "deferred")

    def with_overrides(self, overrides: Mapping[str, Any]) -> "TargetConfig":
        """Apply dotted overrides such as ``{"stream.duration": 5, "timeouts.scale": 2}``."""
        return _apply(self, overrides, origin="override")


_SECTIONS = {
    "vm": VmConfig,
    "ssh": SshConfig,
    "guest": GuestConfig,
    "frame_export": FrameExportConfig,
    "host": HostConfig,
    "timeouts": Timeouts,
    "stream": StreamConfig,
}

#: Environment overrides: env var → dotted key.
ENV_OVERRIDES = {
    "HELIX_E2E_VM_ID": "vm.id",
    "HELIX_E2E_UTMCTL": "vm.utmctl",
    "HELIX_E2E_SSH_HOST": "ssh.host",
    "HELIX_E2E_SSH_PORT": "ssh.port",
    "HELIX_E2E_SSH_USER": "ssh.user",
    "HELIX_E2E_SSH_KEY": "ssh.key",
    "HELIX_E2E_KNOWN_HOSTS": "ssh.known_hosts",
    "HELIX_E2E_FRAME_EXPORT_PORT": "frame_export.port",
    "HELIX_E2E_HELIX_DEBUG_LOG": "host.helix_debug_log",
    "HELIX_E2E_CRASH_DIR": "host.crash_dir",
    "HELIX_E2E_TIMEOUT_SCALE": "timeouts.scale",
    "HELIX_E2E_STREAM_DURATION": "stream.duration",
    "HELIX_E2E_VIDEO_MODE": "stream.video_mode",
}


def _coerce(value: Any, current: Any, key: str, origin: str) -> Any:
    """Turn strings from env/options into the type of the current value."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} ({origin}) must be a boolean, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} ({origin}) must be an integer, got {value!r}") from None
    if isinstance(current, float):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{key} ({origin}) must be a number, got {value!r}") from None
        if not math.isfinite(number):  # a nan/inf timeout or duration would wait forever
            raise ConfigError(f"{key} ({origin}) must be a finite number, got {value!r}")
        return number
    if isinstance(current, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigError(f"{key} ({origin}) must be a list of strings, got {value!r}")
        return tuple(v.strip() for v in value)
    if isinstance(current, str):
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} ({origin}) must be a string, got {value!r}")
        return str(value)
    return value


def _build_section(cls, key: str, raw: Any, base, origin: str):
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{key}] ({origin}) must be a table, got {type(raw).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"[{key}] ({origin}) has unknown key(s): {', '.join(unknown)}", hint=f"known keys: {', '.join(sorted(known))}"
        )
    values = {name: _coerce(value, getattr(base, name), f"{key}.{name}", origin) for name, value in raw.items()}
    try:
        return replace(base, **values)
    except ConfigError as exc:
        raise ConfigError(f"{exc.message} ({origin})", hint=exc.hint) from None


def _apply(cfg: TargetConfig, overrides: Mapping[str, Any], origin: str) -> TargetConfig:
    grouped: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        if "." in dotted:
            section, name = dotted.split(".", 1)
            if section not in _SECTIONS:
                raise ConfigError(f"unknown config section in {dotted!r} ({origin})")
            grouped.setdefault(section, {})[name] = value
        elif dotted in ("name",):
            top[dotted] = str(value)
        else:
            raise ConfigError(f"unknown config key {dotted!r} ({origin})")
    changes = {s: _build_section(_SECTIONS[s], s, vals, getattr(cfg, s), origin) for s, vals in grouped.items()}
    vm = changes.get("vm", cfg.vm)
    if vm.provider == "helix-app":  # [ssh] port and [frame_export] port follow [vm]'s unless given too
        if "port" not in grouped.get("ssh", {}):
            changes["ssh"] = replace(changes.get("ssh", cfg.ssh), port=vm.ssh_port)
        if "port" not in grouped.get("frame_export", {}):
            changes["frame_export"] = replace(changes.get("frame_export", cfg.frame_export), port=vm.frame_export_port)
    return replace(cfg, **changes, **top)


def parse_target(data: Mapping[str, Any], *, source: str = "<memory>") -> TargetConfig:
    """Validate a parsed TOML mapping into a TargetConfig."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the target config must be a TOML table")
    unknown = sorted(set(data) - set(_SECTIONS) - {"name", "kind", "sim"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key(s): {', '.join(unknown)}",
            hint=f"known: name, kind, sim, {', '.join(_SECTIONS)}",
        )
    kind = data.get("kind", "utm")
    if kind not in PROVIDERS:
        raise ConfigError(f"{source}: kind = {kind!r} is not supported",
                          hint=f"use one of: {', '.join(repr(p) for p in PROVIDERS)}")
    cfg = TargetConfig(name=str(data.get("name", Path(source).stem)), source=source)
    sections = {}
    vm_raw = data.get("vm", {})
    if kind != "utm":  # `kind = "helix-app"` names the provider too
        if isinstance(vm_raw, Mapping) and vm_raw.get("provider", kind) != kind:
            raise ConfigError(f"{source}: kind = {kind!r} but [vm] provider = {vm_raw.get('provider')!r}",
                              hint="drop one of them")
        vm_raw = {**vm_raw, "provider": kind} if isinstance(vm_raw, Mapping) else vm_raw
    if "vm" in data or kind != "utm":
        sections["vm"] = _build_section(VmConfig, "vm", vm_raw, cfg.vm, source)
    if "vm" in sections and sections["vm"].provider == "helix-app":
        vm = sections["vm"]
        # Helix.app's SSH: ubuntu@<ssh_port> with the app's key; its frame export on <frame_export_port>.
        cfg = replace(cfg, vm=vm, ssh=replace(cfg.ssh, port=vm.ssh_port, user="ubuntu", key=vm.key_path),
                      frame_export=replace(cfg.frame_export, port=vm.frame_export_port))
    for key, cls in _SECTIONS.items():
        if key in data and key != "vm":
            sections[key] = _build_section(cls, key, data[key], getattr(cfg, key), source)
    sim = data.get("sim")
    if sim is not None and not isinstance(sim, Mapping):
        raise ConfigError(f"{source}: [sim] must be a table")
    return replace(cfg, **sections, sim=dict(sim) if sim is not None else None)


def load_target(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> TargetConfig:
    """Load a TOML target file, then apply ``HELIX_E2E_*`` environment overrides."""
    p = Path(os.path.expanduser(str(path)))
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"target config {p} does not exist", hint="pass --target FILE or set HELIX_E2E_TARGET"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read target config {p}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"target config {p} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"target config {p} is not valid TOML: {exc}") from None
    except (ValueError, RecursionError) as exc:  # tomllib: a 4300+ digit integer, arrays nested too deep
        raise ConfigError(f"target config {p} is not usable TOML: {type(exc).__name__}: {str(exc)[:200]}") from None
    cfg = parse_target(data, source=str(p))
    env = os.environ if env is None else env
    env_values = {key: env[name] for name, key in ENV_OVERRIDES.items() if env.get(name)}
    return _apply(cfg, env_values, origin="environment") if env_values else cfg


def expand(path: str) -> str:
    """Expand ``~`` in a host-side path from the config."""
    return _expand(path) or ""
