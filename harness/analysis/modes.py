"""When and how much of a capture is decoded: the analysis modes ``live``, ``deferred`` and ``sampled``.

Arrival timing and the recording are always taken live (they are cheap). The modes differ only in the
content analysis (PyAV decode and the Y-plane checks of ``content.ContentAnalyzer``):

* ``live``: every frame is decoded during the stream, on the capture's worker thread.
* ``deferred``: nothing is decoded during the stream; after it ends, the content analysis runs over
  the capture's recording. It sees the same frames with the same arrival times as ``live`` would
  (the same stream core parses the same messages; :class:`ContentFeed` applies the same rule), so the
  checks give the same result, without competing with the target for CPU while it streams.
* ``sampled``: during the stream, only every IDR and every Nth frame are decoded (:class:`FrameSampler`),
  for very long soaks; the result says which frames were checked.

Which frames the content analyzer sees, and at what time, is decided in one place
(:class:`ContentFeed`), shared by the live worker and the deferred pass.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable

from ..config import ANALYSIS_MODES
from ..errors import ConfigError
from ..protocols import stream as sp
from ..protocols.errors import RemoteProtocolError
from ..protocols.recording import RecordingError, RecordingReader
from .au import is_idr

if TYPE_CHECKING:  # pragma: no cover
    from .content import ContentAnalyzer

log = logging.getLogger(__name__)

#: The modes, as ``[stream] analysis`` and ``--analysis`` name them (``metrics.json["harness"]["analysis"]``).
LIVE, DEFERRED, SAMPLED = ANALYSIS_MODES
#: ``sampled``: a frame is sampled every this many frames (5 s at 60 fps), besides every IDR.
SAMPLE_EVERY = 300
#: At most this many checked ranges are listed in the sampling report (their count is always given).
MAX_RANGES = 200
SAMPLING_RULE = ("every IDR, and every Nth frame together with the frames since its IDR "
                 "(a P-frame decodes only from its IDR on)")


def check_mode(mode: str) -> str:
    """``mode`` if it is an analysis mode, else a ConfigError listing them."""
    if mode not in ANALYSIS_MODES:
        raise ConfigError(f"unknown analysis mode {mode!r}", hint=f"one of: {', '.join(ANALYSIS_MODES)}")
    return mode


def default_mode(*, sim: bool) -> str:
    """``live`` on the simulator (a CI host has the cores to spare), ``deferred`` on a real Mac, where the
    harness shares the cores with the VM whose frame rate it judges."""
    return LIVE if sim else DEFERRED


class FrameSampler:
    """Which frames ``sampled`` decodes: every IDR, and every Nth frame with the frames since its IDR.

    Each P-frame references the frame before it, so the Nth frame can only be decoded from its IDR on.
    At each IDR the sampler starts a run of decoded frames when the next sample falls before the next
    IDR is expected (one GOP, as last measured, later); the run ends with the last sample before that.
    A sample that falls in a GOP without a run (its IDR came later than expected) is counted as missed.
    Frames are counted in arrival order, replay frames included; the report counts live frames.
    """

    def __init__(self, every: int = SAMPLE_EVERY) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"sample every N frames needs an int N >= 1, got {every!r}")
        self.every = every
        self._index = 0  # frames seen (replay included)
        self._next = 0  # index of the next sample
        self._last_idr: int | None = None
        self._gop: int | None = None
        self._run = False
        self.samples = 0
        self.missed = 0
        self.live_frames = 0
        self.checked_frames = 0
        self._ranges: list[list[int]] = []
        self._range_count = 0

    def take(self, *, idr: bool, replay: bool = False) -> bool:
        """Whether to decode the next frame (call once per frame, in arrival order)."""
        i = self._index
        self._index = i + 1
        if idr:
            if self._last_idr is not None:
                self._gop = i - self._last_idr
            self._last_idr = i
            taken = True
        else:
            taken = self._run
        if i == self._next:
            if taken:
                self.samples += 1
            else:
                self.missed += 1
            self._next += self.every
        if self._last_idr is not None:
            expected_idr = self._last_idr + self._gop if self._gop else None
            self._run = expected_idr is None or self._next < expected_idr
        if not replay:
            self._count(taken)
        return taken

    def _count(self, taken: bool) -> None:
        n = self.live_frames
        self.live_frames = n + 1
        if not taken:
            return
        self.checked_frames += 1
        ranges = self._ranges
        if ranges and ranges[-1][1] == n - 1:
            ranges[-1][1] = n
        else:
            self._range_count += 1
            if len(ranges) < MAX_RANGES:
                ranges.append([n, n])

    def report(self) -> dict[str, Any]:
        """Which live frames were checked: the rule, the counts, and the first :data:`MAX_RANGES` ranges
        ``[first, last]`` of live-frame indices (0 = the first live frame)."""
        return {
            "every": self.every,
            "rule": SAMPLING_RULE,
            "live_frames": self.live_frames,
            "checked_frames": self.checked_frames,
            "samples": self.samples,
            "missed_samples": self.missed,
            "checked_ranges": [list(r) for r in self._ranges],
            "checked_ranges_total": self._range_count,
        }


class ContentFeed:
    """The one rule for what the content analyzer gets: every video frame's AU, in arrival order, with its
    time in seconds from the first live frame (0 for replay frames before it), through the sampler if any.

    ``sink(au, t_s, replay)`` is the analyzer's ``feed`` (deferred) or the live worker's queue."""

    def __init__(self, sink: Callable[[bytes, float, bool], None], sampler: FrameSampler | None = None) -> None:
        self._sink = sink
        self.sampler = sampler
        self._first_ns: int | None = None

    def video(self, t_ns: int, au: bytes, *, replay: bool) -> None:
        if not replay and self._first_ns is None:
            self._first_ns = t_ns
        if self.sampler is not None and not self.sampler.take(idr=is_idr(au), replay=replay):
            return
        base = self._first_ns if self._first_ns is not None else t_ns
        self._sink(au, (t_ns - base) / 1e9, replay)


def content_from_recording(path: str | os.PathLike, analyzer: "ContentAnalyzer", *,
                           sampler: FrameSampler | None = None) -> str:
    """Feed ``analyzer`` every video frame of a capture's HXWSREC1 recording, as the live capture would have.

    The messages go through the same stream core (``protocols.stream``, client role) as in the capture,
    with their recorded arrival times. Returns ``""``, or why the recording ended early (a truncated
    tail: what was read is analysed)."""
    conn = sp.StreamConnection(sp.Role.CLIENT)
    feed = ContentFeed(lambda au, t_s, replay: analyzer.feed(au, t_s, replay=replay), sampler)
    receive, video, frame_type = conn.receive, feed.video, sp.VideoFrame
    try:
        with open(path, "rb") as fh:
            for t_ns, kind, data in RecordingReader(fh).iter_raw():
                try:
                    event = receive(kind, data)
                except RemoteProtocolError:
                    continue  # the capture counted it as a protocol error and fed nothing either
                if type(event) is frame_type:
                    video(t_ns, event.data, replay=event.is_replay)
    except RecordingError as exc:
        log.warning("deferred analysis: the recording ends early: %s", exc.message)
        return exc.message
    return ""
