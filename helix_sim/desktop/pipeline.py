"""The desktop's ONE shared video pipeline (``shared_video_source.go``) and its viewers.

Built when the first viewer subscribes, shared by every viewer, stopped ``video_grace_s`` after the
last one leaves (by :class:`~helix_sim.desktop.session.Desktop`). A worker thread renders
(:class:`~helix_sim.desktop.video.Scene`) and encodes (:class:`~helix_sim.desktop.video.H264Encoder`) on
a drift-free monotonic schedule: ``fps`` frames/s while vkcube (or another GL demo) animates the
screen, one keepalive frame every 500 ms on a static screen (pipewiresrc ``keepalive-time=500``).
Frames are fanned out on the event loop into bounded per-viewer queues (:class:`Subscriber`); a
viewer that joins a running pipeline first gets the current GOP as replay frames.

On scanout the frame header's PTS is synthetic, ``frameCount * 16666`` µs whatever the real rate
(``scanout_source.go`` readFrames); on the vsockenc path it is the pipeline's running time.

Faults of the picture live here: ``frozen``, ``black``, ``corrupt_h264``, ``frames_stop``,
``qemu_unexpected_msg`` (scanout: QEMU sends something other than FRAME_RESPONSE, ``drm/protocol.go``
ReadFrameResponse fails with ``unexpected msg_type: 0x..``: a pipeline error every viewer gets as 0x31),
``no_first_frame`` (the source never yields a frame) and the pre-run of ``replay_burst``. Their timings
count from the moment the first viewer's stream started (the desktop's fault clock), scaled by
``delay_scale``.
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

from harness.protocols import hxfr
from harness.protocols.stream import Init

from .video import H264Encoder, Scene, corrupt_au

log = logging.getLogger("helix_sim.desktop")

SCANOUT_ID = 1
#: The PipeWire node of the desktop's ScreenCast (the shared source's key, ``pipewire:47`` in logs).
PIPEWIRE_NODE_ID = 47
#: Resource ids of the triple-buffered scanout (QEMU's [FRAME_READY] lines, vsockenc's DMA-BUF lines).
SCANOUT_RESOURCES = (37, 38, 39)
#: A frame at least this often on a static screen (pipewiresrc keepalive-time=500).
KEEPALIVE_S = 0.5
#: Fault timing, in seconds since the first viewer's stream started (times ``delay_scale``): early enough
#: that a 5 s capture after a 2 s warm-up sees each (frames_stop leaves >= 3 s of silence).
FROZEN_AT_S, FROZEN_FOR_S = 1.0, 3.0
BLACK_AT_S, BLACK_FOR_S = 1.0, 2.0
FRAMES_STOP_AT_S = 2.0
QEMU_UNEXPECTED_AT_S = 2.0
#: scanout_source.go: ``ptsUs := frameCount * 16666 // ~60fps timing``.
SCANOUT_PTS_STEP_US = 16666
#: helix-frame-export's encoder PTS (``enc->frame_count * 16666667`` ns).
SCANOUT_PTS_STEP_NS = 16666667
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


def upstream_video_mode(requested: str | None, default: str) -> str:
    """ws_stream.go getVideoMode: the init's ``video_mode``, else the container's ``HELIX_VIDEO_MODE``
    (``default``), else ``zerocopy``. One of ``scanout``, ``shm``, ``native``, ``zerocopy``."""
    for mode, env in (((requested or "").strip().lower(), False), ((default or "").strip().lower(), True)):
        if mode in ("native", "dmabuf"):
            return "native"
        if mode in ("zerocopy", "zero-copy", "plugin") and not env:
            return "zerocopy"
        if mode in ("shm", "scanout"):
            return mode
    return "zerocopy"


def normalize_video_mode(requested: str | None, default: str) -> str:
    """The sim's two paths: ``scanout`` (QEMU H.264) or ``shm`` (pipewiresrc → vsockenc; also native/zerocopy)."""
    return "scanout" if upstream_video_mode(requested, default) == "scanout" else "shm"


def scanout_read_error(message: bytes) -> str:
    """drm/protocol.go ReadFrameResponse's error for an HXFR message that is not a FRAME_RESPONSE."""
    _magic, msg_type, _flags, _session, _size = hxfr.HEADER.unpack_from(message)
    return f"unexpected msg_type: 0x{msg_type:x}"


def unexpected_scanout_message(scanout_id: int = SCANOUT_ID) -> bytes:
    """What QEMU sends under ``qemu_unexpected_msg``: a SCANOUT_RESP (0x22) on the subscribed socket."""
    return hxfr.ScanoutResponse(scanout_id, 1, f"Virtual-{scanout_id + 1}", session_id=scanout_id).encode()


# --------------------------------------------------------------------------- viewers


class Subscriber:
    """One viewer of the shared pipeline: replay frames, then a bounded queue of live frames.

    ``get()`` returns the next live frame, or ``None`` once the desktop ended the viewer (``end_reason``
    says why: ``oom``, ``vm_crash``, ``shutdown``, or ``error`` with the pipeline's ``error`` text, which
    the viewer gets as a 0x31). A viewer whose queue overflows (too slow) gets no more frames but is not
    ended: its socket stays open, as in the real server.
    """

    def __init__(self, number: int, init: Init, mode: str, capacity: int, replay: tuple[Frame, ...]) -> None:
        self.number = number
        self.init = init
        self.mode = mode
        self.capacity = capacity
        self.replay = replay
        self.overflowed = False
        self.end_reason: str | None = None
        self.error: str | None = None
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

    def fail(self, error: str) -> None:
        """The shared source failed (broadcastError): the viewer gets ``error`` as a 0x31, then no frames."""
        if self.end_reason is None:
            self.error = error
        self.end("error")

    async def get(self) -> Frame | None:
        while True:
            if self.end_reason is not None:
                return None
            if self._queue:
                return self._queue.popleft()
            self._wakeup.clear()
            await self._wakeup.wait()


