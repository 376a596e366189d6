"""The simulated Helix API server: REST (spec tasks, sessions, sandboxes, exec, screenshot) and the WS stream.

Shapes, status codes and texts follow ``shared/reference/helix-stream.md`` §0–§4 and
``macos-frame-export.md`` §8:

- auth as ``getRequestToken``: ``Authorization: Bearer``, ``x-api-key``, ``api-key``, cookie ``access_token``,
  query ``?access_token=`` (the first one present counts). Valid: ``SimConfig.api_key`` and the runner token.
- IDs are a prefix + a lowercase ULID (26 Crockford base32 characters): ``spt_…``, ``ses_…``.
- ``/api/v1/external-agents/{sid}/ws/stream``: 101 without subprotocol or extensions; 401/404 before the
  upgrade; a raw ``503 Sandbox not connected`` when the desktop is unreachable (or fault ``ws_503``).
  After the TEXT init: 0x30 StreamInit, [0x51 CursorName unless scanout], TEXT ConnectionComplete,
  0x58 SelfId + 0x54 RemoteUser (when the init has a session_id), then 0x01 video frames (replay first
  for a late joiner). WS pings every 5 s, a 30 s pong deadline, 0x40 Ping → 29-byte 0x41 Pong,
  ``?client_id=`` dedup (old socket closed 4000 "superseded").

Faults implemented here: ``api_5xx``, ``no_container``, ``ws_503``, ``superseded``; the desktop layer's
faults live in :mod:`helix_sim.desktop`. All wire formats come from :mod:`harness.protocols.stream`.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from aiohttp import WSMsgType, web

from ..errors import SimError
from harness.protocols.errors import LocalProtocolError, RemoteProtocolError
from harness.protocols.stream import (
    CODEC_H264,
    FLAG_KEYFRAME,
    FLAG_REPLAY,
    REMOTE_USER_JOINED,
    ConnectionComplete,
    CursorName,
    Init,
    Kind,
    MsgType,
    Ping,
    RemoteUser,
    Role,
    SelfId,
    StreamConnection,
    StreamError,
    StreamInit,
    UnknownMessage,
    VideoFrame,
)
from .._tasks import cancel_and_wait
from ..config import SimConfig
from ..desktop.session import Desktop, DesktopUnavailable, Frame, StreamStartError, Subscriber

log = logging.getLogger("helix_sim.api")

RUNNER_TOKEN = "oh-hallo-insecure-token"
HELIX_VERSION = "2.6.3"
SANDBOX_ID = "sandbox-macos"
SANDBOX_CONTAINER = "helix-sandbox-macos-1"
DESKTOP_IMAGE = "helix-ubuntu"
#: How long the desktop waits for the TEXT init; the pong deadline; the WS ping interval (ws_stream.go).
INIT_DEADLINE_S = 30.0
PONG_DEADLINE_S = 30.0
PING_INTERVAL_S = 5.0
#: Fault superseded: the server supersedes a stream this long after it started.
SUPERSEDE_AT_S = 3.0
#: slow_after_running: each successive session's fps is multiplied by this (its start delay divided).
SLOWDOWN = 0.7
RAW_503 = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nSandbox not connected"
USER_COLORS = ("#FF6B6B", "#4ECDC4", "#45B7D1", "#96CEB4", "#FFEAA7", "#DDA0DD", "#98D8C8", "#F7DC6F")
STATUS_WAITING = "Waiting for a sandbox to come online..."
STATUS_STARTING = "Starting desktop container..."
STATUS_READY = "Desktop is running"

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


class ApiError(SimError):
    """The simulated API could not start or do what was asked."""

    default_phase = "api"


def new_ulid(now: float | None = None) -> str:
    """A lowercase ULID: 48-bit millisecond time + 80 random bits, 26 Crockford base32 characters."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def new_id(prefix: str) -> str:
    return f"{prefix}_{new_ulid()}"


def _iso(t: float) -> str:
    """Go's time.Time JSON (RFC 3339, UTC, nanosecond digits trimmed)."""
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def _text(status: int, message: str) -> web.Response:
    """Go's http.Error: text/plain, the message and a newline."""
    resp = web.Response(status=status, text=message + "\n", content_type="text/plain")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":")) + "\n")


@dataclass(frozen=True, slots=True)
class _User:
    id: str
    name: str
    admin: bool
    runner: bool = False


