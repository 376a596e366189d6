"""``helix spectask stream``: the WebSocket client (websockets' sync client), the init message, and the
command's goroutines: a reader thread, the statistics ticker, the duration, signals and the optional
mouse sweep. Exits 0 on duration, signal or a 1000 close, even with zero frames.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time
from typing import IO, Any, Callable
from urllib.parse import quote_plus

from ...gofmt import NS_PER_MS, GoError, errno_text, go_duration, go_json, go_round
from .cobra import Context
from .http_client import USER_AGENT, dial_address, net_error_text
from .stream_stats import StreamStats, close_error_text

HEADER_RULE = "━" * 50


def init_message(session_id: str, width: int, height: int, fps: int, bitrate: int, video_mode: str = "") -> str:
    """The init text frame exactly as the CLI marshals it (a Go map: keys sorted)."""
    msg: dict[str, Any] = {
        "type": "init", "session_id": session_id, "width": width, "height": height, "fps": fps,
        "bitrate": bitrate, "packet_size": 1024, "play_audio_local": False, "video_supported_formats": 1,
    }
    if video_mode:
        msg["video_mode"] = video_mode
    return go_json(msg)


def _ws_dial_error(exc: BaseException, url: str) -> GoError:
    from websockets.exceptions import InvalidMessage, InvalidStatus, InvalidURI  # noqa: PLC0415

    if isinstance(exc, InvalidStatus):
        body = (exc.response.body or b"")[:1024].decode("utf-8", "replace")
        return GoError(f"WebSocket connection failed: websocket: bad handshake - {body}")
    if isinstance(exc, InvalidURI):
        return GoError("WebSocket connection failed: malformed ws or wss URL")
    if isinstance(exc, TimeoutError):
        return GoError(f"WebSocket connection failed: dial tcp {dial_address(url)}: i/o timeout")
    if isinstance(exc, OSError):
        return GoError(f"WebSocket connection failed: {net_error_text(url, exc)}")
    if isinstance(exc, InvalidMessage):
        # The server hung up instead of answering the upgrade: http.ReadResponse's EOF.
        eof = isinstance(exc.__cause__, EOFError)
        return GoError("WebSocket connection failed: " + ("EOF" if eof else "malformed HTTP response"))
    return GoError("WebSocket connection failed: websocket: bad handshake")


def read_error_text(exc: BaseException, local: str, remote: str) -> str:
    """gorilla's ReadMessage error text for a failed read (a close frame, an EOF, a reset)."""
    from websockets.exceptions import ConnectionClosed  # noqa: PLC0415

    if isinstance(exc, ConnectionClosed):
        if exc.rcvd is not None:
            return close_error_text(exc.rcvd.code, exc.rcvd.reason)
        cause = exc.__cause__
        if isinstance(cause, ConnectionResetError):
            return f"read tcp {local}->{remote}: read: connection reset by peer"
        return close_error_text(1006, "unexpected EOF")
    if isinstance(exc, ConnectionResetError):
        return f"read tcp {local}->{remote}: read: connection reset by peer"
    return str(exc)


def ws_connect(url: str, token: str) -> Any:
    """gorilla's Dialer with a 10 s handshake, as the CLI dials; raises Go's dial error."""
    from websockets.sync.client import connect  # noqa: PLC0415

    try:
        return connect(url, additional_headers={"Authorization": "Bearer " + token}, max_size=None, open_timeout=10,
                       ping_interval=None, close_timeout=2, compression=None, proxy=None, user_agent_header=USER_AGENT)
    except Exception as exc:  # noqa: BLE001 - every dial failure becomes Go's error text
        raise _ws_dial_error(exc, url) from None


