"""A session's desktop container: exec, the shared video pipeline, its logs, and the video itself."""

from .session import (
    ALLOWED_COMMANDS,
    Desktop,
    DesktopError,
    DesktopUnavailable,
    ExecResult,
    Frame,
    StreamStartError,
    Subscriber,
    VideoPipeline,
    gst_line,
    normalize_video_mode,
    slog_line,
)

__all__ = [
    "ALLOWED_COMMANDS", "Desktop", "DesktopError", "DesktopUnavailable", "ExecResult", "Frame", "StreamStartError",
    "Subscriber", "VideoPipeline", "gst_line", "normalize_video_mode", "slog_line",
]
