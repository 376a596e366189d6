"""QEMU's helix-frame-export, as qemu-utm builds it: an HXFR server on 127.0.0.1:<port>.

The server side of :mod:`harness.protocols.hxfr` over asyncio streams, with the real log lines
(``helix_log``: the raw message + ``\\n`` appended to helix-debug.log, no timestamp, no prefix).
What a FRAME_REQUEST gets depends on ``SimConfig.effective_qemu_behaviour``
(macos-frame-export.md §0.3 and §1):

- ``feb5-reject``: resource_id=0 → ``[HELIX] resource_id=0 not supported - guest must provide
  explicit resource ID from DmaBuf`` and an ERROR reply (code -2, ``"Error: -2"``); any other id →
  FRAME_RESPONSE.
- ``v7-fallback``: any id → ``[HELIX] Frame request: …, pixel_data=YES|NO (N bytes)``, the pixel data or
  ``[HELIX] No pixel data, falling back to DisplaySurface``, then FRAME_RESPONSE.
- ``v10-ignore``: no FRAME_REQUEST handler: the message is skipped silently, no reply ever comes.

Every behaviour answers PING, SUBSCRIBE, ENABLE_SCANOUT and CONFIG_REQ like v10's multi-client
handler, and closes a client after ``qemu_idle_timeout_s`` without data (v10's 60 s ``poll``), a
subscribed client excepted (it is fed frames, it does not have to talk).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SimConfigError, SimError
from harness.protocols import hxfr
from harness.protocols.errors import RemoteProtocolError
from ..config import SimConfig

log = logging.getLogger("helix_sim.qemu")

SEPARATOR = "=" * 40
#: The BUILD line each behaviour's binary prints (v7 and v10 as in qemu-utm; Feb 5 is the sim's own).
BUILD_LINES = {
    "feb5-reject": "Single client, explicit DmaBuf resource IDs only",
    "v7-fallback": "Multi-client, per-scanout auto-encode",
    "v10-ignore": "Multi-client, per-scanout auto-encode, assert(isv) restored",
}
REJECT_ZERO = "[HELIX] resource_id=0 not supported - guest must provide explicit resource ID from DmaBuf"
MAX_CLIENTS = 16
_FD_BASE = 23
#: A decodable 64x64 IDR access unit (SPS + PPS + IDR, Annex-B, 4-byte start codes): what a
#: FRAME_RESPONSE carries. VideoToolbox prepends SPS/PPS on keyframes, so does this blob.
SAMPLE_KEYFRAME = bytes.fromhex(
    "000000016742c00adc426840000003004000000f23c489e0"
    "0000000168ce0fc8"
    "000000016588843a26280008e0c9c9c9d75d75d75d75d75d75e0"
)


class QemuError(SimError):
    """The simulated QEMU could not do what was asked (e.g. bind its port)."""

    default_phase = "frame_export"


@dataclass
class _Client:
    index: int
    fd: int
    writer: asyncio.StreamWriter
    subscribed: bool = False
    scanout: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class QemuFrameExport:
    """The HXFR server of one QEMU process: ``await start()`` binds it and logs the startup lines."""

    def __init__(self, config: SimConfig, log_path: str | Path, *, port: int | None = None) -> None:
        self.config = config
        self.log_path = Path(log_path)
        root = Path(config.root).resolve()
        if not self.log_path.resolve().is_relative_to(root):
            raise SimConfigError(
                f"helix-debug.log path {self.log_path} is outside the sim root {root}",
                hint="the simulator writes only inside its root",
            )
        self.port = config.frame_export_port if port is None else port
        self.behaviour = config.effective_qemu_behaviour
        self._log_lock = threading.Lock()
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: dict[int, _Client] = {}
        self._frame_ready = 0
        self._frame_entries = 0
        self._encoder_size: tuple[int, int] | None = None
        self._fe_ptr = "0x%x" % (0x600003E00000 + ((id(self) >> 4) & 0xFFFF) * 0x40)
        #: Counters a test (or the sim's own report) may read.
        self.frame_requests = 0
        self.errors_sent = 0
        self.responses_sent = 0

    # --- helix_log ---------------------------------------------------------------------

    def log(self, message: str) -> None:
        """helix_log(): append the raw message and a newline (open, append, close)."""
        with self._log_lock:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(message + "\n")
        log.debug("helix: %s", message)

    def frame_ready(self, scanout_id: int, resource_id: int, *, subscribed: bool = True, width: int = 0,
                    height: int = 0) -> None:
        """helix_scanout_frame_ready (v10): a page flip on ``scanout_id`` (thread-safe).

        ``subscribed``: the guest's desktop subscribed to this scanout (the scanout path; the vsockenc path
        only connects). Without any subscriber: ``[FRAME_READY_ENTRY] … NO_SUBSCRIBER`` (first 5, then every
        1000th). With one: ``[FRAME_READY] #N … resource=R has_subscriber=YES`` (first 5, then every 100th),
        the first frames' ``tex_id`` line, the encoder's creation and its ``[ENCODE]`` lines.
        """
        with self._log_lock:
            self._frame_entries += 1
            entry = self._frame_entries
            has_subscriber = subscribed or any(
                c.subscribed and c.scanout == scanout_id for c in list(self._clients.values()))
            if has_subscriber:
                self._frame_ready += 1
            n = self._frame_ready
            new_encoder = has_subscriber and width > 0 and self._encoder_size != (width, height)
            if new_encoder:
                self._encoder_size = (width, height)
        if not has_subscriber:
            if entry <= 5 or entry % 1000 == 0:
                active = len(self._clients) + 1  # the guest's vsockenc connection counts as an active client
                self.log(f"[FRAME_READY_ENTRY] #{entry} scanout={scanout_id} active_clients={active} NO_SUBSCRIBER")
            return
        if n <= 5 or n % 100 == 0:
            self.log(f"[FRAME_READY] #{n} scanout={scanout_id} resource={resource_id} has_subscriber=YES")
        if width <= 0 or resource_id == 0:
            return
        if n <= 5:
            self.log(f"[FRAME_READY] scanout {scanout_id}: tex_id={resource_id + 100} {width}x{height}")
        if new_encoder:
            bitrate = max(5_000_000, width * height * 4)
            self.log(f"[HELIX] Created encoder for scanout {scanout_id}: {width}x{height} bitrate={bitrate}")
        if n <= 5 or n % 100 == 0:
            self.log(f"[ENCODE] scanout={scanout_id} frame={n} slot={(n - 1) % 3} status=0 {width}x{height}")

    def publish_raw(self, scanout_id: int, message: bytes) -> None:
        """Write an already encoded HXFR message to the clients subscribed to ``scanout_id`` (thread-safe)."""
        self._send_subscribed(scanout_id, message)

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def subscribers(self) -> int:
        return sum(1 for c in self._clients.values() if c.subscribed)

    async def start(self) -> None:
        """helix_frame_export_init(): startup lines, bind 127.0.0.1:<port>, ``Frame export ready``."""
        if self._server is not None:
            return
        self._loop = asyncio.get_running_loop()
        # Bind first so a port of 0 (tests) is logged as the real one; the lines come out in QEMU's order.
        try:
            server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        except OSError as exc:
            self._log_banner()
            self.log(f"Failed to bind TCP socket on port {self.port}: {exc.strerror or exc}")
            raise QemuError(
                f"frame export could not bind 127.0.0.1:{self.port}: {exc.strerror or exc}",
                hint="a stale QEMU (or another program) holds the port",
            ) from exc
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        self._log_banner()
        self.log(f"[HELIX] Frame export ready: TCP 127.0.0.1:{self.port} (guest: 10.0.2.2:{self.port})")
        self.log("[HELIX] Waiting for client connection...")

    def _log_banner(self) -> None:
        self.log(SEPARATOR)
        self.log(f"[HELIX] VERSION: {self.config.logged_qemu_version}")
        self.log(f"[HELIX] BUILD: {BUILD_LINES[self.behaviour]}")
        self.log(SEPARATOR)
        self.log(f"[HELIX] Initializing frame export on vsock port {self.port}")

    async def stop(self) -> None:
        """The QEMU process goes away: listener and every client socket close. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        clients = list(self._clients.values())
        for client in clients:
            client.writer.close()
        tasks = [c.task for c in clients if c.task is not None and c.task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._clients.clear()
        if server is not None:
            await server.wait_closed()

    # --- subscribers -------------------------------------------------------------------

    def publish(self, scanout_id: int, annexb: bytes, *, pts_ns: int, keyframe: bool) -> None:
        """Send one encoded frame to the clients subscribed to ``scanout_id`` (thread-safe)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        data = hxfr.FrameResponse(pts_ns, pts_ns, int(keyframe), (annexb,), session_id=scanout_id & 0xFFFF).encode()
        self._send_subscribed(scanout_id, data)

    def _send_subscribed(self, scanout_id: int, data: bytes) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def send() -> None:
            for client in list(self._clients.values()):
                if client.subscribed and client.scanout == scanout_id and not client.writer.is_closing():
                    client.writer.write(data)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            send()
        else:
            loop.call_soon_threadsafe(send)

    # --- per client --------------------------------------------------------------------

    def _take_slot(self) -> int | None:
        for index in range(MAX_CLIENTS):
            if index not in self._clients:
                return index
        return None

    def _free_fd(self) -> int:
        used = {c.fd for c in self._clients.values()}
        fd = _FD_BASE
        while fd in used:
            fd += 1
        return fd

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            writer.close()
            return
        fd = self._free_fd()
        self.log(f"[HELIX] Client connected (fd={fd})")
        index = self._take_slot()
        if index is None:
            self.log("[HELIX] No client slots available, rejecting")
            writer.close()
            self.log("[HELIX] Waiting for client connection...")
            return
        client = _Client(index, fd, writer, task=asyncio.current_task())
        self._clients[index] = client
        self.log(f"[HELIX] Added client {index} (fd={fd})")
        self.log(f"[HELIX] Client {index} handler started (fd={fd})")
        self.log("[HELIX] Waiting for client connection...")
        try:
            await self._serve(client, reader)
        except asyncio.CancelledError:
            pass  # QEMU went away: no log lines, the process is gone
        else:
            self.log(f"[HELIX] Client {index} disconnected")
            self.log(f"[HELIX] Removing client {index} (fd={fd}, scanout={client.scanout})")
        finally:
            self._clients.pop(index, None)
            writer.close()

    async def _serve(self, client: _Client, reader: asyncio.StreamReader) -> None:
        conn = hxfr.HxfrConnection(hxfr.Role.SERVER)
        idle = self.config.qemu_idle_timeout_s
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                magic = _magic_of(exc)
                if magic is not None and magic != hxfr.MAGIC:
                    self.log(f"[HELIX] Client {client.index}: invalid magic 0x{magic:x}")
                else:
                    log.debug("client %d broke the protocol: %s", client.index, exc)
                return
            if event is hxfr.NEED_DATA:
                try:
                    if client.subscribed:
                        data = await reader.read(256 * 1024)
                    else:
                        data = await asyncio.wait_for(reader.read(256 * 1024), timeout=idle)
                except (asyncio.TimeoutError, ConnectionError):
                    return
                conn.receive_data(data)
                continue
            if event is hxfr.EOF:
                return
            reply = self._handle(client, event)
            if reply:
                client.writer.write(reply)
                try:
                    await client.writer.drain()
                except ConnectionError:
                    return

    def _handle(self, client: _Client, event: object) -> bytes | None:
        if isinstance(event, hxfr.FrameRequest):
            return self._frame_request(client, event)
        if isinstance(event, hxfr.Ping):
            return event.response().encode()
        if isinstance(event, hxfr.Subscribe):
            client.subscribed = True
            client.scanout = event.scanout_id
            self.log(
                f"[HELIX] Client {client.index} subscribing to scanout {event.scanout_id} "
                f"(fe={self._fe_ptr} g_fe={self._fe_ptr})"
            )
            self.log(
                f"[HELIX] After subscribe: client[{client.index}].active=1 .subscribed=1 .scanout={event.scanout_id}"
            )
            return hxfr.SubscribeResponse(event.scanout_id, 1, session_id=event.scanout_id & 0xFFFF).encode()
        if isinstance(event, hxfr.EnableScanout):
            ok = 1 if 1 <= event.scanout_id <= 15 else 0
            return hxfr.ScanoutResponse(
                event.scanout_id, ok, f"Virtual-{event.scanout_id + 1}", session_id=event.session_id
            ).encode()
        if isinstance(event, hxfr.ConfigRequest):
            self.log(f"[HELIX] Client {client.index} CONFIG_REQ: scanout={client.scanout} bitrate={event.bitrate}")
            return None
        # DISABLE_SCANOUT, KEYFRAME_REQ and unknown types: skipped, no reply.
        return None

    def _frame_request(self, client: _Client, req: hxfr.FrameRequest) -> bytes | None:
        self.frame_requests += 1
        if self.behaviour == "v10-ignore":
            return None  # no handler: "Skip unknown messages"
        if self.behaviour == "feb5-reject" and req.resource_id == 0:
            self.log(REJECT_ZERO)
            self.errors_sent += 1
            code = int(hxfr.ErrorCode.RESOURCE_NOT_FOUND)
            return hxfr.ErrorResponse(code, f"Error: {code}", session_id=1).encode()
        if self.behaviour == "v7-fallback":
            pixels = len(req.pixel_data)
            self.log(
                f"[HELIX] Frame request: resource_id={req.resource_id}, {req.width}x{req.height}, "
                f"pts={req.pts_ns}, pixel_data={'YES' if pixels else 'NO'} ({pixels} bytes)"
            )
            if self._encoder_size != (req.width, req.height):
                self._encoder_size = (req.width, req.height)
                self.log(f"[HELIX] Configuring encoder: {req.width}x{req.height}, 8Mbps, realtime")
            if pixels:
                self.log(f"[HELIX] Using pixel data from guest ({pixels} bytes)")
            else:
                self.log("[HELIX] No pixel data, falling back to DisplaySurface")
            self.log("[HELIX] Frame encode submitted (callback will send response)")
        self.responses_sent += 1
        response = hxfr.FrameResponse(req.pts_ns, req.pts_ns, 1, (SAMPLE_KEYFRAME,), session_id=req.session_id)
        if self.behaviour == "v7-fallback":
            self.log(f"[HELIX] Frame sent successfully: {len(SAMPLE_KEYFRAME)} bytes, pts={req.pts_ns}, keyframe=1")
        return response.encode()


def _magic_of(exc: RemoteProtocolError) -> int | None:
    data = getattr(exc, "data", None)
    if data and len(data) >= 4 and "magic" in exc.message:
        return struct.unpack_from("<I", data)[0]
    return None
