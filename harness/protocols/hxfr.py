"""QEMU helix-frame-export (HXFR) wire protocol, sans-I/O.

Reference: macos-frame-export.md §1. Every struct is packed little-endian (arm64): a 12-byte header
``<IBBHI`` (magic 0x52465848 "HXFR", msg_type, flags, session_id, payload_size) and a body.

``HxfrConnection(role)`` buffers bytes (``receive_data``), yields events (``next_event``) and encodes
events (``send``). The client tracks outstanding FRAME_REQUESTs; the driver owns the clock and calls
``expire_outstanding()`` when its deadline passes, so "no reply" stays distinct from "error reply".
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar, Union

from ._fields import check_int, signed, unsigned
from ._fields import short_repr as _short_repr
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAGIC", "HEADER", "MsgType", "ErrorCode", "FLAG_PIXEL_DATA", "FORMAT_BGRA8888", "FORMAT_RGBA8888",
    "FORMAT_NV12", "MAX_PIXEL_DATA", "DEFAULT_MAX_PAYLOAD",
    "FrameRequest", "FrameResponse", "KeyframeRequest", "ConfigRequest", "Ping", "Pong", "EnableScanout",
    "DisableScanout", "ScanoutResponse", "Subscribe", "SubscribeResponse", "ErrorResponse", "UnknownMessage",
    "NoReply", "Event", "Role", "State", "NEED_DATA", "EOF", "HxfrConnection", "decode_message", "hexdump",
    "PAYLOAD_SIZES", "LOG_CAP", "FRAME_REQUEST_BODY", "FRAME_RESPONSE_BODY", "CONFIG_REQUEST_BODY",
    "ENABLE_SCANOUT_BODY", "SCANOUT_ID_BODY", "SCANOUT_RESPONSE_BODY", "SUBSCRIBE_RESPONSE_BODY", "ERROR_BODY",
]

MAGIC = 0x52465848  # bytes 48 58 46 52 = "HXFR"
HEADER = struct.Struct("<IBBHI")  # magic, msg_type, flags, session_id, payload_size: 12 B


class MsgType(enum.IntEnum):
    FRAME_REQUEST = 0x01
    FRAME_RESPONSE = 0x02
    KEYFRAME_REQ = 0x03
    CONFIG_REQ = 0x04
    CONFIG_RESP = 0x05  # defined, never sent: surfaces as UnknownMessage
    PING = 0x10
    PONG = 0x11
    ENABLE_SCANOUT = 0x20
    DISABLE_SCANOUT = 0x21
    SCANOUT_RESP = 0x22
    SUBSCRIBE = 0x30
    SUBSCRIBE_RESP = 0x31
    ERROR = 0xFF


class ErrorCode(enum.IntEnum):
    OK = 0
    INVALID_MSG = -1
    RESOURCE_NOT_FOUND = -2
    NOT_METAL_TEXTURE = -3
    NO_IOSURFACE = -4
    ENCODE_FAILED = -5
    NOT_CONFIGURED = -6
    INTERNAL = -99


FLAG_PIXEL_DATA = 0x01
FORMAT_BGRA8888 = 0x34325241
FORMAT_RGBA8888 = 0x34324241
FORMAT_NV12 = 0x3231564E
MAX_PIXEL_DATA = 64 * 1024 * 1024  # QEMU's cap on FRAME_REQUEST pixel data
DEFAULT_MAX_PAYLOAD = MAX_PIXEL_DATA + 44


# ---------------------------------------------------------------- validation helpers


def _check_int(owner: object, name: str, lo: int, hi: int) -> None:
    check_int(owner, name, lo, hi, allow_bool=True)  # single-byte flags accept True/False


def _u(owner: object, bits: int, *names: str) -> None:
    unsigned(owner, bits, *names, allow_bool=True)


def _i(owner: object, bits: int, *names: str) -> None:
    signed(owner, bits, *names, allow_bool=True)


def _as_bytes(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if isinstance(value, (bytearray, memoryview)):
        object.__setattr__(owner, name, bytes(value))
    elif not isinstance(value, bytes):
        raise LocalProtocolError(f"{type(owner).__name__}.{name} must be bytes, got {type(value).__name__}")


def _header_fields(owner: object, default_session: int = 1) -> None:
    if getattr(owner, "session_id") is None:
        object.__setattr__(owner, "session_id", default_session & 0xFFFF)
    _u(owner, 16, "session_id")
    _u(owner, 8, "flags")


def _c_string(owner: object, name: str, size: int) -> None:
    value = getattr(owner, name)
    if not isinstance(value, str):
        raise LocalProtocolError(f"{type(owner).__name__}.{name} must be a str")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{type(owner).__name__}.{name} is not encodable as UTF-8") from exc
    if len(raw) > size or b"\x00" in raw:
        raise LocalProtocolError(f"{type(owner).__name__}.{name} must be at most {size} UTF-8 bytes without NUL")


def _from_c_string(raw: bytes) -> str:
    """The NUL-trimmed C string; invalid UTF-8 becomes U+FFFD, trimmed to fit the field again."""
    text = raw.split(b"\x00", 1)[0].decode("utf-8", "replace")
    while len(text.encode("utf-8")) > len(raw):
        text = text[:-1]
    return text


def _frame(msg_type: int, flags: int, session_id: int, payload: bytes) -> bytes:
    if len(payload) > 0xFFFFFFFF:
        raise LocalProtocolError(f"payload of {len(payload)} bytes does not fit payload_size (u32)")
    return HEADER.pack(MAGIC, msg_type, flags, session_id, len(payload)) + payload


# ---------------------------------------------------------------- messages

FRAME_REQUEST_BODY = struct.Struct("<IIIIIqqB7x")  # 44 B (+ pixel data when flags & FLAG_PIXEL_DATA)


@dataclass(frozen=True, slots=True)
class FrameRequest:
    """0x01 guest→host: encode this resource (or the pixel data that follows). Total 56 B + pixels."""

    MSG_TYPE: ClassVar[int] = MsgType.FRAME_REQUEST
    resource_id: int
    width: int
    height: int
    format: int
    stride: int
    pts_ns: int
    duration_ns: int
    force_keyframe: int
    pixel_data: bytes = b""
    session_id: int | None = field(default=None, kw_only=True)
    flags: int = field(default=0, kw_only=True)

    __repr__ = _short_repr

    def __post_init__(self) -> None:
        _u(self, 32, "resource_id", "width", "height", "format", "stride")
        _i(self, 64, "pts_ns", "duration_ns")
        _u(self, 8, "force_keyframe")
        _as_bytes(self, "pixel_data")
        if len(self.pixel_data) > MAX_PIXEL_DATA:
            raise LocalProtocolError(f"FrameRequest pixel data {len(self.pixel_data)} B exceeds {MAX_PIXEL_DATA} B")
        _header_fields(self)
        if self.pixel_data:
            object.__setattr__(self, "flags", self.flags | FLAG_PIXEL_DATA)

    @property
    def has_pixel_data(self) -> bool:
        return bool(self.flags & FLAG_PIXEL_DATA)

    def encode(self) -> bytes:
        body = FRAME_REQUEST_BODY.pack(
            self.resource_id, self.width, self.height, self.format, self.stride,
            self.pts_ns, self.duration_ns, self.force_keyframe,
        )
        return _frame(self.MSG_TYPE, self.flags, self.session_id, body + self.pixel_data)

    @classmethod
    def decode(cls, flags: int, session_id: int, payload: bytes) -> FrameRequest:
        size = FRAME_REQUEST_BODY.size
        if len(payload) < size or (len(payload) != size and not flags & FLAG_PIXEL_DATA):
            raise RemoteProtocolError(
                f"FRAME_REQUEST payload_size {len(payload)}: expected {size} (or more with FLAG_PIXEL_DATA)",
                data=payload[:64],
            )
        fields = FRAME_REQUEST_BODY.unpack_from(payload)
        return cls(*fields, payload[size:], session_id=session_id, flags=flags)


FRAME_RESPONSE_BODY = struct.Struct("<qqB3xI")  # pts, dts, is_keyframe, reserved[3], nal_count: 24 B
_NAL_SIZE = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class FrameResponse:
    """0x02 host→guest: pts/dts, keyframe flag and NAL blobs (each u32 size + bytes)."""

    MSG_TYPE: ClassVar[int] = MsgType.FRAME_RESPONSE
    pts: int
    dts: int
    is_keyframe: int
    nals: tuple[bytes, ...] = ()
    session_id: int | None = field(default=None, kw_only=True)
    flags: int = field(default=0, kw_only=True)

    __repr__ = _short_repr

    def __post_init__(self) -> None:
        _i(self, 64, "pts", "dts")
        _u(self, 8, "is_keyframe")
        if isinstance(self.nals, (bytes, bytearray, memoryview, str)) or not hasattr(self.nals, "__iter__"):
            raise LocalProtocolError("FrameResponse.nals must be a sequence of bytes objects")
        nals = []
        for nal in self.nals:
            if not isinstance(nal, (bytes, bytearray, memoryview)):
                raise LocalProtocolError("FrameResponse.nals must contain bytes")
            nals.append(bytes(nal))
        object.__setattr__(self, "nals", tuple(nals))
        _header_fields(self)

    @property
    def data(self) -> bytes:
        """All NAL blobs concatenated (QEMU sends one Annex-B blob)."""
        return b"".join(self.nals)

    def encode(self) -> bytes:
        parts = [FRAME_RESPONSE_BODY.pack(self.pts, self.dts, self.is_keyframe, len(self.nals))]
        for nal in self.nals:
            parts.append(_NAL_SIZE.pack(len(nal)))
            parts.append(nal)
        return _frame(self.MSG_TYPE, self.flags, self.session_id, b"".join(parts))

    @classmethod
    def decode(cls, flags: int, session_id: int, payload: bytes) -> FrameResponse:
        if len(payload) < FRAME_RESPONSE_BODY.size:
            raise RemoteProtocolError(f"FRAME_RESPONSE payload_size {len(payload)} < 24", data=payload[:64])
        pts, dts, key, count = FRAME_RESPONSE_BODY.unpack_from(payload)
        pos = FRAME_RESPONSE_BODY.size
        if count * _NAL_SIZE.size > len(payload) - pos:
            raise RemoteProtocolError(f"FRAME_RESPONSE nal_count {count} does not fit its payload", data=payload[:64])
        nals = []
        for index in range(count):
            if pos + 4 > len(payload):
                raise RemoteProtocolError(f"FRAME_RESPONSE NAL {index}: size field truncated", data=payload[:64])
            (size,) = _NAL_SIZE.unpack_from(payload, pos)
            pos += 4
            if pos + size > len(payload):
                raise RemoteProtocolError(
                    f"FRAME_RESPONSE NAL {index}: size {size} overruns the payload ({len(payload) - pos} left)",
                    data=payload[:64],
                )
            nals.append(payload[pos : pos + size])
            pos += size
        if pos != len(payload):
            raise RemoteProtocolError(
                f"FRAME_RESPONSE has {len(payload) - pos} bytes after its {count} NALs", data=payload[:64]
            )
        return cls(pts, dts, key, tuple(nals), session_id=session_id, flags=flags)


class _HeaderOnly:
    """Mixin for header-only messages (no body)."""

    __slots__ = ()

    def encode(self) -> bytes:
        return _frame(self.MSG_TYPE, self.flags, self.session_id, b"")  # type: ignore[attr-defined]

    @classmethod
    def decode(cls, flags: int, session_id: int, payload: bytes):  # type: ignore[no-untyped-def]
        return cls(session_id=session_id, flags=flags)


@dataclass(frozen=True, slots=True)
class KeyframeRequest(_HeaderOnly):
    """0x03 guest→host, header only (a no-op on the host)."""

    MSG_TYPE: ClassVar[int] = MsgType.KEYFRAME_REQ
    session_id: int | None = field(default=None, kw_only=True)
    flags: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        _header_fields(self)


@dataclass(frozen=True, slots=True)
class Pong(_HeaderOnly):
    """0x11 host→guest, header only; echoes the Ping's session_id."""

    MSG_TYPE: ClassVar[int] = MsgType.PONG
    session_id: int | None = field(default=None, kw_only=True)
    flags: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        _header_fields(self)


