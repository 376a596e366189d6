"""A session's desktop container, by job: :mod:`.session` (:class:`Desktop`: what the API's proxy talks to),
:mod:`.exec` (desktop-bridge's /exec and the process table), :mod:`.pipeline` (the ONE shared video
pipeline and its viewers), :mod:`.logs` (desktop-bridge's slog and vsockenc's GStreamer lines),
:mod:`.video` (the rendered scene and the H.264 encoder) and :mod:`.errors`.
"""

from .errors import DesktopError, DesktopUnavailable, StreamStartError
from .exec import ALLOWED_COMMANDS, ExecResult
from .logs import gst_line, slog_line
from .pipeline import Frame, Subscriber, VideoPipeline, normalize_video_mode
from .session import Desktop

__all__ = [
    "ALLOWED_COMMANDS", "Desktop", "DesktopError", "DesktopUnavailable", "ExecResult", "Frame", "StreamStartError",
    "Subscriber", "VideoPipeline", "gst_line", "normalize_video_mode", "slog_line",
]
