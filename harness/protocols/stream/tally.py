"""One rule, live and offline, for what a message is: a frame, a viewer event, a status, an error."""

from __future__ import annotations

import enum
from typing import Any

from ..errors import LocalProtocolError, RemoteProtocolError
from .binary import (
    AgentCursor, CursorImage, CursorName, FLAG_REPLAY, Ping, Pong, RemoteCursor, RemoteTouch,
    RemoteUser, RemoteUserLeft, SelfId, StreamError, StreamInit, UnknownMessage, VideoFrame,
)
from .text import ConnectionComplete, Init, StreamStatus, TextMessage
from .parse import Event

__all__ = [
    "Category", "classify", "is_viewer_event", "is_cursor_event", "is_status_event", "is_error",
    "StreamTally",
]


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
