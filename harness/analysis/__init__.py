"""Stream analysis: arrival timing in O(1) memory, and PyAV decode with Y-plane content checks.

``timing.TimingAnalyzer`` and ``content.ContentAnalyzer`` are fed incrementally (during a live
capture or from a recording); ``recording.StreamAnalyzer`` drives both from raw stream messages, and
``analyze_recording`` / ``analyze_h264`` analyse files. ``stamp`` is the frame-counter stamp that the
simulator writes and the content analyzer reads.

The names below are imported lazily, so ``harness.protocols.stamp`` can be used without PyAV.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["TimingAnalyzer", "ContentAnalyzer", "StreamAnalyzer", "analyze_recording", "analyze_h264", "VERDICT_KEYS"]

_WHERE = {
    "TimingAnalyzer": "timing",
    "ContentAnalyzer": "content",
    "StreamAnalyzer": "recording",
    "analyze_recording": "recording",
    "analyze_h264": "recording",
    "VERDICT_KEYS": "recording",
}

if TYPE_CHECKING:  # pragma: no cover
    from .content import ContentAnalyzer
    from .recording import VERDICT_KEYS, StreamAnalyzer, analyze_h264, analyze_recording
    from .timing import TimingAnalyzer


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
