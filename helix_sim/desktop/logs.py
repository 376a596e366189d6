"""The desktop container's log, as the harness reads it: desktop-bridge's slog lines (``time=… level=INFO
msg=…``, TextHandler on **stdout**: ``api/cmd/desktop-bridge/main.go``), its zerolog JSON lines
(``[SHARED_VIDEO]``, ``[MULTIPLAYER]``: zerolog's global logger, which writes to stderr) and, on the
vsockenc path, the vsockenc GStreamer debug lines on stderr (macos-frame-export.md §2).

Per-frame lines are logged for the first :data:`LOG_EVERY_FRAME_UNTIL` frames and then every
:data:`LOG_SAMPLE_EVERY` th, so a long stream does not flood the (already bounded) engine log.

The vsockenc path (``shm``, ``native``, ``zerocopy``) never has DMA-BUF buffers on virtio-gpu (Mutter offers
only MemFd): every frame logs ``Buffer is not DMA-BUF backed`` and ``resource_id=0``, vsockenc never opens
the DRM device and no ``DMA-BUF fd=… resource_id=N`` line appears (upstream-corrections.md §1).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from ..gofmt import rfc3339_millis
from .pipeline import SCANOUT_ID, Frame, PipelineSettings

log = logging.getLogger("helix_sim.desktop")

#: Per-frame log lines: every frame up to here, then every LOG_SAMPLE_EVERY-th.
LOG_EVERY_FRAME_UNTIL = 100
LOG_SAMPLE_EVERY = 50
GST_PID = 333
GST_THREAD = "0xe7a330000c00"
GST_OBJECT = "vsockenc0"
QEMU_GUEST_HOST = "10.0.2.2"


def _slog_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = "[" + " ".join(str(v) for v in value) + "]"
    else:
        text = str(value)
    if text == "" or any(c in text for c in ' ="\\\t\n') or not text.isprintable():
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
    return text


def slog_line(level: str, msg: str, **attrs: Any) -> str:
    """One line as Go's slog TextHandler writes it."""
    parts = [f"time={rfc3339_millis(time.time())}", f"level={level}", f"msg={_slog_value(msg)}"]
    parts.extend(f"{k}={_slog_value(v)}" for k, v in attrs.items())
    return " ".join(parts)