@dataclass(frozen=True, slots=True)
class Ping(_HeaderOnly):
    """0x10 guest→host, header only."""

    MSG_TYPE: ClassVar[int] = MsgType.PING
    session_id: int | None = field(default=None, kw_only=True)
    flags: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        _header_fields(self)

    def response(self) -> Pong:
        """The Pong that answers this Ping (the caller sends it)."""
        return Pong(session_id=self.session_id)


CONFIG_REQUEST_BODY = struct.Struct("<IIIIIBBB5x")  # 28 B


@dataclass(frozen=True, slots=True)
class ConfigRequest:
    """0x04 guest→host: encoder config (bitrate in bps, profile 66/77/100, level ×10)."""

    MSG_TYPE: ClassVar[int] = MsgType.CONFIG_REQ
    width: int
    height: int
    bitrate: int
    framerate_num: int
    framerate_den: int
    profile: int
    level: int
    realtime: int
    session_id: int | None = field(default=None, kw_only=True)
    flags: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        _u(self, 32, "width", "height", "bitrate", "framerate_num", "framerate_den")
        _u(self, 8, "profile", "level", "realtime")
        _header_fields(self)

    def encode(self) -> bytes:
        body = CONFIG_REQUEST_BODY.pack(
            self.width, self.height, self.bitrate, self.framerate_num, self.framerate_den,
            self.profile, self.level, self.realtime,
        )
        return _frame(self.MSG_TYPE, self.flags, self.session_id, body)

    @classmethod
    def decode(cls, flags: int, session_id: int, payload: bytes) -> ConfigRequest:
        return cls(*CONFIG_REQUEST_BODY.unpack(payload), session_id=session_id, flags=flags)


