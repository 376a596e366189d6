"""Helix WebSocket stream messages (sans-I/O).

The payloads of ``/api/v1/external-agents/{sid}/ws/stream`` (reference: helix-stream.md §4). The WS
framing itself belongs to ``websockets``/aiohttp; this module only turns message payloads into events
and back. Most binary messages are big-endian; cursor/presence messages (0x50, 0x51, 0x54, 0x58) are
little-endian, so every layout below carries its own byte order.

``StreamConnection(role)`` tracks ``AWAITING_INIT → STREAMING → CLOSED`` for either end.

Other viewers of the same session are normal traffic (upstream-corrections.md §1): 0x58 SelfId, 0x54
RemoteUser joined and the 6-byte ``RemoteUserLeft``, and the cursor/presence messages 0x50, 0x51, 0x53
``RemoteCursor``, 0x55 ``AgentCursor`` and 0x56 ``RemoteTouch`` can arrive at any point. Until the first
frame a newer server sends a text ``StreamStatus`` (``state: "starting_video"``). Any other binary type is
an ``UnknownMessage`` (lossless), any other text a ``TextMessage``. Only real errors raise
``RemoteProtocolError``: a malformed video frame header, or a known fixed layout that is cut short or too
long. ``classify()`` and ``StreamTally`` give the live capture and the offline ``analyze`` one rule for
what is a viewer event, a status message and an error.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Union

from ._fields import check_int as _check_int, short_repr as _short_repr, signed as _i, unsigned as _u
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "Kind", "KIND_BINARY", "KIND_TEXT", "MsgType", "Role", "State",
    "CODEC_H264", "CODEC_NAMES", "FLAG_KEYFRAME", "FLAG_REPLAY", "REMOTE_USER_JOINED", "REMOTE_USER_LEFT",
    "codec_name",
    "VideoFrame", "StreamInit", "StreamError", "Ping", "Pong", "CursorImage", "CursorName", "SelfId",
    "RemoteUser", "RemoteUserLeft", "RemoteCursor", "AgentCursor", "RemoteTouch",
    "ConnectionComplete", "Init", "StreamStatus", "TextMessage", "UnknownMessage", "Event",
    "parse_binary", "parse_text", "decode_video_header", "StreamConnection",
    "Category", "classify", "is_viewer_event", "is_cursor_event", "is_status_event", "is_error", "StreamTally",
    "VIDEO_FRAME_HEADER", "STREAM_INIT", "STREAM_ERROR_HEADER", "PING", "PONG", "CURSOR_IMAGE", "CURSOR_BITMAP",
    "CURSOR_NAME", "SELF_ID", "REMOTE_USER_HEADER", "REMOTE_USER_LEFT_LAYOUT", "REMOTE_CURSOR_HEADER",
    "AGENT_CURSOR", "REMOTE_TOUCH_HEADER", "STATUS_STARTING_VIDEO",
]


class Kind(enum.IntEnum):
    """WebSocket message kind, as stored in recordings."""

    BINARY = 0
    TEXT = 1


KIND_BINARY = Kind.BINARY
KIND_TEXT = Kind.TEXT


class MsgType(enum.IntEnum):
    """First byte of a binary message."""

    VIDEO_FRAME = 0x01
    AUDIO_FRAME = 0x02  # defined, never sent by the Go server
    VIDEO_BATCH = 0x03  # defined, never sent by the Go server
    KEYBOARD = 0x10
    MOUSE_CLICK = 0x11
    MOUSE_ABSOLUTE = 0x12
    MOUSE_RELATIVE = 0x13
    TOUCH = 0x14
    CONTROL = 0x20
    STREAM_INIT = 0x30
    STREAM_ERROR = 0x31
    PING = 0x40
    PONG = 0x41
    CURSOR_IMAGE = 0x50
    CURSOR_NAME = 0x51
    REMOTE_CURSOR = 0x53
    REMOTE_USER = 0x54
    AGENT_CURSOR = 0x55
    REMOTE_TOUCH = 0x56
    SELF_ID = 0x58


CODEC_H264 = 0x01
#: Codec names as the CLI prints them (`Codec:` line, `📺 StreamInit:` line).
CODEC_NAMES = {
    0x01: "H.264", 0x02: "H.264 High 4:4:4", 0x10: "HEVC", 0x11: "HEVC Main10", 0x20: "AV1", 0x21: "AV1 10bit",
}
FLAG_KEYFRAME = 0x01
FLAG_REPLAY = 0x02
REMOTE_USER_JOINED = 0x01
REMOTE_USER_LEFT = 0x00
#: ``state`` of the newer server's text StreamStatus until the first frame (upstream-corrections.md §2).
STATUS_STARTING_VIDEO = "starting_video"


def codec_name(codec: int) -> str:
    """The CLI's name for a codec byte, e.g. ``H.264`` or ``Unknown(0x07)``."""
    return CODEC_NAMES.get(codec, f"Unknown(0x{codec:02x})")


# ---------------------------------------------------------------- validation helpers


def _as_bytes(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if isinstance(value, bytes):
        return
    if isinstance(value, (bytearray, memoryview)):
        object.__setattr__(owner, name, bytes(value))
        return
    raise LocalProtocolError(f"{type(owner).__name__}.{name} must be bytes, got {type(value).__name__}")


def _check_str(owner: object, name: str, max_bytes: int | None = None) -> None:
    value = getattr(owner, name)
    if not isinstance(value, str):
        raise LocalProtocolError(f"{type(owner).__name__}.{name} must be a str, got {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{type(owner).__name__}.{name} is not encodable as UTF-8") from exc
    if max_bytes is not None and size > max_bytes:
        raise LocalProtocolError(f"{type(owner).__name__}.{name} is {size} bytes in UTF-8, limit {max_bytes}")


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"{what} is not valid UTF-8", data=data) from exc


def _need(data: bytes, size: int, what: str, *, exact: bool = True) -> None:
    if len(data) < size or (exact and len(data) != size):
        want = f"{size}" if exact else f"at least {size}"
        raise RemoteProtocolError(f"{what}: expected {want} bytes, got {len(data)}", data=data[:64])


