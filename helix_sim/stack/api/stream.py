"""The WebSocket stream of ``/api/v1/external-agents/{sid}/ws/stream``, one :class:`StreamClient` per viewer.

After the TEXT init: 0x30 StreamInit, [0x51 CursorName unless scanout], TEXT ConnectionComplete, 0x58
SelfId + 0x54 RemoteUser (when the init has a session_id), then 0x01 video frames (replay first for a
late joiner). 101 without subprotocol or extensions (401/404 are answered before the upgrade, by
:mod:`.rest`). WS pings every ``SimConfig.ws_ping_interval_s`` (5 s), a 30 s pong deadline, 0x40 Ping →
29-byte 0x41 Pong (with the :class:`Canary`'s scheduler lag), ``{"set_video_enabled": …}`` pauses,
``?client_id=`` dedup (the old socket is closed 4000 "superseded").
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

from ..._tasks import cancel_and_wait
from ...desktop import DesktopUnavailable, Frame, StreamStartError, Subscriber
from .models import Session

if TYPE_CHECKING:
    from .rest import HelixApiServer

log = logging.getLogger("helix_sim.api")

#: How long the desktop waits for the TEXT init; the pong deadline (ws_stream.go).
INIT_DEADLINE_S = 30.0
PONG_DEADLINE_S = 30.0
#: Fault superseded: the server supersedes a stream this long after it started.
SUPERSEDE_AT_S = 3.0

USER_COLORS = ("#FF6B6B", "#4ECDC4", "#45B7D1", "#96CEB4", "#FFEAA7", "#DDA0DD", "#98D8C8", "#F7DC6F")


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
            await asyncio.sleep(self.api.config.ws_ping_interval_s)
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
