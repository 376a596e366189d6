"""The WebSocket stream of ``/api/v1/external-agents/{sid}/ws/stream``, one :class:`StreamClient` per viewer.

After the TEXT init: 0x30 StreamInit, [0x51 CursorName unless scanout], TEXT ConnectionComplete, then
(when the init has a session_id) the viewer registers in the desktop's viewer registry
(:mod:`helix_sim.desktop.registry`: 0x58 SelfId, 0x54 joined to everyone, 0x54 joined for each other viewer;
the 6-byte 0x54 left when a viewer goes or is swept as stale), then 0x01 video frames (replay first for a
late joiner). Until the first frame a text StreamStatus ``starting_video`` every
``SimConfig.stream_status_interval_s``; none after ``first_frame_timeout_s``: 0x31 and a TCP close.
101 without subprotocol or extensions (401/404 are answered before the upgrade, by :mod:`.rest`). WS pings
every ``SimConfig.ws_ping_interval_s`` (5 s), a 30 s pong deadline, 0x40 Ping of 13+ bytes → 29-byte 0x41
Pong (with the :class:`Canary`'s scheduler lag), ``{"set_video_enabled": …}`` pauses, ``?client_id=`` dedup
(the old socket is closed 4000 "superseded"). Any data message (binary or text; not WS control frames) is
the viewer's activity. A pipeline error ends a viewer as ``ws_stream.go`` does: 0x31, then no frames and no
pings, the viewer leaves the registry, and the socket stays open until the read deadline closes it.
All wire formats come from :mod:`harness.protocols.stream`; fault ``superseded`` lives here.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable

from aiohttp import WSMsgType, web

from harness.protocols.errors import LocalProtocolError, RemoteProtocolError
from harness.protocols.stream import (
    CODEC_H264,
    FLAG_KEYFRAME,
    FLAG_REPLAY,
    STATUS_STARTING_VIDEO,
    ConnectionComplete,
    CursorName,
    Event,
    Init,
    Kind,
    MsgType,
    Ping,
    Role,
    StreamConnection,
    StreamError,
    StreamInit,
    StreamStatus,
    UnknownMessage,
    VideoFrame,
)

from ..._tasks import cancel_and_wait
from ...desktop import DesktopUnavailable, Frame, StreamStartError, Subscriber
from ...desktop.registry import Viewer, ViewerRegistry
from ...gofmt import NS_PER_S, go_duration
from .models import Session

if TYPE_CHECKING:
    from .rest import HelixApiServer

log = logging.getLogger("helix_sim.api")

#: How long the desktop waits for the TEXT init; the pong deadline (ws_stream.go).
INIT_DEADLINE_S = 30.0
PONG_DEADLINE_S = 30.0
#: Fault superseded: the server supersedes the streams this long after the first viewer's stream started.
SUPERSEDE_AT_S = 2.0
#: The StreamStatus a viewer gets until its first frame (newer upstream; only ``state`` is known).
STARTING_VIDEO = StreamStatus(STATUS_STARTING_VIDEO, "Waiting for the first video frame")


def no_first_frame_error(timeout_s: float) -> str:
    """The retryable ErrNoFirstFrame's text (newer upstream: "no video frame … within 10s")."""
    return f"no video frame received within {go_duration(round(timeout_s * NS_PER_S))}"


class Canary:
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


