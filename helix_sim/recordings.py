"""Recordings with known ground truth, made by the simulator's own video source.

``synthesize_recording`` renders frames with :class:`~helix_sim.desktop.video.Scene` (vkcube running, so
the picture changes every frame; every non-black frame stamped with its frame counter), encodes them
with :class:`~helix_sim.desktop.video.H264Encoder`, and writes what a capture of the sim's stream would hold:
a real HXWSREC1 recording with the binary ``0x30`` StreamInit, the text ConnectionComplete and one
``0x01`` VideoFrame per access unit (15-byte header from ``protocols.stream``). It returns the
:class:`GroundTruth` that the analyzers must reproduce. No clock is read: every arrival time is computed.

The schedule (times in seconds from the first live frame):

* Live frame ``k`` is due at ``k / fps`` and arrives then, plus a small deterministic jitter
  (uniform within ±``jitter_ms``; frame 0 has none). Its PTS is ``round((replay_burst + k) * 1e6 / fps)`` µs
  and its stamped counter is ``replay_burst + k`` (the producer's frame number).
* ``stall=(start_s, duration_s)``: the producer stops after frame ``k0 = round(start_s * fps)`` and
  resumes ``n = max(1, round(duration_s * fps))`` periods later; the frames due in between are never
  produced (as the sim drops missed frames instead of bursting), so their counters are missing and the
  arrivals have a gap of exactly ``n / fps``. Truth: ``stall = (k0 / fps, n / fps)``.
* ``freeze=(start_s, duration_s)``: frames ``f0 = round(start_s * fps)`` … ``f0 + n - 1`` carry the very
  same yuv as frame ``f0`` (re-encoded each time); truth ``freeze = (f0 / fps, n / fps)``: the frozen
  picture is on screen from frame ``f0`` until frame ``f0 + n``, the first that differs.
* ``black=(start_s, duration_s)``: frames ``b0`` … ``b0 + n - 1`` are black (no stamp); truth
  ``black_frames = n``.
* ``corrupt=N``: N live P-frame access units, spread evenly over the live stream outside the
  intervals above, are damaged with :func:`~helix_sim.desktop.video.corrupt_au`.
* ``replay_burst=R``: the pipeline was already running: the R frames produced before the viewer joined
  (the first an IDR with SPS/PPS) arrive first, 0.2 ms apart, flagged ``FLAG_REPLAY``, one period
  before the first live frame. Truth: ``replay_frames = R``, and they count in nothing else.

Intervals are rounded to the frame grid and returned as they were rendered; they must lie inside the
stream and must not overlap each other. Arguments are checked up front (``SimError``, phase "sim").
"""

from __future__ import annotations

import math
import os
import random
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import SimError
from harness.protocols.recording import KIND_BINARY, KIND_TEXT, RecordingWriter
from harness.protocols.stream import CODEC_H264, FLAG_KEYFRAME, FLAG_REPLAY, ConnectionComplete, StreamInit, VideoFrame
from .desktop.video import H264Encoder, Scene, corrupt_au

__all__ = ["Interval", "GroundTruth", "synthesize_recording", "T0_NS"]

#: Arrival time (monotonic ns) of the first live frame; any origin works, a non-zero one catches
#: analyzers that assume recordings start at 0.
T0_NS = 5_000_000_000
#: Replay frames arrive this far apart (a burst).
REPLAY_SPACING_NS = 200_000
#: Default jitter bound: ±0.5 ms, never more than a tenth of the frame interval.
DEFAULT_JITTER_MS = 0.5
_NS = 1_000_000_000


def _err(message: str, hint: str | None = None) -> SimError:
    return SimError(message, phase="sim", hint=hint)


@dataclass(frozen=True, slots=True)
class Interval:
    """A span of stream time, seconds from the first live frame."""

    start_s: float
    duration_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class GroundTruth:
    """What a recording made by :func:`synthesize_recording` really contains."""

    path: Path
    h264_path: Path | None
    fps: float  # the producer's frame rate: the stamped counter advances by one per 1/fps
    width: int
    height: int
    frames: int  # live video frames in the recording
    replay_frames: int
    keyframes: int  # live keyframes
    duration_s: float  # first to last live frame on the schedule (without jitter)
    freeze: Interval | None
    black: Interval | None
    black_frames: int
    stall: Interval | None
    corrupt: int  # damaged access units
    corrupt_frames: tuple[int, ...]  # their live frame indexes k
    first_counter: int  # stamped counter of the first live frame
    last_counter: int
    jitter_ms: float  # bound of the arrival jitter
    schedule_s: tuple[float, ...]  # due time of every live frame (no jitter), seconds from the first

    @property
    def frame_interval_s(self) -> float:
        return 1.0 / self.fps

    def delivered_fps(self, warmup_s: float = 2.0) -> float | None:
        """Live frames per second as delivered after ``warmup_s``: (n - 1) / (last - first) on the schedule.

        Equals ``fps`` unless frames were not produced (a stall); this is what an arrival-based FPS
        (the analyzer's ``fps``) must read.
        """
        times = [t for t in self.schedule_s if t >= warmup_s - 1e-9]
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def as_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["h264_path"] = str(self.h264_path) if self.h264_path else None
        del d["schedule_s"]
        return d