# ---------------------------------------------------------------- binary messages

VIDEO_FRAME_HEADER = struct.Struct(">BBBQHH")  # type, codec, flags, pts µs, width, height: 15 B


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """0x01 S→C: 15-byte BE header + one Annex-B access unit."""

    codec: int
    flags: int
    pts_us: int
    width: int
    height: int
    data: bytes = b""

    __repr__ = _short_repr

    def __post_init__(self) -> None:
        _u(self, 8, "codec", "flags")
        _u(self, 64, "pts_us")
        _u(self, 16, "width", "height")
        _as_bytes(self, "data")

    @property
    def is_keyframe(self) -> bool:
        return bool(self.flags & FLAG_KEYFRAME)

    @property
    def is_replay(self) -> bool:
        return bool(self.flags & FLAG_REPLAY)

    def encode(self) -> bytes:
        head = VIDEO_FRAME_HEADER.pack(
            MsgType.VIDEO_FRAME, self.codec, self.flags, self.pts_us, self.width, self.height
        )
        return head + self.data

    @classmethod
    def decode(cls, data: bytes) -> VideoFrame:
        codec, flags, pts, width, height = decode_video_header(data)
        return cls(codec, flags, pts, width, height, data[VIDEO_FRAME_HEADER.size :])


def decode_video_header(data: bytes) -> tuple[int, int, int, int, int]:
    """``(codec, flags, pts_us, width, height)`` of a 0x01 message without copying its access unit.

    The whole validation of a video frame (``VideoFrame.decode`` uses it): a header cut short raises
    ``RemoteProtocolError``. Offline analysis uses it on its hot path.
    """
    if len(data) < VIDEO_FRAME_HEADER.size:
        _need(data, VIDEO_FRAME_HEADER.size, "VideoFrame header", exact=False)
    return VIDEO_FRAME_HEADER.unpack_from(data)[1:]  # type: ignore[return-value]


STREAM_INIT = struct.Struct(">BBHHBBIB")  # 13 B


@dataclass(frozen=True, slots=True)
class StreamInit:
    """0x30 S→C: codec, echoed width/height/fps, audio channels, sample rate, touch (13 B, BE)."""

    codec: int
    width: int
    height: int
    fps: int
    audio_channels: int = 0
    sample_rate: int = 0
    touch: int = 1

    def __post_init__(self) -> None:
        _u(self, 8, "codec", "fps", "audio_channels", "touch")
        _u(self, 16, "width", "height")
        _u(self, 32, "sample_rate")

    def encode(self) -> bytes:
        return STREAM_INIT.pack(
            MsgType.STREAM_INIT, self.codec, self.width, self.height, self.fps,
            self.audio_channels, self.sample_rate, self.touch,
        )

    @classmethod
    def decode(cls, data: bytes) -> StreamInit:
        _need(data, STREAM_INIT.size, "StreamInit")
        return cls(*STREAM_INIT.unpack(data)[1:])


STREAM_ERROR_HEADER = struct.Struct(">BH")  # type, u16 length, then UTF-8


@dataclass(frozen=True, slots=True)
class StreamError:
    """0x31 S→C: a UTF-8 error message (u16 BE length)."""

    message: str

    def __post_init__(self) -> None:
        _check_str(self, "message", 0xFFFF)

    def encode(self) -> bytes:
        raw = self.message.encode("utf-8")
        return STREAM_ERROR_HEADER.pack(MsgType.STREAM_ERROR, len(raw)) + raw

    @classmethod
    def decode(cls, data: bytes) -> StreamError:
        _need(data, STREAM_ERROR_HEADER.size, "StreamError header", exact=False)
        _, length = STREAM_ERROR_HEADER.unpack_from(data)
        _need(data, STREAM_ERROR_HEADER.size + length, "StreamError")
        return cls(_utf8(data[STREAM_ERROR_HEADER.size :], "StreamError message"))


PING = struct.Struct(">BIQ")  # 13 B
PONG = struct.Struct(">BIQQHHHH")  # 29 B


@dataclass(frozen=True, slots=True)
class Ping:
    """0x40 C→S: sequence number and client time in µs (13 B).

    The server answers any 0x40 of at least 13 bytes (upstream-corrections.md §1, ``ws_stream.go``
    ~L1973: ``len(msg) >= 13``); bytes after the 13th are kept in ``extra`` so the event stays lossless.
    """

    seq: int
    client_time_us: int
    extra: bytes = b""

    __repr__ = _short_repr

    def __post_init__(self) -> None:
        _u(self, 32, "seq")
        _u(self, 64, "client_time_us")
        _as_bytes(self, "extra")

    def encode(self) -> bytes:
        return PING.pack(MsgType.PING, self.seq, self.client_time_us) + self.extra

    def response(
        self,
        server_time_us: int,
        encoder_latency_ms: int = 0,
        canary_p50_ms: int = 0,
        canary_p99_ms: int = 0,
        canary_max_ms: int = 0,
    ) -> Pong:
        """The Pong that answers this Ping (the caller supplies the clock)."""
        return Pong(self.seq, self.client_time_us, server_time_us, encoder_latency_ms,
                    canary_p50_ms, canary_p99_ms, canary_max_ms)

    @classmethod
    def decode(cls, data: bytes) -> Ping:
        _need(data, PING.size, "Ping", exact=False)
        _, seq, client_time = PING.unpack_from(data)
        return cls(seq, client_time, data[PING.size :])


@dataclass(frozen=True, slots=True)
class Pong:
    """0x41 S→C: echoed seq/client time, server UnixMicro, encoder latency and canary stats (29 B)."""

    seq: int
    client_time_us: int
    server_time_us: int
    encoder_latency_ms: int = 0
    canary_p50_ms: int = 0
    canary_p99_ms: int = 0
    canary_max_ms: int = 0

    def __post_init__(self) -> None:
        _u(self, 32, "seq")
        _u(self, 64, "client_time_us", "server_time_us")
        _u(self, 16, "encoder_latency_ms", "canary_p50_ms", "canary_p99_ms", "canary_max_ms")

    def encode(self) -> bytes:
        return PONG.pack(
            MsgType.PONG, self.seq, self.client_time_us, self.server_time_us, self.encoder_latency_ms,
            self.canary_p50_ms, self.canary_p99_ms, self.canary_max_ms,
        )

    @classmethod
    def decode(cls, data: bytes) -> Pong:
        _need(data, PONG.size, "Pong")
        return cls(*PONG.unpack(data)[1:])


