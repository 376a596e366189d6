"""The stream's text messages: the client's init, ConnectionComplete, StreamStatus and any other text."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .._fields import check_int as _check_int
from ..errors import LocalProtocolError, RemoteProtocolError
from .binary import STATUS_STARTING_VIDEO, _check_str

__all__ = ["ConnectionComplete", "Init", "StreamStatus", "TextMessage"]


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
