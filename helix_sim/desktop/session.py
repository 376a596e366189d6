"""One session's desktop container as the API's proxy sees it: exec, screenshots and the video stream.

:class:`Desktop` composes the container's processes and exec (:mod:`.exec`), its ONE shared video
pipeline and viewers (:mod:`.pipeline`, rendering with :mod:`.video`) and its log (:mod:`.logs`). In
scanout mode every frame also reaches QEMU's frame export (``[FRAME_READY]`` lines, subscribers).

Its viewers register in desktop-bridge's viewer registry (:mod:`.registry`), which this desktop sweeps for
stale viewers every ``stale_sweep_interval_s``. A pipeline error (``broadcastError``) ends every viewer
with a 0x31. The faults' timings count from the first viewer's stream (:class:`~.pipeline.FaultClock`).

Faults implemented in this package (``SimConfig.faults``, see ``helix_sim.config.FAULTS``): here
``stream_error``, ``container_oom`` and the trigger of ``vm_crash_stream``; in :mod:`.exec`
``exec_forbidden`` and ``vkcube_dies``; in :mod:`.pipeline` ``frames_stop``, ``frozen``, ``black``,
``corrupt_h264``, ``qemu_unexpected_msg``, ``no_first_frame`` and ``replay_burst``; in :mod:`.logs`
``resource_ids_zero``; ``low_fps`` (via ``effective_fps``) and ``slow_after_running`` (the API passes the
slowed ``fps``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import numpy as np

from harness.protocols.stream import Init

from .._tasks import cancel_and_wait
from ..config import SimConfig
from .errors import DesktopError, DesktopUnavailable, StreamStartError
from .exec import ExecResult, ProcessTable
from .logs import DesktopLog
from .pipeline import (
    QUEUE_SLACK,
    SCANOUT_ID,
    SCANOUT_PTS_STEP_NS,
    FaultClock,
    Frame,
    PipelineSettings,
    Subscriber,
    VideoPipeline,
    resource_id,
    upstream_video_mode,
)
from .registry import ViewerRegistry
from .video import Scene

log = logging.getLogger("helix_sim.desktop")

#: Fault timing, in seconds since the first viewer's stream started (times ``delay_scale``).
OOM_AT_S = 2.0
VM_CRASH_AT_S = 2.0
VM_CRASH_REASON = "EXC_BAD_ACCESS (SIGSEGV) in virgl_renderer_transfer_read_iov"


class Desktop:
    """One session's desktop container as the API's proxy sees it (exec, screenshot, stream)."""

    def __init__(
        self,
        config: SimConfig,
        *,
        session_id: str,
        container: Any,
        qemu: Any = None,
        host: Any = None,
        fps: float | None = None,
        pid_base: int = 400,
    ) -> None:
        self.config = config
        self.session_id = session_id
        self.container = container
        self.qemu = qemu
        self.host = host
        self.fps = float(fps if fps is not None else config.effective_fps)
        self.logs = DesktopLog(container, session_id)
        self.processes = ProcessTable(
            config.faults, session_id=session_id, hostname=str(getattr(container, "id", "desktop"))[:12],
            slog=self.logs.slog, on_change=self._content_changed, pid_base=pid_base,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pipeline: VideoPipeline | None = None
        self._pipeline_lock = asyncio.Lock()
        self._subscribers: set[Subscriber] = set()
        self._viewer_numbers = 0
        self._grace_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._streamed = False
        self._oom_done = False
        self._shut = False
        self._scene: Scene | None = None  # screenshots without a running pipeline
        self._scene_lock = threading.Lock()
        self._animating = False  # read by the worker thread; written on the loop only
        self.pipelines_started = 0
        self.fault_clock = FaultClock(config.delay_scale)
        self.registry = self._new_registry()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """The container's processes come up (called once the container exists)."""
        self._loop = asyncio.get_running_loop()
        self._boot()
        self._spawn(self._sweep_stale_viewers())

    def _new_registry(self) -> ViewerRegistry:
        """desktop-bridge's registry (one per process: a container restart starts a new one, IDs from 1)."""
        return ViewerRegistry(self.session_id, stale_timeout_s=self.config.stale_client_timeout_s,
                              zerolog=self.logs.zerolog)

    async def _sweep_stale_viewers(self) -> None:
        """cleanupStaleClients: every ``stale_sweep_interval_s`` drop viewers silent for too long."""
        while True:
            await asyncio.sleep(self.config.stale_sweep_interval_s)
            if not self._shut:
                self.registry.sweep()

    def _boot(self) -> None:
        self.logs.booted = time.monotonic()  # gst_init / process start of desktop-bridge
        w, h = self.config.width, self.config.height
        self.processes.boot(w, h, self.fps)
        self._content_changed()
        self.logs.line(f"[startup] GNOME headless: gnome-shell --headless --unsafe-mode --virtual-monitor {w}x{h}@{int(round(self.fps))}")
        self.logs.slog("INFO", "desktop server listening", addr=":9876", session_id=self.session_id)

    @property
    def available(self) -> bool:
        """desktop-bridge is reachable: the container exists and runs."""
        if self._shut:
            return False
        return bool(getattr(self.container, "running", True))

    @property
    def pipeline(self) -> VideoPipeline | None:
        return self._pipeline

    @property
    def viewers(self) -> int:
        return len(self._subscribers)

    def resume(self) -> None:
        """The API came back (its restart left the container running): reachable again."""
        self._loop = asyncio.get_running_loop()
        self._shut = False

    async def shutdown(self, reason: str = "shutdown") -> None:
        """End every viewer, stop the pipeline (and join its thread), cancel timers. Idempotent."""
        self._shut = True
        self._end_viewers(reason)
        if self._grace_task is not None:
            self._grace_task.cancel()
        await cancel_and_wait(self._tasks)
        await self._stop_pipeline("desktop stopped")

    # -- processes and exec ---------------------------------------------------------------

    @property
    def vkcube_running(self) -> bool:
        return self.processes.vkcube_running

    @property
    def animating(self) -> bool:
        """vkcube (or another GL demo) keeps the screen changing. Safe to read from any thread."""
        return self._animating

    def _content_changed(self) -> None:
        """The process table changed (on the loop): recompute what the screen shows, re-plan the worker."""
        animating = self.processes.animating
        if animating != self._animating:
            self._animating = animating
            if self._pipeline is not None:
                self._pipeline.wake()

    async def exec(
        self,
        command: list[str],
        *,
        background: bool = False,
        env: dict[str, str] | None = None,
        timeout: int = 30,
    ) -> ExecResult:
        """desktop-bridge POST /exec."""
        return await self.processes.exec(command, background=background, env=env, timeout=timeout)

    # -- screenshot -----------------------------------------------------------------------

    async def screenshot(self, fmt: str = "jpeg", quality: int = 70) -> tuple[bytes, str]:
        """desktop-bridge GET /screenshot: ``format`` jpeg (the default) or anything else for PNG, ``quality``
        clamped to 1..100: (bytes, content type ``image/<format>``)."""
        if not self.available:
            raise DesktopUnavailable("desktop is not running")
        fmt = "jpeg" if fmt in ("", "jpeg") else "png"
        quality = max(1, min(100, quality))
        pipeline = self._pipeline
        yuv = pipeline.last_yuv if pipeline is not None else None
        animating = self.animating
        t_s = time.monotonic() - self.logs.booted
        data, ctype = await asyncio.to_thread(self._encode_picture, yuv, animating, t_s, fmt, quality)
        self.logs.slog("INFO", "screenshot captured", format=fmt, quality=quality, include_cursor=True, size=len(data))
        return data, ctype

    def _encode_picture(self, yuv: np.ndarray | None, animating: bool, t_s: float, fmt: str, quality: int) -> tuple[bytes, str]:
        import cv2  # heavy import, only for screenshots

        if yuv is None:
            with self._scene_lock:
                if self._scene is None:
                    self._scene = Scene(self.config.width, self.config.height)
                yuv = self._scene.render(0, t_s, vkcube=animating).copy()
        bgr = cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)
        if fmt == "png":
            ok, buf = cv2.imencode(".png", bgr)
            ctype = "image/png"
        else:
            ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), max(1, min(100, quality))])
            ctype = "image/jpeg"
        if not ok:  # pragma: no cover - OpenCV refuses only on broken input
            raise DesktopError(f"could not encode the screenshot as {fmt}")
        return buf.tobytes(), ctype

    # -- streaming ------------------------------------------------------------------------

    def stream_error_message(self, mode: str) -> str:
        if mode == "scanout":
            return f"failed to start scanout source: subscribe rejected for scanout {SCANOUT_ID}"
        return "failed to start video: pipeline creation blocked: too many consecutive failures for node 47 (cooldown active)"

    async def open_stream(self, init: Init) -> Subscriber:
        """A viewer sent its init: join (or build) the shared pipeline. Raises StreamStartError."""
        if not self.available:
            raise DesktopUnavailable("desktop is not running")
        source = upstream_video_mode(init.video_mode, self.config.video_mode)
        if self._pipeline is not None:
            source = self._pipeline.settings.source
        mode = "scanout" if source == "scanout" else "shm"
        if "stream_error" in self.config.faults:
            message = self.stream_error_message(mode)
            self.logs.slog("ERROR", "failed to start video stream", err=message, session_id=self.session_id)
            raise StreamStartError(message)
        async with self._pipeline_lock:
            if self._grace_task is not None:
                self._grace_task.cancel()
                self._grace_task = None
            self.fault_clock.start()  # the first viewer's stream: the faults' timings count from here
            pipeline = self._pipeline
            if pipeline is None or pipeline.error is not None:
                pipeline = self._start_pipeline(init, source)
            assert pipeline is not None
            await pipeline.prerun_done.wait()
            if pipeline.error is not None:
                self._pipeline = None
                raise StreamStartError(f"video pipeline failed: {pipeline.error}")
        if not self.available:
            raise DesktopUnavailable("desktop is not running")
        self._viewer_numbers += 1
        capacity = pipeline.settings.gop + QUEUE_SLACK
        sub = Subscriber(self._viewer_numbers, init, pipeline.settings.mode, capacity, tuple(pipeline.gop_frames))
        self._subscribers.add(sub)
        self.logs.slog("INFO", "video client subscribed", client=sub.number, clients=len(self._subscribers),
                   replay_frames=len(sub.replay), session_id=self.session_id)
        if not self._streamed:
            self._streamed = True
            self._after_first_stream()
        return sub

    def close_stream(self, sub: Subscriber) -> None:
        """A viewer left. The pipeline stops ``video_grace_s`` after the last one."""
        if sub not in self._subscribers:
            return
        self._subscribers.discard(sub)
        sub.end("closed")
        self.logs.slog("INFO", "video client unsubscribed", client=sub.number, clients=len(self._subscribers),
                   session_id=self.session_id)
        if not self._subscribers and self._pipeline is not None and not self._shut:
            if self._grace_task is None or self._grace_task.done():
                self._grace_task = self._spawn(self._grace())

    async def _grace(self) -> None:
        await asyncio.sleep(self.config.video_grace_s)
        if not self._subscribers:
            await self._stop_pipeline("no clients for the grace period")

    def _start_pipeline(self, init: Init, source: str) -> VideoPipeline:
        assert self._loop is not None
        gop = init.extra.get("gop_size")
        gop = gop if isinstance(gop, int) and not isinstance(gop, bool) and 1 <= gop <= 100_000 else self.config.gop
        bitrate = self.config.bitrate_kbps
        prerun = 0
        if "replay_burst" in self.config.faults:
            prerun = max(1, min(gop - 1, int(round(self.fps)))) if gop > 1 else 1
        settings = PipelineSettings(
            mode="scanout" if source == "scanout" else "shm", width=self.config.width, height=self.config.height,
            fps=self.fps, gop=gop, bitrate_kbps=bitrate, prerun_frames=prerun, faults=self.config.faults,
            seed=self.config.seed, delay_scale=self.config.delay_scale, source=source,
            qemu_port=getattr(self.qemu, "port", 15937) or 15937,
        )
        self.pipelines_started += 1
        pipeline = VideoPipeline(
            settings, name=f"{self.session_id[-6:]}-{self.pipelines_started}", loop=self._loop,
            animating=lambda: self.animating, on_frame=self._on_frame, on_error=self._on_pipeline_error,
            fault_clock=self.fault_clock,
        )
        self._pipeline = pipeline
        self.logs.pipeline_start(settings, init)
        pipeline.start()
        return pipeline

    async def _stop_pipeline(self, why: str) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is None:
            return
        await pipeline.stop()
        if self.available:
            self.logs.slog("INFO", "video pipeline stopped", reason=why, frames=pipeline.frames, session_id=self.session_id)

    def _on_pipeline_error(self, pipeline: VideoPipeline, message: str) -> None:
        """broadcastError: every viewer gets the error as a 0x31 and no more frames; the source is dead."""
        if pipeline is not self._pipeline:
            return
        if pipeline.unexpected is not None and self.qemu is not None:
            publish_raw = getattr(self.qemu, "publish_raw", None)
            if publish_raw is not None:
                publish_raw(SCANOUT_ID, pipeline.unexpected)
        if pipeline.settings.mode == "scanout":
            self.logs.slog("ERROR", "QEMU frame read error", err=message)
        self.logs.zerolog("error", "[SHARED_VIDEO] Pipeline error", error=message, node_id=pipeline.settings.node_id)
        for sub in list(self._subscribers):
            self.logs.slog("ERROR", "pipeline error received", err=message)
            self.logs.slog("INFO", "sending stream error to client", error=message)
            sub.fail(message)
        self._subscribers.clear()
        self._spawn(self._stop_pipeline("pipeline error"))

    def _on_frame(self, pipeline: VideoPipeline, frame: Frame) -> None:
        """On the loop: a frame from the worker. GOP bookkeeping, fan-out, per-frame logs."""
        if pipeline is not self._pipeline or self._shut:
            return
        frame = Frame(frame.number, frame.pts_us, frame.data, frame.keyframe, time.monotonic())
        pipeline.frames = frame.number
        if frame.keyframe:
            pipeline.gop_frames = [frame]
        elif pipeline.gop_frames and len(pipeline.gop_frames) < pipeline.settings.gop * 4:
            pipeline.gop_frames.append(frame)
        for sub in list(self._subscribers):
            sub.offer(frame)
        zero = "resource_ids_zero" in self.config.faults
        scanout = pipeline.settings.mode == "scanout"
        if self.qemu is not None:
            # Every page flip reaches helix_scanout_frame_ready; only a scanout subscriber (this desktop on the
            # scanout path) makes it encode and log [FRAME_READY] with the resource (NO_SUBSCRIBER otherwise).
            self.qemu.frame_ready(SCANOUT_ID, resource_id(frame.number, zero), subscribed=scanout,
                                  width=self.config.width, height=self.config.height)
            if scanout and getattr(self.qemu, "subscribers", 0):
                self.qemu.publish(SCANOUT_ID, frame.data, pts_ns=frame.number * SCANOUT_PTS_STEP_NS,
                                  keyframe=frame.keyframe)
        self.logs.frame(pipeline.settings, frame, resource_ids_zero=zero)

    def _end_viewers(self, reason: str) -> None:
        for sub in list(self._subscribers):
            sub.end(reason)
        self._subscribers.clear()

    # -- faults of streaming ---------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _after_first_stream(self) -> None:
        if "container_oom" in self.config.faults and not self._oom_done:
            self._spawn(self._oom_after(self.config.delay(OOM_AT_S)))
        if "vm_crash_stream" in self.config.faults:
            self._spawn(self._vm_crash_after(self.config.delay(VM_CRASH_AT_S)))

    async def _oom_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._shut or self._oom_done:
            return
        self._oom_done = True
        log.info("desktop %s: OOM kill (fault container_oom)", self.session_id)
        self.logs.slog("WARN", "memory pressure: cgroup memory usage near limit", usage_mb=3981, limit_mb=4096)
        # The kernel kills the container's main process (the restart policy brings it back at once):
        # every viewer's socket dies with desktop-bridge, the processes and the pipeline are gone.
        self.container.restart(oom_killed=True)
        self._end_viewers("oom")
        self.registry = self._new_registry()  # a new desktop-bridge process
        self.processes.clear()
        self._content_changed()
        await self._stop_pipeline("container OOM-killed")
        self.logs.line("Killed")
        self._boot()
        self.logs.slog("INFO", "desktop-bridge restarted after container restart", restart_count=getattr(self.container, "restart_count", 1))

    async def _vm_crash_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._shut or self.host is None:
            return
        log.info("desktop %s: the VM crashes mid-stream (fault vm_crash_stream)", self.session_id)
        self._end_viewers("vm_crash")
        # The host runs the crash as its own task (it stops the API, hence this desktop): not awaited here.
        self.host.crash_vm(VM_CRASH_REASON)