CURSOR_IMAGE = struct.Struct("<BIiiiiI")  # type, lastMoverID, posX, posY, hotX, hotY, bitmapSize: 25 B, LE
CURSOR_BITMAP = struct.Struct("<IIIi")  # format fourcc, width, height, stride: 16 B, LE


@dataclass(frozen=True, slots=True)
class CursorImage:
    """0x50 S→C (LE). ``format`` is None when the message carries no bitmap (bitmapSize 0).

    On the wire bitmapSize = 16 (format/width/height/stride) + len(pixels).
    """

    last_mover_id: int
    x: int
    y: int
    hot_x: int
    hot_y: int
    format: int | None = None
    width: int = 0
    height: int = 0
    stride: int = 0
    pixels: bytes = b""

    __repr__ = _short_repr

    def __post_init__(self) -> None:
        _u(self, 32, "last_mover_id", "width", "height")
        _i(self, 32, "x", "y", "hot_x", "hot_y", "stride")
        _as_bytes(self, "pixels")
        if self.format is None:
            if self.width or self.height or self.stride or self.pixels:
                raise LocalProtocolError("CursorImage without format cannot carry a bitmap")
        else:
            _u(self, 32, "format")
            if CURSOR_BITMAP.size + len(self.pixels) > 0xFFFFFFFF:
                raise LocalProtocolError("CursorImage bitmap too large")

    @property
    def has_bitmap(self) -> bool:
        return self.format is not None

    def encode(self) -> bytes:
        size = 0 if self.format is None else CURSOR_BITMAP.size + len(self.pixels)
        head = CURSOR_IMAGE.pack(
            MsgType.CURSOR_IMAGE, self.last_mover_id, self.x, self.y, self.hot_x, self.hot_y, size
        )
        if self.format is None:
            return head
        return head + CURSOR_BITMAP.pack(self.format, self.width, self.height, self.stride) + self.pixels

    @classmethod
    def decode(cls, data: bytes) -> CursorImage:
        _need(data, CURSOR_IMAGE.size, "CursorImage header", exact=False)
        _, mover, x, y, hot_x, hot_y, size = CURSOR_IMAGE.unpack_from(data)
        if size == 0:
            _need(data, CURSOR_IMAGE.size, "CursorImage without bitmap")
            return cls(mover, x, y, hot_x, hot_y)
        if size < CURSOR_BITMAP.size:
            raise RemoteProtocolError(
                f"CursorImage bitmapSize {size} is smaller than its 16-byte header", data=data[:64]
            )
        _need(data, CURSOR_IMAGE.size + size, "CursorImage")
        fmt, width, height, stride = CURSOR_BITMAP.unpack_from(data, CURSOR_IMAGE.size)
        pixels = data[CURSOR_IMAGE.size + CURSOR_BITMAP.size :]
        return cls(mover, x, y, hot_x, hot_y, fmt, width, height, stride, pixels)


CURSOR_NAME = struct.Struct("<BIiiB")  # type, lastMoverID, hotX, hotY, nameLen: 14 B, LE


@dataclass(frozen=True, slots=True)
class CursorName:
    """0x51 S→C (LE): a CSS cursor name (u8 length) with hotspot."""

    last_mover_id: int
    hot_x: int
    hot_y: int
    name: str

    def __post_init__(self) -> None:
        _u(self, 32, "last_mover_id")
        _i(self, 32, "hot_x", "hot_y")
        _check_str(self, "name", 0xFF)

    def encode(self) -> bytes:
        raw = self.name.encode("utf-8")
        return CURSOR_NAME.pack(MsgType.CURSOR_NAME, self.last_mover_id, self.hot_x, self.hot_y, len(raw)) + raw

    @classmethod
    def decode(cls, data: bytes) -> CursorName:
        _need(data, CURSOR_NAME.size, "CursorName header", exact=False)
        _, mover, hot_x, hot_y, length = CURSOR_NAME.unpack_from(data)
        _need(data, CURSOR_NAME.size + length, "CursorName")
        return cls(mover, hot_x, hot_y, _utf8(data[CURSOR_NAME.size :], "CursorName name"))


SELF_ID = struct.Struct("<BI")  # 5 B, LE


@dataclass(frozen=True, slots=True)
class SelfId:
    """0x58 S→C (LE): this client's id."""

    client_id: int

    def __post_init__(self) -> None:
        _u(self, 32, "client_id")

    def encode(self) -> bytes:
        return SELF_ID.pack(MsgType.SELF_ID, self.client_id)

    @classmethod
    def decode(cls, data: bytes) -> SelfId:
        _need(data, SELF_ID.size, "SelfId")
        return cls(SELF_ID.unpack(data)[1])


REMOTE_USER_HEADER = struct.Struct("<BBI")  # type, action, userId: 6 B, LE
_U8 = struct.Struct("<B")
_U16LE = struct.Struct("<H")