# --------------------------------------------------------------------------- pipeline


class FaultClock:
    """The faults' clock: seconds since the first viewer's stream started (``None`` before), scaled
    thresholds, and the one-shot faults already fired. Shared by a desktop and its pipelines (thread-safe)."""

    def __init__(self, delay_scale: float = 1.0) -> None:
        self.delay_scale = delay_scale
        self.epoch: float | None = None
        self._fired: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        """The first viewer's stream starts (later calls keep the first epoch)."""
        with self._lock:
            if self.epoch is None:
                self.epoch = time.monotonic()

    def elapsed(self) -> float | None:
        epoch = self.epoch
        return None if epoch is None else time.monotonic() - epoch

    def until(self, at_s: float) -> float | None:
        """Seconds until ``at_s`` (scaled) of streaming, 0 when past; ``None`` before any stream."""
        t = self.elapsed()
        return None if t is None else max(0.0, at_s * self.delay_scale - t)

    def due(self, at_s: float) -> bool:
        t = self.elapsed()
        return t is not None and t >= at_s * self.delay_scale

    def within(self, at_s: float, for_s: float) -> bool:
        t = self.elapsed()
        k = self.delay_scale
        return t is not None and at_s * k <= t < (at_s + for_s) * k

    def fire_once(self, name: str) -> bool:
        """True the first time only: a one-shot fault fires once per desktop."""
        with self._lock:
            if name in self._fired:
                return False
            self._fired.add(name)
            return True


@dataclass
class PipelineSettings:
    mode: str  # the sim's path: scanout | shm (vsockenc)
    width: int
    height: int
    fps: float
    gop: int
    bitrate_kbps: int
    prerun_frames: int = 0
    faults: frozenset[str] = field(default_factory=frozenset)
    seed: int = 0
    delay_scale: float = 1.0  # SimConfig.delay_scale: scales the faults' timings
    #: ws_stream.go's VideoMode: scanout | shm | native | zerocopy (what the logs say)
    source: str = ""
    qemu_port: int = 15937
    node_id: int = PIPEWIRE_NODE_ID

    def pts_us(self, frame_number: int, running_us: int) -> int:
        """The frame header's PTS: synthetic on scanout, the pipeline's running time on vsockenc."""
        return frame_number * SCANOUT_PTS_STEP_US if self.mode == "scanout" else running_us


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
        fault_clock: FaultClock | None = None,
    ) -> None:
        self.settings = settings
        self.fault_clock = fault_clock or FaultClock(settings.delay_scale)
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
        #: qemu_unexpected_msg: the HXFR message QEMU sent instead of a FRAME_RESPONSE
        self.unexpected: bytes | None = None

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
        clock = self.fault_clock
        rng = random.Random(s.seed)
        n = 0
        frozen: np.ndarray | None = None
        p_frames = 0
        if "no_first_frame" in s.faults:  # the source never yields a frame (screenshots still work)
            log.info("video worker %s: no frame will come (fault no_first_frame)", self.name)
            self._post(self.prerun_done.set)
            self._stop.wait()
            return

        def produce(t_s: float, pts_us: int, live: bool) -> bool:
            nonlocal n, frozen, p_frames
            n += 1
            animating = self._animating()
            yuv: np.ndarray
            if live and "frozen" in s.faults and clock.within(FROZEN_AT_S, FROZEN_FOR_S):
                if frozen is None:
                    frozen = scene.render(n, t_s, vkcube=animating).copy()
                yuv = frozen
            elif live and "black" in s.faults and self._black_window():
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
                if not self._post(self._on_frame, self, Frame(n, s.pts_us(n, pts_us), data, unit.keyframe)):
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
            if not produce(pts / 1e6, pts, False):
                return
            pts += period_us
        self._post(self.prerun_done.set)

        live_start = time.monotonic()
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
            if "frames_stop" in s.faults and clock.due(FRAMES_STOP_AT_S):
                if not self.stalled:
                    self.stalled = True
                    log.info("video worker %s: frames stop (fault frames_stop)", self.name)
                self._stop.wait()
                return
            if (s.mode == "scanout" and "qemu_unexpected_msg" in s.faults and clock.due(QEMU_UNEXPECTED_AT_S)
                    and clock.fire_once("qemu_unexpected_msg")):
                self.unexpected = unexpected_scanout_message()
                self.error = scanout_read_error(self.unexpected)
                self.stalled = True
                log.info("video worker %s: QEMU sent %s (fault qemu_unexpected_msg)", self.name, self.error)
                self._post(self._on_error, self, self.error)
                return
            if not produce(pts / 1e6, pts, True):
                return
            last_pts = pts
            step = self._period_us(period_us)
            pts += step
            behind = int((time.monotonic() - base) * 1e6) - pts
            if behind > CATCH_UP_US:  # stalled too long: drop the missed frames instead of bursting
                pts += (behind // step) * step

    def _period_us(self, period_us: int) -> int:
        return period_us if self._animating() else max(period_us, int(KEEPALIVE_S * 1e6))

    def _black_window(self) -> bool:
        start = BLACK_AT_S
        if "frozen" in self.settings.faults:  # both: black comes after the freeze
            start = FROZEN_AT_S + FROZEN_FOR_S + 0.5
        return self.fault_clock.within(start, BLACK_FOR_S)
