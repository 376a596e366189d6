"""The desktop container's log, as the harness reads it: desktop-bridge's slog lines (``time=… level=INFO
msg=…``) and, in shm mode, the vsockenc GStreamer debug lines (macos-frame-export.md §2).

Per-frame lines are logged for the first :data:`LOG_EVERY_FRAME_UNTIL` frames and then every
:data:`LOG_SAMPLE_EVERY` th, so a long stream does not flood the (already bounded) engine log.
Fault ``resource_ids_zero`` shows here (``Buffer is not DMA-BUF backed``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..gofmt import rfc3339_millis
from .pipeline import SCANOUT_ID, SCANOUT_RESOURCES, Frame, PipelineSettings, resource_id

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
        self.line(slog_line(level, msg, **attrs), "stderr")

    def gst(self, level: str, where: str, msg: str) -> None:
        self.line(gst_line(time.monotonic() - self.booted, level, where, msg), "stderr")

    def pipeline_start(self, s: PipelineSettings, qemu_port: int) -> None:
        self._stats_started = time.monotonic()
        qemu_addr = f"{QEMU_GUEST_HOST}:{qemu_port}"
        if s.mode == "scanout":
            self.slog("INFO", "starting scanout mode (QEMU H.264 via TCP)", session_id=self.session_id)
            self.slog("INFO", "scanout source resolution", width=s.width, height=s.height)
            self.slog("INFO", "subscribed to QEMU scanout", scanout_id=SCANOUT_ID, qemu_addr=qemu_addr)
            self.slog("INFO", "sent initial CONFIG_REQ", bitrate_kbps=s.bitrate_kbps)
            return
        self.slog("INFO", "[STREAM] macOS ARM virtio-gpu detected, using native pipewiresrc with NV12")
        self.slog("INFO", "using vsockenc (macOS VideoToolbox via vsock)")
        self.gst("INFO", "gstvsockenc.c:214:gst_vsockenc_open_drm", "Opened DRM device fd=17")
        self.gst("INFO", "gstvsockenc.c:301:gst_vsockenc_connect",
                 f"Connected via TCP to {QEMU_GUEST_HOST}:{qemu_port} (TCP_NODELAY, sndbuf=1MB)")

    def frame(self, s: PipelineSettings, frame: Frame, *, resource_ids_zero: bool) -> None:
        n = frame.number
        resource = resource_id(n, resource_ids_zero)
        if s.mode == "scanout":
            if n == 1 or n % 300 == 0:
                elapsed = max(1e-6, time.monotonic() - self._stats_started)
                self.slog("INFO", "scanout stream stats", frames=n, fps=f"{n / elapsed:.1f}",
                          last_size=len(frame.data), keyframe=frame.keyframe)
            return
        if n > LOG_EVERY_FRAME_UNTIL and n % LOG_SAMPLE_EVERY:
            return
        if resource_ids_zero:
            self.gst("WARN", "gstvsockenc.c:402:gst_vsockenc_get_resource_id", "Buffer is not DMA-BUF backed")
            self.gst("WARN", "gstvsockenc.c:541:gst_vsockenc_handle_frame", "Failed to get resource ID for frame")
        else:
            fd = 40 + (n - 1) % len(SCANOUT_RESOURCES)
            gem = resource - 36
            size = s.width * s.height * 4
            self.gst("INFO", "gstvsockenc.c:437:gst_vsockenc_get_resource_id",
                     f"DMA-BUF fd={fd} -> GEM handle={gem} -> resource_id={resource} (size={size}, blob_mem=1)")
        self.gst("DEBUG", "gstvsockenc.c:570:gst_vsockenc_handle_frame",
                 f"Sent frame {n}, resource_id={resource}, size={s.width}x{s.height}, keyframe={int(frame.keyframe)}")
        self.gst("DEBUG", "gstvsockenc.c:648:gst_vsockenc_finish_pending",
                 f"Finished pending frame pts={frame.pts_us * 1000} keyframe={int(frame.keyframe)} nal_count=1 "
                 f"total_size={len(frame.data)}")
