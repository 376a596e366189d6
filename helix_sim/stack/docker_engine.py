"""The guest's Docker Engine: an Engine API subset on a unix socket, for docker-py 7.x.

Two faces over one container table:

- **REST** (aiohttp on ``docker.sock``), what the guest's ``docker`` shim and the harness's
  docker-py talk to: ``/_ping``, ``/version``, ``/info``, ``/containers/json``,
  ``/containers/create``, ``/containers/{id}/start|stop|restart|kill|json|logs``,
  ``DELETE /containers/{id}``, ``/images/{name}/json``. Every path also answers under a
  ``/v1.NN`` prefix, as dockerd does. Errors are ``{"message": ...}`` with dockerd's status codes.
- **In-process**, for other sim modules: :meth:`DockerEngine.create_container`, :meth:`get`,
  :meth:`remove`, :meth:`on_service_start`, :meth:`on_service_stop`, :meth:`reset`, and on a
  :class:`SimContainer`: :meth:`~SimContainer.log`, :meth:`~SimContainer.exit`, :meth:`~SimContainer.restart`.

Logs are sent as dockerd does for non-TTY containers: an 8-byte header per frame
(``>BxxxL``: stream 1 = stdout, 2 = stderr; payload length), optional RFC 3339 timestamps,
``since``/``until``/``tail``/``follow``.

Fault ``stack_fails``: starting the compose service ``api`` fails with dockerd's 500
"port is already allocated" error, so ``docker compose up`` (and ``./stack start``) fail the way
they do on a VM where something else holds the API port.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import struct
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..errors import SimError
from ..gofmt import human_duration, rfc3339_nano
from ..config import SimConfig

log = logging.getLogger("helix_sim.docker_engine")

API_VERSION = "1.47"
MIN_API_VERSION = "1.24"
ENGINE_VERSION = "27.5.1"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
#: Multiplexed stream ids, as in the 8-byte frame header.
STREAMS = {"stdin": 0, "stdout": 1, "stderr": 2}
_FRAME = struct.Struct(">BxxxL")
_NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_MAX_LOG_LINES = 50_000
#: AF_UNIX path limit is 108 bytes on Linux and 104 on macOS: stay under both.
_MAX_SOCKET_PATH = 100

ServiceCallback = Callable[["SimContainer"], Awaitable[None]]


class EngineError(SimError):
    """A Docker Engine request failed. ``status`` is the HTTP status dockerd would answer."""

    default_phase = "stack"

    def __init__(self, message: str, *, status: int = 500, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


def _parse_time_ns(value: str | None) -> int | None:
    """dockerd's ``since``/``until``: Unix seconds with an optional decimal fraction, or RFC 3339."""
    if value is None or value == "":
        return None
    try:
        ns = int(Decimal(value) * 1_000_000_000)
    except InvalidOperation:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise EngineError(f"invalid value for since/until: {value!r}", status=400) from exc
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return int(dt.timestamp() * 1_000_000_000)
    return ns if ns > 0 else None


