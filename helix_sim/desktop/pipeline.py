"""The desktop's ONE shared video pipeline (``shared_video_source.go``) and its viewers.

Built when the first viewer subscribes, shared by every viewer, stopped ``video_grace_s`` after the
last one leaves (by :class:`~helix_sim.desktop.session.Desktop`). A worker thread renders
(:class:`~helix_sim.desktop.video.Scene`) and encodes (:class:`~helix_sim.desktop.video.H264Encoder`) on
a drift-free monotonic schedule: ``fps`` frames/s while vkcube (or another GL demo) animates the
screen, one keepalive frame every 500 ms on a static screen (pipewiresrc ``keepalive-time=500``).
Frames are fanned out on the event loop into bounded per-viewer queues (:class:`Subscriber`); a
viewer that joins a running pipeline first gets the current GOP as replay frames.

Faults of the picture live here: ``frozen``, ``black``, ``corrupt_h264``, ``frames_stop``, and the
pre-run of ``replay_burst``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from harness.protocols.stream import Init

from .video import H264Encoder, Scene, corrupt_au

log = logging.getLogger("helix_sim.desktop")

SCANOUT_ID = 1
#: Resource ids of the triple-buffered scanout (QEMU's [FRAME_READY] lines, vsockenc's DMA-BUF lines).
SCANOUT_RESOURCES = (37, 38, 39)
#: A frame at least this often on a static screen (pipewiresrc keepalive-time=500).
KEEPALIVE_S = 0.5
#: Fault timing, in seconds of live pipeline time (frozen, black, frames_stop) or of streaming (others).
FROZEN_AT_S, FROZEN_FOR_S = 2.0, 3.0
BLACK_AT_S, BLACK_FOR_S = 2.0, 2.0
FRAMES_STOP_AT_S = 3.0
#: A worker that falls behind its schedule by up to this much catches up (frames go out back to back,
#: the average rate stays exact); further behind, the missed frames are dropped.
CATCH_UP_US = 250_000
#: corrupt_h264: every Nth P-frame is damaged.
CORRUPT_EVERY = 15
#: Frames a viewer's queue may hold beyond one GOP before it counts as too slow (ws_stream.go: GOP + 30).
QUEUE_SLACK = 30


def resource_id(frame_number: int, zero: bool = False) -> int:
    """The scanout resource a frame was rendered into (0 for every frame under ``resource_ids_zero``)."""
    return 0 if zero else SCANOUT_RESOURCES[(frame_number - 1) % len(SCANOUT_RESOURCES)]


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded access unit of the shared pipeline."""

    number: int  # 1-based, cumulative for the pipeline; also the counter stamped in the pixels
    pts_us: int  # pipeline running time
    data: bytes
    keyframe: bool
    published: float = 0.0  # time.monotonic() when the loop received it from the worker


def normalize_video_mode(requested: str | None, default: str) -> str:
    """The sim's two paths: ``scanout`` (QEMU H.264) or ``shm`` (pipewiresrc → vsockenc; also native/zerocopy)."""
    mode = (requested or "").strip().lower()
    if mode == "scanout":
        return "scanout"
    if mode in ("shm", "native", "dmabuf", "zerocopy", "zero-copy", "plugin"):
        return "shm"
    return default


# --------------------------------------------------------------------------- viewers


