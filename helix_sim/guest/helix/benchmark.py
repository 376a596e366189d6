"""``helix spectask benchmark``: ``api/pkg/cli/spectask/benchmark_cmd.go`` (newBenchmarkCommand, runBenchmark,
printBenchmarkResults, startVkcube, stopVkcube), byte for byte.

vkcube is started over exec (background, Wayland env) and stopped with ``pkill -f vkcube`` at the end;
the stream's init asks for the benchmark's size and rate; every second a progress line shows the frames
of the last completed 1 s bucket; the results count only 0x01 messages (bytes included), their
inter-arrival jitter in whole milliseconds, and the frame-rate verdict. Exit 0 even after a connection
error (it prints the results and returns nil); a dial failure or an output file that cannot be created
fail the command.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote_plus

from ...gofmt import NS_PER_MS, GoError, errno_text, go_duration, go_json, go_round
from .cobra import Context
from .http_client import Http
from .stream import init_message, quiet, read_error_text, ws_connect
from .stream_stats import codec_name, format_bits, format_bytes

BENCHMARK_LONG = """Measures video streaming FPS over the WebSocket connection.

For accurate results, you should run vkcube (Vulkan cube demo) inside the session
to stress the GPU and generate continuous frame updates.

Before running benchmark:
  1. Open a terminal in the desktop session
  2. Run: vkcube
  3. Then run this benchmark

The FPS reported is the actual frames received by the client, including any
network, encoding, or capture bottlenecks.

Video modes:
  - shm:      Shared memory path (default, most compatible, 1-2 CPU copies)
  - native:   Native GStreamer DMA-BUF (requires GStreamer 1.24+, fewer copies)
  - zerocopy: pipewirezerocopysrc plugin (true zero-copy, requires plugin)

Examples:
  helix spectask benchmark ses_01xxx                        # Run 10 second benchmark (default)
  helix spectask benchmark ses_01xxx --duration 30          # Run 30 second benchmark
  helix spectask benchmark ses_01xxx --fps 120              # Test 120fps capability
  helix spectask benchmark ses_01xxx --skip-vkcube          # Skip vkcube check (static screen)
  helix spectask benchmark ses_01xxx --video-mode zerocopy  # Benchmark zero-copy mode
"""

HEAVY_RULE = "━" * 74
LIGHT_RULE = "─" * 75
VKCUBE_COMMAND = ["vkcube", "--wsi", "wayland", "--present_mode", "1"]
VKCUBE_ENV = {"WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": "/run/user/1000"}
#: The waits compiled into the command: after starting vkcube, and after the close message.
VKCUBE_SETTLE_S = 0.5
CLOSE_SETTLE_S = 0.1


def go_float(value: float, prec: int) -> str:
    """fmt's %.Nf, including Go's spelling of the non-finite values."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.{prec}f}"


