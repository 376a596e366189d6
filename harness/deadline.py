"""Deadlines and polling: the only way the harness waits for something."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from .errors import PhaseTimeout

T = TypeVar("T")


class Deadline:
    """A point in monotonic time. ``remaining`` never goes below zero."""

    __slots__ = ("timeout", "_end")

    def __init__(self, timeout: float) -> None:
        self.timeout = float(timeout)
        self._end = time.monotonic() + self.timeout

    @property
    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    @property
    def elapsed(self) -> float:
        return self.timeout - (self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self._end


def poll_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    phase: str | None = None,
    interval: float = 0.2,
    max_interval: float = 2.0,
    hint: str | None = None,
    cause: str | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> T:
    """Call ``check`` until it returns something other than ``None``/``False``.

    The pause between attempts grows from ``interval`` to ``max_interval`` and never
    overshoots the deadline. ``check`` may raise; the last exception is chained to the
    :class:`PhaseTimeout` raised when time runs out, which carries ``cause`` (what triage
    blames when this wait fails). ``on_wait(elapsed)`` is called between attempts (progress display).
    """
    deadline = Deadline(timeout)
    last_exc: BaseException | None = None
    pause = interval
    while True:
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - re-raised, chained, on timeout
            last_exc = exc
            result = None
        if result is not None and result is not False:
            return result
        if deadline.expired:
            detail = f": last error: {last_exc}" if last_exc else ""
            raise PhaseTimeout(
                f"timed out after {timeout:.1f}s waiting for {what}{detail}", phase=phase, hint=hint, cause=cause
            ) from last_exc
        if on_wait is not None:
            on_wait(deadline.elapsed)
        time.sleep(min(pause, deadline.remaining))
        pause = min(pause * 1.5, max_interval)