def _zerolog_value(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # strconv.AppendFloat(…, 'f', -1, 64): 30000, not 30000.0
    return value


def zerolog_line(level: str, message: str, **fields: Any) -> str:
    """One line as zerolog's global logger writes it: level, the fields in order, time (RFC 3339), message."""
    obj: dict[str, Any] = {"level": level}
    obj.update((k, _zerolog_value(v)) for k, v in fields.items())
    obj["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    obj["message"] = message
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def gst_line(elapsed_s: float, level: str, where: str, msg: str) -> str:
    """A GStreamer debug line of category vsockenc (timestamp = time since gst_init).

    ``where`` is ``file:line:function``. Matches the reference sample byte for byte for DEBUG.
    """
    total_ns = max(0, int(elapsed_s * 1e9))
    secs, ns = divmod(total_ns, 1_000_000_000)
    hours, rem = divmod(secs, 3600)
    minutes, seconds = divmod(rem, 60)
    ts = f"{hours}:{minutes:02d}:{seconds:02d}.{ns:09d}"
    return f"{ts} {GST_PID:>5} {GST_THREAD} {level:<5}{'vsockenc':>20} {where}:<{GST_OBJECT}> {msg}"


def source_caps(s: PipelineSettings, fps: int) -> list[str]:
    """buildPipelineString's source part on macOS virtio-gpu (vsockenc present), by video mode."""
    src = f"pipewiresrc path={s.node_id} do-timestamp=true keepalive-time=500"
    if s.source == "zerocopy":  # the isMacOSVirtioGpu branch of the plugin mode: NV12 system memory
        return [src, "videoconvert", "video/x-raw,format=NV12"]
    if s.source == "native":
        return [src, f"video/x-raw,framerate={fps}/1"]
    return [src, f"video/x-raw,format=BGRx,framerate={fps}/1"]  # shm


def vsockenc_pipeline(s: PipelineSettings, fps: int, bitrate_kbps: int) -> str:
    """The GStreamer pipeline string of the vsockenc path (``ws_stream.go`` buildPipelineString, encoder vsock)."""
    parts = [
        *source_caps(s, fps),
        "queue max-size-buffers=1 leaky=downstream",
        f"vsockenc tcp-host={QEMU_GUEST_HOST} tcp-port={s.qemu_port} bitrate={bitrate_kbps} keyframe-interval={s.gop}",
        "h264parse",
        "video/x-h264,stream-format=byte-stream",
        "h264parse config-interval=-1",
        "video/x-h264,stream-format=byte-stream,alignment=au",
        "appsink name=videosink emit-signals=true max-buffers=2 drop=true sync=false",
    ]
    return " ! ".join(parts)


def pixel_bytes(s: PipelineSettings) -> int:
    """The raw frame vsockenc sends when it has no resource id: NV12 (zerocopy) or 4 bytes a pixel."""
    return s.width * s.height * 3 // 2 if s.source == "zerocopy" else s.width * s.height * 4


class DesktopLog:
    """Writes one desktop container's log lines. ``booted``: when desktop-bridge (and gst_init) started."""

    def __init__(self, container: Any, session_id: str) -> None:
        self.container = container
        self.session_id = session_id
        self.booted = time.monotonic()
        self._stats_started = 0.0

    def line(self, line: str, stream: str = "stdout") -> None:
        try:
            self.container.log(line, stream=stream)
        except Exception as exc:  # noqa: BLE001 - a removed container; logging must never break the stream
            log.debug("container log failed: %s", exc)

    def slog(self, level: str, msg: str, **attrs: Any) -> None:
        """desktop-bridge's slog TextHandler writes to stdout."""
        self.line(slog_line(level, msg, **attrs), "stdout")

    def zerolog(self, level: str, message: str, **fields: Any) -> None:
        """The [SHARED_VIDEO] / [MULTIPLAYER] lines: zerolog's global logger (JSON on stderr)."""
        self.line(zerolog_line(level, message, **fields), "stderr")

    def gst(self, level: str, where: str, msg: str) -> None:
        self.line(gst_line(time.monotonic() - self.booted, level, where, msg), "stderr")

    def default_slog(self, level: str, msg: str, **attrs: Any) -> None:
        """A ``slog.Info(…)`` call on Go's default logger (desktop-bridge never sets it): the log package's
        ``2006/01/02 15:04:05 INFO msg k=v`` on stderr."""
        text = " ".join([time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime()), level, msg,
                         *(f"{k}={_slog_value(v)}" for k, v in attrs.items())])
        self.line(text, "stderr")

    def pipeline_start(self, s: PipelineSettings, init: Any = None) -> None:
        """What desktop-bridge logs when the first viewer builds the shared source (``Start``)."""
        self._stats_started = time.monotonic()
        qemu_addr = f"{QEMU_GUEST_HOST}:{s.qemu_port}"
        fps = int(getattr(init, "fps", 0) or round(s.fps))
        bitrate = int(getattr(init, "bitrate", 0) or s.bitrate_kbps)
        resolution = f"{getattr(init, 'width', s.width)}x{getattr(init, 'height', s.height)}"
        if s.mode == "scanout":
            self.slog("INFO", "starting scanout mode (QEMU H.264 via TCP)", resolution=resolution)
            self.slog("INFO", "subscribed to QEMU scanout", scanout_id=SCANOUT_ID, qemu_addr=qemu_addr)
            self.slog("INFO", "sent CONFIG_REQ to QEMU", bitrate_kbps=bitrate)
            self.zerolog("info", "[SHARED_VIDEO] Created new external source", node_id=s.node_id)
            self.slog("INFO", "scanout source created (first client)", bitrate_kbps=bitrate)
            self.zerolog("info", "[SHARED_VIDEO] Starting external source", node_id=s.node_id)
            return
        self.slog("INFO", "using vsockenc (macOS VideoToolbox via vsock)")
        if s.source == "zerocopy":  # only the plugin mode detects the platform; shm/native build their caps
            self.default_slog("INFO", "[STREAM] GPU/compositor detection", gpu_vendor="unknown", compositor="gnome",
                              encoder="vsock")
            self.default_slog("INFO", "[STREAM] macOS ARM virtio-gpu detected, using native pipewiresrc with NV12",
                              encoder="vsock", format="NV12")
        pipeline = vsockenc_pipeline(s, fps, bitrate)
        self.slog("INFO", "starting video capture (shared source)", source=f"pipewire:{s.node_id}",
                  video_mode=s.source or "shm", encoder="vsock", resolution=resolution, fps=fps, bitrate=bitrate)
        self.zerolog("info", "[SHARED_VIDEO] Created new source", node_id=s.node_id)
        self.zerolog("info", "[SHARED_VIDEO] Starting pipeline", node_id=s.node_id)
        self.zerolog("info", "[SHARED_VIDEO] Pipeline string", pipeline=pipeline)
        # vsockenc connects lazily; it opens the DRM device only for DMA-BUF buffers, never on virtio-gpu.
        self.gst("INFO", "gstvsockenc.c:301:gst_vsockenc_connect",
                 f"Connected via TCP to {QEMU_GUEST_HOST}:{s.qemu_port} (TCP_NODELAY, sndbuf=1MB)")

    def frame(self, s: PipelineSettings, frame: Frame, *, resource_ids_zero: bool) -> None:
        n = frame.number
        if s.mode == "scanout":
            if n == 1 or n % 300 == 0:
                elapsed = max(1e-6, time.monotonic() - self._stats_started)
                self.slog("INFO", "scanout stream stats", frames=n, fps=f"{n / elapsed:.1f}",
                          last_size=len(frame.data), keyframe=frame.keyframe)
            return
        if n > LOG_EVERY_FRAME_UNTIL and n % LOG_SAMPLE_EVERY:
            return
        # System-memory (MemFd) buffers only: no resource id, the raw pixels go to QEMU instead.
        self.gst("WARN", "gstvsockenc.c:402:gst_vsockenc_get_resource_id", "Buffer is not DMA-BUF backed")
        self.gst("WARN", "gstvsockenc.c:541:gst_vsockenc_handle_frame", "Failed to get resource ID for frame")
        self.gst("DEBUG", "gstvsockenc.c:570:gst_vsockenc_handle_frame",
                 f"Sent frame {n}, resource_id=0, size={s.width}x{s.height}, keyframe={int(frame.keyframe)}")
        self.gst("DEBUG", "gstvsockenc.c:589:gst_vsockenc_handle_frame",
                 f"Sent {pixel_bytes(s)} bytes of pixel data")
        self.gst("DEBUG", "gstvsockenc.c:648:gst_vsockenc_finish_pending",
                 f"Finished pending frame pts={frame.pts_us * 1000} keyframe={int(frame.keyframe)} nal_count=1 "
                 f"total_size={len(frame.data)}")