@dataclass
class BenchmarkStats:
    """benchmarkStats: every field as the Go struct counts it."""

    start_ns: int
    duration: int
    total_frames: int = 0
    total_bytes: int = 0
    keyframes: int = 0
    min_frame_size: int = 0
    max_frame_size: int = 0
    codec: int = 0
    width: int = 0
    height: int = 0
    stream_fps: int = 0
    fps_buckets: list[int] = field(default_factory=list)
    last_frame_ns: int | None = None
    min_interval_ms: int = 0
    max_interval_ms: int = 0
    total_interval_ms: int = 0
    interval_count: int = 0
    gaps_50: int = 0
    gaps_100: int = 0
    gaps_200: int = 0

    def __post_init__(self) -> None:
        self.fps_buckets = [0] * max(0, self.duration)  # make([]int, duration): one bucket per second

    def on_binary(self, data: bytes, now_ns: int, out_file: IO[bytes] | None) -> None:
        if not data:
            return
        if data[0] == 0x01:  # WsMsgVideoFrame
            self.total_frames += 1
            self.total_bytes += len(data)
            if self.last_frame_ns is not None:
                interval_ms = (now_ns - self.last_frame_ns) // NS_PER_MS  # Duration.Milliseconds(): truncated
                self.total_interval_ms += interval_ms
                self.interval_count += 1
                if self.min_interval_ms == 0 or interval_ms < self.min_interval_ms:
                    self.min_interval_ms = interval_ms
                if interval_ms > self.max_interval_ms:
                    self.max_interval_ms = interval_ms
                self.gaps_50 += interval_ms > 50
                self.gaps_100 += interval_ms > 100
                self.gaps_200 += interval_ms > 200
            self.last_frame_ns = now_ns
            bucket = (now_ns - self.start_ns) // 1_000_000_000  # int(elapsed.Seconds())
            if 0 <= bucket < len(self.fps_buckets):
                self.fps_buckets[bucket] += 1
            if len(data) >= 15:
                if data[2] & 0x01:
                    self.keyframes += 1
                size = len(data) - 15
                if size < self.min_frame_size or self.min_frame_size == 0:
                    self.min_frame_size = size
                if size > self.max_frame_size:
                    self.max_frame_size = size
                if out_file is not None and size > 0:
                    out_file.write(data[15:])
        elif data[0] == 0x30 and len(data) >= 7:  # WsMsgStreamInit
            self.codec = data[1]
            self.width = data[2] << 8 | data[3]
            self.height = data[4] << 8 | data[5]
            self.stream_fps = data[6]

    def progress(self, count: int) -> str:
        current = self.fps_buckets[count - 1] if 0 < count <= len(self.fps_buckets) else 0
        return (f"  [{count:2d}/{self.duration:2d}s] Frames: {self.total_frames:4d} | Current FPS: {current:3d} | "
                f"Total: {format_bytes(self.total_bytes)}\n")

    def results(self, elapsed_ns: int, target_fps: int) -> str:
        """printBenchmarkResults."""
        elapsed_s = elapsed_ns / 1e9
        avg_fps = self.total_frames / elapsed_s if elapsed_s else math.inf
        avg_bitrate = self.total_bytes * 8 / elapsed_s if elapsed_s else math.inf
        valid = [b for b in self.fps_buckets if b > 0]
        min_fps, max_fps = (min(valid), max(valid)) if valid else (0, 0)
        pct = avg_fps / target_fps * 100 if target_fps else (math.nan if avg_fps == 0 else math.inf)
        out = [f"\n{HEAVY_RULE}\n📊 BENCHMARK RESULTS\n{HEAVY_RULE}\n\n"]
        if self.width > 0:
            out.append(f"  Resolution:       {self.width}x{self.height}\n")
        if self.codec > 0:
            out.append(f"  Codec:            {codec_name(self.codec)}\n")
        out.append(f"  Duration:         {go_duration(go_round(elapsed_ns, NS_PER_MS))}\n\n")
        out.append("  📈 Frame Rate:\n")
        out.append(f"     Average:       {go_float(avg_fps, 1)} fps")
        mark = " ⚠️  " if pct < 90 else " ✅ "  # a NaN percentage compares false: ✅, as in Go
        out.append(f"{mark}({go_float(pct, 0)}% of {target_fps} target)\n")
        if min_fps > 0:
            out.append(f"     Min/Max:       {min_fps} / {max_fps} fps\n")
        out.append(f"     Total Frames:  {self.total_frames} ({self.keyframes} keyframes)\n\n")
        out.append("  📦 Bandwidth:\n")
        out.append(f"     Average:       {format_bits(_go_int64(avg_bitrate))}/s\n")
        out.append(f"     Total Data:    {format_bytes(self.total_bytes)}\n")
        if self.total_frames > 0:
            out.append(f"     Avg Frame:     {format_bytes(self.total_bytes // self.total_frames)}\n")
            out.append(f"     Frame Range:   {format_bytes(self.min_frame_size)} - {format_bytes(self.max_frame_size)}\n")
        out.append("\n  📉 Frame Jitter (inter-frame arrival variance):\n")
        if self.interval_count > 0:
            n = self.interval_count
            out.append(f"     Interval:      min={self.min_interval_ms}ms avg={self.total_interval_ms // n}ms "
                       f"max={self.max_interval_ms}ms\n")
            for label, count in ((">50ms: ", self.gaps_50), (">100ms:", self.gaps_100), (">200ms:", self.gaps_200)):
                out.append(f"     Gaps {label}   {count} ({go_float(count / n * 100, 1)}%)\n")
            if self.max_interval_ms > 100:
                out.append(f"     ⚠️  High jitter detected! Max gap: {self.max_interval_ms}ms\n")
        out.append(f"\n{HEAVY_RULE}\n")
        if avg_fps >= target_fps * 0.95:
            out.append(f"✅ EXCELLENT: Achieving {go_float(pct, 0)}% of target FPS\n")
        elif avg_fps >= target_fps * 0.8:
            out.append(f"👍 GOOD: Achieving {go_float(pct, 0)}% of target FPS\n")
        elif avg_fps >= target_fps * 0.5:
            out.append(f"⚠️  DEGRADED: Only {go_float(pct, 0)}% of target FPS - check GPU/encoder load\n")
        else:
            out.append(f"❌ POOR: Only {go_float(pct, 0)}% of target FPS - significant bottleneck\n")
        out.append(f"{HEAVY_RULE}\n")
        return "".join(out)


