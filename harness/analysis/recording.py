"""Drivers of the two analyzers: one stream in, one merged result dict out.

``StreamAnalyzer`` takes WebSocket stream messages as they were received (arrival ns, kind, bytes)
and feeds ``TimingAnalyzer`` and, when decoding, ``ContentAnalyzer``. ``analyze_recording`` runs it
over an HXWSREC1 recording; a live capture can run it message by message, so both give the same
numbers. ``analyze_h264`` analyses a plain Annex-B file, which has no arrival times.

The merged result has the timing keys (``frames, replay_frames, keyframes, duration_s, fps, fps_pts,
fps_windows, fps_min_window, jitter_ms, bursts, stalls, stream_errors, warmup_s``), the content keys
(``width, height, decode_errors, black_frames, motion, freezes, counters``; null without decoding,
except width/height, which come from the SPS) and ``first_frame_is_idr_with_sps_pps``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import HarnessError
from ..protocols.h264 import AnnexBAccessUnitSplitter
from ..protocols.recording import KIND_BINARY, RecordingReader
from ..protocols.stream import FLAG_KEYFRAME, FLAG_REPLAY, STREAM_ERROR_HEADER, VIDEO_FRAME_HEADER, MsgType
from .au import NAL_SPS, summarize_au
from .timing import TimingAnalyzer

log = logging.getLogger("harness.analysis.recording")

_VIDEO = int(MsgType.VIDEO_FRAME)
_ERROR = int(MsgType.STREAM_ERROR)
_HEADER = VIDEO_FRAME_HEADER.size
_unpack_video = VIDEO_FRAME_HEADER.unpack_from
_CHUNK = 1 << 20
#: Key order of the merged result.
RESULT_KEYS = (
    "frames", "replay_frames", "keyframes", "width", "height", "duration_s",
    "fps", "fps_pts", "fps_windows", "fps_min_window", "jitter_ms", "bursts", "stalls",
    "freezes", "black_frames", "motion", "decode_errors", "decoded_frames", "stream_errors",
    "first_frame_is_idr_with_sps_pps", "counters", "warmup_s", "bitrate_kbps",
)
_CONTENT_KEYS = ("decode_errors", "decoded_frames", "black_frames", "motion", "freezes", "counters")


class StreamAnalyzer:
    """Feed received stream messages (``add_message``), then ``result()`` once at the end."""

    def __init__(self, *, warmup_s: float = 2.0, decode: bool = True, thumbnails: bool = False) -> None:
        self.timing = TimingAnalyzer(warmup_s=warmup_s)
        self.content = _content_analyzer(thumbnails=thumbnails) if decode else None
        self._t0: int | None = None
        self._t_end: int | None = None
        self._first = None
        self._size: tuple[int, int] | None = None
        self.malformed = 0

    def add_message(self, t_ns: int, kind: int, data: bytes) -> None:
        """One WebSocket message: ``kind`` 0 binary / 1 text (as in HXWSREC1)."""
        self._t_end = t_ns
        if kind != KIND_BINARY or not data:
            return
        msg_type = data[0]
        if msg_type == _VIDEO:
            if len(data) < _HEADER:
                self.malformed += 1
                log.warning("video frame of %d bytes is shorter than its %d-byte header", len(data), _HEADER)
                return
            _, _, flags, pts_us, _, _ = _unpack_video(data)
            self._video(t_ns, data, _HEADER, flags, pts_us)
        elif msg_type == _ERROR:
            self.timing.add_stream_error(_error_text(data))

    def add_frame(self, t_ns: int, au: bytes, *, flags: int, pts_us: int) -> None:
        """One video frame: its Annex-B access unit and header flags/PTS."""
        self._video(t_ns, au, 0, flags, pts_us)

    def _video(self, t_ns: int, data: bytes, at: int, flags: int, pts_us: int) -> None:
        """The frame whose AU is ``data[at:]`` (sliced only when it must be looked at: hot path)."""
        replay = flags & FLAG_REPLAY
        self.timing.add(t_ns, replay=bool(replay), keyframe=bool(flags & FLAG_KEYFRAME), pts_us=pts_us,
                        size=len(data) - at)
        if self._first is None:
            self._first = summarize_au(data[at:] if at else data)
            self._size = self._first.size
        elif len(data) > at + 4 and (data[at + 3] & 0x1F == NAL_SPS or data[at + 4] & 0x1F == NAL_SPS):
            size = summarize_au(data[at:] if at else data).size
            if size is not None:
                self._size = size
        if not replay and self._t0 is None:
            self._t0 = t_ns
        if self.content is not None:
            t_s = (t_ns - self._t0) / 1e9 if self._t0 is not None else 0.0
            self.content.feed(data[at:] if at else data, t_s, replay=bool(replay))

    def result(self, *, end_ns: int | None = None) -> dict:
        """The merged result. ``end_ns`` (default: the last message's time) ends a trailing stall."""
        timing = self.timing.result(end_ns=end_ns if end_ns is not None else self._t_end)
        merged = dict(timing)
        if self.content is not None:
            content = self.content.result()
            merged.update({k: content[k] for k in _CONTENT_KEYS})
            size = self._size or ((content["width"], content["height"]) if content["width"] else None)
        else:
            merged.update(dict.fromkeys(_CONTENT_KEYS))
            size = self._size
        merged["width"], merged["height"] = size if size else (None, None)
        first = self._first
        merged["first_frame_is_idr_with_sps_pps"] = (
            bool(first.has_idr and first.has_sps and first.has_pps) if first is not None else None
        )
        if self.malformed:
            merged["decode_errors"] = (merged["decode_errors"] or 0) + self.malformed
        return _ordered(merged)


def _content_analyzer(**kwargs):
    """A ContentAnalyzer, importing PyAV and numpy only now (``--no-decode`` never pays for them)."""
    from .content import ContentAnalyzer

    return ContentAnalyzer(**kwargs)


def _error_text(data: bytes) -> str:
    if len(data) < STREAM_ERROR_HEADER.size:
        return ""
    _, length = STREAM_ERROR_HEADER.unpack_from(data)
    return bytes(data[STREAM_ERROR_HEADER.size : STREAM_ERROR_HEADER.size + length]).decode("utf-8", "replace")


def _ordered(d: dict) -> dict:
    out = {k: d[k] for k in RESULT_KEYS if k in d}
    out.update((k, v) for k, v in d.items() if k not in out)
    return out


def _open(path: str | os.PathLike):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}", phase="analysis") from exc


