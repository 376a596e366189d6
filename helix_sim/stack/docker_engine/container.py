"""A container of the simulated Docker engine (:class:`SimContainer`): its state machine, inspect and
list JSON, and its log (bounded, with stdout/stderr and nanosecond timestamps)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ...errors import SimError
from ...gofmt import human_duration, rfc3339_nano

if TYPE_CHECKING:
    from .engine import DockerEngine

COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
#: Multiplexed stream ids, as in the 8-byte frame header.
STREAMS = {"stdin": 0, "stdout": 1, "stderr": 2}
_MAX_LOG_LINES = 50_000

ServiceCallback = Callable[["SimContainer"], Awaitable[None]]


class EngineError(SimError):
    """A Docker Engine request failed. ``status`` is the HTTP status dockerd would answer."""

    default_phase = "stack"

    def __init__(self, message: str, *, status: int = 500, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status




@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    t_ns: int
    stream: int  # 1 stdout, 2 stderr
    data: bytes


class SimContainer:
    """One container. State changes go through its methods; any thread may call them."""

    def __init__(
        self,
        engine: "DockerEngine",
        *,
        name: str,
        image: str,
        service: str | None,
        labels: dict[str, str],
        env: list[str],
        config_extra: dict[str, Any] | None = None,
        host_config: dict[str, Any] | None = None,
    ) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self.id = secrets.token_hex(32)
        self.name = name
        self.image = image
        self.service = service
        self.labels = dict(labels)
        self.env = list(env)
        self.config_extra = dict(config_extra or {})
        self.host_config = dict(host_config or {})
        self.created_ns = time.time_ns()
        self.status = "created"
        self.pid = 0
        self.exit_code = 0
        self.oom_killed = False
        self.error = ""
        self.started_ns = 0
        self.finished_ns = 0
        self.restart_count = 0
        self._logs: deque[LogEntry] = deque(maxlen=_MAX_LOG_LINES)
        self._seq = 0
        self._followers: set[asyncio.Event] = set()

    # --- state -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting")

    @property
    def tty(self) -> bool:
        return bool(self.config_extra.get("Tty", False))

    def log(self, line: str | bytes, stream: str = "stdout") -> None:
        """Append one log line (a newline is added when missing), timestamped now (for ``since=``)."""
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream must be 'stdout' or 'stderr', got {stream!r}")
        data = line.encode() if isinstance(line, str) else bytes(line)
        if not data.endswith(b"\n"):
            data += b"\n"
        with self._lock:
            self._seq += 1
            self._logs.append(LogEntry(self._seq, time.time_ns(), STREAMS[stream], data))
        self._wake()

    def exit(self, code: int, oom_killed: bool = False) -> None:
        """The main process exited with ``code`` (``oom_killed``: the kernel OOM killer did it)."""
        with self._lock:
            was_running = self.running
            self.status = "exited"
            self.exit_code = int(code)
            self.oom_killed = bool(oom_killed)
            self.pid = 0
            self.finished_ns = time.time_ns()
        self._wake()
        if was_running:
            self._engine._fire_stop_soon(self)

    def restart(self, oom_killed: bool = False) -> None:
        """The restart policy restarted the container (``RestartCount`` + 1).

        ``oom_killed=True`` leaves ``State.OOMKilled`` set, so an inspect shows why it restarted.
        Service callbacks do not fire: the simulated process keeps its in-process state.
        """
        with self._lock:
            self.restart_count += 1
            self.oom_killed = bool(oom_killed)
            self.exit_code = 137 if oom_killed else self.exit_code
            self.finished_ns = time.time_ns()
            self._set_running()
        self._wake()

    def _set_running(self) -> None:
        self.status = "running"
        self.pid = self._engine._next_pid()
        self.error = ""
        self.started_ns = time.time_ns()

    def _start(self) -> None:
        with self._lock:
            self.exit_code = 0
            self.oom_killed = False
            self._set_running()
        self._wake()

    def _fail_start(self, message: str) -> None:
        with self._lock:
            self.error = message
            self.exit_code = 128
        self._wake()

    def _wake(self) -> None:
        self._engine._wake(self)

    def log_entries(self) -> list[LogEntry]:
        with self._lock:
            return list(self._logs)

    # --- API views ---------------------------------------------------------------------

    def image_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.image.encode()).hexdigest()

    def inspect(self) -> dict[str, Any]:
        with self._lock:
            state = {
                "Status": self.status,
                "Running": self.running,
                "Paused": False,
                "Restarting": self.status == "restarting",
                "OOMKilled": self.oom_killed,
                "Dead": self.status == "dead",
                "Pid": self.pid,
                "ExitCode": self.exit_code,
                "Error": self.error,
                "StartedAt": rfc3339_nano(self.started_ns),
                "FinishedAt": rfc3339_nano(self.finished_ns),
            }
            config = {
                "Hostname": self.id[:12],
                "Domainname": "",
                "User": "",
                "AttachStdin": False,
                "AttachStdout": True,
                "AttachStderr": True,
                "Tty": False,
                "OpenStdin": False,
                "StdinOnce": False,
                "Env": list(self.env),
                "Cmd": None,
                "Image": self.image,
                "Volumes": None,
                "WorkingDir": "",
                "Entrypoint": None,
                "OnBuild": None,
                "Labels": dict(self.labels),
            }
            config.update({k: v for k, v in self.config_extra.items() if k in ("Tty", "Cmd", "Entrypoint", "WorkingDir", "User")})
            host_config = {"NetworkMode": "bridge", "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}}
            host_config.update(self.host_config)
            return {
                "Id": self.id,
                "Created": rfc3339_nano(self.created_ns),
                "Path": (config.get("Cmd") or [""])[0] if isinstance(config.get("Cmd"), list) else "",
                "Args": [],
                "State": state,
                "Image": self.image_id(),
                "ResolvConfPath": f"/var/lib/docker/containers/{self.id}/resolv.conf",
                "HostnamePath": f"/var/lib/docker/containers/{self.id}/hostname",
                "LogPath": f"/var/lib/docker/containers/{self.id}/{self.id}-json.log",
                "Name": "/" + self.name,
                "RestartCount": self.restart_count,
                "Driver": "overlay2",
                "Platform": "linux",
                "MountLabel": "",
                "ProcessLabel": "",
                "AppArmorProfile": "",
                "HostConfig": host_config,
                "Mounts": [],
                "Config": config,
                "NetworkSettings": {"Bridge": "", "Ports": {}, "Networks": {}},
            }

    def summary(self) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            if self.running:
                status = f"Up {human_duration(now - self.started_ns / 1e9)}"
            elif self.status == "exited":
                status = f"Exited ({self.exit_code}) {human_duration(now - self.finished_ns / 1e9)} ago"
            else:
                status = self.status.capitalize()
            return {
                "Id": self.id,
                "Names": ["/" + self.name],
                "Image": self.image,
                "ImageID": self.image_id(),
                "Command": "",
                "Created": self.created_ns // 1_000_000_000,
                "Ports": [],
                "Labels": dict(self.labels),
                "State": self.status,
                "Status": status,
                "HostConfig": {"NetworkMode": "bridge"},
                "NetworkSettings": {"Networks": {}},
                "Mounts": [],
            }