class Subscriber:
    """One viewer of the shared pipeline: replay frames, then a bounded queue of live frames.

    ``get()`` returns the next live frame, or ``None`` once the desktop ended the viewer (``end_reason``
    says why: ``oom``, ``vm_crash``, ``shutdown``). A viewer whose queue overflows (too slow) gets no more
    frames but is not ended: its socket stays open, as in the real server.
    """

    def __init__(self, number: int, init: Init, mode: str, capacity: int, replay: tuple[Frame, ...]) -> None:
        self.number = number
        self.init = init
        self.mode = mode
        self.capacity = capacity
        self.replay = replay
        self.overflowed = False
        self.end_reason: str | None = None
        self.frames_offered = 0
        self._queue: collections.deque[Frame] = collections.deque()
        self._wakeup = asyncio.Event()

    def offer(self, frame: Frame) -> None:
        if self.end_reason is not None or self.overflowed:
            return
        if len(self._queue) >= self.capacity:
            self.overflowed = True
            self._queue.clear()
            log.warning("viewer %d is too slow: its frame queue overflowed, no more frames", self.number)
            return
        self.frames_offered += 1
        self._queue.append(frame)
        self._wakeup.set()

    def end(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self._wakeup.set()

    async def get(self) -> Frame | None:
        while True:
            if self.end_reason is not None:
                return None
            if self._queue:
                return self._queue.popleft()
            self._wakeup.clear()
            await self._wakeup.wait()


# --------------------------------------------------------------------------- pipeline


@dataclass
class PipelineSettings:
    mode: str
    width: int
    height: int
    fps: float
    gop: int
    bitrate_kbps: int
    prerun_frames: int = 0
    faults: frozenset[str] = field(default_factory=frozenset)
    seed: int = 0
    delay_scale: float = 1.0  # SimConfig.delay_scale: scales the faults' timings


class VideoPipeline:
    """The worker thread that renders and encodes; frames reach the loop via ``call_soon_threadsafe``.

    Owned by :class:`Desktop`; its GOP list (frames since the last IDR) lives on the loop.
    """

    def __init__(
        self,
        settings: PipelineSettings,
        *,
        name: str,
        loop: asyncio.AbstractEventLoop,
        animating: Callable[[], bool],
        on_frame: Callable[["VideoPipeline", Frame], None],
        on_error: Callable[["VideoPipeline", str], None],
    ) -> None:
        self.settings = settings
        self.name = name
        self._loop = loop
        self._animating = animating
        self._on_frame = on_frame
        self._on_error = on_error
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sim-video-{name}", daemon=True)
        self.prerun_done = asyncio.Event()
        self.gop_frames: list[Frame] = []
        self.frames = 0
        self.started = time.monotonic()
        self.last_yuv: np.ndarray | None = None  # a copy of the latest picture (for screenshots)
        self.stalled = False  # frames_stop reached
        self.error: str | None = None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()
        if self.settings.prerun_frames <= 0:
            self.prerun_done.set()

    def wake(self) -> None:
        """The screen's content mode changed (vkcube started/ended): re-plan the next frame."""
        self._wake.set()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 10.0)
        if self._thread.is_alive():  # pragma: no cover - an encoder wedged for 10 s
            log.error("video worker %s did not stop", self.name)

    # -- worker thread ----------------------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: Any) -> bool:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody to deliver to
            self._stop.set()
            return False
        return True

    def _run(self) -> None:
        s = self.settings
        encoder: H264Encoder | None = None
        try:
            scene = Scene(s.width, s.height)
            encoder = H264Encoder(s.width, s.height, s.fps, s.gop, s.bitrate_kbps)
            self._produce_all(scene, encoder)
        except Exception as exc:  # noqa: BLE001 - reported to the desktop (logged + pipeline error)
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("video worker %s failed", self.name)
            self._post(self._on_error, self, self.error)
        finally:
            if encoder is not None:
                encoder.close()
            self._post(self.prerun_done.set)

    def _produce_all(self, scene: Scene, encoder: H264Encoder) -> None:
        s = self.settings
        rng = random.Random(s.seed)
        n = 0
        frozen: np.ndarray | None = None
        p_frames = 0

        def produce(t_s: float, pts_us: int, live_t: float | None) -> bool:
            nonlocal n, frozen, p_frames
            n += 1
            animating = self._animating()
            yuv: np.ndarray
            k = s.delay_scale
            if live_t is not None and "frozen" in s.faults and FROZEN_AT_S * k <= live_t < (FROZEN_AT_S + FROZEN_FOR_S) * k:
                if frozen is None:
                    frozen = scene.render(n, t_s, vkcube=animating).copy()
                yuv = frozen
            elif live_t is not None and "black" in s.faults and self._black_window(live_t):
                yuv = scene.render(n, t_s, vkcube=animating, black=True)
            else:
                yuv = scene.render(n, t_s, vkcube=animating)
            self.last_yuv = yuv.copy()
            force = (n - 1) % s.gop == 0
            for unit in encoder.encode(yuv, pts_us, force_idr=force):
                data = unit.data
                if not unit.keyframe:
                    p_frames += 1
                    if "corrupt_h264" in s.faults and p_frames % CORRUPT_EVERY == 0:
                        data = corrupt_au(data, rng)
                if not self._post(self._on_frame, self, Frame(n, pts_us, data, unit.keyframe)):
                    return False
            return True

        # The schedule is kept in integer microseconds of pipeline running time (the PTS), so it
        # neither drifts nor jitters the PTS; wall-clock due times derive from it.
        period_us = max(1, int(round(1e6 / s.fps)))
        pts = 0
        # replay_burst: the pipeline was already running ("a browser was already watching").
        for _ in range(s.prerun_frames):
            if self._stop.is_set():
                return
            if not produce(pts / 1e6, pts, None):
                return
            pts += period_us
        self._post(self.prerun_done.set)

        live_start = time.monotonic()
        live_pts = pts
        base = live_start - pts / 1e6  # running time 0 on the monotonic clock
        last_pts: int | None = None
        while not self._stop.is_set():
            due = base + pts / 1e6
            now = time.monotonic()
            if due > now:
                if self._wake.wait(due - now):
                    self._wake.clear()
                    if self._stop.is_set():
                        return
                    if last_pts is not None:  # content mode changed: one (new) period after the last frame
                        now_us = int((time.monotonic() - base) * 1e6)
                        pts = max(last_pts + self._period_us(period_us), now_us)
                    continue
            live_t = (pts - live_pts) / 1e6
            if "frames_stop" in s.faults and live_t >= FRAMES_STOP_AT_S * s.delay_scale:
                if not self.stalled:
                    self.stalled = True
                    log.info("video worker %s: frames stop (fault frames_stop)", self.name)
                self._stop.wait()
                return
            if not produce(pts / 1e6, pts, live_t):
                return
            last_pts = pts
            step = self._period_us(period_us)
            pts += step
            behind = int((time.monotonic() - base) * 1e6) - pts
            if behind > CATCH_UP_US:  # stalled too long: drop the missed frames instead of bursting
                pts += (behind // step) * step

    def _period_us(self, period_us: int) -> int:
        return period_us if self._animating() else max(period_us, int(KEEPALIVE_S * 1e6))

    def _black_window(self, live_t: float) -> bool:
        k = self.settings.delay_scale
        start = BLACK_AT_S
        if "frozen" in self.settings.faults:  # both: black comes after the freeze
            start = FROZEN_AT_S + FROZEN_FOR_S + 1.0
        return start * k <= live_t < (start + BLACK_FOR_S) * k
