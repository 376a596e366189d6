"""TimingAnalyzer against synthetic arrival sequences with known answers."""

from __future__ import annotations

import random
import sys
import time

import pytest

from harness.analysis.timing import TimingAnalyzer
from harness.errors import HarnessError

MS = 1_000_000
T0 = 5_000_000_000_000  # an arbitrary monotonic-clock origin


def feed(analyzer: TimingAnalyzer, times_ns, *, pts=None, replay=False, gop=120, size=10_000) -> None:
    for i, t in enumerate(times_ns):
        p = pts[i] if pts is not None else (t - T0) // 1000
        analyzer.add(t, replay=replay, keyframe=(i % gop == 0), pts_us=p, size=size)


def steady(fps: float, seconds: float, start_ns: int = T0) -> list[int]:
    n = int(round(fps * seconds))
    return [start_ns + round(i * 1e9 / fps) for i in range(n)]


def test_steady_40fps() -> None:
    a = TimingAnalyzer()
    feed(a, steady(40, 10))
    r = a.result()
    assert r["frames"] == 400 and r["replay_frames"] == 0 and r["keyframes"] == 4
    assert r["fps"] == pytest.approx(40, abs=0.05)
    assert r["fps_pts"] == pytest.approx(40, abs=0.05)
    assert r["duration_s"] == pytest.approx(9.975)
    assert r["fps_windows"] == [40] * 10
    assert r["fps_min_window"] == 40
    assert r["jitter_ms"]["p50"] == pytest.approx(25, abs=0.1)
    assert r["jitter_ms"]["p99"] == pytest.approx(25, abs=0.1)
    assert r["jitter_ms"]["max"] == pytest.approx(25, abs=0.01)
    assert r["bursts"] == 0 and r["stalls"] == [] and r["stream_errors"] == []
    assert r["warmup_s"] == 2.0
    assert r["bitrate_kbps"] == pytest.approx(10_000 * 8 * 40 / 1000, rel=0.01)


@pytest.mark.parametrize("fps", [30, 41.3, 59.94, 60])
def test_fps_accuracy_with_arrival_noise(fps: float) -> None:
    """Accuracy goal: error <= max(0.5 fps, 1 %) with up to 8 ms of network jitter."""
    rng = random.Random(fps)
    times = sorted(t + rng.randrange(0, 8 * MS) for t in steady(fps, 20))
    a = TimingAnalyzer()
    feed(a, times, pts=[round(i * 1e6 / fps) for i in range(len(times))])
    r = a.result()
    assert abs(r["fps"] - fps) <= max(0.5, 0.01 * fps)
    assert r["fps_pts"] == pytest.approx(fps, abs=0.01)  # PTS cadence is exact


def test_one_second_stall() -> None:
    times = [t for t in steady(40, 10) if not (T0 + 5_000 * MS <= t < T0 + 6_000 * MS)]
    a = TimingAnalyzer()
    feed(a, times)
    r = a.result()
    assert len(r["stalls"]) == 1
    stall = r["stalls"][0]
    interval = 0.025
    assert abs(stall["start_s"] - 5.0) <= interval + 1e-6  # 4.975: the last frame before the gap
    assert abs(stall["duration_s"] - 1.0) <= interval + 1e-6  # 1.025
    assert r["jitter_ms"]["max"] == pytest.approx(1025, abs=0.01)
    assert 0 in r["fps_windows"] and r["fps_min_window"] == 0


def test_stall_rule_is_relative_to_the_average_interval() -> None:
    # At 5 fps (200 ms apart) a 500 ms gap is under 3 x avg: not a stall. At 40 fps it is one.
    slow = steady(5, 20)
    slow = slow[:60] + [t + 300 * MS for t in slow[60:]]
    a = TimingAnalyzer()
    feed(a, slow)
    assert a.result()["stalls"] == []
    fast = steady(40, 10)
    fast = fast[:200] + [t + 475 * MS for t in fast[200:]]
    b = TimingAnalyzer()
    feed(b, fast)
    assert [s["duration_s"] for s in b.result()["stalls"]] == [pytest.approx(0.5)]


