"""One payload in, one event out: ``parse_binary`` and ``parse_text`` (unknown types stay lossless)."""

from __future__ import annotations

import json
from typing import Union

from ..errors import LocalProtocolError, RemoteProtocolError
from .binary import (
    AgentCursor, CursorImage, CursorName, MsgType, Ping, Pong, RemoteCursor, RemoteTouch, RemoteUser,
    RemoteUserLeft, SelfId, StreamError, StreamInit, UnknownMessage, VideoFrame,
)
from .text import ConnectionComplete, Init, StreamStatus, TextMessage, _status_body

__all__ = ["Event", "parse_binary", "parse_text"]


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