class StreamClient:
    """One viewer's WebSocket: init, the fixed preamble, frames, pings, pongs, and how it ends."""

    def __init__(self, api: "HelixApiServer", session: Session, request: web.Request, number: int, client_id: str | None) -> None:
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
        self.stopped = False  # Stop() after a pipeline error: no frames, no pings, the socket stays open
        self.viewer: Viewer | None = None
        self._registry: ViewerRegistry | None = None
        self._first_frame = asyncio.Event()
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

    def post(self, event: Event) -> None:
        """Queue one message (the registry's delivery; never blocks): sent in the order posted."""
        if self.ended is None and not self.ws.closed:
            self._spawn(self.send(event))

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
            self._register(desktop.registry, init)
        self._sender = self._spawn(self._send_frames(sub, width, height))
        self._spawn(self._starting_video())
        if "superseded" in self.api.config.faults:
            self._spawn(self._supersede_after(desktop.fault_clock.until(SUPERSEDE_AT_S) or 0.0))

    def _register(self, registry: ViewerRegistry, init: Init) -> None:
        """RegisterClient: SelfId, joined to all, the others' joined (all posted in order)."""

        def text(key: str) -> str:
            value = init.extra.get(key)
            return value if isinstance(value, str) else ""

        self._registry = registry
        self.viewer = registry.register(
            name=text("user_name"), avatar=text("avatar_url"), user_id=text("user_id"), unique_id=self.unique_id or "",
            deliver=self.post, evict=lambda: self.abort("a viewer with the same client_unique_id reconnected"),
        )

    def _unregister(self) -> None:
        registry, viewer = self._registry, self.viewer
        if registry is not None and viewer is not None:
            self._registry = None
            registry.unregister(viewer.id)

    def _touch(self) -> None:
        if self._registry is not None and self.viewer is not None:
            self._registry.touch(self.viewer.id)

    async def _starting_video(self) -> None:
        """Newer upstream: a StreamStatus ``starting_video`` every interval until the first frame; none within
        ``first_frame_timeout_s``: the retryable 0x31 and the connection dropped."""
        cfg = self.api.config
        deadline = time.monotonic() + cfg.first_frame_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(self._first_frame.wait(), min(cfg.stream_status_interval_s, max(0.0, remaining)))
                return
            except asyncio.TimeoutError:
                pass
            if not self.streaming or self.stopped:
                return
            if time.monotonic() >= deadline:
                message = no_first_frame_error(cfg.first_frame_timeout_s)
                log.info("stream %d (%s): %s", self.number, self.session.id, message)
                await self.send(StreamError(message))
                self._stop_frames()
                self.abort(message)
                return
            await self.send(STARTING_VIDEO)

    async def _send_frames(self, sub: Subscriber, width: int, height: int) -> None:
        for frame in sub.replay:
            if not await self._send_frame(frame, width, height, replay=True):
                return
        while True:
            frame = await sub.get()
            if frame is None:
                reason = sub.end_reason or "ended"
                if reason == "error":
                    await self._fail(sub.error or "pipeline error")
                elif reason != "closed":
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
            self._first_frame.set()
            if replay:
                self.replay_sent += 1
            else:
                self.frames_sent += 1
                self.encoder_latency_ms = min(0xFFFF, int((time.monotonic() - frame.published) * 1000))
        return ok

    async def _fail(self, message: str) -> None:
        """readFramesAndSend's error path: 0x31, then Stop() (heartbeat stops, the viewer leaves the registry).
        The socket stays open; the read deadline closes it 30 s after the last pong."""
        log.info("stream %d (%s): pipeline error: %s", self.number, self.session.id, message)
        await self.send(StreamError(message))
        self.stopped = True
        self._unregister()

    async def _read_loop(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                self._touch()  # UpdateClientActivity: data messages only, never WS control frames
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
            await asyncio.sleep(self.api.config.ws_ping_interval_s)
            if self.ws.closed or self.ended is not None:
                return
            if time.monotonic() - self.last_pong > PONG_DEADLINE_S:
                self.abort("no pong for 30 s (read deadline)")
                return
            if self.stopped:
                continue  # the heartbeat ended with Stop(); only the read deadline is left
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
        self._unregister()  # Stop(): the others hear it left (unless it was swept or evicted)
        if self.sub is not None and self.session.desktop is not None:
            self.session.desktop.close_stream(self.sub)
        self.conn.close()
        self.api._forget(self)


def _u16(value: int) -> int:
    return max(0, min(0xFFFF, int(value)))
