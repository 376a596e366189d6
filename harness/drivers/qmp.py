"""QEMU's QMP monitor through the QEMU project's own library (``qemu.qmp``), with our own timeouts.

Helix.app itself only ever sends ``system_powerdown`` with no deadline on any read (helix-app-vm.md §2);
a deadlocked main loop then blocks it for good. Here every exchange is bounded: :class:`QmpMonitor`
runs a :class:`qemu.qmp.QMPClient` on a private event-loop thread, and each call waits for its
result for at most its ``timeout``. A connection whose greeting never arrives is reported as such
(``QmpError.kind == "no_greeting"``): QEMU accepted the TCP connection (the kernel does, from the
listen backlog) but its main loop never wrote a byte, which is the BQL deadlock's signature.

QEMU serves one QMP client at a time on a chardev: while this monitor is connected, a second client
waits. The monitor therefore stays connected between exchanges (so it hears the events: ``STOP``,
``RESUME``, ``SHUTDOWN``, ``GUEST_PANICKED``, ``POWERDOWN``), and :meth:`QmpMonitor.probe_greeting`
drops the connection before it tests a fresh one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..errors import HarnessError

log = logging.getLogger(__name__)

#: Events the provider acts on or reports (the rest are kept too, for the log).
WATCHED_EVENTS = ("SHUTDOWN", "STOP", "RESUME", "GUEST_PANICKED", "POWERDOWN", "RESET")
#: The most events kept (a flood of events must not grow memory without bound).
MAX_EVENTS = 1000


class QmpError(HarnessError):
    """A QMP exchange failed. ``kind``: ``refused`` (nothing listens), ``no_greeting`` (the connection
    was accepted but QEMU never greeted), ``timeout`` (a command got no reply in time), ``closed``
    (QEMU hung up), ``error`` (QEMU answered with an error, or anything else)."""

    default_phase = "boot"
    default_cause = "qmp_failed"

    def __init__(self, message: str, *, kind: str = "error", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.kind = kind


@dataclass(frozen=True)
class QmpEvent:
    name: str
    data: dict = field(default_factory=dict)
    wall: float = 0.0  # QEMU's timestamp (seconds since the epoch)

    def line(self) -> str:
        detail = f" {self.data}" if self.data else ""
        when = time.strftime("%H:%M:%S", time.localtime(self.wall)) if self.wall else "?"
        return f"QMP event {self.name}{detail} at {when}"


def _is_refused(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, ConnectionRefusedError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class QmpMonitor:
    """One QMP connection to one QEMU, on its own loop thread; every call is bounded by its ``timeout``."""

    def __init__(self, host: str, port: int, *, name: str = "helix-e2e") -> None:
        self.address = (host, port)
        self.name = name
        self.greeting: dict | None = None
        self.events: list[QmpEvent] = []
        self._events_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None  # qemu.qmp.QMPClient while connected

    def __repr__(self) -> str:
        return f"QmpMonitor({self.address[0]}:{self.address[1]}, connected={self.connected})"

    # -- the loop thread ------------------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            self._thread = threading.Thread(target=run, name=f"qmp:{self.address[1]}", daemon=True)
            self._thread.start()
            ready.wait(5)
            self._loop = loop
        return self._loop

    def _call(self, make: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
        """Run ``make()`` on the loop thread for at most ``timeout`` seconds."""
        loop = self._ensure_loop()
        timeout = max(0.05, timeout)
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(make(), timeout), loop)
        try:
            return future.result(timeout + 2.0)
        except (asyncio.TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()
            raise QmpError(f"QMP {what}: no answer within {timeout:.1f}s", kind="timeout") from None

    @property
    def connected(self) -> bool:
        client = self._client
        if client is None:
            return False
        from qemu.qmp import Runstate

        return client.runstate == Runstate.RUNNING

    # -- connection -----------------------------------------------------------------------------------
    def connect(self, *, timeout: float) -> dict:
        """Connect, wait for the greeting and negotiate capabilities; returns the greeting.

        Raises :class:`QmpError` with ``kind`` ``refused`` or ``no_greeting`` (the TCP connection was
        accepted, the greeting did not come within ``timeout``)."""
        if self.connected:
            return self.greeting or {}
        self._drop()
        from qemu.qmp import EventListener, QMPClient

        monitor = self

        class _Recorder(EventListener):
            async def put(self, event) -> None:  # noqa: D401 - qemu.qmp's hook
                monitor._record(event)
                await super().put(event)

        holder: dict[str, Any] = {}

        async def connect() -> dict:
            client = QMPClient(self.name)
            holder["client"] = client
            listener = _Recorder()
            client.register_listener(listener)
            await client.connect(self.address)
            greeting = client.greeting
            return dict(greeting._asdict()) if greeting is not None else {}

        try:
            self.greeting = self._call(connect, timeout, "greeting")
        except QmpError as exc:
            self._abandon(holder.get("client"))
            raise QmpError(f"QMP on {self._where}: the connection was accepted but no greeting came within "
                           f"{timeout:.1f}s", kind="no_greeting") from exc
        except Exception as exc:  # qemu.qmp's ConnectError wraps the OSError
            self._abandon(holder.get("client"))
            refused = _is_refused(exc)
            raise QmpError(f"QMP on {self._where}: {'connection refused' if refused else exc}",
                           kind="refused" if refused else "error") from None
        self._client = holder["client"]
        return self.greeting

    @property
    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def _abandon(self, client: Any) -> None:
        if client is None:
            return
        try:
            self._call(client.disconnect, 2.0, "disconnect")
        except Exception:  # noqa: BLE001 - a half-open client: nothing more to do
            pass

    def _drop(self) -> None:
        client, self._client = self._client, None
        self._abandon(client)

    def close(self) -> None:
        """Disconnect and stop the loop thread; safe to call twice."""
        self._drop()
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            if not loop.is_running():
                loop.close()
        self._thread = None

    def probe_greeting(self, *, timeout: float) -> dict:
        """Drop the current connection and greet afresh: is QEMU's main loop answering at all?"""
        self._drop()
        return self.connect(timeout=timeout)

    # -- commands ---------------------------------------------------------------------------------------
    def execute(self, command: str, arguments: dict | None = None, *, timeout: float) -> Any:
        """One command (connecting first if needed, within the same ``timeout``)."""
        from qemu.qmp import ExecuteError

        start = time.monotonic()
        if not self.connected:
            self.connect(timeout=timeout)
        client = self._client
        remaining = max(0.05, timeout - (time.monotonic() - start))
        try:
            return self._call(lambda: client.execute(command, arguments), remaining, command)
        except ExecuteError as exc:
            raise QmpError(f"QMP {command} failed: {exc}", kind="error") from None
        except QmpError:
            raise
        except (EOFError, OSError) as exc:
            self._drop()
            raise QmpError(f"QMP {command}: QEMU hung up ({type(exc).__name__})", kind="closed") from None
        except Exception as exc:  # noqa: BLE001 - qemu.qmp's state errors after a hang-up
            self._drop()
            raise QmpError(f"QMP {command}: {type(exc).__name__}: {exc}", kind="closed") from None

    def query_status(self, *, timeout: float) -> str:
        """``query-status``'s ``status`` (running, paused, shutdown, guest-panicked, internal-error, …)."""
        result = self.execute("query-status", timeout=timeout)
        return str((result or {}).get("status", "")) if isinstance(result, dict) else ""

    # -- events -----------------------------------------------------------------------------------------
    def _record(self, message: Any) -> None:
        try:
            ts = message.get("timestamp") or {}
            event = QmpEvent(str(message.get("event")), dict(message.get("data") or {}),
                             float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6)
        except (AttributeError, TypeError, ValueError):
            return
        log.info("%s", event.line())
        with self._events_lock:
            if len(self.events) < MAX_EVENTS:
                self.events.append(event)

    def seen(self, *names: str) -> list[QmpEvent]:
        with self._events_lock:
            return [e for e in self.events if not names or e.name in names]