def _interval(name: str, value: object, fps: float, frames: int) -> tuple[int, int] | None:
    """(first frame, frame count) of an interval given as (start_s, duration_s)."""
    if value is None:
        return None
    try:
        start_s, dur_s = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise _err(f"{name} must be None or (start_s, duration_s), got {value!r}") from None
    if not (math.isfinite(start_s) and math.isfinite(dur_s)) or start_s < 0 or dur_s <= 0:
        raise _err(f"{name}=({start_s}, {dur_s}): start must be >= 0 and duration > 0")
    first = round(start_s * fps)
    count = max(1, round(dur_s * fps))
    if first < 1 or first + count >= frames:
        raise _err(
            f"{name}=({start_s}, {dur_s}) does not fit inside a stream of {frames} frames at {fps:g} fps",
            hint="leave at least one normal frame before and after it",
        )
    return first, count


def synthesize_recording(
    path: str | os.PathLike,
    *,
    fps: float,
    duration_s: float,
    width: int = 1280,
    height: int = 720,
    freeze: tuple[float, float] | None = None,
    black: tuple[float, float] | None = None,
    stall: tuple[float, float] | None = None,
    corrupt: int = 0,
    replay_burst: int = 0,
    seed: int = 0,
    gop: int = 120,
    bitrate_kbps: int | None = None,
    jitter_ms: float = DEFAULT_JITTER_MS,
    h264_path: str | os.PathLike | None = None,
) -> GroundTruth:
    """Write an HXWSREC1 recording of the sim's video with the given defects; return its ground truth.

    ``h264_path`` (optional) also gets the Annex-B stream (replay then live AUs, as a capture writes
    its ``.h264``). ``bitrate_kbps`` defaults to 4 Mbps at 720p, scaled by the picture area.
    """
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 0 < fps <= 1000):
        raise _err(f"fps must be in (0, 1000], got {fps!r}")
    if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s) and duration_s > 0):
        raise _err(f"duration_s must be > 0, got {duration_s!r}")
    for name, value in (("corrupt", corrupt), ("replay_burst", replay_burst), ("gop", gop)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "gop" else 0):
            raise _err(f"{name} must be an int >= {1 if name == 'gop' else 0}, got {value!r}")
    if not (isinstance(jitter_ms, (int, float)) and math.isfinite(jitter_ms) and jitter_ms >= 0):
        raise _err(f"jitter_ms must be >= 0, got {jitter_ms!r}")
    frames_due = max(1, math.ceil(duration_s * fps - 1e-9))  # frames k with k / fps < duration_s
    spans = {
        name: span
        for name, span in (
            ("freeze", _interval("freeze", freeze, fps, frames_due)),
            ("black", _interval("black", black, fps, frames_due)),
            ("stall", _interval("stall", stall, fps, frames_due)),
        )
        if span is not None
    }
    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    for (name_a, (a0, an)), (name_b, (b0, _)) in zip(ordered, ordered[1:]):
        # A stall's first frame k0 is the last frame before the gap; the gap ends at k0 + n.
        if b0 < a0 + an + (1 if name_a == "stall" else 0):
            raise _err(f"{name_a} and {name_b} overlap", hint="give them separate times")
    if bitrate_kbps is None:
        bitrate_kbps = max(300, round(4000 * width * height / (1280 * 720)))
    scene = Scene(width, height)  # checks the size
    if not scene.stamped:
        raise _err(f"{width}x{height} has no room for the frame-counter stamp", hint="use a width of at least 416")

    period_ns = _NS / fps
    jitter_ns = min(jitter_ms * 1e6, 0.1 * period_ns)
    freeze_span = spans.get("freeze")
    black_span = spans.get("black")
    stall_span = spans.get("stall")

    def dropped(k: int) -> bool:
        return stall_span is not None and stall_span[0] < k < stall_span[0] + stall_span[1]

    live = [k for k in range(frames_due) if not dropped(k)]
    # Frames that must stay intact: inside (or touching) the freeze/black intervals, and the first.
    keep = {0}
    for span in (freeze_span, black_span):
        if span is not None:
            keep.update(range(span[0] - 1, span[0] + span[1] + 1))
    produced_of = {k: replay_burst + i for i, k in enumerate(live)}  # production index (GOP position)
    eligible = [k for k in live if k not in keep and produced_of[k] % gop != 0]
    if corrupt > len(eligible):
        raise _err(f"corrupt={corrupt} is more than the {len(eligible)} P-frames available")
    to_corrupt = {eligible[int((j + 0.5) * len(eligible) / corrupt)] for j in range(corrupt)} if corrupt else set()
    rng = random.Random(seed)
    damage_rng = random.Random(seed ^ 0x5EED)

    path = Path(path)
    h264 = Path(h264_path) if h264_path is not None else None
    replay_t0 = T0_NS - round(period_ns) - replay_burst * REPLAY_SPACING_NS
    connect_ns = (replay_t0 if replay_burst else T0_NS - round(period_ns)) - 2_000_000
    counts = {"keyframes": 0, "black": 0, "corrupt": 0, "frames": 0}
    corrupted: list[int] = []
    held = None
    h264_fh: BinaryIO | None = None
    try:
        with open(path, "wb") as fh:
            if h264 is not None:
                h264_fh = open(h264, "wb")
            writer = RecordingWriter(fh)
            writer.write(connect_ns, KIND_BINARY, StreamInit(CODEC_H264, width, height, min(255, round(fps))).encode())
            writer.write(connect_ns + 1_000_000, KIND_TEXT, ConnectionComplete(width, height).to_text())
            # (counter, arrival ns, replay, live index k) per input frame, popped per output AU.
            pending: deque[tuple[int, int, bool, int]] = deque()

            def emit(units) -> None:
                for unit in units:
                    if not pending:
                        raise _err("the encoder returned more access units than it was given frames")
                    counter, t_ns, replay, k = pending.popleft()
                    data = unit.data
                    if not replay:
                        counts["frames"] += 1
                        if unit.keyframe:
                            counts["keyframes"] += 1
                        if k in to_corrupt:
                            if unit.keyframe:
                                raise _err(f"live frame {k} chosen for corruption came out as a keyframe")
                            data = corrupt_au(data, damage_rng)
                            corrupted.append(k)
                    flags = (FLAG_KEYFRAME if unit.keyframe else 0) | (FLAG_REPLAY if replay else 0)
                    pts_us = round(counter * 1e6 / fps)
                    writer.write(t_ns, KIND_BINARY, VideoFrame(CODEC_H264, flags, pts_us, width, height, data).encode())
                    if h264_fh is not None:
                        h264_fh.write(data)

            with H264Encoder(width, height, fps, gop=gop, bitrate_kbps=bitrate_kbps) as encoder:
                produced = 0
                for j in range(replay_burst):
                    yuv = scene.render(j, j / fps, vkcube=True)
                    pending.append((j, replay_t0 + j * REPLAY_SPACING_NS, True, -1))
                    emit(encoder.encode(yuv, round(j * 1e6 / fps), force_idr=produced % gop == 0))
                    produced += 1
                for k in live:
                    counter = replay_burst + k
                    t_scene = counter / fps
                    if freeze_span is not None and freeze_span[0] <= k < freeze_span[0] + freeze_span[1]:
                        if held is None:
                            held = scene.render(counter, t_scene, vkcube=True).copy()
                        yuv = held
                    elif black_span is not None and black_span[0] <= k < black_span[0] + black_span[1]:
                        yuv = scene.render(counter, t_scene, vkcube=True, black=True)
                        counts["black"] += 1
                    else:
                        yuv = scene.render(counter, t_scene, vkcube=True)
                    jitter = round(rng.uniform(-jitter_ns, jitter_ns)) if k and jitter_ns else 0
                    pending.append((counter, T0_NS + round(k * period_ns) + jitter, False, k))
                    emit(encoder.encode(yuv, round(counter * 1e6 / fps), force_idr=produced % gop == 0))
                    produced += 1
            if pending:
                raise _err(f"the encoder held back {len(pending)} frames", hint="the sim's encoder must not delay frames")
            writer.close()
    except OSError as exc:
        raise _err(f"cannot write {exc.filename or path}: {exc.strerror or exc}") from exc
    finally:
        if h264_fh is not None:
            h264_fh.close()

    def interval(span: tuple[int, int] | None) -> Interval | None:
        return None if span is None else Interval(span[0] / fps, span[1] / fps)

    return GroundTruth(
        path=path,
        h264_path=h264,
        fps=float(fps),
        width=width,
        height=height,
        frames=counts["frames"],
        replay_frames=replay_burst,
        keyframes=counts["keyframes"],
        duration_s=live[-1] / fps,
        freeze=interval(freeze_span),
        black=interval(black_span),
        black_frames=counts["black"],
        stall=interval(stall_span),
        corrupt=len(corrupted),
        corrupt_frames=tuple(sorted(corrupted)),
        first_counter=replay_burst,
        last_counter=replay_burst + live[-1],
        jitter_ms=jitter_ns / 1e6,
        schedule_s=tuple(k / fps for k in live),
    )