def test_trailing_stall_needs_the_end_time() -> None:
    a = TimingAnalyzer()
    times = steady(40, 6)
    feed(a, times)
    assert a.result()["stalls"] == []
    r = a.result(end_ns=times[-1] + 3_000 * MS)
    assert r["stalls"] == [{"start_s": pytest.approx(5.975), "duration_s": pytest.approx(3.0)}]
    assert r["fps_windows"] == [40] * 6  # windows count frames; the end only completes windows
    assert r["fps_min_window"] == 0  # windows 6..8 are complete and empty


def test_replay_burst_is_excluded() -> None:
    a = TimingAnalyzer()
    burst = [T0 + i * MS // 2 for i in range(120)]  # the GOP catch-up, 0.5 ms apart
    feed(a, burst, replay=True)
    live_start = burst[-1] + 10 * MS
    feed(a, steady(40, 8, live_start))
    r = a.result()
    assert r["replay_frames"] == 120 and r["frames"] == 320
    assert r["fps"] == pytest.approx(40, abs=0.05)
    assert r["bursts"] == 0
    assert r["fps_windows"][0] == 40  # windows start at the first live frame


def test_bursts_are_counted() -> None:
    # Every 40th frame is late by 20 ms and the next comes 2 ms after it (a pile-up drain).
    times = []
    for i, t in enumerate(steady(40, 10)):
        times.append(t + 21 * MS if i % 40 == 20 else t)
    a = TimingAnalyzer()
    feed(a, times)
    r = a.result()
    assert r["bursts"] == 8  # frames 100, 140, ... 380 are after the warm-up
    assert r["fps"] == pytest.approx(40, abs=0.05)
    assert r["jitter_ms"]["max"] == pytest.approx(46, abs=0.01)


def test_jitter_percentiles() -> None:
    times = [T0]
    for i in range(1000):
        times.append(times[-1] + (70 * MS if i % 20 == 0 else 20 * MS))
    a = TimingAnalyzer(warmup_s=0)
    feed(a, times)
    j = a.result()["jitter_ms"]
    assert j["p50"] == pytest.approx(20, abs=0.1)
    assert j["p95"] == pytest.approx(20, abs=0.1)
    assert j["p99"] == pytest.approx(70, abs=0.1)
    assert j["max"] == 70


def test_jitter_overflow_bucket() -> None:
    a = TimingAnalyzer(warmup_s=0)
    feed(a, [T0, T0 + 3_000 * MS, T0 + 7_500 * MS])
    j = a.result()["jitter_ms"]
    assert j["p50"] == 4500 and j["max"] == 4500  # beyond the 2 s histogram: the exact maximum


@pytest.mark.parametrize(
    "pts",
    [
        [0] * 400,  # Helix's PTS-zero bug
        [i * 25_000 if i != 300 else 5 for i in range(400)],  # goes backwards once
        [(i // 2) * 25_000 for i in range(400)],  # repeats
    ],
    ids=["zero", "backwards", "repeated"],
)
def test_fps_pts_null_unless_deltas_are_positive(pts) -> None:
    a = TimingAnalyzer()
    feed(a, steady(40, 10), pts=pts)
    r = a.result()
    assert r["fps_pts"] is None
    assert r["fps"] == pytest.approx(40, abs=0.05)


def test_fps_pts_from_wall_clock_pts() -> None:
    a = TimingAnalyzer()
    base = 1_700_000_000_000_000  # zerocopy: UnixMicro
    feed(a, steady(40, 10), pts=[base + i * 16_667 for i in range(400)])  # encoder cadence 60 fps
    assert a.result()["fps_pts"] == pytest.approx(60, abs=0.01)


def test_warmup_is_honoured() -> None:
    slow = steady(20, 2)  # 0..2 s at 20 fps, then 40 fps
    fast = steady(40, 8, slow[-1] + 50 * MS)
    times = slow + fast

    a = TimingAnalyzer()  # warm-up 2 s
    feed(a, times)
    r = a.result()
    assert r["fps"] == pytest.approx(40, abs=0.05)
    assert r["frames"] == 360
    assert r["fps_windows"][:2] == [20, 20]  # windows include the warm-up …
    assert r["fps_min_window"] == 40  # … but the minimum skips it

    b = TimingAnalyzer(warmup_s=0)
    feed(b, times)
    rb = b.result()
    assert rb["fps"] == pytest.approx(359 / ((times[-1] - times[0]) / 1e9), abs=0.01)
    assert rb["fps_min_window"] == 20


def test_stall_in_warmup_is_ignored() -> None:
    times = steady(40, 10)
    times = times[:20] + [t + 800 * MS for t in times[20:]]
    a = TimingAnalyzer()
    feed(a, times)
    assert a.result()["stalls"] == []
    b = TimingAnalyzer(warmup_s=0)
    feed(b, times)
    assert len(b.result()["stalls"]) == 1


def test_fps_windows_from_first_live_frame() -> None:
    a = TimingAnalyzer(warmup_s=0)
    feed(a, steady(40, 2.5))
    r = a.result()
    assert r["fps_windows"] == [40, 40, 20]
    assert r["fps_min_window"] == 40  # the last window is incomplete


def test_short_capture_has_no_fps() -> None:
    a = TimingAnalyzer()
    feed(a, steady(40, 1.5))
    r = a.result()
    assert r["frames"] == 60 and r["fps"] is None and r["fps_pts"] is None
    assert r["jitter_ms"] == {"p50": None, "p95": None, "p99": None, "max": None}
    assert r["fps_min_window"] is None


def test_empty() -> None:
    r = TimingAnalyzer().result()
    assert r["frames"] == 0 and r["fps"] is None and r["fps_windows"] == [] and r["duration_s"] is None


def test_stream_errors_are_kept_and_capped() -> None:
    a = TimingAnalyzer()
    a.add_stream_error("GPU encoder unavailable on this host")
    assert a.result()["stream_errors"] == ["GPU encoder unavailable on this host"]
    for i in range(200):
        a.add_stream_error(f"e{i}")
    errors = a.result()["stream_errors"]
    assert len(errors) == 101 and errors[-1] == "... and 101 more"


def test_result_is_pure() -> None:
    a = TimingAnalyzer()
    feed(a, steady(40, 5))
    assert a.result() == a.result()
    feed(a, steady(40, 5, T0 + 5_000 * MS))
    assert a.result()["frames"] == 400


def test_bad_input_raises_typed_errors() -> None:
    with pytest.raises(HarnessError) as info:
        TimingAnalyzer(warmup_s=-1)
    assert info.value.phase == "analysis"
    with pytest.raises(HarnessError):
        TimingAnalyzer(stall_rule="nope")
    a = TimingAnalyzer()
    a.add(T0, replay=False, keyframe=True, pts_us=0, size=1)
    with pytest.raises(HarnessError, match="backwards"):
        a.add(T0 - 1, replay=False, keyframe=False, pts_us=1, size=1)


def _deep_size(obj: object, seen: set[int] | None = None) -> int:
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(_deep_size(item, seen) for item in obj)
    elif isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif hasattr(obj, "__slots__"):
        size += sum(_deep_size(getattr(obj, name), seen) for name in obj.__slots__ if hasattr(obj, name))
    return size


def test_memory_is_bounded_over_a_million_frames() -> None:
    a = TimingAnalyzer()
    add = a.add
    step = 10 * MS  # 100 fps: one new fps window every 100 frames
    sizes = {}
    for i in range(1_000_000):
        add(T0 + i * step + (i % 7) * 100_000, replay=False, keyframe=False, pts_us=i * 10_000, size=5000)
        if i + 1 in (100_000, 1_000_000):
            sizes[i + 1] = _deep_size(a)
    # The fixed jitter histogram dominates; per frame nothing is kept, per second one window count.
    assert sizes[1_000_000] < 500_000
    assert sizes[1_000_000] - sizes[100_000] < 9_000 * 8 * 1.25 + 4096  # 9000 more windows, list slack
    r = a.result()
    assert r["frames"] == 1_000_000 and r["fps"] == pytest.approx(100, abs=0.01)
    assert r["jitter_ms"]["p50"] == pytest.approx(10, abs=0.7)


def test_speed_over_200k_frames_per_second() -> None:
    a = TimingAnalyzer()
    add = a.add
    n = 200_000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(n):
            add(T0 + i * 25 * MS, replay=False, keyframe=False, pts_us=i, size=1000)
        best = min(best, time.perf_counter() - start)
        a = TimingAnalyzer()
        add = a.add
    assert n / best >= 200_000
