"""Target configuration: which Mac/VM (or simulator) the suite drives, and how.

A target is a TOML file (see ``fixtures/targets/utm.example.toml``). Values are layered:
defaults < TOML file < environment (``HELIX_E2E_*``) < explicit overrides (pytest options).
Everything is validated once, here; drivers receive frozen, typed sections.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

UTM_HELIX_DEBUG_LOG = "~/Library/Group Containers/WDNLXAD4W8.com.utmapp.UTM/helix-debug.log"
UTM_CRASH_DIR = "~/Library/Logs/DiagnosticReports"
UTMCTL = "/Applications/UTM.app/Contents/MacOS/utmctl"
#: The env var naming the target file (the pytest option ``--target`` wins over it).
TARGET_ENV = "HELIX_E2E_TARGET"
#: When a stream's frames are decoded (``[stream] analysis``, ``--analysis``; see ``harness.analysis.modes``).
ANALYSIS_MODES = ("live", "deferred", "sampled")


def _expand(path: str | None) -> str | None:
    return os.path.expanduser(path) if path else path


@dataclass(frozen=True)
class VmConfig:
    id: str = ""
    utmctl: str = UTMCTL
    provider: str = "utm"
    #: Other VMs (UUIDs or names) that parallel workers (pytest -n N) may take, one each.
    pool: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.provider not in ("utm",):
            raise ConfigError(f"[vm] provider {self.provider!r} is not supported", hint="use provider = \"utm\"")


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


@dataclass(frozen=True)
class GuestConfig:
    helix_dir: str = "~/helix"
    compose_file: str = "docker-compose.dev.yaml"
    sandbox_service: str = "sandbox-macos"
    compose_profiles: str = "code-macos"
    api_port: int = 8080
    cli_path: str = "/tmp/helix"
    usercreds: str = ".env.usercreds"  # relative to helix_dir unless absolute

    def __post_init__(self) -> None:
        if not (0 < self.api_port < 65536):
            raise ConfigError(f"[guest] api_port must be 1..65535, got {self.api_port}")

    @property
    def usercreds_path(self) -> str:
        """The creds file in the guest (relative paths are under helix_dir)."""
        if self.usercreds.startswith(("/", "~")):
            return self.usercreds
        return f"{self.helix_dir}/{self.usercreds}"

    @property
    def cd_helix(self) -> str:
        """A shell `cd` to helix_dir that keeps a leading `~` for the guest's shell to expand."""
        import shlex

        d = self.helix_dir
        return f"cd {d}" if d.startswith("~") and " " not in d else f"cd {shlex.quote(d)}"


@dataclass(frozen=True)
class FrameExportConfig:
    host: str = "127.0.0.1"
    port: int = 15937

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536):
            raise ConfigError(f"[frame_export] port must be 1..65535, got {self.port}")


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
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"[timeouts] {f.name} must be a positive number, got {value!r}")

    def __getitem__(self, phase: str) -> float:
        """The scaled timeout of a phase."""
        if phase == "scale" or phase not in {f.name for f in fields(self)}:
            raise ConfigError(f"unknown timeout phase {phase!r}")
        return float(getattr(self, phase)) * self.scale


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
        if not (0 < self.fps_min <= self.fps_max):
            raise ConfigError(f"[stream] need 0 < fps_min <= fps_max, got {self.fps_min}..{self.fps_max}")
        if self.duration <= 0:
            raise ConfigError(f"[stream] duration must be > 0, got {self.duration}")
        if self.warmup < 0 or self.warmup >= self.duration:
            raise ConfigError(f"[stream] warmup must be in [0, duration), got {self.warmup}")
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
    sim: Mapping[str, Any] = field(default_factory=dict)  # only read by helix_sim

    @property
    def is_sim(self) -> bool:
        return bool(self.sim)

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
    if kind != "utm":
        raise ConfigError(f"{source}: kind = {kind!r} is not supported", hint='use kind = "utm"')
    cfg = TargetConfig(name=str(data.get("name", Path(source).stem)), source=source)
    sections = {}
    for key, cls in _SECTIONS.items():
        if key in data:
            sections[key] = _build_section(cls, key, data[key], getattr(cfg, key), source)
    sim = data.get("sim", {})
    if not isinstance(sim, Mapping):
        raise ConfigError(f"{source}: [sim] must be a table")
    return replace(cfg, **sections, sim=dict(sim))


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