ENABLE_SCANOUT_BODY = struct.Struct("<IIII")  # 16 B


@dataclass(frozen=True, slots=True)
class EnableScanout:
    """0x20 guest→host: connect a DRM connector (scanout 1-15)."""

    MSG_TYPE: ClassVar[int] = MsgType.ENABLE_SCANOUT
    scanout_id: int
    width: int
    height: int
    refresh_rate: int
    session_id: int | None = field(default=None, kw_only=True)
    flags: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        _u(self, 32, "scanout_id", "width", "height", "refresh_rate")
        _header_fields(self)

    def encode(self) -> bytes:
        body = ENABLE_SCANOUT_BODY.pack(self.scanout_id, self.width, self.height, self.refresh_rate)
        return _frame(self.MSG_TYPE, self.flags, self.session_id, body)

    @classmethod
    def decode(cls, flags: int, session_id: int, payload: bytes) -> EnableScanout:
        return cls(*ENABLE_SCANOUT_BODY.unpack(payload), session_id=session_id, flags=flags)


SCANOUT_ID_BODY = struct.Struct("<I")  # DISABLE_SCANOUT, SUBSCRIBE: 4 B


@dataclass(frozen=True, slots=True)
class DisableScanout:
    """0x21 guest→host: disconnect a DRM connector."""

    MSG_TYPE: ClassVar[int] = MsgType.DISABLE_SCANOUT
    scanout_id: int
    session_id: int | None = field(default=None, kw_only=True)
    flags: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        _u(self, 32, "scanout_id")
        _header_fields(self)

    def encode(self) -> bytes:
        return _frame(self.MSG_TYPE, self.flags, self.session_id, SCANOUT_ID_BODY.pack(self.scanout_id))

    @classmethod
    def decode(cls, flags: int, session_id: int, payload: bytes) -> DisableScanout:
        return cls(*SCANOUT_ID_BODY.unpack(payload), session_id=session_id, flags=flags)


