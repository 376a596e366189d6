"""``StreamConnection(role)``: either end of a stream socket, ``AWAITING_INIT → STREAMING → CLOSED``."""

from __future__ import annotations

import enum

from ..errors import LocalProtocolError, RemoteProtocolError
from .binary import (
    AgentCursor, CursorImage, CursorName, Kind, MsgType, Ping, Pong, RemoteCursor, RemoteTouch,
    RemoteUser, RemoteUserLeft, SelfId, StreamError, StreamInit, UnknownMessage, VideoFrame, _utf8,
)
from .text import ConnectionComplete, Init, StreamStatus, TextMessage
from .parse import Event, _to_bytes, parse_binary, parse_text

__all__ = ["Role", "State", "StreamConnection"]


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