@dataclass(frozen=True, slots=True)
class RemoteUser:
    """0x54 S→C (LE), a viewer **joined**: action (0x01), user id, name (u8 len), color (u8 len), avatar URL
    (u16 len). Sent to every viewer of the session, the new one included, and to a new viewer for each
    existing one (``session_registry.go`` ``broadcastUserJoined``/``sendExistingUsers``). Action 0x00 is
    the 6-byte ``RemoteUserLeft``; another non-zero action is kept as sent (the browser reads it as a join).
    """

    action: int
    user_id: int
    name: str
    color: str
    avatar: str = ""

    @property
    def joined(self) -> bool:
        return True

    def __post_init__(self) -> None:
        _u(self, 8, "action")
        if self.action == REMOTE_USER_LEFT:
            raise LocalProtocolError("RemoteUser action 0x00 is 'left': use RemoteUserLeft (6 bytes, no name)")
        _u(self, 32, "user_id")
        _check_str(self, "name", 0xFF)
        _check_str(self, "color", 0xFF)
        _check_str(self, "avatar", 0xFFFF)

    def encode(self) -> bytes:
        name, color, avatar = (s.encode("utf-8") for s in (self.name, self.color, self.avatar))
        return b"".join((
            REMOTE_USER_HEADER.pack(MsgType.REMOTE_USER, self.action, self.user_id),
            _U8.pack(len(name)), name, _U8.pack(len(color)), color, _U16LE.pack(len(avatar)), avatar,
        ))

    @classmethod
    def decode(cls, data: bytes) -> RemoteUser | RemoteUserLeft:
        """Either layout of 0x54: action 0x00 → ``RemoteUserLeft`` (exactly 6 bytes), else a join."""
        _need(data, REMOTE_USER_HEADER.size, "RemoteUser header", exact=False)
        _, action, user_id = REMOTE_USER_HEADER.unpack_from(data)
        if action == REMOTE_USER_LEFT:
            return RemoteUserLeft.decode(data)
        pos = REMOTE_USER_HEADER.size
        fields = []
        for what, length_struct in (("name", _U8), ("color", _U8), ("avatar", _U16LE)):
            _need(data, pos + length_struct.size, f"RemoteUser {what} length", exact=False)
            (length,) = length_struct.unpack_from(data, pos)
            pos += length_struct.size
            _need(data, pos + length, f"RemoteUser {what}", exact=False)
            fields.append(_utf8(data[pos : pos + length], f"RemoteUser {what}"))
            pos += length
        _need(data, pos, "RemoteUser")
        return cls(action, user_id, *fields)


REMOTE_USER_LEFT_LAYOUT = struct.Struct("<BBI")  # type, action 0x00, userId: exactly 6 B, LE


@dataclass(frozen=True, slots=True)
class RemoteUserLeft:
    """0x54 S→C (LE), a viewer **left**: exactly ``54 00 <userId u32 LE>`` (6 bytes).

    Sent to every remaining viewer when another viewer's socket ends, and by the stale-client sweep
    (30 s without a data message) although that viewer's socket stays open (``session_registry.go``
    ``broadcastUserLeft``; upstream-corrections.md §1). Normal traffic, never an error.
    """

    user_id: int

    @property
    def action(self) -> int:
        return REMOTE_USER_LEFT

    @property
    def joined(self) -> bool:
        return False

    def __post_init__(self) -> None:
        _u(self, 32, "user_id")

    def encode(self) -> bytes:
        return REMOTE_USER_LEFT_LAYOUT.pack(MsgType.REMOTE_USER, REMOTE_USER_LEFT, self.user_id)

    @classmethod
    def decode(cls, data: bytes) -> RemoteUserLeft:
        _need(data, REMOTE_USER_LEFT_LAYOUT.size, "RemoteUser left")
        _, action, user_id = REMOTE_USER_LEFT_LAYOUT.unpack(data)
        if action != REMOTE_USER_LEFT:
            raise RemoteProtocolError(f"RemoteUser left has action 0x{action:02x}, not 0x00", data=data[:64])
        return cls(user_id)


def _decode_color(data: bytes, pos: int, what: str) -> str:
    """A u8-length UTF-8 string at ``pos`` that must end the message exactly."""
    _need(data, pos + 1, f"{what} color length", exact=False)
    length = data[pos]
    _need(data, pos + 1 + length, what)
    return _utf8(data[pos + 1 :], f"{what} color")


REMOTE_CURSOR_HEADER = struct.Struct("<BIiiB")  # type, userId, x, y, colorLen: 14 B, LE; then color


@dataclass(frozen=True, slots=True)
class RemoteCursor:
    """0x53 S→C (LE): another viewer's cursor position and colour.

    ``type(1) + userId u32 + x i32 + y i32 + colorLen u8 + color`` (``session_registry.go``
    ``BroadcastCursorPosition``; the browser reads x/y as signed).
    """

    user_id: int
    x: int
    y: int
    color: str = ""

    def __post_init__(self) -> None:
        _u(self, 32, "user_id")
        _i(self, 32, "x", "y")
        _check_str(self, "color", 0xFF)

    def encode(self) -> bytes:
        raw = self.color.encode("utf-8")
        return REMOTE_CURSOR_HEADER.pack(MsgType.REMOTE_CURSOR, self.user_id, self.x, self.y, len(raw)) + raw

    @classmethod
    def decode(cls, data: bytes) -> RemoteCursor:
        _need(data, REMOTE_CURSOR_HEADER.size, "RemoteCursor header", exact=False)
        _, user_id, x, y, _length = REMOTE_CURSOR_HEADER.unpack_from(data)
        return cls(user_id, x, y, _decode_color(data, REMOTE_CURSOR_HEADER.size - 1, "RemoteCursor"))


AGENT_CURSOR = struct.Struct("<BIHHBB")  # type, agentId, x u16, y u16, action, visible: 11 B, LE


@dataclass(frozen=True, slots=True)
class AgentCursor:
    """0x55 S→C (LE), the AI agent's cursor: ``agentId u32, x u16, y u16, action u8, visible u8`` (11 B).

    ``session_registry.go`` ``BroadcastAgentCursor`` (action 0 idle, 1 moving, 2 clicking, 3 typing,
    4 scrolling, 5 dragging; visible 0/1, kept as the byte sent).
    """

    agent_id: int
    x: int
    y: int
    action: int = 0
    visible: int = 1

    def __post_init__(self) -> None:
        _u(self, 32, "agent_id")
        _u(self, 16, "x", "y")
        _u(self, 8, "action", "visible", allow_bool=True)

    def encode(self) -> bytes:
        return AGENT_CURSOR.pack(MsgType.AGENT_CURSOR, self.agent_id, self.x, self.y, self.action, self.visible)

    @classmethod
    def decode(cls, data: bytes) -> AgentCursor:
        _need(data, AGENT_CURSOR.size, "AgentCursor")
        return cls(*AGENT_CURSOR.unpack(data)[1:])


