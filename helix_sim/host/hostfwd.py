"""QEMU's SLIRP host forwards (``-netdev user,hostfwd=tcp::41222-:22,…``) as the host sees them.

A forward exists only while QEMU runs. It accepts every connection at once (SLIRP listens in QEMU, so
"port open" says nothing about the guest: helix-app-vm.md §3, the app's SSH readiness check); then it
connects to the guest's service and pumps bytes, or hangs up when nothing listens in the guest. While
the VM is paused (QMP ``stop``) or QEMU's main loop is stuck (the deadlock fault) the forward stays
open but silent: connections are accepted by the kernel and never answered, and open ones stop moving.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("helix_sim.hostfwd")

_CHUNK = 65536


class HostForward:
    """One ``hostfwd=tcp:127.0.0.1:<port>-:<guest port>`` rule: ``127.0.0.1:port`` → ``127.0.0.1:target``."""

    def __init__(self, name: str, port: int, target: int) -> None:
        self.name = name
        self.port = port
        self.target = target
        self._server: asyncio.base_events.Server | None = None
        self._moving = asyncio.Event()
        self._moving.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"HostForward({self.name}: {self.port} -> {self.target}, frozen={self.frozen})"

    @property
    def frozen(self) -> bool:
        return not self._moving.is_set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    def freeze(self) -> None:
        """Accept, but move no byte (a paused guest, a stuck main loop)."""
        self._moving.clear()

    def thaw(self) -> None:
        self._moving.set()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        self._writers.clear()
        self._moving.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._moving.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            except OSError:
                return  # nothing listens in the guest: SLIRP hangs up
            self._writers.add(up_writer)
            try:
                await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._moving.wait()
                data = await reader.read(_CHUNK)
                await self._moving.wait()
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                pass
