"""Phases and their progress: what the harness is waiting for, and for how long.

A :class:`Timeline` records every phase (name, what it waits for, start, end, outcome)
and tells subscribers about it. The pytest plugin subscribes a terminal printer; the report
reads the records. Library code only calls :meth:`Timeline.phase` and ``handle.update``.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass
class PhaseRecord:
    name: str
    what: str
    started: float  # time.monotonic()
    wall_started: float  # time.time()
    ended: float | None = None
    outcome: str = "running"  # running | ok | failed | skipped
    detail: str = ""
    error: str = ""

    @property
    def duration_s(self) -> float:
        end = self.ended if self.ended is not None else time.monotonic()
        return end - self.started

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "what": self.what,
            "started": round(self.wall_started, 3),
            "duration_s": round(self.duration_s, 3),
            "outcome": self.outcome,
            "error": self.error,
        }


Listener = Callable[[str, PhaseRecord], None]  # event: "start" | "update" | "end"


class PhaseHandle:
    def __init__(self, timeline: "Timeline", record: PhaseRecord) -> None:
        self._timeline = timeline
        self.record = record

    def update(self, detail: str) -> None:
        """Say what the phase is waiting for right now."""
        self.record.detail = detail
        self._timeline._emit("update", self.record)

    def skip(self, reason: str) -> None:
        self.record.outcome = "skipped"
        self.record.detail = reason


@dataclass
class Timeline:
    records: list[PhaseRecord] = field(default_factory=list)
    listeners: list[Listener] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def _emit(self, event: str, record: PhaseRecord) -> None:
        for listener in list(self.listeners):
            try:
                listener(event, record)
            except Exception:  # noqa: BLE001 - a display problem never changes a verdict
                pass

    @contextmanager
    def phase(self, name: str, what: str) -> Iterator[PhaseHandle]:
        record = PhaseRecord(name=name, what=what, started=time.monotonic(), wall_started=time.time())
        with self._lock:
            self.records.append(record)
        self._emit("start", record)
        handle = PhaseHandle(self, record)
        try:
            yield handle
        except BaseException as exc:
            record.outcome = "failed"
            record.error = str(exc) or type(exc).__name__
            raise
        else:
            if record.outcome == "running":
                record.outcome = "ok"
        finally:
            record.ended = time.monotonic()
            self._emit("end", record)

    def active(self) -> list[PhaseRecord]:
        return [r for r in self.records if r.outcome == "running"]

    def durations(self) -> dict[str, float]:
        """Total seconds per phase name (a phase may run more than once)."""
        out: dict[str, float] = {}
        for r in self.records:
            out[r.name] = round(out.get(r.name, 0.0) + r.duration_s, 3)
        return out

    def table(self) -> str:
        if not self.records:
            return ""
        width = max(len(r.name) for r in self.records)
        lines = [f"{'phase'.ljust(width)}  {'seconds':>8}  outcome  waited for"]
        for r in self.records:
            lines.append(f"{r.name.ljust(width)}  {r.duration_s:8.2f}  {r.outcome:<7}  {r.what}")
        total = sum(r.duration_s for r in self.records)
        lines.append(f"{'total'.ljust(width)}  {total:8.2f}")
        return "\n".join(lines)