REMOTE_TOUCH_HEADER = struct.Struct("<BIIBiiIB")  # type, userId, touchId, eventType, x, y, pressure, colorLen: 23 B


@dataclass(frozen=True, slots=True)
class RemoteTouch:
    """0x56 S→C (LE), another viewer's touch: ``userId u32, touchId u32, eventType u8, x i32, y i32,
    pressure u32 (fixed point, ×65535), colorLen u8, color`` (``session_registry.go`` ``BroadcastTouchEvent``).
    """

    user_id: int
    touch_id: int
    event_type: int
    x: int
    y: int
    pressure_raw: int = 0
    color: str = ""

    def __post_init__(self) -> None:
        _u(self, 32, "user_id", "touch_id", "pressure_raw")
        _u(self, 8, "event_type")
        _i(self, 32, "x", "y")
        _check_str(self, "color", 0xFF)

    @property
    def pressure(self) -> float:
        return self.pressure_raw / 65535

    def encode(self) -> bytes:
        raw = self.color.encode("utf-8")
        return REMOTE_TOUCH_HEADER.pack(
            MsgType.REMOTE_TOUCH, self.user_id, self.touch_id, self.event_type, self.x, self.y, self.pressure_raw,
            len(raw),
        ) + raw

    @classmethod
    def decode(cls, data: bytes) -> RemoteTouch:
        _need(data, REMOTE_TOUCH_HEADER.size, "RemoteTouch header", exact=False)
        _, user_id, touch_id, event_type, x, y, pressure, _length = REMOTE_TOUCH_HEADER.unpack_from(data)
        color = _decode_color(data, REMOTE_TOUCH_HEADER.size - 1, "RemoteTouch")
        return cls(user_id, touch_id, event_type, x, y, pressure, color)


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """Any other binary message, kept losslessly: type byte + raw payload."""

    type_byte: int
    payload: bytes = b""

    __repr__ = _short_repr

    def __post_init__(self) -> None:
        _u(self, 8, "type_byte")
        _as_bytes(self, "payload")

    def encode(self) -> bytes:
        return bytes((self.type_byte,)) + self.payload


# ---------------------------------------------------------------- text messages


def _go_json(obj: Any) -> str:
    """Compact JSON as Go's encoding/json writes it (sorted map keys, HTML-safe escapes)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True, allow_nan=False)
    for char in ("<", ">", "&", "\u2028", "\u2029"):
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


_INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclass(frozen=True, slots=True)
class ConnectionComplete:
    """S→C text JSON after StreamInit. ``to_text`` matches gorilla's WriteJSON (trailing newline)."""

    width: int
    height: int
    touch: bool = False

    def __post_init__(self) -> None:
        _check_int(self, "width", *_INT64)
        _check_int(self, "height", *_INT64)
        if not isinstance(self.touch, bool):
            raise LocalProtocolError("ConnectionComplete.touch must be a bool")

    def to_text(self) -> str:
        touch = "true" if self.touch else "false"
        body = f'{{"capabilities":{{"touch":{touch}}},"width":{self.width},"height":{self.height}}}'
        return f'{{"ConnectionComplete":{body}}}\n'

    @classmethod
    def from_json(cls, obj: dict, text: str) -> ConnectionComplete:
        body = obj.get("ConnectionComplete")
        bad = RemoteProtocolError("malformed ConnectionComplete message", data=text.encode("utf-8", "replace")[:256])
        if not isinstance(body, dict):
            raise bad
        caps = body.get("capabilities", {})
        width, height = body.get("width"), body.get("height")
        touch = caps.get("touch", False) if isinstance(caps, dict) else None
        if not isinstance(touch, bool) or not _is_json_int(width) or not _is_json_int(height):
            raise bad
        return cls(width, height, touch)


def _is_json_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and _INT64[0] <= value <= _INT64[1]


#: Init fields with their Go zero value (what the server sees when a key is absent or null).
_INIT_FIELDS: dict[str, Any] = {
    "session_id": "", "width": 0, "height": 0, "fps": 0, "bitrate": 0, "packet_size": 0,
    "play_audio_local": False, "video_supported_formats": 0,
}


@dataclass(frozen=True, slots=True)
class Init:
    """C→S text JSON ``type:"init"`` (StreamConfig). ``extra`` holds every other key (host_id, gop_size, …).

    ``to_text`` writes the bytes Go's ``json.Marshal(map)`` gives, as the CLI sends it: compact, keys sorted.
    """

    session_id: str
    width: int
    height: int
    fps: int
    bitrate: int
    packet_size: int = 1024
    play_audio_local: bool = False
    video_supported_formats: int = 1
    video_mode: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_str(self, "session_id")
        for name in ("width", "height", "fps", "bitrate", "packet_size", "video_supported_formats"):
            _check_int(self, name, *_INT64)
        if not isinstance(self.play_audio_local, bool):
            raise LocalProtocolError("Init.play_audio_local must be a bool")
        if self.video_mode is not None:
            _check_str(self, "video_mode")
        if not isinstance(self.extra, dict) or not all(isinstance(k, str) for k in self.extra):
            raise LocalProtocolError("Init.extra must be a dict with str keys")
        clash = set(self.extra) & (set(_INIT_FIELDS) | {"type", "video_mode"})
        if clash:
            raise LocalProtocolError(f"Init.extra repeats named fields: {sorted(clash)}")
        object.__setattr__(self, "extra", dict(self.extra))
        try:
            _go_json(self.extra)
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"Init.extra is not JSON-serialisable: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"type": "init"}
        obj.update({name: getattr(self, name) for name in _INIT_FIELDS})
        if self.video_mode is not None:
            obj["video_mode"] = self.video_mode
        obj.update(self.extra)
        return obj

    def to_text(self) -> str:
        return _go_json(self.to_json())

    @classmethod
    def from_json(cls, obj: dict, text: str) -> Init:
        values: dict[str, Any] = {}
        for name, zero in _INIT_FIELDS.items():
            value = obj.get(name)
            if value is None:
                values[name] = zero
                continue
            if isinstance(zero, bool):
                ok = isinstance(value, bool)
            elif isinstance(zero, int):
                ok = _is_json_int(value)
            else:
                ok = isinstance(value, str)
            if not ok:
                raise RemoteProtocolError(
                    f"init field {name!r} has the wrong type ({type(value).__name__})",
                    data=text.encode("utf-8", "replace")[:256],
                )
            values[name] = value
        mode = obj.get("video_mode")
        if mode is not None and not isinstance(mode, str):
            raise RemoteProtocolError(
                "init field 'video_mode' must be a string", data=text.encode("utf-8", "replace")[:256]
            )
        extra = {k: v for k, v in obj.items() if k not in _INIT_FIELDS and k not in ("type", "video_mode")}
        return cls(video_mode=mode, extra=extra, **values)


