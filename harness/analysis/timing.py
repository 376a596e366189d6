"""Arrival-time analysis of a video stream in O(1) memory.

Fed one call per received video frame (``add``), during a live capture or while reading a
recording, so both go through the same code. Follows how Helix and mature tools measure
(reference: helix-stream.md §5, prior-art.md §3):

* Replay frames (flag 0x02, the GOP catch-up burst) are counted apart and excluded from everything else.
* Times are seconds from the first live frame. Statistics (fps, jitter, bursts, stalls, fps_pts) use
  the live frames that arrive at least ``warmup_s`` after the first one.
* ``fps`` is arrival-based: (N-1)/(t_last-t_first). ``fps_pts`` comes from PTS deltas, and is null
  unless every delta is positive (Helix may send PTS 0).
* ``jitter_ms`` percentiles of the inter-arrival time come from a fixed histogram (0.1 ms bins up to
  2 s, then an overflow bucket and the exact maximum). ``bursts`` count intervals under 8 ms.
* ``stalls`` use the WebRTC (DVQA) freeze rule: a gap longer than max(avg + 150 ms, 3 × avg), with avg
  the mean interval of the measured frames (1/fps). Gaps over 150 ms are kept as candidates and
  judged against the final average in ``result()``.
* ``fps_windows`` counts live frames per 1-s window from the first live frame (warm-up included);
  ``fps_min_window`` is the minimum over complete windows after the warm-up.

The analyzer never reads a clock: all times come in as ``t_ns``.
"""

from __future__ import annotations

import logging
import math

from ..errors import HarnessError

log = logging.getLogger("harness.analysis.timing")

STALL_RULES = ("webrtc",)
BURST_NS = 8_000_000
STALL_FLOOR_NS = 150_000_000
BIN_NS = 100_000  # 0.1 ms
HIST_BINS = 20_000  # 0.1 ms x 20000 = 2 s; longer gaps go to the overflow bucket
MAX_STALL_CANDIDATES = 100_000
MAX_STREAM_ERRORS = 100
_NS = 1_000_000_000
_MAX_WINDOWS = 10_000_000  # ~116 days of 1-s windows: anything beyond is a broken clock


def _phase_error(message: str, hint: str | None = None) -> HarnessError:
    return HarnessError(message, phase="analysis", hint=hint)