def _go_int64(value: float) -> int:
    """int64(float64): truncation (the sim never sees the out-of-range case)."""
    if math.isnan(value) or math.isinf(value):
        return -(1 << 63)
    return int(value)


def _exec(ctx: Context, payload: dict[str, Any]) -> None:
    """POST /api/v1/external-agents/{sid}/exec with a 10 s client timeout (startVkcube/stopVkcube)."""
    sid = ctx.args[0]
    status, body, _ = Http(ctx.token).request(
        "POST", f"{ctx.api_url}/api/v1/external-agents/{sid}/exec", body=go_json(payload).encode(),
        content_type="application/json", timeout=10)
    if status not in (200, 201) and payload["command"][0] == "vkcube":  # stopVkcube ignores the status
        raise GoError(f"exec API returned {status}: {body.decode('utf-8', 'replace')}")


class _Benchmark:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.wake = threading.Event()
        self.signalled = False
        self.last_error: str | None = None
        self.local = self.remote = ""

    def emit(self, text: str) -> None:
        self.ctx.print(text)

    def run(self) -> None:
        ctx, f = self.ctx, self.ctx.flags
        sid = ctx.args[0]
        duration, width, height, fps, bitrate = f["duration"], f["width"], f["height"], f["fps"], f["bitrate"]
        mode, output = f["video-mode"], f["output"]
        self.emit(f"🚀 Video Streaming Benchmark\n{HEAVY_RULE}\nSession:    {sid}\nDuration:   {duration} seconds\n"
                  f"Resolution: {width}x{height} @ {fps}fps target\nBitrate:    {bitrate} kbps\n")
        if mode:
            self.emit(f"Video Mode: {mode}\n")
        if output:
            self.emit(f"Output:     {output}\n")
        self.emit(f"{HEAVY_RULE}\n\n")
        out_file: IO[bytes] | None = None
        if output:
            try:
                out_file = open(output, "wb")  # noqa: SIM115 - closed below (defer outFile.Close())
            except OSError as exc:
                raise GoError(f"failed to create output file: open {output}: {errno_text(exc)}") from None
        try:
            self._run(sid, duration, width, height, fps, bitrate, mode, output, out_file)
        finally:
            if out_file is not None:
                out_file.close()

    def _run(self, sid: str, duration: int, width: int, height: int, fps: int, bitrate: int, mode: str, output: str,
             out_file: IO[bytes] | None) -> None:
        ctx = self.ctx
        if not ctx.flags["skip-vkcube"]:
            self.emit("🎮 Starting vkcube (GPU stress test)...\n")
            try:
                _exec(ctx, {"command": VKCUBE_COMMAND, "background": True, "env": VKCUBE_ENV})
            except GoError as exc:
                self.emit(f"⚠️  Warning: Failed to start vkcube: {exc.message}\n"
                          "   You may need to start it manually for accurate FPS testing\n")
            else:
                self.emit("✅ vkcube started\n")
            time.sleep(VKCUBE_SETTLE_S)  # "Give vkcube a moment to start rendering"
        else:
            self.emit("⏭️  Skipping vkcube (--skip-vkcube flag set)\n")
        self.emit("\n📡 Connecting to video stream...\n")
        ws_url = ctx.api_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        with ws_connect(f"{ws_url}/api/v1/external-agents/{quote_plus(sid)}/ws/stream", ctx.token) as conn:
            try:
                self.local = "%s:%d" % conn.socket.getsockname()[:2]
                self.remote = "%s:%d" % conn.socket.getpeername()[:2]
            except OSError:
                pass
            self.emit("✅ Connected\n")
            try:
                conn.send(init_message(sid, width, height, fps, bitrate, mode))
            except Exception as exc:  # noqa: BLE001
                raise GoError(f"failed to send init: {read_error_text(exc, self.local, self.remote)}") from None
            self.emit("✅ Stream initialized\n\n")
            self.emit(f"📊 Running benchmark for {duration} seconds...\n{LIGHT_RULE}\n")
            stats = BenchmarkStats(start_ns=time.monotonic_ns(), duration=duration)
            try:
                self._collect(conn, stats, out_file)
                self.emit("\n🛑 Stopping vkcube...\n")
                try:
                    _exec(ctx, {"command": ["pkill", "-f", "vkcube"]})
                except GoError as exc:
                    self.emit(f"⚠️  Warning: Failed to stop vkcube: {exc.message}\n")
                closer = threading.Thread(target=quiet, args=(conn.close, 1000, ""), name="ws-close", daemon=True)
                closer.start()  # WriteMessage(CloseMessage) without waiting for the reply
                time.sleep(CLOSE_SETTLE_S)
                with self.lock:
                    self.emit(stats.results(time.monotonic_ns() - stats.start_ns, fps))
                if out_file is not None:
                    out_file.flush()
                    size = out_file.tell()
                    self.emit(f"\n📹 Video saved to: {output} ({format_bytes(size)})\n"
                              f"   Play with: ffplay -f h264 {output}\n")
                closer.join(timeout=3)
            finally:
                conn.close_timeout = 0.5

    def _reader(self, conn: Any, stats: BenchmarkStats, out_file: IO[bytes] | None) -> None:
        from websockets.exceptions import ConnectionClosed  # noqa: PLC0415

        try:
            while True:
                try:
                    message = conn.recv()
                except ConnectionClosed as exc:
                    if not (exc.rcvd is not None and exc.rcvd.code == 1000):
                        self.last_error = read_error_text(exc, self.local, self.remote)
                    return
                except Exception as exc:  # noqa: BLE001 - a read error ends the loop like gorilla's
                    self.last_error = read_error_text(exc, self.local, self.remote)
                    return
                if isinstance(message, bytes):
                    with self.lock:
                        stats.on_binary(message, time.monotonic_ns(), out_file)
        finally:
            self.done.set()
            self.wake.set()

    def _collect(self, conn: Any, stats: BenchmarkStats, out_file: IO[bytes] | None) -> None:
        """The select loop: signals, the reader's end, the duration timer and the 1 s progress ticker."""
        previous = {}

        def on_signal(signum: int, frame: Any) -> None:
            self.signalled = True
            self.wake.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not the main thread (in-process tests)
                pass
        threading.Thread(target=self._reader, args=(conn, stats, out_file), name="ws-reader", daemon=True).start()
        start = stats.start_ns / 1e9
        end = start + stats.duration
        count = 0
        try:
            while True:
                if self.signalled:
                    self.emit("\n🛑 Interrupted\n")
                    return
                if self.done.is_set():
                    if self.last_error is not None:
                        self.emit(f"\n❌ Connection error: {self.last_error}\n")
                    return
                now = time.monotonic()
                next_tick = start + count + 1
                # The ticker was made before the timer: at the last second its tick comes first.
                if now >= next_tick and next_tick <= end:
                    count += 1
                    with self.lock:
                        self.emit(stats.progress(count))
                    continue
                if now >= end:
                    self.emit("\n✅ Benchmark complete\n")
                    return
                self.wake.wait(max(0.0, min(next_tick, end) - now))
                self.wake.clear()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_benchmark(ctx: Context) -> None:
    _Benchmark(ctx).run()
