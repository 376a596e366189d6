"""Decoded-content analysis: PyAV decode, Y plane only.

``ContentAnalyzer.feed(au, t_s)`` decodes each Annex-B access unit with PyAV's ``CodecContext``
(frame + slice threading) and looks only at the luma plane, read in place through the plane's buffer
(no colour conversion). Per live frame it computes, on a Y plane downscaled by slicing (every 8th
row and column from 1280 pixels wide, denser below; the stamp rows excluded):

* the mean luma: a frame is black when it is at most ``BLACK_LUMA`` (limited range 16..235);
* the mean absolute difference (MAD) from the previous decoded frame: the frame "changed" when the
  MAD exceeds ``CHANGE_MAD``. ``motion`` is the share of live frames that changed.
* freezes: a run of unchanged, non-black frames lasting at least ``FREEZE_MIN_S``. A freeze starts at
  the frame whose content stays on screen and ends at the first frame that differs (or the last frame);
  black runs are counted as ``black_frames`` and are not also reported as freezes. The run must hold at
  least one repeated frame: a gap in arrivals followed by new content is a stall (timing), not a freeze.
* the sim's frame counter (``stamp.read_stamp``): first, last, unique, missing, duplicates.

Replay frames (``replay=True``) are decoded, since the decoder needs them, but not counted.
``decode_errors`` counts access units that raised in the decoder, decoded to a frame flagged corrupt
(error concealment), or never produced a frame.
"""

from __future__ import annotations

import logging
import threading
from fractions import Fraction
from typing import NamedTuple

import av
import numpy as np

from ..errors import HarnessError
from ..protocols.stamp import COUNTER_MASK, STAMP_HEIGHT, read_stamp
# The decoder-free AU helpers live in .au (timing-only analysis imports no PyAV); re-exported here.
from .au import NAL_IDR, NAL_PPS, NAL_SLICE, NAL_SPS, AuSummary, leading_nal_types, summarize_au  # noqa: F401

log = logging.getLogger("harness.analysis.content")

#: Mean luma at or below which a frame is black (limited range: black is 16).
BLACK_LUMA = 20.0
#: Mean absolute luma difference above which a frame differs from its predecessor.
CHANGE_MAD = 0.4
#: Shortest run of unchanged content reported as a freeze.
FREEZE_MIN_S = 0.5
#: Downscale step (rows and columns) for the content measures: 8 from 1280 pixels wide, less for
#: smaller pictures (at least 160 columns sampled), where every 8th pixel would miss small changes.
STEP = 8
_MIN_COLUMNS = 160
#: Longest side of a thumbnail.
THUMB_SIZE = 320

_MAX_PENDING = 256
#: Below this many samples a uint32 sum of uint8 values cannot overflow.
_UINT32_SAMPLES = (1 << 32) // 256


class _Pending(NamedTuple):
    t_s: float
    replay: bool


