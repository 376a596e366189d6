"""Interruptions: SIGTERM counts as Ctrl-C, and a teardown finishes before a second one lands.

CI cancellation and `timeout` send SIGTERM, whose default action kills pytest without running a single
finalizer (the VM, the session and the simulator's root sshd would be left behind). While the plugin is
configured, SIGTERM raises KeyboardInterrupt like Ctrl-C, so pytest runs the session finalizers and the
run is reported as interrupted.

The first Ctrl-C (or SIGTERM) interrupts the run and pytest then runs the session finalizers (strategy
teardown, simulator stop). A second one while they run would abandon them halfway, so it is held and
reported; a third one abandons the teardown (every teardown step is bounded by its own timeout, so that
is rarely needed).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Iterator

log = logging.getLogger(__name__)

#: The signals an interruption may come as.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def install_sigterm() -> Any:
    """Make SIGTERM interrupt like Ctrl-C; returns what to hand :func:`restore_sigterm` (``None``: unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if previous not in (signal.SIG_DFL, None):
            return None  # someone (a CI wrapper, xdist) already handles it: leave theirs
        signal.signal(signal.SIGTERM, _raise_interrupt)
        return previous
    except (ValueError, OSError):
        return None


def restore_sigterm(previous: Any) -> None:
    if previous is None:
        return
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGTERM, previous)


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
        log.warning("%s while %s: finishing that first (once more to abandon it)", signal.Signals(signum).name, what)

    previous = {}
    try:
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    except (ValueError, OSError):  # not the main interpreter / no signals here
        for sig, old in previous.items():
            signal.signal(sig, old)
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
