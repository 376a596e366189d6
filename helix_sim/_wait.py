"""Polling against a deadline, for the simulator's own waits (sshd start, child exit)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from .errors import SimTimeout

T = TypeVar("T")


def poll_until(check: Callable[[], T | None], *, timeout: float, what: str, phase: str | None = None,
               interval: float = 0.2, max_interval: float = 2.0, hint: str | None = None) -> T:
    """Call ``check`` until it returns something truthy; pauses grow from ``interval`` to ``max_interval``
    and never overshoot the deadline. Raises :class:`SimTimeout` (chained to ``check``'s last error)."""
    end = time.monotonic() + timeout
    last_exc: BaseException | None = None
    pause = interval
    while True:
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - chained on timeout
            last_exc, result = exc, None
        if result is not None and result is not False:
            return result
        left = end - time.monotonic()
        if left <= 0:
            detail = f": last error: {last_exc}" if last_exc else ""
            raise SimTimeout(f"timed out after {timeout:.1f}s waiting for {what}{detail}", phase=phase,
                             hint=hint) from last_exc
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, max_interval)