@dataclass
class _SpecTask:
    id: str
    project_id: str
    app_id: str
    prompt: str
    name: str
    owner: str
    created: float
    updated: float
    status: str = "backlog"
    planning_session_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project_id": self.project_id,
            "name": self.name,
            "description": self.prompt,
            "type": "feature",
            "priority": "medium",
            "status": self.status,
            "original_prompt": self.prompt,
            "requirements_spec": "",
            "technical_design": "",
            "implementation_plan": "",
            "spec_agent": "",
            "implementation_agent": "",
            "helix_app_id": self.app_id,
            "planning_session_id": self.planning_session_id,
            "created_by": self.owner,
            "created_at": _iso(self.created),
            "updated_at": _iso(self.updated),
            "archived": False,
            "labels": [],
        }


@dataclass
class _Session:
    id: str
    task: _SpecTask
    owner: str
    created: float
    updated: float
    status_message: str = ""
    agent_status: str = "starting"
    container: Any = None
    desktop: Desktop | None = None
    provision: asyncio.Task[None] | None = field(default=None, repr=False)
    stopped: bool = False
    index: int = 0  # 0 for the simulator's first session (slow_after_running)

    @property
    def container_name(self) -> str:
        return getattr(self.container, "name", "") if self.container is not None else ""

    @property
    def container_id(self) -> str:
        return getattr(self.container, "id", "") if self.container is not None else ""

    def metadata(self, config: SimConfig) -> dict[str, Any]:
        return {
            "agent_type": "zed_external",
            "session_role": "planning",
            "spec_task_id": self.task.id,
            "project_id": self.task.project_id,
            "external_agent_id": f"zed-{self.id}",
            "external_agent_status": self.agent_status,
            "dev_container_id": self.container_id,
            "container_id": self.container_id,
            "container_name": self.container_name,
            "status_message": self.status_message,
            "desktop_type": "ubuntu",
            "video_mode": config.video_mode,
            "sandbox_id": SANDBOX_ID if self.container is not None else "",
        }

    def to_json(self, config: SimConfig, *, interactions: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.task.name,
            "created": _iso(self.created),
            "updated": _iso(self.updated),
            "parent_session": "",
            "parent_app": self.task.app_id,
            "mode": "inference",
            "type": "text",
            "model_name": "external_agent",
            "provider": "",
            "lora_dir": "",
            "owner": self.owner,
            "owner_type": "user",
            "project_id": self.task.project_id,
            "organization_id": "",
            "config": self.metadata(config),
        }
        if interactions:
            data["interactions"] = [{
                "id": f"int_{self.id[4:]}",
                "created": _iso(self.created),
                "updated": _iso(self.updated),
                "session_id": self.id,
                "user_id": self.owner,
                "mode": "inference",
                "prompt_message": self.task.prompt,
                "response_message": "",
                "state": "waiting",
            }]
        else:
            data["interactions"] = []
        return data

    def summary(self, config: SimConfig) -> dict[str, Any]:
        return {
            "session_id": self.id,
            "name": self.task.name,
            "interaction_id": f"int_{self.id[4:]}",
            "mode": "inference",
            "type": "text",
            "model_name": "external_agent",
            "owner": self.owner,
            "app_id": self.task.app_id,
            "created": _iso(self.created),
            "updated": _iso(self.updated),
            "summary": self.task.prompt[:100],
            "priority": False,
            "metadata": self.metadata(config),
        }


class _Canary:
    """The scheduler canary the Pong reports: event-loop wake-up lag, p50/p99/max in ms."""

    INTERVAL = 0.05

    def __init__(self) -> None:
        self.samples: collections.deque[float] = collections.deque(maxlen=200)

    async def run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(self.INTERVAL)
            self.samples.append(max(0.0, (time.monotonic() - t - self.INTERVAL) * 1000.0))

    def stats(self) -> tuple[int, int, int]:
        if not self.samples:
            return 0, 0, 0
        ordered = sorted(self.samples)

        def pick(q: float) -> int:
            return min(0xFFFF, int(round(ordered[min(len(ordered) - 1, int(q * len(ordered)))])))

        return pick(0.50), pick(0.99), min(0xFFFF, int(round(ordered[-1])))


# --------------------------------------------------------------------------- the stream


