"""The Engine API's REST face (aiohttp on ``docker.sock``), for docker-py 7.x: ``/_ping``, ``/version``,
``/info``, ``/containers/…``, ``/images/{name}/json``, each also under ``/v1.NN``; errors are
``{"message": ...}`` with dockerd's status codes; logs are 8-byte-header frames for non-TTY containers.

Mixed into :class:`~.engine.DockerEngine`, whose container table it serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import struct
import time
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Awaitable, Callable

from aiohttp import web

from ...gofmt import rfc3339_nano
from .container import EngineError, LogEntry, SimContainer

log = logging.getLogger("helix_sim.docker_engine")

API_VERSION = "1.47"
MIN_API_VERSION = "1.24"
ENGINE_VERSION = "27.5.1"
_FRAME = struct.Struct(">BxxxL")



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


class EngineRest:
    """The REST handlers of :class:`~.engine.DockerEngine` (a mixin: they read and change its container table
    through ``get``, ``containers``, ``_create``, ``_lock`` and friends). ``_add_routes`` mounts them."""

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