SCANOUT_RESPONSE_BODY = struct.Struct("<II64s")  # 72 B


@dataclass(frozen=True, slots=True)
class ScanoutResponse:
    """0x22 host→guest: scanout_id, success (1/0), connector name (``Virtual-<id+1>``)."""

    MSG_TYPE: ClassVar[int] = MsgType.SCANOUT_RESP
    scanout_id: int
    success: int
    connector: str = ""
    session_id: int | None = field(default=None, kw_only=True)
    flags: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        _u(self, 32, "scanout_id", "success")
        _c_string(self, "connector", 64)
        _header_fields(self)

    def encode(self) -> bytes:
        body = SCANOUT_RESPONSE_BODY.pack(self.scanout_id, self.success, self.connector.encode("utf-8"))
        return _frame(self.MSG_TYPE, self.flags, self.session_id, body)

    @classmethod
    def decode(cls, flags: int, session_id: int, payload: bytes) -> ScanoutResponse:
        scanout_id, success, connector = SCANOUT_RESPONSE_BODY.unpack(payload)
        return cls(scanout_id, success, _from_c_string(connector), session_id=session_id, flags=flags)


@dataclass(frozen=True, slots=True)
class Subscribe:
    """0x30 client→host: stream a scanout's H.264. The header session_id defaults to the scanout_id."""

    MSG_TYPE: ClassVar[int] = MsgType.SUBSCRIBE
    scanout_id: int
    session_id: int | None = field(default=None, kw_only=True)
    flags: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        _u(self, 32, "scanout_id")
        _header_fields(self, self.scanout_id)

    def encode(self) -> bytes:
        return _frame(self.MSG_TYPE, self.flags, self.session_id, SCANOUT_ID_BODY.pack(self.scanout_id))

    @classmethod
    def decode(cls, flags: int, session_id: int, payload: bytes) -> Subscribe:
        return cls(*SCANOUT_ID_BODY.unpack(payload), session_id=session_id, flags=flags)