_STATUS_WRAPPERS = ("StreamStatus", "stream_status", "status")


def _status_body(obj: object) -> dict | None:
    """The status object of a StreamStatus text, or None.

    Upstream's exact JSON beyond ``state`` is not in the references (a newer commit, corrections §2), so
    any JSON object with a string ``state`` is one, bare or wrapped as ``{"StreamStatus": {...}}``.
    """
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("state"), str):
        return obj
    if len(obj) == 1:
        inner = next(iter(obj.values()))
        if next(iter(obj)) in _STATUS_WRAPPERS and isinstance(inner, dict) and isinstance(inner.get("state"), str):
            return inner
    return None


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """S→C text JSON status of a newer server, e.g. ``state: "starting_video"`` every few seconds until
    the first frame (upstream-corrections.md §2). Evidence for time-to-first-frame, never an error.

    ``fields`` holds the body's other keys; ``text`` is the message as received (``to_text`` returns it,
    so a parsed status is lossless) and is ignored by ``==``. A status built here renders as
    ``{"message":…,"state":…,<fields>}`` in Go's key order.
    """

    state: str
    message: str = ""
    fields: dict[str, Any] = field(default_factory=dict, hash=False)
    text: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check_str(self, "state")
        _check_str(self, "message")
        if not isinstance(self.text, str):
            raise LocalProtocolError(f"StreamStatus.text must be a str, got {type(self.text).__name__}")
        if not isinstance(self.fields, dict) or not all(isinstance(k, str) for k in self.fields):
            raise LocalProtocolError("StreamStatus.fields must be a dict with str keys")
        if not self.text and {"state", "message"} & set(self.fields):
            raise LocalProtocolError("StreamStatus.fields repeats 'state' or 'message'")
        object.__setattr__(self, "fields", dict(self.fields))

    @property
    def starting_video(self) -> bool:
        return self.state == STATUS_STARTING_VIDEO

    def to_text(self) -> str:
        if self.text:
            return self.text
        body: dict[str, Any] = {"state": self.state, **self.fields}
        if self.message:
            body["message"] = self.message
        try:
            return _go_json(body)
        except (TypeError, ValueError) as exc:
            raise LocalProtocolError(f"StreamStatus.fields is not JSON-serialisable: {exc}") from exc

    @classmethod
    def from_json(cls, body: dict, text: str) -> StreamStatus:
        message = body.get("message")
        fields_ = {k: v for k, v in body.items() if k != "state" and not (k == "message" and isinstance(v, str))}
        return cls(body["state"], message if isinstance(message, str) else "", fields_, text)


@dataclass(frozen=True, slots=True)
class TextMessage:
    """Any other text message, verbatim."""

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise LocalProtocolError(f"TextMessage.text must be a str, got {type(self.text).__name__}")

    def to_text(self) -> str:
        return self.text


Event = Union[
    VideoFrame, StreamInit, StreamError, Ping, Pong, CursorImage, CursorName, SelfId, RemoteUser, RemoteUserLeft,
    RemoteCursor, AgentCursor, RemoteTouch, UnknownMessage, ConnectionComplete, Init, StreamStatus, TextMessage,
]

_DECODERS = {
    MsgType.VIDEO_FRAME: VideoFrame.decode,
    MsgType.STREAM_INIT: StreamInit.decode,
    MsgType.STREAM_ERROR: StreamError.decode,
    MsgType.PING: Ping.decode,
    MsgType.PONG: Pong.decode,
    MsgType.CURSOR_IMAGE: CursorImage.decode,
    MsgType.CURSOR_NAME: CursorName.decode,
    MsgType.SELF_ID: SelfId.decode,
    MsgType.REMOTE_USER: RemoteUser.decode,
    MsgType.REMOTE_CURSOR: RemoteCursor.decode,
    MsgType.AGENT_CURSOR: AgentCursor.decode,
    MsgType.REMOTE_TOUCH: RemoteTouch.decode,
}


def _to_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise LocalProtocolError(f"binary message must be bytes, got {type(data).__name__}")


def parse_binary(data: bytes) -> Event:
    """Decode one binary message; unknown types become ``UnknownMessage``."""
    data = _to_bytes(data)
    if not data:
        raise RemoteProtocolError("empty binary message (no type byte)", data=b"")
    decoder = _DECODERS.get(data[0])
    if decoder is None:
        return UnknownMessage(data[0], data[1:])
    try:
        return decoder(data)
    except LocalProtocolError as exc:  # a decoded value failed validation: the peer's fault
        raise RemoteProtocolError(exc.message, data=data[:64]) from exc


def parse_text(text: str) -> Event:
    """Decode one text message: ``Init``, ``ConnectionComplete``, ``StreamStatus`` or ``TextMessage``."""
    if not isinstance(text, str):
        raise LocalProtocolError(f"text message must be str, got {type(text).__name__}")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return TextMessage(text)
    try:
        if isinstance(obj, dict):
            if obj.get("type") == "init":
                return Init.from_json(obj, text)
            if "ConnectionComplete" in obj:
                return ConnectionComplete.from_json(obj, text)
    except LocalProtocolError as exc:  # e.g. a lone surrogate in a JSON string
        raise RemoteProtocolError(exc.message, data=text.encode("utf-8", "replace")[:256]) from exc
    status = _status_body(obj)
    if status is not None:
        try:
            return StreamStatus.from_json(status, text)
        except LocalProtocolError:  # a status we cannot represent stays lossless text, never an error
            pass
    return TextMessage(text)