class TimingAnalyzer:
    """Incremental arrival-time statistics; see the module docstring for the definitions."""

    __slots__ = (
        "warmup_s",
        "stall_rule",
        "_warmup_ns",
        "_frames",
        "_replay",
        "_keyframes",
        "_t0",
        "_t_prev",
        "_warm_end",
        "_windows",
        "_m_count",
        "_m_first",
        "_m_last",
        "_m_bytes",
        "_pts_first",
        "_pts_last",
        "_pts_ok",
        "_hist",
        "_overflow",
        "_gap_max",
        "_bursts",
        "_candidates",
        "_candidates_dropped",
        "_stream_errors",
        "_stream_errors_dropped",
    )

    def __init__(self, warmup_s: float = 2.0, stall_rule: str = "webrtc") -> None:
        if not (isinstance(warmup_s, (int, float)) and math.isfinite(warmup_s) and warmup_s >= 0):
            raise _phase_error(f"warmup_s must be a finite number >= 0, got {warmup_s!r}")
        if stall_rule not in STALL_RULES:
            raise _phase_error(f"unknown stall rule {stall_rule!r}", hint=f"use one of {', '.join(STALL_RULES)}")
        self.warmup_s = float(warmup_s)
        self.stall_rule = stall_rule
        self._warmup_ns = round(warmup_s * _NS)
        self._frames = 0
        self._replay = 0
        self._keyframes = 0
        self._t0 = 0
        self._t_prev = 0
        self._warm_end = 0
        self._windows: list[int] = []
        self._m_count = 0
        self._m_first = 0
        self._m_last = 0
        self._m_bytes = 0
        self._pts_first = 0
        self._pts_last = 0
        self._pts_ok = True
        self._hist = [0] * HIST_BINS
        self._overflow = 0
        self._gap_max = 0
        self._bursts = 0
        self._candidates: list[tuple[int, int]] = []
        self._candidates_dropped = 0
        self._stream_errors: list[str] = []
        self._stream_errors_dropped = 0

    # -- feeding -----------------------------------------------------------------------------

    def add(self, t_ns: int, *, replay: bool, keyframe: bool, pts_us: int, size: int) -> None:
        """One received video frame: arrival time (monotonic ns), flags, PTS (µs) and AU size (bytes)."""
        if replay:
            self._replay += 1
            return
        n = self._frames
        if n == 0:
            self._t0 = t_ns
            self._t_prev = t_ns
            self._warm_end = t_ns + self._warmup_ns
        elif t_ns < self._t_prev:
            raise _phase_error(
                f"arrival times go backwards ({t_ns} ns after {self._t_prev} ns)",
                hint="arrival times must come from a monotonic clock",
            )
        self._t_prev = t_ns
        self._frames = n + 1
        if keyframe:
            self._keyframes += 1

        windows = self._windows
        w = (t_ns - self._t0) // _NS
        if w < len(windows):
            windows[w] += 1
        else:
            if w > _MAX_WINDOWS:
                raise _phase_error(f"arrival time {t_ns} ns is implausibly far from the first frame ({self._t0} ns)")
            windows.extend([0] * (w - len(windows)))
            windows.append(1)

        if t_ns < self._warm_end:
            return
        m = self._m_count
        self._m_count = m + 1
        self._m_bytes += size
        if m == 0:
            self._m_first = t_ns
            self._m_last = t_ns
            self._pts_first = pts_us
            self._pts_last = pts_us
            return
        last = self._m_last
        gap = t_ns - last
        self._m_last = t_ns
        b = gap // BIN_NS
        if b < HIST_BINS:
            self._hist[b] += 1
        else:
            self._overflow += 1
        if gap > self._gap_max:
            self._gap_max = gap
        if gap < BURST_NS:
            self._bursts += 1
        elif gap > STALL_FLOOR_NS:
            if len(self._candidates) < MAX_STALL_CANDIDATES:
                self._candidates.append((last, gap))
            else:
                self._candidates_dropped += 1
        if self._pts_ok:
            if pts_us <= self._pts_last:
                self._pts_ok = False
            self._pts_last = pts_us

    def add_stream_error(self, text: str) -> None:
        """A 0x31 StreamError message (decoded text)."""
        if len(self._stream_errors) < MAX_STREAM_ERRORS:
            self._stream_errors.append(text)
        else:
            self._stream_errors_dropped += 1

    # -- results -----------------------------------------------------------------------------

    @property
    def frames(self) -> int:
        """Live frames so far."""
        return self._frames

    def _percentile(self, cumulative: list[int], total: int, q: float) -> float:
        rank = max(1, math.ceil(q * total))
        lo, hi = 0, HIST_BINS
        if cumulative[-1] < rank:  # in the overflow bucket
            return self._gap_max / 1e6
        while lo < hi:  # first bin whose cumulative count reaches the rank
            mid = (lo + hi) // 2
            if cumulative[mid] >= rank:
                hi = mid
            else:
                lo = mid + 1
        centre_ms = (lo + 0.5) * BIN_NS / 1e6
        return min(centre_ms, self._gap_max / 1e6)

    def result(self, *, end_ns: int | None = None) -> dict:
        """The public timing keys. Pure: can be called at any time, repeatedly.

        ``end_ns`` (optional) is when the capture stopped; a gap from the last live frame to it that
        breaks the stall rule is reported as a trailing stall (frames stopped but the socket stayed open).
        """
        m = self._m_count
        gaps = m - 1
        fps = fps_pts = avg_ns = None
        jitter = {"p50": None, "p95": None, "p99": None, "max": None}
        bitrate = None
        stalls: list[dict] = []
        if gaps >= 1 and self._m_last > self._m_first:
            span = self._m_last - self._m_first
            avg_ns = span / gaps
            fps = round(gaps * _NS / span, 4)
            bitrate = round(self._m_bytes * 8 / (span / _NS) / 1000, 1)
            if self._pts_ok and self._pts_last > self._pts_first:
                fps_pts = round(gaps * 1e6 / (self._pts_last - self._pts_first), 4)
        if gaps >= 1:
            cumulative = []
            running = 0
            for count in self._hist:
                running += count
                cumulative.append(running)
            jitter = {
                "p50": round(self._percentile(cumulative, gaps, 0.50), 2),
                "p95": round(self._percentile(cumulative, gaps, 0.95), 2),
                "p99": round(self._percentile(cumulative, gaps, 0.99), 2),
                "max": round(self._gap_max / 1e6, 2),
            }
        if avg_ns is not None:
            threshold = max(avg_ns + STALL_FLOOR_NS, 3 * avg_ns)
            stalls = [
                {"start_s": round((start - self._t0) / _NS, 4), "duration_s": round(gap / _NS, 4)}
                for start, gap in self._candidates
                if gap > threshold
            ]
            if end_ns is not None and end_ns - self._m_last > threshold:
                stalls.append(
                    {
                        "start_s": round((self._m_last - self._t0) / _NS, 4),
                        "duration_s": round((end_ns - self._m_last) / _NS, 4),
                    }
                )
            if self._candidates_dropped:
                log.warning(
                    "%d stall candidates were not kept (over %d)", self._candidates_dropped, MAX_STALL_CANDIDATES
                )

        windows = list(self._windows)
        fps_min_window = None
        if self._frames:
            last_s = ((end_ns if end_ns is not None and end_ns > self._t_prev else self._t_prev) - self._t0) / _NS
            first_window = math.ceil(self.warmup_s)
            complete = [windows[i] if i < len(windows) else 0 for i in range(first_window, int(last_s))]
            if complete:
                fps_min_window = min(complete)
        errors = list(self._stream_errors)
        if self._stream_errors_dropped:
            errors.append(f"... and {self._stream_errors_dropped} more")
        return {
            "frames": self._frames,
            "replay_frames": self._replay,
            "keyframes": self._keyframes,
            "duration_s": round((self._t_prev - self._t0) / _NS, 4) if self._frames else None,
            "fps": fps,
            "fps_pts": fps_pts,
            "fps_windows": windows if self._frames else [],
            "fps_min_window": fps_min_window,
            "jitter_ms": jitter,
            "bursts": self._bursts,
            "stalls": stalls,
            "stream_errors": errors,
            "warmup_s": self.warmup_s,
            "bitrate_kbps": bitrate,
        }