def analyze_recording(path: str | os.PathLike, *, warmup_s: float = 2.0, decode: bool = True) -> dict:
    """Analyse an HXWSREC1 recording (see the module docstring for the keys)."""
    analyzer = StreamAnalyzer(warmup_s=warmup_s, decode=decode)
    with _open(path) as fh:
        add = analyzer.add_message
        for t_ns, kind, data in RecordingReader(fh).iter_raw():
            add(t_ns, kind, data)
    log.debug("analysed %s", Path(path).name)
    return analyzer.result()


def analyze_h264(path: str | os.PathLike, *, decode: bool = True, assumed_fps: float = 30.0) -> dict:
    """Analyse a plain Annex-B ``.h264`` file.

    There are no arrival times, so the timing keys are null; freeze times are computed as if the
    frames came at ``assumed_fps`` (reported as ``assumed_fps``).
    """
    if not assumed_fps > 0:
        raise HarnessError(f"assumed_fps must be > 0, got {assumed_fps}", phase="analysis")
    content = _content_analyzer() if decode else None
    splitter = AnnexBAccessUnitSplitter()
    frames = keyframes = 0
    first = None
    size = None

    def one(au: bytes) -> None:
        nonlocal frames, keyframes, first, size
        summary = summarize_au(au)
        if first is None:
            first = summary
        if summary.size is not None:
            size = summary.size
        if summary.has_idr:
            keyframes += 1
        if content is not None:
            content.feed(au, frames / assumed_fps)
        frames += 1

    with _open(path) as fh:
        while chunk := fh.read(_CHUNK):
            for au in splitter.feed(chunk):
                one(au)
        for au in splitter.flush():
            one(au)
    merged: dict = {
        "frames": frames,
        "replay_frames": 0,
        "keyframes": keyframes,
        "duration_s": None,
        "fps": None,
        "fps_pts": None,
        "fps_windows": None,
        "fps_min_window": None,
        "jitter_ms": {"p50": None, "p95": None, "p99": None, "max": None},
        "bursts": None,
        "stalls": None,
        "stream_errors": [],
        "warmup_s": None,
        "bitrate_kbps": None,
        "assumed_fps": assumed_fps,
    }
    if content is not None:
        result = content.result()
        merged.update({k: result[k] for k in _CONTENT_KEYS})
        size = size or ((result["width"], result["height"]) if result["width"] else None)
    else:
        merged.update(dict.fromkeys(_CONTENT_KEYS))
    merged["width"], merged["height"] = size if size else (None, None)
    merged["first_frame_is_idr_with_sps_pps"] = (
        bool(first.has_idr and first.has_sps and first.has_pps) if first is not None else None
    )
    return _ordered(merged)