# ---------------------------------------------------------------- connection


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    #: no init yet (the client has not sent it / the server has not received it)
    AWAITING_INIT = "awaiting_init"
    #: init exchanged; media and control flow
    STREAMING = "streaming"
    #: closed by close(), or by the server after a bad init
    CLOSED = "closed"


_SERVER_SENDS = (
    StreamInit, VideoFrame, Pong, CursorImage, CursorName, SelfId, RemoteUser, RemoteUserLeft, RemoteCursor,
    AgentCursor, RemoteTouch, StreamError, ConnectionComplete, StreamStatus, TextMessage, UnknownMessage,
)
_CLIENT_SENDS = (Ping, TextMessage, UnknownMessage)
_TEXT_EVENTS = (ConnectionComplete, Init, StreamStatus, TextMessage)


class StreamConnection:
    """One end of a stream socket: ``receive(kind, data) -> event``, ``send(event) -> (kind, payload)``.

    A server rejects any text but a valid init before the init (the real server drops the TCP
    connection: state CLOSED) and skips binary before the init (returned as ``UnknownMessage``).
    Other ``RemoteProtocolError``s leave the state alone; the caller decides whether to go on.
    """

    def __init__(self, role: Role | str) -> None:
        self.role = Role(role)
        self.state = State.AWAITING_INIT
        self.init: Init | None = None

    def close(self) -> None:
        """The socket is gone (either side)."""
        self.state = State.CLOSED

    def receive(self, kind: int, data: bytes | str) -> Event:
        """One received WS message (kind 0 binary, 1 text; text may come as UTF-8 bytes) as an event."""
        if self.state is State.CLOSED:
            raise LocalProtocolError("receive() on a closed stream connection")
        try:
            kind = Kind(kind)
        except ValueError:
            raise LocalProtocolError(f"unknown message kind {kind!r} (0 binary, 1 text)") from None
        if kind is Kind.TEXT:
            if not isinstance(data, str):
                data = _utf8(_to_bytes(data), "text message")
            return self._receive_text(data)
        data = _to_bytes(data)
        if self.role is Role.SERVER:
            if not data:
                raise RemoteProtocolError("empty binary message (no type byte)", data=b"")
            if self.state is State.AWAITING_INIT or data[0] != MsgType.PING:  # skipped / input events
                return UnknownMessage(data[0], data[1:])
            return parse_binary(data)
        event = parse_binary(data)
        if isinstance(event, Ping):  # C→S only: keep it lossless but unparsed
            return UnknownMessage(data[0], data[1:])
        return event

    def _receive_text(self, text: str) -> Event:
        if self.role is Role.SERVER and self.state is State.AWAITING_INIT:
            try:
                event = parse_text(text)
            except RemoteProtocolError:
                self.state = State.CLOSED
                raise
            if not isinstance(event, Init):
                self.state = State.CLOSED
                raise RemoteProtocolError(
                    "expected an init text message (type \"init\") first",
                    data=text.encode("utf-8", "replace")[:256],
                )
            self.init = event
            self.state = State.STREAMING
            return event
        return parse_text(text)

    def send(self, event: Event) -> tuple[Kind, bytes | str]:
        """The (kind, payload) to send for an event allowed in this role and state."""
        if self.state is State.CLOSED:
            raise LocalProtocolError(f"cannot send {type(event).__name__}: connection closed")
        if self.role is Role.CLIENT:
            if self.state is State.AWAITING_INIT:
                if not isinstance(event, Init):
                    raise LocalProtocolError(f"client must send Init first, not {type(event).__name__}")
                self.init = event
                self.state = State.STREAMING
            elif not isinstance(event, _CLIENT_SENDS):
                raise LocalProtocolError(f"client cannot send {type(event).__name__} in state {self.state.name}")
        else:
            if self.state is State.AWAITING_INIT:
                raise LocalProtocolError(f"server cannot send {type(event).__name__} before the client's init")
            if not isinstance(event, _SERVER_SENDS):
                raise LocalProtocolError(f"server cannot send {type(event).__name__}")
        if isinstance(event, _TEXT_EVENTS):
            return Kind.TEXT, event.to_text()
        return Kind.BINARY, event.encode()


# ---------------------------------------------------------------- classification (one rule, live and offline)


class Category(str, enum.Enum):
    """What a received event means for a stream verdict (``classify``)."""

    #: 0x01, live or replay
    VIDEO = "video"
    #: 0x30
    STREAM_INIT = "stream_init"
    #: 0x31: the only event that is an error
    ERROR = "error"
    #: 0x58 SelfId, 0x54 joined/left: other viewers are normal traffic
    VIEWER = "viewer"
    #: 0x50, 0x51, 0x53, 0x55, 0x56
    CURSOR = "cursor"
    #: text StreamStatus (``starting_video``)
    STATUS = "status"
    #: ConnectionComplete, Pong, Init, a Ping
    CONTROL = "control"
    #: any other text
    TEXT = "text"
    #: any other binary type (counted by type byte)
    UNKNOWN = "unknown"


_CATEGORIES: dict[type, Category] = {
    VideoFrame: Category.VIDEO,
    StreamInit: Category.STREAM_INIT,
    StreamError: Category.ERROR,
    SelfId: Category.VIEWER,
    RemoteUser: Category.VIEWER,
    RemoteUserLeft: Category.VIEWER,
    CursorImage: Category.CURSOR,
    CursorName: Category.CURSOR,
    RemoteCursor: Category.CURSOR,
    AgentCursor: Category.CURSOR,
    RemoteTouch: Category.CURSOR,
    StreamStatus: Category.STATUS,
    ConnectionComplete: Category.CONTROL,
    Pong: Category.CONTROL,
    Ping: Category.CONTROL,
    Init: Category.CONTROL,
    TextMessage: Category.TEXT,
    UnknownMessage: Category.UNKNOWN,
}