SUBSCRIBE_RESPONSE_BODY = struct.Struct("<II")  # 8 B


@dataclass(frozen=True, slots=True)
class SubscribeResponse:
    """0x31 host→client: scanout_id, success. The header session_id defaults to the scanout_id."""

    MSG_TYPE: ClassVar[int] = MsgType.SUBSCRIBE_RESP
    scanout_id: int
    success: int
    session_id: int | None = field(default=None, kw_only=True)
    flags: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        _u(self, 32, "scanout_id", "success")
        _header_fields(self, self.scanout_id)

    def encode(self) -> bytes:
        body = SUBSCRIBE_RESPONSE_BODY.pack(self.scanout_id, self.success)
        return _frame(self.MSG_TYPE, self.flags, self.session_id, body)

    @classmethod
    def decode(cls, flags: int, session_id: int, payload: bytes) -> SubscribeResponse:
        return cls(*SUBSCRIBE_RESPONSE_BODY.unpack(payload), session_id=session_id, flags=flags)


ERROR_BODY = struct.Struct("<i256s")  # 260 B; total 272 B


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """0xFF host→guest: error_code (``ErrorCode``) and the NUL-trimmed 256-byte message."""

    MSG_TYPE: ClassVar[int] = MsgType.ERROR
    error_code: int
    message: str = ""
    session_id: int | None = field(default=None, kw_only=True)
    flags: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        _i(self, 32, "error_code")
        _c_string(self, "message", 256)
        _header_fields(self)

    @property
    def code(self) -> ErrorCode | int:
        try:
            return ErrorCode(self.error_code)
        except ValueError:
            return self.error_code

    def encode(self) -> bytes:
        body = ERROR_BODY.pack(self.error_code, self.message.encode("utf-8"))
        return _frame(self.MSG_TYPE, self.flags, self.session_id, body)

    @classmethod
    def decode(cls, flags: int, session_id: int, payload: bytes) -> ErrorResponse:
        code, message = ERROR_BODY.unpack(payload)
        return cls(code, _from_c_string(message), session_id=session_id, flags=flags)


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """Any other msg_type (incl. CONFIG_RESP), kept losslessly."""

    msg_type: int
    flags: int
    session_id: int
    payload: bytes = b""

    __repr__ = _short_repr

    def __post_init__(self) -> None:
        _u(self, 8, "msg_type", "flags")
        _u(self, 16, "session_id")
        _as_bytes(self, "payload")

    def encode(self) -> bytes:
        return _frame(self.msg_type, self.flags, self.session_id, self.payload)


@dataclass(frozen=True, slots=True)
class NoReply:
    """Synthetic: outstanding FRAME_REQUEST(s) got no answer before the driver's deadline.

    ``request`` is the oldest one; ``count`` how many were expired together.
    """

    request: FrameRequest
    count: int = 1


Event = Union[
    FrameRequest, FrameResponse, KeyframeRequest, ConfigRequest, Ping, Pong, EnableScanout, DisableScanout,
    ScanoutResponse, Subscribe, SubscribeResponse, ErrorResponse, UnknownMessage,
]