class ContentAnalyzer:
    """Incremental decode + Y-plane checks; see the module docstring for the definitions.

    ``result()`` drains the decoder and finishes the analysis; feeding after it raises HarnessError.
    """

    def __init__(self, thumbnails: bool = False, *, threads: bool = True) -> None:
        self._thumbnails_on = thumbnails
        codec = av.CodecContext.create("h264", "r")
        if threads:
            codec.thread_type = "AUTO"
            codec.thread_count = 0
        self._codec = codec
        self._lock = threading.Lock()  # feed() may run on a worker thread while result() is called
        self._finished = False
        self._result: dict | None = None
        self._thumbs: dict[str, bytes] | None = None
        self._seq = 0
        self._pending: dict[int, _Pending] = {}
        self._fed = 0
        self._decoded = 0
        self._raised = 0
        self._corrupt = 0
        self._first_au: AuSummary | None = None
        self._size_sps: tuple[int, int] | None = None
        self._size_decoded: tuple[int, int] | None = None
        # content measures
        self._prev: np.ndarray | None = None  # downscaled luma of the previous frame (a copy)
        self._live = 0
        self._black = 0
        self._pairs = 0
        self._changed = 0
        self._last_t: float | None = None
        self._run_t: float | None = None  # start of the current unchanged run (None: black/no run)
        self._run_repeats = 0  # unchanged frames after the run's first
        self._freezes: list[dict] = []
        # counters (stamp)
        self._c_first: int | None = None
        self._c_last: int | None = None
        self._c_min = 0
        self._c_max = 0
        self._c_unique = 0
        self._c_dups = 0
        self._c_seen: bytearray | None = None
        # thumbnail sources (frame references, encoded only on request)
        self._th_first: av.VideoFrame | None = None
        self._th_last: av.VideoFrame | None = None
        self._th_worst: av.VideoFrame | None = None
        self._th_worst_score: tuple = ()
        self._th_run: av.VideoFrame | None = None

    # -- feeding -----------------------------------------------------------------------------

    def feed(self, au: bytes, t_s: float, *, replay: bool = False) -> None:
        """One Annex-B access unit that arrived at ``t_s`` (seconds from the first live frame)."""
        with self._lock:
            self._feed(au, t_s, replay)

    def _feed(self, au: bytes, t_s: float, replay: bool) -> None:
        if self._finished:
            raise HarnessError("ContentAnalyzer.feed() after result()", phase="analysis")
        self._fed += 1
        if self._first_au is None:
            self._first_au = summarize_au(au) if au else AuSummary(False, False, False, None)
        if au and len(au) > 4 and (au[3] & 0x1F == NAL_SPS or au[4] & 0x1F == NAL_SPS):
            size = summarize_au(au).size
            if size is not None:
                self._size_sps = size
        if not au:
            self._raised += 1  # an empty packet would mean "drain" to the decoder
            return
        seq = self._seq
        self._seq = seq + 1
        pending = self._pending
        pending[seq] = _Pending(t_s, replay)
        if len(pending) > _MAX_PENDING:
            for old in [k for k in pending if k < seq - _MAX_PENDING // 2]:
                del pending[old]
        packet = av.Packet(au)
        packet.pts = seq
        try:
            frames = self._codec.decode(packet)
        except av.FFmpegError as exc:
            self._raised += 1
            log.debug("decode error on AU %d (%d bytes): %s", seq, len(au), exc)
            return
        for frame in frames:
            self._frame(frame)

    def _frame(self, frame: av.VideoFrame) -> None:
        self._decoded += 1
        info = self._pending.pop(frame.pts, None) if frame.pts is not None else None
        t_s, replay = info if info is not None else (self._last_t or 0.0, False)
        corrupt = frame.is_corrupt
        if corrupt:
            self._corrupt += 1
        plane = frame.planes[0]
        w, h = frame.width, frame.height
        y = np.frombuffer(plane, np.uint8, count=plane.line_size * h).reshape(h, plane.line_size)[:, :w]
        self._size_decoded = (w, h)
        # The downscaled luma, gathered into a small contiguous array (sums over it are several times
        # faster than over the strided view, and the decoder's frame buffer is not held on to).
        step = max(1, min(STEP, w // _MIN_COLUMNS))
        small = (y[STAMP_HEIGHT::step, ::step] if h > STAMP_HEIGHT else y[::step, ::step]).copy()
        prev = self._prev
        self._prev = small
        if self._th_first is None and self._thumbnails_on and frame.key_frame:
            self._th_first = frame
        if replay:
            return

        self._live += 1
        n = small.size
        acc = np.uint32 if n < _UINT32_SAMPLES else np.uint64  # exact sums, the narrower the faster
        mean = int(small.sum(dtype=acc)) / n
        black = mean <= BLACK_LUMA
        if black:
            self._black += 1
        if prev is not None and prev.shape == small.shape:
            self._pairs += 1
            diff = np.maximum(small, prev)
            np.subtract(diff, np.minimum(small, prev), out=diff)  # |small - prev| without leaving uint8
            changed = int(diff.sum(dtype=acc)) / n > CHANGE_MAD
            self._changed += changed
        else:
            changed = True
        if changed or black or self._run_t is None:  # (a run also starts at the first live frame)
            self._close_run(t_s)
            self._run_t = None if black else t_s
            self._run_repeats = 0
            if self._thumbnails_on:
                self._th_run = None if black else frame
        else:
            self._run_repeats += 1
        self._last_t = t_s

        counter = read_stamp(y)
        if counter is not None:
            self._count(counter)

        if self._thumbnails_on:
            self._th_last = frame
            if corrupt:
                self._worst(frame, (1, 0.0))
            elif black:
                self._worst(frame, (3, -mean))

    def _close_run(self, t_end: float) -> None:
        start = self._run_t
        if start is not None and self._run_repeats and t_end - start >= FREEZE_MIN_S - 1e-9:
            self._freezes.append({"start_s": round(start, 4), "duration_s": round(t_end - start, 4)})
            if self._thumbnails_on and self._th_run is not None:
                self._worst(self._th_run, (2, t_end - start))

    def _worst(self, frame: av.VideoFrame, score: tuple) -> None:
        if score > self._th_worst_score:
            self._th_worst = frame
            self._th_worst_score = score

    def _count(self, c: int) -> None:
        if self._c_seen is None:
            self._c_seen = bytearray((COUNTER_MASK + 1) // 8)
            self._c_first = self._c_min = self._c_max = c
        seen = self._c_seen
        idx, bit = c >> 3, 1 << (c & 7)
        if seen[idx] & bit:
            self._c_dups += 1
        else:
            seen[idx] |= bit
            self._c_unique += 1
        self._c_last = c
        if c < self._c_min:
            self._c_min = c
        elif c > self._c_max:
            self._c_max = c

    # -- results -----------------------------------------------------------------------------

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            frames = self._codec.decode(None)
        except av.FFmpegError as exc:
            self._raised += 1
            log.debug("decode error while draining: %s", exc)
            frames = []
        for frame in frames:
            self._frame(frame)
        if self._last_t is not None:
            self._close_run(self._last_t)
        self._pending.clear()

    def result(self) -> dict:
        """Drain the decoder and return the content keys (idempotent)."""
        with self._lock:
            if self._result is None:
                self._result = self._compute()
            return self._result

    def _compute(self) -> dict:
        self._finish()
        lost = self._fed - self._decoded
        decode_errors = self._corrupt + max(lost, self._raised)
        size = self._size_sps or self._size_decoded
        first = self._first_au
        if self._c_seen is not None:
            counters = {
                "first": self._c_first,
                "last": self._c_last,
                "unique": self._c_unique,
                "missing": self._c_max - self._c_min + 1 - self._c_unique,
                "duplicates": self._c_dups,
            }
        else:
            counters = {"first": None, "last": None, "unique": 0, "missing": None, "duplicates": 0}
        return {
            "width": size[0] if size else None,
            "height": size[1] if size else None,
            "decoded_frames": self._decoded,
            "decode_errors": decode_errors,
            "black_frames": self._black,
            "motion": round(self._changed / self._pairs, 4) if self._pairs else None,
            "freezes": list(self._freezes),
            "first_frame_is_idr_with_sps_pps": (
                bool(first.has_idr and first.has_sps and first.has_pps) if first is not None else None
            ),
            "counters": counters,
        }

    def thumbnails(self) -> dict[str, bytes]:
        """JPEG thumbnails (``first_idr``, ``worst``, ``last``; only those that exist). Needs thumbnails=True."""
        if not self._thumbnails_on:
            raise HarnessError(
                "thumbnails were not requested", phase="analysis", hint="use ContentAnalyzer(thumbnails=True)"
            )
        self.result()
        if self._thumbs is None:
            thumbs: dict[str, bytes] = {}
            for name, frame in (("first_idr", self._th_first), ("worst", self._th_worst), ("last", self._th_last)):
                if frame is None:
                    continue
                try:
                    thumbs[name] = _jpeg(frame)
                except (av.FFmpegError, ValueError) as exc:
                    log.warning("could not encode the %s thumbnail: %s", name, exc)
            self._thumbs = thumbs
            self._th_first = self._th_worst = self._th_last = self._th_run = None
        return dict(self._thumbs)


def _jpeg(frame: av.VideoFrame) -> bytes:
    """A small JPEG of ``frame`` (longest side THUMB_SIZE, even dimensions)."""
    scale = min(1.0, THUMB_SIZE / max(frame.width, frame.height))
    w = max(2, int(frame.width * scale) // 2 * 2)
    h = max(2, int(frame.height * scale) // 2 * 2)
    small = frame.reformat(width=w, height=h, format="yuvj420p")
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height = w, h
    enc.pix_fmt = "yuvj420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {"qscale": "4"}
    small.pts = 0
    data = b"".join(bytes(p) for p in enc.encode(small))
    data += b"".join(bytes(p) for p in enc.encode(None))
    return data
