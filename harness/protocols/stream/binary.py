"""The stream's binary messages (helix-stream.md §4): video frames, StreamInit/StreamError, ping and
pong, cursors and the other viewers' presence messages; each layout carries its own byte order."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from .._fields import short_repr as _short_repr, signed as _i, unsigned as _u
from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "Kind", "KIND_BINARY", "KIND_TEXT", "MsgType", "CODEC_H264", "CODEC_NAMES", "FLAG_KEYFRAME",
    "FLAG_REPLAY", "REMOTE_USER_JOINED", "REMOTE_USER_LEFT", "codec_name", "VideoFrame", "StreamInit",
    "StreamError", "Ping", "Pong", "CursorImage", "CursorName", "SelfId", "RemoteUser",
    "RemoteUserLeft", "RemoteCursor", "AgentCursor", "RemoteTouch", "UnknownMessage",
    "decode_video_header", "VIDEO_FRAME_HEADER", "STREAM_INIT", "STREAM_ERROR_HEADER", "PING", "PONG",
    "CURSOR_IMAGE", "CURSOR_BITMAP", "CURSOR_NAME", "SELF_ID", "REMOTE_USER_HEADER",
    "REMOTE_USER_LEFT_LAYOUT", "REMOTE_CURSOR_HEADER", "AGENT_CURSOR", "REMOTE_TOUCH_HEADER",
    "STATUS_STARTING_VIDEO",
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