_MESSAGES: dict[int, type] = {
    cls.MSG_TYPE: cls
    for cls in (FrameRequest, FrameResponse, KeyframeRequest, ConfigRequest, Ping, Pong, EnableScanout,
                DisableScanout, ScanoutResponse, Subscribe, SubscribeResponse, ErrorResponse)
}
#: Exact payload sizes of fixed-size messages (FRAME_REQUEST/FRAME_RESPONSE are variable).
PAYLOAD_SIZES: dict[int, int] = {
    MsgType.KEYFRAME_REQ: 0,
    MsgType.CONFIG_REQ: CONFIG_REQUEST_BODY.size,
    MsgType.PING: 0,
    MsgType.PONG: 0,
    MsgType.ENABLE_SCANOUT: ENABLE_SCANOUT_BODY.size,
    MsgType.DISABLE_SCANOUT: SCANOUT_ID_BODY.size,
    MsgType.SCANOUT_RESP: SCANOUT_RESPONSE_BODY.size,
    MsgType.SUBSCRIBE: SCANOUT_ID_BODY.size,
    MsgType.SUBSCRIBE_RESP: SUBSCRIBE_RESPONSE_BODY.size,
    MsgType.ERROR: ERROR_BODY.size,
}
_GUEST_SENDS = (FrameRequest, KeyframeRequest, ConfigRequest, Ping, EnableScanout, DisableScanout, Subscribe)
_HOST_SENDS = (FrameResponse, Pong, ScanoutResponse, SubscribeResponse, ErrorResponse)


def _check_size(msg_type: int, payload_size: int, header: bytes) -> None:
    want = PAYLOAD_SIZES.get(msg_type)
    if want is not None and payload_size != want:
        name = MsgType(msg_type).name
        raise RemoteProtocolError(f"{name} payload_size {payload_size}, expected {want}", data=header)


def decode_message(msg_type: int, flags: int, session_id: int, payload: bytes) -> Event:
    """Decode one message body (header already parsed)."""
    cls = _MESSAGES.get(msg_type)
    if cls is None:
        return UnknownMessage(msg_type, flags, session_id, payload)
    _check_size(msg_type, len(payload), HEADER.pack(MAGIC, msg_type, flags, session_id, len(payload)))
    try:
        return cls.decode(flags, session_id, payload)
    except LocalProtocolError as exc:  # a decoded value failed validation: the peer's fault
        raise RemoteProtocolError(exc.message, data=payload[:64]) from exc


# ---------------------------------------------------------------- connection


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
EOF = _Sentinel("EOF")


class Role(enum.Enum):
    CLIENT = "client"  # the guest side: vsockenc, the harness probe, desktop-bridge (SUBSCRIBE)
    SERVER = "server"  # QEMU's helix-frame-export


class State(enum.Enum):
    #: bytes flow both ways
    OPEN = "open"
    #: the peer sent EOF at a message boundary
    CLOSED = "closed"
    #: the peer broke the protocol; every later call raises
    ERROR = "error"


class _Buffer:
    """Receive buffer with commit/rollback (wsproto style): a short read rolls back, never raises."""

    __slots__ = ("_data", "_pos", "offset")

    def __init__(self) -> None:
        self._data = bytearray()
        self._pos = 0
        self.offset = 0  # stream offset of the first uncommitted byte

    def feed(self, data: bytes) -> None:
        self._data += data

    def __len__(self) -> int:
        return len(self._data)

    def consume_exactly(self, size: int) -> bytes | None:
        if len(self._data) - self._pos < size:
            return None
        with memoryview(self._data) as view:  # one copy, and no export left behind
            out = bytes(view[self._pos : self._pos + size])
        self._pos += size
        return out

    def commit(self) -> None:
        del self._data[: self._pos]
        self.offset += self._pos
        self._pos = 0

    def rollback(self) -> None:
        self._pos = 0

    def pending(self, limit: int = 64) -> bytes:
        return bytes(self._data[:limit])


LOG_CAP = 64 * 1024


def _log(log: bytearray, data: bytes) -> None:
    if len(data) >= LOG_CAP:
        log[:] = data[-LOG_CAP:]
        return
    log += data
    if len(log) > LOG_CAP:
        del log[: len(log) - LOG_CAP]