def classify(event: Event) -> Category:
    """The category of a decoded event (see ``Category``)."""
    try:
        return _CATEGORIES[type(event)]
    except KeyError:
        raise LocalProtocolError(f"not a stream event: {type(event).__name__}") from None


def is_viewer_event(event: Event) -> bool:
    """SelfId, RemoteUser (joined) or RemoteUserLeft: another viewer, never an error."""
    return classify(event) is Category.VIEWER


def is_cursor_event(event: Event) -> bool:
    return classify(event) is Category.CURSOR


def is_status_event(event: Event) -> bool:
    return classify(event) is Category.STATUS


def is_error(event: Event) -> bool:
    """A 0x31 StreamError. A malformed message is a ``RemoteProtocolError`` instead (``StreamTally.add_error``)."""
    return classify(event) is Category.ERROR


def _capped(items: list, item: object, cap: int) -> bool:
    if len(items) < cap:
        items.append(item)
        return True
    return False


class StreamTally:
    """The stream verdict facts besides frame timing and content, from events (sans-I/O, no clock).

    Feed every received message, in order, with its arrival time: ``add(t_ns, event)`` for a decoded
    event, ``add_error(t_ns, exc)`` for one that raised ``RemoteProtocolError``. The live capture and
    ``helix-e2e analyze`` both do this, so the same recording gives the same ``result()``:

    - ``stream_error_count`` (the texts are the timing analyzer's ``stream_errors``), ``protocol_errors``
      (capped list of messages) and ``protocol_error_count``;
    - ``viewer_events``: ``self_id``, ``joins``, ``leaves``, ``joined_ids``, ``left_ids`` (capped);
    - ``cursor_messages``, ``status_messages``, ``text_messages``, ``unknown_messages`` and
      ``unknown_message_types`` (``{"0x20": n}``);
    - ``status_before_first_frame``: ``[{"t_s", "state", "text"}]`` for each StreamStatus or other text
      before the first live frame (capped), ``t_s`` from the first message;
    - ``time_to_first_frame_s``: first message → first live (non-replay) video frame, or None.
    """

    def __init__(self, *, max_items: int = 20) -> None:
        self.max_items = max_items
        self.messages = 0
        self.stream_error_count = 0
        self.protocol_errors: list[str] = []
        self.protocol_error_count = 0
        self.self_id: int | None = None
        self.joins = 0
        self.leaves = 0
        self.joined_ids: list[int] = []
        self.left_ids: list[int] = []
        self.cursor_messages = 0
        self.status_messages = 0
        self.text_messages = 0
        self.unknown_types: dict[int, int] = {}
        self.status_before_first_frame: list[dict] = []
        self.first_ns: int | None = None
        self.first_frame_ns: int | None = None

    def _seen(self, t_ns: int) -> None:
        self.messages += 1
        if self.first_ns is None:
            self.first_ns = t_ns

    def add_video(self, t_ns: int, flags: int) -> None:
        """A video frame by its header flags: the same as ``add(t_ns, VideoFrame(...))``, without the event."""
        self._seen(t_ns)
        if self.first_frame_ns is None and not flags & FLAG_REPLAY:
            self.first_frame_ns = t_ns

    def add(self, t_ns: int, event: Event) -> Category:
        """One decoded event; returns its category."""
        category = classify(event)
        if category is Category.VIDEO:
            self.add_video(t_ns, event.flags)  # type: ignore[union-attr]
            return category
        self._seen(t_ns)
        if category is Category.ERROR:
            self.stream_error_count += 1
        elif category is Category.VIEWER:
            if isinstance(event, SelfId):
                self.self_id = event.client_id
            elif isinstance(event, RemoteUserLeft):
                self.leaves += 1
                _capped(self.left_ids, event.user_id, self.max_items)
            else:
                self.joins += 1
                _capped(self.joined_ids, event.user_id, self.max_items)  # type: ignore[union-attr]
        elif category is Category.CURSOR:
            self.cursor_messages += 1
        elif category in (Category.STATUS, Category.TEXT):
            if category is Category.STATUS:
                self.status_messages += 1
            else:
                self.text_messages += 1
            if self.first_frame_ns is None:
                _capped(self.status_before_first_frame, {
                    "t_s": round((t_ns - self.first_ns) / 1e9, 3),  # type: ignore[operator]
                    "state": event.state if isinstance(event, StreamStatus) else None,
                    "text": event.to_text()[:200],  # type: ignore[union-attr]
                }, self.max_items)
        elif category is Category.UNKNOWN:
            self.unknown_types[event.type_byte] = self.unknown_types.get(event.type_byte, 0) + 1  # type: ignore[union-attr]
        return category

    def add_error(self, t_ns: int, error: RemoteProtocolError | str) -> None:
        """A message that did not decode (a malformed video frame header, a cut fixed layout, bad UTF-8)."""
        self._seen(t_ns)
        self.protocol_error_count += 1
        _capped(self.protocol_errors, error if isinstance(error, str) else error.message, self.max_items)

    @property
    def time_to_first_frame_s(self) -> float | None:
        if self.first_frame_ns is None or self.first_ns is None:
            return None
        return round((self.first_frame_ns - self.first_ns) / 1e9, 3)

    def result(self) -> dict[str, Any]:
        return {
            "stream_error_count": self.stream_error_count,
            "protocol_errors": list(self.protocol_errors),
            "protocol_error_count": self.protocol_error_count,
            "viewer_events": {
                "self_id": self.self_id, "joins": self.joins, "leaves": self.leaves,
                "joined_ids": list(self.joined_ids), "left_ids": list(self.left_ids),
            },
            "cursor_messages": self.cursor_messages,
            "status_messages": self.status_messages,
            "text_messages": self.text_messages,
            "unknown_messages": sum(self.unknown_types.values()),
            "unknown_message_types": {f"0x{t:02x}": n for t, n in sorted(self.unknown_types.items())},
            "status_before_first_frame": [dict(item) for item in self.status_before_first_frame],
            "time_to_first_frame_s": self.time_to_first_frame_s,
        }
