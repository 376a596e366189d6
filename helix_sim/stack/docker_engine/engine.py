"""The Docker engine's container table and lifecycle (:class:`DockerEngine`): the unix socket, the
in-process API other sim parts use, compose-service callbacks, and fault ``stack_fails``. Its REST face
is :class:`~.rest.EngineRest`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Awaitable

from aiohttp import web

from ...config import SimConfig
from .container import COMPOSE_SERVICE_LABEL, EngineError, ServiceCallback, SimContainer
from .rest import EngineRest

log = logging.getLogger("helix_sim.docker_engine")

_NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
#: AF_UNIX path limit is 108 bytes on Linux and 104 on macOS: stay under both.
_MAX_SOCKET_PATH = 100



_ADJECTIVES = ("admiring", "brave", "clever", "dreamy", "eager", "focused", "gifted", "happy", "jolly", "keen")
_SURNAMES = ("turing", "hopper", "lovelace", "ritchie", "thompson", "torvalds", "wozniak", "knuth", "liskov", "hamilton")


class DockerEngine(EngineRest):
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


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