class HxfrConnection:
    """One end of an HXFR socket. ``received``/``sent`` keep the last 64 KiB each for hex dumps."""

    def __init__(self, role: Role | str, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.role = Role(role)
        self.max_payload = max_payload
        self.state = State.OPEN
        self.received = bytearray()
        self.sent = bytearray()
        self.bytes_received = 0
        self.bytes_sent = 0
        self._buffer = _Buffer()
        self._eof = False
        self._outstanding: deque[FrameRequest] = deque()

    @property
    def outstanding(self) -> int:
        """FRAME_REQUESTs sent (client role) and not yet answered."""
        return len(self._outstanding)

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; ``b""`` means EOF."""
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() after EOF")
            return
        if not data:
            self._eof = True
            return
        data = bytes(data)
        self._buffer.feed(data)
        self.bytes_received += len(data)
        _log(self.received, data)

    def next_event(self) -> Event | _Sentinel:
        """One event, ``NEED_DATA`` or ``EOF``. Bad bytes raise ``RemoteProtocolError`` (state ERROR)."""
        if self.state is State.ERROR:
            raise RemoteProtocolError("connection already failed a protocol check")
        try:
            event = self._extract()
        except RemoteProtocolError:
            self.state = State.ERROR
            raise
        if event is None:
            if not self._eof:
                return NEED_DATA
            if len(self._buffer):
                self.state = State.ERROR
                raise RemoteProtocolError(
                    f"EOF inside a message at stream offset {self._buffer.offset} "
                    f"({len(self._buffer)} bytes pending)",
                    data=self._buffer.pending(),
                )
            self.state = State.CLOSED
            return EOF
        if self.role is Role.CLIENT and self._outstanding and isinstance(event, (FrameResponse, ErrorResponse)):
            self._outstanding.popleft()
        return event

    def _extract(self) -> Event | None:
        buffer = self._buffer
        header = buffer.consume_exactly(HEADER.size)
        if header is None:
            buffer.rollback()
            return None
        magic, msg_type, flags, session_id, size = HEADER.unpack(header)
        if magic != MAGIC:
            raise RemoteProtocolError(
                f"bad magic 0x{magic:08x} (want 0x{MAGIC:08x} 'HXFR') at stream offset {buffer.offset}", data=header
            )
        if size > self.max_payload:
            raise RemoteProtocolError(
                f"payload_size {size} exceeds the cap of {self.max_payload} at stream offset {buffer.offset}",
                data=header,
            )
        _check_size(msg_type, size, header)
        payload = buffer.consume_exactly(size)
        if payload is None:
            buffer.rollback()
            return None
        buffer.commit()
        return decode_message(msg_type, flags, session_id, payload)

    def send(self, event: Event) -> bytes:
        """Encode an event for the peer; a client's FrameRequest becomes outstanding."""
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"cannot send {type(event).__name__}: connection is {self.state.name}")
        allowed = _GUEST_SENDS if self.role is Role.CLIENT else _HOST_SENDS
        if not isinstance(event, allowed + (UnknownMessage,)):
            raise LocalProtocolError(f"{self.role.value} cannot send {type(event).__name__}")
        data = event.encode()
        if isinstance(event, FrameRequest):
            self._outstanding.append(event)
        self.bytes_sent += len(data)
        _log(self.sent, data)
        return data

    def expire_outstanding(self) -> NoReply | None:
        """The driver's deadline passed: forget outstanding requests and report them as ``NoReply``."""
        if not self._outstanding:
            return None
        reply = NoReply(self._outstanding[0], len(self._outstanding))
        self._outstanding.clear()
        return reply


_PRINTABLE = bytes(b if 32 <= b < 127 else ord(".") for b in range(256))


def hexdump(data: bytes, *, offset: int = 0, limit: int = 4096) -> str:
    """``hexdump -C`` style dump of at most ``limit`` bytes."""
    view = bytes(data[:limit])
    lines = []
    for start in range(0, len(view), 16):
        chunk = view[start : start + 16]
        left, right = chunk[:8].hex(" "), chunk[8:].hex(" ")
        lines.append(f"{offset + start:08x}  {left:<23}  {right:<23}  |{chunk.translate(_PRINTABLE).decode('ascii')}|")
    if len(data) > limit:
        lines.append(f"... {len(data) - limit} more bytes")
    return "\n".join(lines)