def quiet(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - best-effort close of a finished stream
        pass


class _StreamRun:
    """The stream command's goroutines: a reader thread, the 2 s ticker, duration and signals."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.wake = threading.Event()
        self.signalled = False
        self.last_error: str | None = None
        self.stats: StreamStats | None = None
        self.local = self.remote = ""

    def emit(self, text: str) -> None:
        self.ctx.print(text)

    def run(self) -> None:
        ctx, f = self.ctx, self.ctx.flags
        sid = ctx.args[0]
        duration, output, verbose = f["duration"], f["output"], f["verbose"]
        width, height, fps, bitrate, mode = f["width"], f["height"], f["fps"], f["bitrate"], f["video-mode"]
        ctx.print(f"📊 Video Stream for session {sid}\n{HEADER_RULE}\n")
        ws_url = ctx.api_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        stream_url = f"{ws_url}/api/v1/external-agents/{quote_plus(sid)}/ws/stream"
        ctx.print(f"WebSocket URL: {stream_url}\n")
        if duration > 0:
            ctx.print(f"Duration: {duration} seconds\n")
        if output:
            ctx.print(f"Output file: {output}\n")
        ctx.print(f"{HEADER_RULE}\n\n")

        t0 = time.monotonic_ns()
        with ws_connect(stream_url, ctx.token) as conn:
            try:
                self._stream(conn, t0, sid, duration, output, verbose, width, height, fps, bitrate, mode)
            finally:
                # Go's deferred conn.Close(): the TCP connection goes, with no close frame of its own.
                conn.close_timeout = 0.5
                quiet(conn.socket.shutdown, socket.SHUT_RDWR)

    def _stream(self, conn: Any, t0: int, sid: str, duration: int, output: str, verbose: bool, width: int,
                height: int, fps: int, bitrate: int, mode: str) -> None:
        ctx = self.ctx
        try:
            self.local = "%s:%d" % conn.socket.getsockname()[:2]
            self.remote = "%s:%d" % conn.socket.getpeername()[:2]
        except OSError:
            pass
        ctx.print(f"✅ Connected in {go_duration(go_round(time.monotonic_ns() - t0, NS_PER_MS))}\n\n")
        if mode:
            ctx.print(f"📤 Sending init message ({width}x{height}@{fps}fps, {bitrate}kbps, mode={mode})...\n")
        else:
            ctx.print(f"📤 Sending init message ({width}x{height}@{fps}fps, {bitrate}kbps)...\n")
        try:
            conn.send(init_message(sid, width, height, fps, bitrate, mode))
        except Exception as exc:  # noqa: BLE001
            raise GoError(f"failed to send init: {self._read_error(exc)}") from None
        ctx.print("✅ Init sent, waiting for video frames...\n\n")
        out_file = None
        if output:
            try:
                out_file = open(output, "wb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise GoError(f"failed to create output file: open {output}: {errno_text(exc)}") from None
            ctx.print(f"📁 Writing video data to {output}\n\n")
        try:
            self.stats = StreamStats(start_ns=time.monotonic_ns())
            self._loop(conn, duration, verbose, width, height, out_file)
        finally:
            if out_file is not None:
                out_file.close()

    def _read_error(self, exc: BaseException) -> str:
        return read_error_text(exc, self.local, self.remote)

    def _reader(self, conn: Any, verbose: bool, out_file: IO[bytes] | None) -> None:
        from websockets.exceptions import ConnectionClosed  # noqa: PLC0415

        assert self.stats is not None
        try:
            while True:
                try:
                    message = conn.recv()
                except ConnectionClosed as exc:
                    if not (exc.rcvd is not None and exc.rcvd.code == 1000):
                        self.last_error = self._read_error(exc)
                    return
                except Exception as exc:  # noqa: BLE001 - a read error ends the stream like gorilla's
                    self.last_error = self._read_error(exc)
                    return
                binary = isinstance(message, bytes)
                data = message if binary else message.encode("utf-8")
                with self.ctx.out.lock, self.lock:
                    self.stats.on_message(binary, data, time.monotonic_ns(), verbose=verbose, emit=self.emit,
                                          out_file=out_file)
        finally:
            self.done.set()
            self.wake.set()

    def _mouse_sweep(self, conn: Any, width: int, height: int) -> None:
        if self.done.wait(2):
            return
        sweep = 0
        while not self.done.is_set():
            sweep += 1
            self.emit(f"🖱️  Starting mouse sweep #{sweep}\n")
            for x in range(100, width - 100, 50):
                msg = struct.pack(">BBhhhh", 0x12, 1, x, height // 2, width, height)
                try:
                    conn.send(msg)
                except Exception as exc:  # noqa: BLE001
                    self.emit(f"❌ Mouse sweep error: {self._read_error(exc)}\n")
                    return
                if self.done.wait(0.05):
                    return
            if self.done.wait(3):
                return

    def _print_stats(self, final: bool) -> None:
        assert self.stats is not None
        with self.ctx.out.lock, self.lock:
            self.emit(self.stats.render(time.monotonic_ns() - self.stats.start_ns, final=final))

    def _close(self, conn: Any) -> threading.Thread:
        """Send close 1000 without waiting for the reply (Go's WriteMessage + deferred Close)."""
        t = threading.Thread(target=lambda: quiet(conn.close, 1000, ""), name="ws-close", daemon=True)
        t.start()
        return t

    def _loop(self, conn: Any, duration: int, verbose: bool, width: int, height: int,
              out_file: IO[bytes] | None) -> None:
        ctx = self.ctx
        previous = {}

        def on_signal(signum: int, frame: Any) -> None:
            self.signalled = True
            self.wake.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not the main thread (in-process tests): no signal handling
                pass
        reader = threading.Thread(target=self._reader, args=(conn, verbose, out_file), name="ws-reader", daemon=True)
        reader.start()
        if ctx.flags["mouse-sweep"]:
            self.emit("🖱️  Mouse sweep enabled - moving mouse horizontally across middle of screen\n")
            threading.Thread(target=self._mouse_sweep, args=(conn, width, height), name="mouse-sweep",
                             daemon=True).start()
        interval = ctx.timing.stats_interval_s  # the stream's ticker (a Live Statistics block)
        start = time.monotonic()
        next_tick = start + interval
        end = start + duration if duration > 0 else None
        closer: threading.Thread | None = None
        try:
            while True:
                if self.signalled:
                    self.emit("\n🛑 Interrupted...\n")
                    closer = self._close(conn)
                    self._print_stats(True)
                    return
                if self.done.is_set():
                    reader.join()
                    if self.last_error is not None:
                        self.emit(f"\n❌ Connection error: {self.last_error}\n")
                        self._print_stats(True)
                        raise GoError(self.last_error)
                    self.emit("\n📭 Connection closed by server\n")
                    self._print_stats(True)
                    return
                now = time.monotonic()
                if end is not None and now >= end:
                    self.emit(f"\n⏰ Duration reached ({duration}s)\n")
                    closer = self._close(conn)
                    self._print_stats(True)
                    return
                if now >= next_tick:
                    if not verbose:
                        self._print_stats(False)
                    while next_tick <= now:  # a ticker drops the ticks it could not deliver
                        next_tick += interval
                    continue
                wait_until = next_tick if end is None else min(next_tick, end)
                self.wake.wait(max(0.0, wait_until - now))
                self.wake.clear()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if closer is not None:
                closer.join(timeout=3)


def run_stream(ctx: Context) -> None:
    _StreamRun(ctx).run()
