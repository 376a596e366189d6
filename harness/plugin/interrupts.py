"""Ctrl-C during teardown: finish the teardown first.

The first Ctrl-C interrupts the run and pytest then runs the session finalizers (strategy
teardown, simulator stop). A second Ctrl-C while they run would abandon them halfway and leave
the VM, the session or the simulator running, so it is held and reported; a third one abandons
the teardown (every teardown step is bounded by its own timeout, so that is rarely needed).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def sigint_deferred(what: str) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def handler(signum, frame) -> None:
        held.append(signum)
        if len(held) > 1:
            raise KeyboardInterrupt
        log.warning("Ctrl-C while %s: finishing that first (Ctrl-C again to abandon it)", what)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except (ValueError, OSError):  # not the main interpreter / no signals here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