def _truthy(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    return value.lower() not in ("", "0", "false", "no")


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


_ADJECTIVES = ("admiring", "brave", "clever", "dreamy", "eager", "focused", "gifted", "happy", "jolly", "keen")
_SURNAMES = ("turing", "hopper", "lovelace", "ritchie", "thompson", "torvalds", "wozniak", "knuth", "liskov", "hamilton")


class DockerEngine:
    """A Docker Engine API subset on ``socket_path``; ``await start()`` / ``await stop()``."""

    def __init__(self, config: SimConfig, socket_path: str | os.PathLike[str]) -> None:
        self.config = config
        self.socket_path = Path(socket_path)
        self._containers: dict[str, SimContainer] = {}  # by id
        self._lock = threading.RLock()
        self._start_callbacks: dict[str, list[ServiceCallback]] = {}
        self._stop_callbacks: dict[str, list[ServiceCallback]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._short_dir: str | None = None
        self._bound_path: str | None = None
        self._pid = 1000
        self._tasks: set[asyncio.Future[Any]] = set()
        self._rng = random.Random(config.seed or None)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._loop = asyncio.get_running_loop()
        app = web.Application(middlewares=[self._error_middleware], client_max_size=64 * 1024 * 1024)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        bind_path = self._prepare_socket_path()
        self._bound_path = bind_path
        site = web.UnixSite(self._runner, bind_path)
        await site.start()
        os.chmod(bind_path, 0o660)
        log.debug("docker engine listening on %s", self.socket_path)

    @property
    def docker_host(self) -> str:
        """``unix://…`` for DOCKER_HOST: ``socket_path``, or the short path it links to when too long."""
        return f"unix://{self._bound_path or self.socket_path}"

    async def stop(self) -> None:
        """Close the socket, end every log follower, cancel pending callbacks. Idempotent."""
        with self._lock:
            containers = list(self._containers.values())
        for c in containers:
            self._wake(c)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        for path in (self.socket_path,):
            if path.is_symlink() or path.exists():
                path.unlink(missing_ok=True)
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir = None

    def _prepare_socket_path(self) -> str:
        """Bind at ``socket_path``, or in a short temp dir with a symlink when the path is too long.

        A client must connect to a short path too (AF_UNIX limits the path it connects to, symlink
        or not): use :attr:`docker_host`.
        """
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self.socket_path.is_symlink() or self.socket_path.exists():
            self.socket_path.unlink()
        if len(os.fsencode(str(self.socket_path))) <= _MAX_SOCKET_PATH:
            return str(self.socket_path)
        self._short_dir = tempfile.mkdtemp(prefix="hxdk-")
        bind_path = os.path.join(self._short_dir, "docker.sock")
        os.symlink(bind_path, self.socket_path)
        return bind_path

    # --- in-process API ----------------------------------------------------------------

    def create_container(
        self,
        name: str,
        *,
        image: str,
        service: str | None = None,
        labels: dict[str, str] | None = None,
        env: list[str] | dict[str, str] | None = None,
    ) -> SimContainer:
        """Create and start a container (service start callbacks fire in the background)."""
        labels = dict(labels or {})
        if service is not None:
            labels.setdefault(COMPOSE_SERVICE_LABEL, service)
        container = self._create(name, image=image, labels=labels, env=env)
        container._start()
        self._fire_start_soon(container)
        return container

    def get(self, name_or_id: str) -> SimContainer | None:
        """By name (with or without the leading ``/``), full id, or unique id prefix."""
        key = name_or_id.lstrip("/")
        with self._lock:
            if key in self._containers:
                return self._containers[key]
            for c in self._containers.values():
                if c.name == key:
                    return c
            if len(key) >= 1 and re.fullmatch(r"[0-9a-f]+", key):
                matches = [c for cid, c in self._containers.items() if cid.startswith(key)]
                if len(matches) == 1:
                    return matches[0]
        return None

    def containers(self) -> list[SimContainer]:
        with self._lock:
            return sorted(self._containers.values(), key=lambda c: c.created_ns)

    def remove(self, name_or_id: str) -> None:
        """Remove a container whatever its state (no callbacks). Unknown names raise EngineError(404)."""
        container = self.get(name_or_id)
        if container is None:
            raise EngineError(f"No such container: {name_or_id}", status=404)
        with self._lock:
            self._containers.pop(container.id, None)
        container.status = "removing"
        self._wake(container)

    def on_service_start(self, service: str, callback: ServiceCallback) -> None:
        """``await callback(container)`` whenever a container of compose service ``service`` starts."""
        self._start_callbacks.setdefault(service, []).append(callback)

    def on_service_stop(self, service: str, callback: ServiceCallback) -> None:
        """``await callback(container)`` whenever a container of ``service`` stops or exits."""
        self._stop_callbacks.setdefault(service, []).append(callback)

    def reset(self) -> None:
        """VM power-off: every container is gone (no callbacks: the host stops what ran on them)."""
        with self._lock:
            containers = list(self._containers.values())
            self._containers.clear()
        for c in containers:
            with c._lock:
                c.status = "removing"
                c.pid = 0
            self._wake(c)
        for task in list(self._tasks):
            task.cancel()

    # --- internals ---------------------------------------------------------------------

    def _next_pid(self) -> int:
        with self._lock:
            self._pid += self._rng.randint(3, 97)
            return self._pid

    def _generated_name(self) -> str:
        while True:
            name = f"{self._rng.choice(_ADJECTIVES)}_{self._rng.choice(_SURNAMES)}"
            if self.get(name) is None:
                return name

    def _create(
        self,
        name: str | None,
        *,
        image: str,
        labels: dict[str, str],
        env: list[str] | dict[str, str] | None,
        config_extra: dict[str, Any] | None = None,
        host_config: dict[str, Any] | None = None,
    ) -> SimContainer:
        if not image:
            raise EngineError("config cannot be empty in order to create a container", status=400)
        if name:
            if not _NAME_RE.match(name):
                raise EngineError(
                    f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", status=400
                )
            name = name.lstrip("/")
        else:
            name = self._generated_name()
        if isinstance(env, dict):
            env = [f"{k}={v}" for k, v in env.items()]
        with self._lock:
            existing = self.get(name)
            if existing is not None:
                raise EngineError(
                    f'Conflict. The container name "/{name}" is already in use by container "{existing.id}". '
                    "You have to remove (or rename) that container to be able to reuse that name.",
                    status=409,
                )
            container = SimContainer(
                self,
                name=name,
                image=image,
                service=labels.get(COMPOSE_SERVICE_LABEL),
                labels=labels,
                env=list(env or []),
                config_extra=config_extra,
                host_config=host_config,
            )
            self._containers[container.id] = container
        return container

    def _wake(self, container: SimContainer) -> None:
        """Wake the log followers of ``container`` (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed() or not container._followers:
            return

        def wake() -> None:
            for event in list(container._followers):
                event.set()

        if _on_loop(loop):
            wake()
        else:
            loop.call_soon_threadsafe(wake)

    def _spawn(self, coro: Awaitable[None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            close = getattr(coro, "close", None)
            if close:
                close()
            return

        def create() -> None:
            task = asyncio.ensure_future(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        if _on_loop(loop):
            create()
        else:
            loop.call_soon_threadsafe(create)

    async def _run_callbacks(self, table: dict[str, list[ServiceCallback]], container: SimContainer) -> None:
        for callback in table.get(container.service or "", []):
            await callback(container)

    def _fire_start_soon(self, container: SimContainer) -> None:
        if container.service in self._start_callbacks:
            self._spawn(self._logged(self._run_callbacks(self._start_callbacks, container), container, "start"))

    def _fire_stop_soon(self, container: SimContainer) -> None:
        if container.service in self._stop_callbacks:
            self._spawn(self._logged(self._run_callbacks(self._stop_callbacks, container), container, "stop"))

    async def _logged(self, coro: Awaitable[None], container: SimContainer, what: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - background callback: log, do not kill the engine
            log.exception("service %s callback for %s failed", what, container.name)

    def _stack_fails_message(self, container: SimContainer) -> str:
        port = self.config.api_port or 8080
        endpoint = hashlib.sha256(f"endpoint:{container.id}".encode()).hexdigest()
        return (
            f"driver failed programming external connectivity on endpoint {container.name} ({endpoint}): "
            f"Bind for 0.0.0.0:{port} failed: port is already allocated"
        )

    # --- REST --------------------------------------------------------------------------

    @web.middleware
    async def _error_middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            response = await handler(request)
        except EngineError as exc:
            return _error(exc.status, exc.message)
        except web.HTTPNotFound:
            return _error(404, "page not found")
        except web.HTTPMethodNotAllowed:
            return _error(405, "method not allowed")
        response.headers.setdefault("Api-Version", API_VERSION)
        response.headers.setdefault("Docker-Experimental", "false")
        response.headers.setdefault("Ostype", "linux")
        response.headers.setdefault("Server", f"Docker/{ENGINE_VERSION} (linux)")
        return response

    def _add_routes(self, app: web.Application) -> None:
        routes = [
            ("GET", "/_ping", self._ping),
            ("HEAD", "/_ping", self._ping),
            ("GET", "/version", self._version),
            ("GET", "/info", self._info),
            ("GET", "/containers/json", self._list),
            ("POST", "/containers/create", self._create_handler),
            ("GET", "/containers/{id}/json", self._inspect),
            ("POST", "/containers/{id}/start", self._start_handler),
            ("POST", "/containers/{id}/stop", self._stop_handler),
            ("POST", "/containers/{id}/restart", self._restart_handler),
            ("POST", "/containers/{id}/kill", self._kill_handler),
            ("GET", "/containers/{id}/logs", self._logs),
            ("DELETE", "/containers/{id}", self._delete),
            ("GET", "/images/{name:.+}/json", self._image_inspect),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, r"/v{api_version:[0-9]+\.[0-9]+}" + path, handler)

    def _lookup(self, request: web.Request) -> SimContainer:
        ident = request.match_info["id"]
        container = self.get(ident)
        if container is None:
            raise EngineError(f"No such container: {ident}", status=404)
        return container

    async def _ping(self, request: web.Request) -> web.Response:
        headers = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache", "Builder-Version": "2"}
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers, content_type="text/plain")
        return web.Response(text="OK", headers=headers, content_type="text/plain")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "Platform": {"Name": "Docker Engine - Community"},
                "Components": [
                    {"Name": "Engine", "Version": ENGINE_VERSION, "Details": {"ApiVersion": API_VERSION, "Os": "linux", "Arch": "arm64"}},
                    {"Name": "containerd", "Version": "1.7.25", "Details": {"GitCommit": "bcc810d6b9066471b0b6fa75f557a15a1cbf31bb"}},
                ],
                "Version": ENGINE_VERSION,
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "GitCommit": "4c9b3b0",
                "GoVersion": "go1.22.11",
                "Os": "linux",
                "Arch": "arm64",
                "KernelVersion": "6.8.0-51-generic",
                "BuildTime": "2025-01-21T14:58:46.000000000+00:00",
            }
        )

    async def _info(self, request: web.Request) -> web.Response:
        containers = self.containers()
        running = sum(1 for c in containers if c.running)
        return web.json_response(
            {
                "ID": hashlib.sha256(str(self.socket_path).encode()).hexdigest()[:36],
                "Containers": len(containers),
                "ContainersRunning": running,
                "ContainersPaused": 0,
                "ContainersStopped": len(containers) - running,
                "Images": len({c.image for c in containers}),
                "Driver": "overlay2",
                "DockerRootDir": "/var/lib/docker",
                "ServerVersion": ENGINE_VERSION,
                "OperatingSystem": "Ubuntu 24.04.1 LTS",
                "OSType": "linux",
                "OSVersion": "24.04",
                "Architecture": "aarch64",
                "KernelVersion": "6.8.0-51-generic",
                "NCPU": 8,
                "MemTotal": 16 * 1024**3,
                "Name": "helix-vm",
                "Labels": [],
                "ExperimentalBuild": False,
                "CgroupDriver": "systemd",
                "CgroupVersion": "2",
                "LoggingDriver": "json-file",
                "Runtimes": {"runc": {"path": "runc"}},
                "DefaultRuntime": "runc",
                "Warnings": None,
            }
        )

    async def _list(self, request: web.Request) -> web.Response:
        show_all = _truthy(request.query.get("all"))
        try:
            filters = _parse_filters(request.query.get("filters"))
        except ValueError as exc:
            raise EngineError(f"invalid filter: {exc}", status=400) from exc
        result = []
        for c in reversed(self.containers()):  # newest first, like dockerd
            if not show_all and not c.running and "status" not in filters:
                continue
            if _matches(c, filters):
                result.append(c.summary())
        limit = request.query.get("limit")
        if limit and limit.lstrip("-").isdigit() and int(limit) > 0:
            result = result[: int(limit)]
        return web.json_response(result)

    async def _create_handler(self, request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError as exc:
            raise EngineError(f"invalid JSON: {exc}", status=400) from exc
        if not isinstance(body, dict):
            raise EngineError("config cannot be empty in order to create a container", status=400)
        extra = {k: body[k] for k in ("Tty", "Cmd", "Entrypoint", "WorkingDir", "User") if k in body}
        container = self._create(
            request.query.get("name"),
            image=str(body.get("Image") or ""),
            labels={str(k): str(v) for k, v in (body.get("Labels") or {}).items()},
            env=[str(e) for e in (body.get("Env") or [])],
            config_extra=extra,
            host_config=body.get("HostConfig") if isinstance(body.get("HostConfig"), dict) else None,
        )
        return web.json_response({"Id": container.id, "Warnings": []}, status=201)

    async def _inspect(self, request: web.Request) -> web.Response:
        return web.json_response(self._lookup(request).inspect())

    async def _start_handler(self, request: web.Request) -> web.Response:
        container = self._lookup(request)
        if container.running:
            return web.Response(status=304)
        if container.service == "api" and "stack_fails" in self.config.faults:
            message = self._stack_fails_message(container)
            container._fail_start(message)
            raise EngineError(message, status=500)
        container._start()
        try:
            await self._run_callbacks(self._start_callbacks, container)
        except Exception as exc:  # noqa: BLE001 - becomes dockerd's 500, the container exits
            log.exception("service start callback for %s failed", container.name)
            container.exit(128)
            container._fail_start(str(exc))
            raise EngineError(f"failed to start container {container.name}: {exc}", status=500) from exc
        return web.Response(status=204)

    async def _stop_container(self, container: SimContainer, code: int) -> None:
        with container._lock:
            container.status = "exited"
            container.exit_code = code
            container.pid = 0
            container.finished_ns = time.time_ns()
        container._wake()
        await self._run_callbacks(self._stop_callbacks, container)

    async def _stop_handler(self, request: web.Request) -> web.Response:
        container = self._lookup(request)
        if not container.running:
            return web.Response(status=304)
        await self._stop_container(container, 0)
        return web.Response(status=204)

    async def _kill_handler(self, request: web.Request) -> web.Response:
        container = self._lookup(request)
        if not container.running:
            raise EngineError(f"Cannot kill container: {container.id}: Container {container.id} is not running", status=409)
        await self._stop_container(container, 137)
        return web.Response(status=204)

    async def _restart_handler(self, request: web.Request) -> web.Response:
        container = self._lookup(request)
        if container.running:
            await self._stop_container(container, 0)
        container._start()
        await self._run_callbacks(self._start_callbacks, container)
        return web.Response(status=204)

    async def _delete(self, request: web.Request) -> web.Response:
        container = self._lookup(request)
        if container.running:
            if not _truthy(request.query.get("force")):
                raise EngineError(
                    f'cannot remove container "/{container.name}": container is running: '
                    "stop the container before removing or force remove",
                    status=409,
                )
            await self._stop_container(container, 137)
        self.remove(container.id)
        return web.Response(status=204)

    async def _image_inspect(self, request: web.Request) -> web.Response:
        wanted = request.match_info["name"]
        for c in self.containers():
            image_id = c.image_id()
            if wanted in (c.image, image_id, image_id.split(":", 1)[1]) or image_id.split(":", 1)[1].startswith(wanted):
                return web.json_response(
                    {"Id": image_id, "RepoTags": [c.image], "RepoDigests": [], "Os": "linux", "Architecture": "arm64", "Size": 0}
                )
        raise EngineError(f"No such image: {wanted}", status=404)

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        container = self._lookup(request)
        q = request.query
        want = set()
        if _truthy(q.get("stdout")):
            want.add(1)
        if _truthy(q.get("stderr")):
            want.add(2)
        if not want:
            raise EngineError("Bad parameters: you must choose at least one stream", status=400)
        since = _parse_time_ns(q.get("since"))
        until = _parse_time_ns(q.get("until"))
        timestamps = _truthy(q.get("timestamps"))
        follow = _truthy(q.get("follow"))
        tail_raw = q.get("tail", "all")
        tail: int | None = None
        if tail_raw not in ("", "all"):
            try:
                tail = max(0, int(tail_raw))
            except ValueError as exc:
                raise EngineError(f"invalid value for tail: {tail_raw!r}", status=400) from exc

        def select(entries: list[LogEntry]) -> list[LogEntry]:
            out = [
                e for e in entries
                if e.stream in want and (since is None or e.t_ns >= since) and (until is None or e.t_ns <= until)
            ]
            return out

        def frame(entry: LogEntry) -> bytes:
            data = entry.data
            if timestamps:
                data = rfc3339_nano(entry.t_ns, fixed=True).encode() + b" " + data
            return _FRAME.pack(entry.stream, len(data)) + data

        entries = container.log_entries()
        first = select(entries)
        if tail is not None:
            first = first[-tail:] if tail else []
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/vnd.docker.multiplexed-stream"})
        await response.prepare(request)
        if first:
            await response.write(b"".join(frame(e) for e in first))
        if follow:
            seen = entries[-1].seq if entries else 0
            wake = asyncio.Event()
            container._followers.add(wake)
            try:
                while True:
                    new = [e for e in container.log_entries() if e.seq > seen]
                    if new:
                        seen = new[-1].seq
                    fresh = select(new)
                    if fresh:
                        await response.write(b"".join(frame(e) for e in fresh))
                    if until is not None and time.time_ns() > until:
                        break
                    if not container.running or self.get(container.id) is None or self._runner is None:
                        break
                    wake.clear()
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=1.0)
                    except asyncio.TimeoutError:
                        pass
            finally:
                container._followers.discard(wake)
        await response.write_eof()
        return response


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def _parse_filters(raw: str | None) -> dict[str, list[str]]:
    """``{"name": ["x"]}`` or the legacy ``{"name": {"x": true}}`` → ``{"name": ["x"]}``."""
    if not raw:
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("filters must be a JSON object")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = [k for k, v in value.items() if v]
        elif isinstance(value, list):
            out[key] = [str(v) for v in value]
        else:
            out[key] = [str(value)]
    return out


def _matches(c: SimContainer, filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if not values:
            continue
        if key == "name":
            if not any(re.search(v, c.name) or re.search(v, "/" + c.name) for v in values):
                return False
        elif key == "id":
            if not any(c.id.startswith(v) for v in values):
                return False
        elif key == "label":
            ok = False
            for v in values:
                k, sep, want = v.partition("=")
                if k in c.labels and (not sep or c.labels[k] == want):
                    ok = True
            if not ok:
                return False
        elif key == "status":
            if c.status not in values:
                return False
        elif key == "ancestor":
            if c.image not in values and c.image.split(":")[0] not in values:
                return False
        else:
            raise EngineError(f"invalid filter '{key}'", status=400)
    return True
