"""macOS ``.ips`` crash reports (macOS 12+): one JSON header line, then a JSON body.

``parse_ips_bytes`` is the pure parser; ``parse_ips`` reads at most ``limit`` bytes of a file. Neither
raises for what the file holds: valid JSON of the wrong shape (``[1]``, ``{"threads":[{"frames":5}]}``),
nesting too deep for the JSON decoder, garbage or an unreadable file all give a ``CrashReport`` whose
``parse_error`` says what was wrong, with whatever could be read. Only the known fields are read, and
only when they have the expected type; every string is cut to a bounded length.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CrashReport", "parse_ips", "parse_ips_bytes", "DEFAULT_LIMIT", "MAX_FRAMES"]

#: Bytes of a report that are read (a real report is well under 1 MiB).
DEFAULT_LIMIT = 4 << 20
#: Frames kept from the crashed thread.
MAX_FRAMES = 8
_MAX_TEXT = 500

_PLUMBING = frozenset({"__pthread_kill", "pthread_kill", "abort", "__abort", "raise", "__pthread_kill_impl"})


@dataclass
class CrashReport:
    path: str
    process: str = ""
    indicator: str = ""  # e.g. "Abort trap: 6"
    signal: str = ""
    frames: list[str] = field(default_factory=list)
    parse_error: str = ""

    def interesting_frames(self) -> list[str]:
        """The crashed thread's frames without the libc/pthread abort plumbing at the top."""
        frames = [f for f in self.frames if f not in _PLUMBING]
        return frames or self.frames

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "process": self.process,
            "indicator": self.indicator,
            "signal": self.signal,
            "frames": self.frames,
            "parse_error": self.parse_error,
        }

    def summary(self) -> str:
        top = ", ".join(self.interesting_frames()[:3])
        return f"{Path(self.path).name}: {self.process or '?'} {self.indicator or self.signal or ''} {top}".strip()


def _text(value: Any) -> str:
    """A scalar JSON value as bounded text; anything else (a list, an object) is not a value here."""
    if isinstance(value, str):
        return value[:_MAX_TEXT]
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value) if -(10**18) < value < 10**18 else ""
    if isinstance(value, float):
        return repr(value)
    return ""


def _loads(text: str) -> tuple[Any, str]:
    """``(value, "")`` or ``(None, why)``: never raises (too deep nesting is an error like bad JSON)."""
    try:
        return json.loads(text), ""
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as exc:  # JSONDecodeError, and int() limits of huge digit runs
        return None, f"not JSON: {str(exc)[:200]}"


def parse_ips_bytes(data: bytes | str, path: str = "") -> CrashReport:
    """Parse the content of an ``.ips`` report (see the module docstring)."""
    report = CrashReport(path=str(path))
    raw = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else str(data)
    header_text, _, body_text = raw.partition("\n")
    header, header_error = _loads(header_text)
    if isinstance(header, dict):
        report.process = _text(header.get("app_name")) or _text(header.get("name"))
    problems = []
    if header_error or not isinstance(header, dict):
        problems.append(f"header line {header_error or 'is not a JSON object'}")
    if not body_text.strip():
        if problems:
            report.parse_error = "; ".join(problems)
        return report
    body, body_error = _loads(body_text)
    if body_error:
        report.parse_error = "; ".join([*problems, f"body {body_error}"])
        return report
    if not isinstance(body, dict):
        report.parse_error = "; ".join([*problems, "body is not a JSON object"])
        return report
    report.process = _text(body.get("procName")) or report.process
    term = body.get("termination")
    if isinstance(term, dict):
        report.indicator = _text(term.get("indicator"))
        report.signal = _text(term.get("namespace"))
    exc_info = body.get("exception")
    if isinstance(exc_info, dict) and not report.signal:
        report.signal = _text(exc_info.get("signal")) or _text(exc_info.get("type"))
    threads = body.get("threads")
    if threads is not None and not isinstance(threads, list):
        problems.append("'threads' is not a list")
    elif threads:
        crashed = next((t for t in threads if isinstance(t, dict) and t.get("triggered")), None)
        if crashed is None and isinstance(threads[0], dict):
            crashed = threads[0]
        frames = crashed.get("frames") if isinstance(crashed, dict) else None
        if frames is not None and not isinstance(frames, list):
            problems.append("the crashed thread's 'frames' is not a list")
            frames = None
        for frame in (frames or [])[:MAX_FRAMES]:
            symbol = _text(frame.get("symbol")) if isinstance(frame, dict) else ""
            if symbol:
                report.frames.append(symbol)
    report.parse_error = "; ".join(problems)
    return report


def parse_ips(path: str | os.PathLike[str], limit: int = DEFAULT_LIMIT) -> CrashReport:
    """Read at most ``limit`` bytes of an ``.ips`` file and parse them; an unreadable file is a
    ``CrashReport`` with ``parse_error`` "unreadable: …"."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit)
    except OSError as exc:
        report = CrashReport(path=str(path))
        report.parse_error = f"unreadable: {exc.strerror or exc}"
        return report
    return parse_ips_bytes(data, str(path))
