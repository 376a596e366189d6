"""utmctl output formats (UTM ``utmctl/UTMCtl.swift``): parse and format.

``list`` prints a header and ``<UUID> <status padded to 8> <name>`` rows; ``status`` prints one status
word. Apple Event failures go to stderr as ``Error from event: … (OSStatus error -NNNN.)`` while the
process still exits 0, so callers must check stderr with ``find_event_error``. The simulator prints
with the ``format_*`` functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "STATUSES", "LIST_HEADER", "NO_GUI_MESSAGE", "EVENT_ERROR_PREFIX", "VmEntry", "EventError",
    "parse_list", "parse_status", "find_event_error", "format_list", "format_status", "format_event_error",
]

STATUSES = ("stopped", "starting", "started", "pausing", "paused", "resuming", "stopping", "unknown")
LIST_HEADER = "UUID                                 Status   Name"
NO_GUI_MESSAGE = "NOTE: utmctl does not work from SSH sessions or before logging in."
EVENT_ERROR_PREFIX = "Error from event: "

_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_UUID_RE = re.compile(rf"^{_UUID}$")
_ROW_RE = re.compile(rf"^({_UUID}) ({'|'.join(f'{s:<8}' for s in STATUSES)}) (.*)$")
_OSSTATUS_RE = re.compile(r"OSStatus(?: error)?:?\s*(-?\d{1,10})")


def _fail(message: str, text: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, phase="utm", data=text.encode("utf-8", "replace")[:4096])


def _text(output: str | bytes) -> str:
    if isinstance(output, (bytes, bytearray)):
        output = bytes(output).decode("utf-8", "replace")
    if not isinstance(output, str):
        raise LocalProtocolError(f"utmctl output must be str or bytes, got {type(output).__name__}")
    return output.replace("\r\n", "\n")


@dataclass(frozen=True, slots=True)
class VmEntry:
    """One ``utmctl list`` row."""

    uuid: str
    status: str
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.uuid, str) or not _UUID_RE.match(self.uuid):
            raise LocalProtocolError(f"VmEntry.uuid {self.uuid!r} is not a UUID")
        if self.status not in STATUSES:
            raise LocalProtocolError(f"VmEntry.status {self.status!r} is not one of {STATUSES}")
        if not isinstance(self.name, str) or "\n" in self.name:
            raise LocalProtocolError("VmEntry.name must be a single-line str")


@dataclass(frozen=True, slots=True)
class EventError:
    """An Apple Event failure utmctl printed on stderr (it still exits 0)."""

    osstatus: int | None  # e.g. -1743 errAEEventNotPermitted, -600, -609, -1712
    line: str
    no_gui: bool = False  # the "does not work from SSH sessions or before logging in" note was printed


def parse_list(output: str | bytes) -> list[VmEntry]:
    """Parse ``utmctl list`` stdout. Missing header or a malformed row → ``RemoteProtocolError`` (phase utm)."""
    text = _text(output)
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines or lines[0].rstrip() != LIST_HEADER:
        first = lines[0][:80] if lines else "<empty output>"
        raise _fail(f"utmctl list output has no header {LIST_HEADER!r} (first line: {first!r})", text)
    entries = []
    for line in lines[1:]:
        match = _ROW_RE.match(line)
        if match is None:
            raise _fail(f"utmctl list row is not '<UUID> <status> <name>': {line[:120]!r}", text)
        entries.append(VmEntry(match.group(1), match.group(2).rstrip(), match.group(3)))
    return entries


def parse_status(output: str | bytes) -> str:
    """Parse ``utmctl status`` stdout: exactly one of ``STATUSES``."""
    text = _text(output)
    status = text.strip()
    if status not in STATUSES:
        raise _fail(f"utmctl status printed {status[:80]!r}, not one of {', '.join(STATUSES)}", text)
    return status


def find_event_error(stderr: str | bytes) -> EventError | None:
    """The first Apple Event error in utmctl's stderr (``Error from event:``/``OSStatus``/the no-GUI note)."""
    text = _text(stderr)
    lines = text.split("\n")
    no_gui = any(NO_GUI_MESSAGE in line for line in lines)
    code_match = _OSSTATUS_RE.search(text)
    osstatus = int(code_match.group(1)) if code_match else None
    for line in lines:
        if line.startswith(EVENT_ERROR_PREFIX) or "OSStatus" in line:
            return EventError(osstatus, line.strip(), no_gui)
    if no_gui:
        line = next(line for line in lines if NO_GUI_MESSAGE in line)
        return EventError(osstatus, line.strip(), True)
    return None


def format_list(entries: list[VmEntry]) -> str:
    """``utmctl list`` stdout for these entries (Swift ``print`` lines)."""
    rows = [LIST_HEADER]
    rows += [f"{entry.uuid} {entry.status:<8} {entry.name}" for entry in entries]
    return "\n".join(rows) + "\n"


def format_status(status: str) -> str:
    """``utmctl status`` stdout."""
    if status not in STATUSES:
        raise LocalProtocolError(f"{status!r} is not one of {STATUSES}")
    return status + "\n"


def format_event_error(osstatus: int) -> str:
    """stderr of a failed Apple Event: NSError's description for an OSStatus, as utmctl writes it."""
    if isinstance(osstatus, bool) or not isinstance(osstatus, int):
        raise LocalProtocolError("osstatus must be an int")
    return f"{EVENT_ERROR_PREFIX}The operation couldn\u2019t be completed. (OSStatus error {osstatus}.)\n"