class _StreamClient:
    """One viewer's WebSocket: init, the fixed preamble, frames, pings, pongs, and how it ends."""

    def __init__(self, api: "HelixApi", session: _Session, request: web.Request, number: int, client_id: str | None) -> None:
        self.api = api
        self.session = session
        self.request = request
        self.number = number
        self.client_id = client_id
        self.ws = web.WebSocketResponse(
            protocols=(), compress=False, autoping=False, autoclose=True, timeout=5.0, max_msg_size=16 * 1024 * 1024,
        )
        self.conn = StreamConnection(Role.SERVER)
        self.init: Init | None = None
        self.sub: Subscriber | None = None
        self.paused = False
        self.ended: str | None = None  # why the server ended it
        self.last_pong = time.monotonic()
        self.encoder_latency_ms = 0
        self.frames_sent = 0
        self.replay_sent = 0
        self.unique_id: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sender: asyncio.Task[Any] | None = None
        self._transport = request.transport

    # -- helpers ----------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def streaming(self) -> bool:
        return self.init is not None and self.ended is None and not self.ws.closed

    def abort(self, why: str) -> None:
        """Drop the TCP connection without a close frame (buffered bytes are flushed first)."""
        if self.ended is None:
            self.ended = why
        log.debug("stream %d (%s): TCP close: %s", self.number, self.session.id, why)
        self.conn.close()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()

    async def send(self, event: Any) -> bool:
        if self.ws.closed or self.ended is not None:
            return False
        try:
            kind, payload = self.conn.send(event)
            if kind is Kind.TEXT:
                await self.ws.send_str(payload)  # type: ignore[arg-type]
            else:
                await self.ws.send_bytes(payload)  # type: ignore[arg-type]
        except (ConnectionError, RuntimeError, LocalProtocolError) as exc:
            log.debug("stream %d: send failed: %s", self.number, exc)
            return False
        return True

    async def supersede(self) -> None:
        """A newer connection took over (or fault superseded): WS close 4000 "superseded"."""
        if self.ended is not None or self.ws.closed:
            return
        self.ended = "superseded"
        log.info("stream %d (%s) superseded", self.number, self.session.id)
        self._stop_frames()
        try:
            await self.ws.close(code=4000, message=b"superseded")
        except (ConnectionError, RuntimeError) as exc:
            log.debug("stream %d: close failed: %s", self.number, exc)
        self.conn.close()

    def _stop_frames(self) -> None:
        if self.sub is not None and self.session.desktop is not None:
            self.session.desktop.close_stream(self.sub)
        if self._sender is not None and self._sender is not asyncio.current_task():
            self._sender.cancel()

    # -- the connection ----------------------------------------------------------------

    async def run(self) -> web.WebSocketResponse:
        await self.ws.prepare(self.request)
        self._spawn(self._ping_loop())
        try:
            init = await self._await_init()
            if init is None:
                return self.ws
            self.init = init
            await self._start(init)
            if self.streaming:
                await self._read_loop()
        finally:
            await self._cleanup()
        return self.ws

    async def _await_init(self) -> Init | None:
        deadline = time.monotonic() + INIT_DEADLINE_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.abort("no init within 30 s")
                return None
            try:
                msg = await self.ws.receive(timeout=remaining)
            except asyncio.TimeoutError:
                self.abort("no init within 30 s")
                return None
            if msg.type == WSMsgType.TEXT:
                try:
                    event = self.conn.receive(Kind.TEXT, msg.data)
                except RemoteProtocolError as exc:
                    self.abort(f"bad init: {exc.message}")
                    return None
                if isinstance(event, Init):
                    return event
            elif msg.type == WSMsgType.BINARY:
                continue  # skipped before the init, as the real server does
            elif msg.type == WSMsgType.PING:
                await self._pong_control(msg.data)
            elif msg.type == WSMsgType.PONG:
                self.last_pong = time.monotonic()
            else:  # CLOSE, CLOSING, CLOSED, ERROR
                return None

    async def _start(self, init: Init) -> None:
        desktop = self.session.desktop
        if desktop is None or not desktop.available:
            self.abort("desktop went away before the init")
            return
        unique = init.extra.get("client_unique_id")
        if isinstance(unique, str) and unique:
            self.unique_id = unique
            old = self.api._by_unique_id.get((self.session.id, unique))
            if old is not None and old is not self:
                old.abort("a viewer with the same client_unique_id reconnected")
            self.api._by_unique_id[(self.session.id, unique)] = self
        try:
            sub = await desktop.open_stream(init)
        except StreamStartError as exc:
            await self.send(StreamError(exc.message))
            self.abort(f"stream start failed: {exc.message}")
            return
        except DesktopUnavailable:
            self.abort("desktop went away")
            return
        if self.ws.closed or self.ended is not None:
            desktop.close_stream(sub)
            return
        self.sub = sub
        width, height = _u16(init.width), _u16(init.height)
        await self.send(StreamInit(CODEC_H264, width, height, max(0, min(255, init.fps))))
        if sub.mode != "scanout":
            await self.send(CursorName(0, 0, 0, "default"))
        await self.send(ConnectionComplete(init.width, init.height))
        if init.session_id:
            me = self._remote_user()
            await self.send(SelfId(self.number))
            await self.send(me)
            for other in self.api._viewers_of(self.session.id):
                if other is not self and other.init is not None and other.init.session_id:
                    await self.send(other._remote_user())
                    other._spawn(other.send(me))
        self._sender = self._spawn(self._send_frames(sub, width, height))
        if "superseded" in self.api.config.faults:
            self._spawn(self._supersede_after(self.api.config.delay(SUPERSEDE_AT_S)))

    def _remote_user(self) -> RemoteUser:
        extra = self.init.extra if self.init is not None else {}
        name = extra.get("user_name") if isinstance(extra.get("user_name"), str) else ""
        avatar = extra.get("avatar_url") if isinstance(extra.get("avatar_url"), str) else ""
        return RemoteUser(
            REMOTE_USER_JOINED, self.number, (name or f"User {self.number}")[:255],
            USER_COLORS[(self.number - 1) % len(USER_COLORS)], avatar[:0xFFFF],
        )

    async def _send_frames(self, sub: Subscriber, width: int, height: int) -> None:
        for frame in sub.replay:
            if not await self._send_frame(frame, width, height, replay=True):
                return
        while True:
            frame = await sub.get()
            if frame is None:
                reason = sub.end_reason or "ended"
                if reason != "closed":
                    self.abort(f"desktop ended the stream: {reason}")
                return
            if self.paused:
                continue
            if not await self._send_frame(frame, width, height, replay=False):
                return

    async def _send_frame(self, frame: Frame, width: int, height: int, *, replay: bool) -> bool:
        flags = (FLAG_KEYFRAME if frame.keyframe else 0) | (FLAG_REPLAY if replay else 0)
        ok = await self.send(VideoFrame(CODEC_H264, flags, frame.pts_us, width, height, frame.data))
        if ok:
            if replay:
                self.replay_sent += 1
            else:
                self.frames_sent += 1
                self.encoder_latency_ms = min(0xFFFF, int((time.monotonic() - frame.published) * 1000))
        return ok

    async def _read_loop(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.BINARY:
                try:
                    event = self.conn.receive(Kind.BINARY, msg.data)
                except RemoteProtocolError as exc:
                    log.debug("stream %d: bad client message: %s", self.number, exc)
                    continue
                if isinstance(event, Ping):
                    p50, p99, pmax = self.api._canary.stats()
                    pong = event.response(time.time_ns() // 1000, self.encoder_latency_ms, p50, p99, pmax)
                    await self.send(pong)
                elif isinstance(event, UnknownMessage) and event.type_byte == MsgType.CONTROL:
                    self._control(event.payload)
            elif msg.type == WSMsgType.TEXT:
                continue  # the desktop ignores other text messages
            elif msg.type == WSMsgType.PING:
                await self._pong_control(msg.data)
            elif msg.type == WSMsgType.PONG:
                self.last_pong = time.monotonic()
            else:
                return

    def _control(self, payload: bytes) -> None:
        try:
            obj = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return
        if isinstance(obj, dict) and isinstance(obj.get("set_video_enabled"), bool):
            self.paused = not obj["set_video_enabled"]

    async def _pong_control(self, data: bytes) -> None:
        try:
            await self.ws.pong(data)
        except (ConnectionError, RuntimeError):
            pass

    async def _ping_loop(self) -> None:
        while not self.ws.closed and self.ended is None:
            await asyncio.sleep(PING_INTERVAL_S)
            if self.ws.closed or self.ended is not None:
                return
            if time.monotonic() - self.last_pong > PONG_DEADLINE_S:
                self.abort("no pong for 30 s (read deadline)")
                return
            try:
                await self.ws.ping()
            except (ConnectionError, RuntimeError):
                self.abort("writing the ping failed")
                return

    async def _supersede_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.supersede()

    async def _cleanup(self) -> None:
        await cancel_and_wait(self._tasks)
        if self.sub is not None and self.session.desktop is not None:
            self.session.desktop.close_stream(self.sub)
        self.conn.close()
        self.api._forget(self)


def _u16(value: int) -> int:
    return max(0, min(0xFFFF, int(value)))


# --------------------------------------------------------------------------- the API


class HelixApi:
    """The Helix API of the sim: ``await start(port)`` → http://127.0.0.1:<port>, ``await stop()``."""

    def __init__(self, config: SimConfig, engine: Any, qemu: Any, host: Any) -> None:
        self.config = config
        self.engine = engine
        self.qemu = qemu
        self.host = host
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: dict[str, _SpecTask] = {}
        self._sessions: dict[str, _Session] = {}
        self._streams: set[_StreamClient] = set()
        self._by_client_id: dict[tuple[str, str], _StreamClient] = {}
        self._by_unique_id: dict[tuple[str, str], _StreamClient] = {}
        self._bg: set[asyncio.Task[Any]] = set()
        self._canary = _Canary()
        self._sandbox_online_at: float | None = None
        self._sandbox_created = time.time()
        self._sessions_started = 0
        self._stream_numbers = 0
        self._users = {
            config.api_key: _User(f"usr_{new_ulid()}", "sim-user", admin=True),
            RUNNER_TOKEN: _User("runner", "runner", admin=True, runner=True),
        }
        self.desktop_hash = hashlib.sha256(f"helix-ubuntu-{config.seed}".encode()).hexdigest()[:12]

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise ApiError("the API is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self, port: int | None = None) -> int:
        """Listen on 127.0.0.1:<port> (0/None: a free port). Returns the port. A fresh boot: not slow."""
        if self._runner is not None:
            assert self.port is not None
            return self.port
        self._sessions_started = 0
        app = web.Application(middlewares=[self._errors_middleware], client_max_size=8 * 1024 * 1024)
        r = app.router
        r.add_get("/api/v1/config", self._config)
        r.add_get("/api/v1/health", self._health)
        r.add_get("/api/v1/status", self._status)
        r.add_get("/api/v1/sandboxes", self._sandboxes)
        r.add_post("/api/v1/spec-tasks/from-prompt", self._from_prompt)
        r.add_post("/api/v1/spec-tasks/{id}/start-planning", self._start_planning)
        r.add_get("/api/v1/spec-tasks/{id}", self._get_task)
        r.add_get("/api/v1/sessions", self._list_sessions)
        r.add_get("/api/v1/sessions/{id}", self._get_session)
        r.add_delete("/api/v1/sessions/{id}/stop-external-agent", self._stop_agent)
        r.add_get("/api/v1/external-agents/{id}/screenshot", self._screenshot)
        r.add_post("/api/v1/external-agents/{id}/exec", self._exec)
        r.add_get("/api/v1/external-agents/{id}/ws/stream", self._ws_stream)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port or 0, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ApiError(f"the sim API could not listen on 127.0.0.1:{port}: {exc.strerror or exc}",
                           hint="another process holds the port") from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._spawn(self._canary.run())
        if self._sandbox_online_at is not None:  # an API restart: the sandbox registers again
            self._sandbox_online_at = time.monotonic()
        for sess in self._sessions.values():
            self._revive(sess)
        log.info("helix api listening on 127.0.0.1:%d", self.port)
        return self.port

    async def stop(self) -> None:
        """Close every WS (TCP close), stop every desktop pipeline and its thread, close the server. Idempotent."""
        runner, self._runner = self._runner, None
        for client in list(self._streams):
            client.abort("API stopped")
        current = asyncio.current_task()
        tasks = [t for t in self._bg if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for sess in list(self._sessions.values()):
            if sess.desktop is not None:
                await sess.desktop.shutdown("API stopped")
        if runner is not None:
            await runner.cleanup()
        self._streams.clear()
        self._by_client_id.clear()
        self._by_unique_id.clear()
        log.info("helix api stopped")

    def _revive(self, sess: _Session) -> None:
        """After an API restart: desktops whose containers still run are reachable again;
        the others are gone; provisioning that the stop interrupted starts over."""
        if sess.stopped:
            return
        if sess.desktop is not None:
            container = sess.container
            current = self.engine.get(container.id) if container is not None else None
            if current is container and getattr(container, "running", False):
                sess.desktop.resume()
                return
            sess.desktop = None
            sess.container = None
            sess.agent_status = "stopped"
            self._set_status(sess, "")
            return
        if sess.container is None:
            sess.provision = self._spawn(self._provision(sess))

    def sandbox_online(self) -> None:
        """The sandbox-macos container started: it reports ``desktop_versions`` after ``sandbox_delay_s``."""
        if self._sandbox_online_at is None:
            self._sandbox_online_at = time.monotonic()
            self._sandbox_created = time.time()
            log.info("sandbox %s online (desktop versions in %.1fs)", SANDBOX_ID, self.config.delay(self.config.sandbox_delay_s))

    def sandbox_offline(self) -> None:
        self._sandbox_online_at = None

    @property
    def sandbox_ready(self) -> bool:
        at = self._sandbox_online_at
        return at is not None and time.monotonic() >= at + self.config.delay(self.config.sandbox_delay_s)

    def desktops(self) -> list[Desktop]:
        return [s.desktop for s in self._sessions.values() if s.desktop is not None]

    def session_desktop(self, session_id: str) -> Desktop | None:
        sess = self._sessions.get(session_id)
        return sess.desktop if sess is not None else None

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    # -- plumbing -------------------------------------------------------------------------

    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _text(404, "404 page not found")
        except web.HTTPMethodNotAllowed:
            return _text(405, "405 method not allowed")
        except web.HTTPException:
            raise
        except DesktopUnavailable as exc:
            return _text(503, f"Sandbox not connected: {exc.message}")
        except SimError as exc:
            log.warning("%s %s failed: %s", request.method, request.path, exc)
            return _text(500, exc.message)

    def _token(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[len("Bearer "):].strip()
            if token:
                return token
        for header in ("x-api-key", "api-key"):
            value = request.headers.get(header, "").strip()
            if value:
                return value
        cookie = request.cookies.get("access_token")
        if cookie:
            return cookie
        query = request.query.get("access_token")
        return query or None

    def _user(self, request: web.Request) -> _User | None:
        token = self._token(request)
        if not token:
            return None
        for known, user in self._users.items():
            if hmac.compare_digest(token.encode(), known.encode()):
                return user
        return None

    def _session_or_404(self, request: web.Request, message: str) -> _Session | web.Response:
        sess = self._sessions.get(request.match_info["id"])
        if sess is None:
            return _text(404, message)
        return sess

    def _viewers_of(self, session_id: str) -> list[_StreamClient]:
        return [c for c in self._streams if c.session.id == session_id and c.streaming]

    def _forget(self, client: _StreamClient) -> None:
        self._streams.discard(client)
        if client.client_id is not None and self._by_client_id.get((client.session.id, client.client_id)) is client:
            del self._by_client_id[(client.session.id, client.client_id)]
        if client.unique_id is not None and self._by_unique_id.get((client.session.id, client.unique_id)) is client:
            del self._by_unique_id[(client.session.id, client.unique_id)]

    # -- unauthenticated --------------------------------------------------------------------

    async def _config(self, request: web.Request) -> web.Response:
        return _json({
            "filestore_prefix": "dev",
            "stripe_enabled": False,
            "sentry_dsn_frontend": "",
            "google_analytics_frontend": "",
            "eval_user_id": "",
            "tools_enabled": True,
            "apps_enabled": True,
            "version": HELIX_VERSION,
            "latest_version": HELIX_VERSION,
            "deployment_id": "sim",
            "license": None,
            "organizations_create_enabled_for_non_admins": True,
        })

    async def _health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    # -- readiness ------------------------------------------------------------------------

    async def _status(self, request: web.Request) -> web.Response:
        if "api_5xx" in self.config.faults:
            return _text(502, "502 Bad Gateway")
        user = self._user(request)
        if user is None:
            return _text(401, "unauthorized")
        return _json({
            "admin": user.admin,
            "user": user.id,
            "slug": user.name,
            "config": {"stripe_subscription_active": False, "stripe_customer_id": ""},
        })

    async def _sandboxes(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        if self._sandbox_online_at is None:
            return _json([])
        now = time.time()
        entry: dict[str, Any] = {
            "id": SANDBOX_ID,
            "created": _iso(self._sandbox_created),
            "updated": _iso(now),
            "ip_address": "172.19.0.6",
            "hostname": SANDBOX_CONTAINER,
            "status": "online",
            "last_seen": _iso(now),
            "gpu_vendor": "none",
            "render_node": "/dev/dri/renderD128",
            "active_sandboxes": sum(1 for s in self._sessions.values() if s.desktop is not None and s.desktop.available),
            "max_sandboxes": 20,
            "privileged_mode": False,
            "helix_version": HELIX_VERSION,
        }
        if self.sandbox_ready:
            entry["desktop_versions"] = {"ubuntu": self.desktop_hash}
        return _json([entry])

    # -- spec tasks and sessions --------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        if not request.can_read_body:
            return {}
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return _text(400, f"failed to decode request body: {exc}")
        if not isinstance(data, dict):
            return _text(400, "failed to decode request body: expected a JSON object")
        return data

    async def _from_prompt(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None:
            return _text(401, "unauthorized")
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return _text(400, "prompt is required")
        project = body.get("project_id") if isinstance(body.get("project_id"), str) and body.get("project_id") else self.config.project_id
        app_id = body.get("app_id") if isinstance(body.get("app_id"), str) and body.get("app_id") else self.config.agent_id
        now = time.time()
        first_line = prompt.strip().splitlines()[0]
        name = first_line if len(first_line) <= 60 else first_line[:57] + "..."
        task = _SpecTask(new_id("spt"), project, app_id, prompt, name, user.id, now, now)
        self._tasks[task.id] = task
        log.info("spec task %s created", task.id)
        return _json(task.to_json(), status=201)

    async def _get_task(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        task = self._tasks.get(request.match_info["id"])
        if task is None:
            return _text(404, "spec task not found")
        return _json(task.to_json())

    async def _start_planning(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None:
            return _text(401, "unauthorized")
        task = self._tasks.get(request.match_info["id"])
        if task is None:
            return _text(404, "spec task not found")
        if task.planning_session_id:
            return _json(task.to_json())
        now = time.time()
        sess = _Session(new_id("ses"), task, user.id, now, now, index=self._sessions_started)
        self._sessions_started += 1
        self._sessions[sess.id] = sess
        task.planning_session_id = sess.id
        task.status = "spec_generation"
        task.updated = now
        sess.provision = self._spawn(self._provision(sess))
        log.info("spec task %s: planning session %s", task.id, sess.id)
        return _json(task.to_json())

    def _slowdown(self, sess: _Session) -> float:
        return SLOWDOWN ** sess.index if "slow_after_running" in self.config.faults else 1.0

    async def _provision(self, sess: _Session) -> None:
        """The sandbox starts the session's desktop container (fault no_container: never)."""
        if not self.sandbox_ready:
            self._set_status(sess, STATUS_WAITING)
            while not self.sandbox_ready:  # the sandbox's own start-up (a modelled delay, not a test sleep)
                await asyncio.sleep(0.1)
        self._set_status(sess, STATUS_STARTING)
        if "no_container" in self.config.faults:
            log.info("session %s never gets a container (fault no_container)", sess.id)
            return
        factor = self._slowdown(sess)
        await asyncio.sleep(self.config.delay(self.config.session_delay_s) / factor)
        name = f"ubuntu-external-{sess.id[len('ses_'):]}"
        fps = self.config.effective_fps * factor
        env = {
            "HELIX_SESSION_ID": sess.id,
            "HELIX_VIDEO_MODE": self.config.video_mode,
            "HELIX_FRAME_EXPORT_PORT": str(getattr(self.qemu, "port", 15937) or 15937),
            "GST_DEBUG": "vsockenc:5",
            "GAMESCOPE_WIDTH": str(self.config.width),
            "GAMESCOPE_HEIGHT": str(self.config.height),
            "GAMESCOPE_REFRESH": str(int(round(fps))),
            "WAYLAND_DISPLAY": "wayland-0",
            "XDG_RUNTIME_DIR": "/run/user/1000",
        }
        labels = {
            "helix.sandbox": SANDBOX_CONTAINER,
            "helix.session_id": sess.id,
            "helix.spec_task_id": sess.task.id,
            "helix.desktop_type": "ubuntu",
        }
        container = self.engine.create_container(name, image=f"{DESKTOP_IMAGE}:{self.desktop_hash}", labels=labels, env=env)
        desktop = Desktop(self.config, session_id=sess.id, container=container, qemu=self.qemu, host=self.host, fps=fps)
        desktop.start()
        sess.container = container
        sess.desktop = desktop
        sess.agent_status = "running"
        self._set_status(sess, STATUS_READY)
        log.info("session %s: desktop container %s running (%.1f fps)", sess.id, name, fps)

    def _set_status(self, sess: _Session, message: str) -> None:
        sess.status_message = message
        sess.updated = time.time()

    async def _get_session(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        sess = self._session_or_404(request, "session not found")
        if isinstance(sess, web.Response):
            return sess
        skip = request.query.get("skipInteractions", "") not in ("", "0", "false")
        return _json(sess.to_json(self.config, interactions=not skip))

    async def _list_sessions(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        try:
            page = max(1, int(request.query.get("page", "1")))
            size = max(1, min(1000, int(request.query.get("page_size", request.query.get("pageSize", "50")))))
        except ValueError:
            return _text(400, "invalid page or page_size")
        ordered = sorted(self._sessions.values(), key=lambda s: s.created, reverse=True)
        chunk = ordered[(page - 1) * size : page * size]
        return _json({
            "sessions": [s.summary(self.config) for s in chunk],
            "page": page,
            "pageSize": size,
            "totalCount": len(ordered),
            "totalPages": max(1, math.ceil(len(ordered) / size)),
        })

    async def _stop_agent(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        sess = self._session_or_404(request, "session not found")
        if isinstance(sess, web.Response):
            return sess
        if sess.container is None or sess.desktop is None:
            return _text(400, "session does not have an external Zed agent")
        desktop, container = sess.desktop, sess.container
        for client in self._viewers_of(sess.id):
            client.abort("session stopped")
        await desktop.shutdown("session stopped")
        try:
            self.engine.remove(container.id)
        except SimError as exc:
            log.debug("removing %s: %s", container.name, exc)
        sess.container = None
        sess.desktop = None
        sess.stopped = True
        sess.agent_status = "stopped"
        self._set_status(sess, "")
        log.info("session %s stopped", sess.id)
        return _json({"message": "external Zed agent stopped", "session_id": sess.id})

    # -- desktop proxies ------------------------------------------------------------------------

    def _desktop_of(self, sess: _Session) -> Desktop:
        desktop = sess.desktop
        if desktop is None or not desktop.available:
            raise DesktopUnavailable(f"no connection to desktop-{sess.id}")
        return desktop

    async def _exec(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        sess = self._session_or_404(request, "Session not found")
        if isinstance(sess, web.Response):
            return sess
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return _text(400, f"invalid JSON: {exc}")
        if not isinstance(body, dict):
            return _text(400, "invalid JSON: expected an object")
        command = body.get("command") or []
        env = body.get("env") or None
        timeout = body.get("timeout") or 0
        if not isinstance(command, list) or (env is not None and not isinstance(env, dict)) or not isinstance(timeout, int):
            return _text(400, "invalid JSON: bad field types")
        desktop = self._desktop_of(sess)
        result = await desktop.exec(command, background=bool(body.get("background")), env=env, timeout=timeout)
        if isinstance(result.body, dict):
            return _json(result.body, status=result.status)
        return _text(result.status, result.body.rstrip("\n"))

    async def _screenshot(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        sess = self._session_or_404(request, "session not found")
        if isinstance(sess, web.Response):
            return sess
        desktop = self._desktop_of(sess)
        fmt = request.query.get("format", "jpeg").lower()
        if fmt not in ("jpeg", "jpg", "png"):
            return _text(400, f"unsupported format: {fmt}")
        try:
            quality = int(request.query.get("quality", "40"))  # the API's default; the desktop's is 70
        except ValueError:
            return _text(400, "invalid quality")
        data, ctype = await desktop.screenshot("png" if fmt == "png" else "jpeg", quality)
        etag = f'"{await asyncio.to_thread(_fnv64a, data):016x}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=data, content_type=ctype, headers={"ETag": etag, "Cache-Control": "no-cache"})

    # -- the WebSocket stream ---------------------------------------------------------------------

    async def _ws_stream(self, request: web.Request) -> web.StreamResponse:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        sess = self._sessions.get(request.match_info["id"])
        if sess is None:
            return _text(404, "session or sandbox not found")
        desktop = sess.desktop
        if "ws_503" in self.config.faults or desktop is None or not desktop.available:
            return self._raw_503(request)
        client_id = request.query.get("client_id") or None
        self._stream_numbers += 1
        client = _StreamClient(self, sess, request, self._stream_numbers, client_id)
        if client_id is not None:
            old = self._by_client_id.get((sess.id, client_id))
            if old is not None:
                self._spawn(old.supersede())
            self._by_client_id[(sess.id, client_id)] = client
        self._streams.add(client)
        try:
            return await client.run()
        finally:
            self._forget(client)

    def _raw_503(self, request: web.Request) -> web.StreamResponse:
        """After the hijack the proxy writes a hand-made response and drops the connection."""
        transport = request.transport
        if transport is not None and not transport.is_closing():
            transport.write(RAW_503)
            transport.close()
        request.protocol.force_close()
        return web.Response(status=503)


def _fnv64a(data: bytes) -> int:
    """FNV-1a, 64 bit (the desktop's screenshot ETag)."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


__all__ = ["ApiError", "HelixApi", "RUNNER_TOKEN", "new_id", "new_ulid"]
