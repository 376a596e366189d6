"""Drivers of the two analyzers: one stream in, one merged result dict out.

``StreamAnalyzer`` takes WebSocket stream messages as they were received (arrival ns, kind, bytes),
runs every one through the stream protocol core (``protocols.stream``: the same ``StreamConnection``,
``classify`` rule and ``StreamTally`` as the live capture) and feeds ``TimingAnalyzer`` and, when
decoding, ``ContentAnalyzer``. ``analyze_recording`` runs it over an HXWSREC1 recording; a live capture
can run it message by message, so both give the same numbers and the same stream verdict.
``analyze_h264`` analyses a plain Annex-B file, which has no arrival times.

The merged result has the timing keys (``frames, replay_frames, keyframes, duration_s, fps, fps_pts,
fps_windows, fps_min_window, jitter_ms, bursts, stalls, stream_errors, warmup_s``), the content keys
(``width, height, decode_errors, black_frames, motion, freezes, counters``; null without decoding,
except width/height, which come from the SPS) and ``first_frame_is_idr_with_sps_pps``. Added keys:

- the stream tally (``StreamTally.result``): ``stream_error_count, protocol_errors,
  protocol_error_count, viewer_events, cursor_messages, status_messages, text_messages,
  unknown_messages, unknown_message_types, status_before_first_frame, time_to_first_frame_s``
  (recordings; null/empty for a plain .h264);
- ``h264_found``: whether any H.264 was found (a plain file: an access unit with a slice that decodes,
  or without decoding one with a parseable SPS; a recording: any video frame);
- ``warnings``: what was cut or could not be read (a truncated recording, bytes skipped by the splitter);
- ``recording_truncated_at``: the byte offset where a recording stops being readable, else null;
- ``skipped_bytes``: bytes a plain file's splitter dropped (no access-unit boundary within its cap) or
  that held no NAL unit at all.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from ..errors import HarnessError
from ..protocols import stream as sp
from ..protocols.errors import RemoteProtocolError
from ..protocols.h264 import AnnexBAccessUnitSplitter
from ..protocols.recording import KIND_BINARY, RecordingError, RecordingReader
from ..protocols.stream import FLAG_KEYFRAME, FLAG_REPLAY, VIDEO_FRAME_HEADER, MsgType
from .au import NAL_SPS, leading_nal_types, summarize_au
from .timing import TimingAnalyzer

log = logging.getLogger("harness.analysis.recording")

_VIDEO = int(MsgType.VIDEO_FRAME)
_HEADER = VIDEO_FRAME_HEADER.size
_CHUNK = 1 << 20
#: Key order of the merged result.
RESULT_KEYS = (
    "frames", "replay_frames", "keyframes", "width", "height", "duration_s",
    "fps", "fps_pts", "fps_windows", "fps_min_window", "jitter_ms", "bursts", "stalls",
    "freezes", "black_frames", "motion", "decode_errors", "decoded_frames", "stream_errors",
    "first_frame_is_idr_with_sps_pps", "counters", "warmup_s", "bitrate_kbps",
    "h264_found", "stream_error_count", "protocol_errors", "protocol_error_count", "viewer_events",
    "cursor_messages", "status_messages", "text_messages", "unknown_messages", "unknown_message_types",
    "status_before_first_frame", "time_to_first_frame_s", "warnings", "recording_truncated_at", "skipped_bytes",
)
_CONTENT_KEYS = ("decode_errors", "decoded_frames", "black_frames", "motion", "freezes", "counters")
#: The stream-verdict keys a live capture and ``analyze`` must agree on (``StreamTally`` + stream_errors).
VERDICT_KEYS = ("stream_errors", "stream_error_count", "protocol_errors", "protocol_error_count", "viewer_events",
                "unknown_message_types", "status_before_first_frame", "time_to_first_frame_s")
#: ``analyze`` refuses a recording record larger than this (a 4K IDR is a few MB): the rest is cut with a warning.
ANALYZE_MAX_RECORD = 64 * 1024 * 1024


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
        self.video_messages = 0
        self.conn = sp.StreamConnection(sp.Role.CLIENT)
        self.tally = sp.StreamTally()

    def add_message(self, t_ns: int, kind: int, data: bytes) -> None:
        """One WebSocket message: ``kind`` 0 binary / 1 text (as in HXWSREC1), through the stream core."""
        self._t_end = t_ns
        if kind == KIND_BINARY and data and data[0] == _VIDEO:  # hot path: the core's header check, no copy
            try:
                _, flags, pts_us, _, _ = sp.decode_video_header(data)
            except RemoteProtocolError as exc:
                self.malformed += 1
                self.tally.add_error(t_ns, exc)
                log.warning("video frame of %d bytes is shorter than its %d-byte header", len(data), _HEADER)
                return
            self.tally.add_video(t_ns, flags)
            self.video_messages += 1
            self._video(t_ns, data, _HEADER, flags, pts_us)
            return
        try:
            event = self.conn.receive(kind, data)
        except RemoteProtocolError as exc:
            self.tally.add_error(t_ns, exc)
            return
        self.tally.add(t_ns, event)
        if isinstance(event, sp.StreamError):
            self.timing.add_stream_error(event.message)

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
        merged.update(self.tally.result())
        merged["h264_found"] = self.video_messages > 0
        merged.setdefault("warnings", [])
        merged.setdefault("recording_truncated_at", None)
        merged.setdefault("skipped_bytes", 0)
        return _ordered(merged)


def _content_analyzer(**kwargs):
    """A ContentAnalyzer, importing PyAV and numpy only now (``--no-decode`` never pays for them)."""
    from .content import ContentAnalyzer

    return ContentAnalyzer(**kwargs)


def _ordered(d: dict) -> dict:
    out = {k: d[k] for k in RESULT_KEYS if k in d}
    out.update((k, v) for k, v in d.items() if k not in out)
    return out


def _open(path: str | os.PathLike):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}", phase="analysis") from exc


def analyze_recording(path: str | os.PathLike, *, warmup_s: float = 2.0, decode: bool = True,
                      max_record: int = ANALYZE_MAX_RECORD) -> dict:
    """Analyse an HXWSREC1 recording (see the module docstring for the keys).

    A recording that is truncated or damaged part-way is analysed up to its last complete record;
    ``recording_truncated_at`` and ``warnings`` say where and why. A file without the magic is refused.
    """
    analyzer = StreamAnalyzer(warmup_s=warmup_s, decode=decode)
    truncated: RecordingError | None = None
    with _open(path) as fh:
        add = analyzer.add_message
        reader = RecordingReader(fh, max_record=max_record)
        try:
            for t_ns, kind, data in reader.iter_raw():
                add(t_ns, kind, data)
        except RecordingError as exc:
            truncated = exc
    log.debug("analysed %s", Path(path).name)
    result = analyzer.result()
    if truncated is not None:
        result["recording_truncated_at"] = reader.offset
        result["warnings"] = [*result["warnings"], (
            f"the recording is damaged or truncated ({truncated.message}): analysed the {analyzer.tally.messages} "
            f"complete records before byte {reader.offset}"
        )]
    return result


def analyze_h264(path: str | os.PathLike, *, decode: bool = True, assumed_fps: float = 30.0,
                 max_pending: int | None = None) -> dict:
    """Analyse a plain Annex-B ``.h264`` file.

    There are no arrival times, so the timing keys are null; freeze times are computed as if the
    frames came at ``assumed_fps`` (reported as ``assumed_fps``). Memory is bounded: the splitter drops
    what it holds past ``max_pending`` bytes without an access-unit boundary (``skipped_bytes``, a
    warning). ``h264_found`` is false for input with no usable H.264 (empty, random bytes, a PNG…).
    """
    if not (isinstance(assumed_fps, (int, float)) and math.isfinite(assumed_fps) and assumed_fps > 0):
        raise HarnessError(f"assumed_fps must be a finite number > 0, got {assumed_fps}", phase="analysis")
    content = _content_analyzer() if decode else None
    splitter = AnnexBAccessUnitSplitter() if max_pending is None else AnnexBAccessUnitSplitter(max_pending)
    frames = keyframes = slices = junk = 0
    sps_ok = False
    first = None
    size = None

    def one(au: bytes) -> None:
        nonlocal frames, keyframes, first, size, slices, junk, sps_ok
        types = leading_nal_types(au)
        if not types:  # no start code at all: not H.264, never a frame
            junk += len(au)
            return
        summary = summarize_au(au)
        if first is None:
            first = summary
        if summary.size is not None:
            size = summary.size
            sps_ok = True
        if types[-1] in (1, 5):
            slices += 1
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
        found = slices > 0 and result["decoded_frames"] > 0
    else:
        merged.update(dict.fromkeys(_CONTENT_KEYS))
        found = slices > 0 and sps_ok
    merged["width"], merged["height"] = size if size else (None, None)
    merged["first_frame_is_idr_with_sps_pps"] = (
        bool(first.has_idr and first.has_sps and first.has_pps) if first is not None else None
    )
    merged.update(dict.fromkeys(("stream_error_count", "protocol_error_count", "viewer_events", "cursor_messages",
                                 "status_messages", "text_messages", "unknown_messages", "unknown_message_types",
                                 "time_to_first_frame_s")))
    merged.update({"protocol_errors": [], "status_before_first_frame": [], "recording_truncated_at": None})
    merged["h264_found"] = found
    merged["skipped_bytes"] = splitter.skipped_bytes + junk
    warnings = []
    if splitter.skipped_bytes:
        warnings.append(f"skipped {splitter.skipped_bytes} bytes in {splitter.skips} place(s) with no access-unit "
                        f"boundary within {splitter.max_pending} bytes")
    if junk:
        warnings.append(f"{junk} bytes held no H.264 start code")
    merged["warnings"] = warnings
    return _ordered(merged)
