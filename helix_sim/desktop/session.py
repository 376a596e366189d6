"""A session's desktop: the container's processes, exec allowlist, logs and ONE shared video pipeline.

What runs inside a Helix desktop container (``ubuntu-external-…``), as far as the harness can see it:

- **exec** (desktop-bridge ``/exec``, ``api/pkg/desktop/exec.go``): the real allowlist, 403
  ``command not allowed: X``, the ``{success, output, error, exit_code, pid}`` shape (``output``,
  ``error`` and ``pid`` omitted when empty, as Go's ``omitempty`` does), a small process table so
  ``vkcube`` started in the background is seen by ``pkill -0 -f vkcube`` and ended by ``pkill -f vkcube``.
- **the video pipeline** (``shared_video_source.go``): one per desktop, built when the first viewer
  subscribes, shared by every viewer, stopped ``video_grace_s`` after the last one leaves. A worker
  thread renders (:class:`~helix_sim.video.Scene`) and encodes (:class:`~helix_sim.video.H264Encoder`)
  on a drift-free monotonic schedule: ``fps`` frames/s while vkcube (or another GL demo) animates the
  screen, one keepalive frame every 500 ms on a static screen (pipewiresrc ``keepalive-time=500``).
  Frames are fanned out on the event loop into bounded per-viewer queues; a viewer that joins a
  running pipeline first gets the current GOP as replay frames.
- **the container log**: desktop-bridge slog lines (``time=… level=INFO msg=…``) and, in shm mode,
  the vsockenc GStreamer debug lines (macos-frame-export.md §2). Per-frame lines are logged for the
  first :data:`LOG_EVERY_FRAME_UNTIL` frames and then every :data:`LOG_SAMPLE_EVERY` th, so a long
  stream does not flood the (already bounded) engine log.

Faults implemented here (``SimConfig.faults``, see ``helix_sim.config.FAULTS``): ``exec_forbidden``,
``vkcube_dies``, ``stream_error``, ``frames_stop``, ``low_fps`` (via ``effective_fps``), ``frozen``,
``black``, ``corrupt_h264``, ``replay_burst``, ``resource_ids_zero``, ``container_oom``,
``slow_after_running`` (the API passes the slowed ``fps``) and the trigger of ``vm_crash_stream``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from ..errors import SimError
from harness.protocols.stream import Init
from .._tasks import cancel_and_wait
from ..config import SimConfig
from .video import H264Encoder, Scene, corrupt_au

log = logging.getLogger("helix_sim.desktop")

#: desktop-bridge's exec allowlist (api/pkg/desktop/exec.go).
ALLOWED_COMMANDS = frozenset({
    "vkcube", "glxgears", "pkill", "killall", "ls", "echo", "weston-simple-egl", "claude", "cat", "test",
    "npm", "helix-claude-auth-wrapper", "helix-codex-auth-wrapper", "git",
})
#: Programs that keep the screen changing while they run (the Scene draws its cube for them).
ANIMATORS = frozenset({"vkcube", "glxgears", "weston-simple-egl"})
GIT_NOT_ALLOWED = "git invocation not allowed (only 'git config --global user.name|user.email <value>')"

SCANOUT_ID = 1
#: Resource ids of the triple-buffered scanout (QEMU's [FRAME_READY] lines, vsockenc's DMA-BUF lines).
SCANOUT_RESOURCES = (37, 38, 39)
#: A frame at least this often on a static screen (pipewiresrc keepalive-time=500).
KEEPALIVE_S = 0.5
#: Fault timing, in seconds of live pipeline time (frozen, black, frames_stop) or of streaming (others).
FROZEN_AT_S, FROZEN_FOR_S = 2.0, 3.0
BLACK_AT_S, BLACK_FOR_S = 2.0, 2.0
FRAMES_STOP_AT_S = 3.0
OOM_AT_S = 4.0
VM_CRASH_AT_S = 4.0
VM_CRASH_REASON = "EXC_BAD_ACCESS (SIGSEGV) in virgl_renderer_transfer_read_iov"
#: A worker that falls behind its schedule by up to this much catches up (frames go out back to back,
#: the average rate stays exact); further behind, the missed frames are dropped.
CATCH_UP_US = 250_000
#: corrupt_h264: every Nth P-frame is damaged.
CORRUPT_EVERY = 15
#: Per-frame log lines: every frame up to here, then every LOG_SAMPLE_EVERY-th.
LOG_EVERY_FRAME_UNTIL = 100
LOG_SAMPLE_EVERY = 50
#: Frames a viewer's queue may hold beyond one GOP before it counts as too slow (ws_stream.go: GOP + 30).
QUEUE_SLACK = 30
#: The desktop's own processes (pkill -0 finds them; the sim does not let exec kill them).
SYSTEM_PROCESSES = (
    ("gnome-shell", "gnome-shell --headless --unsafe-mode --virtual-monitor {w}x{h}@{fps}"),
    ("pipewire", "/usr/bin/pipewire"),
    ("wireplumber", "/usr/bin/wireplumber"),
    ("Xwayland", "/usr/bin/Xwayland :0 -rootless -noreset"),
    ("desktop-bridge", "/usr/local/bin/desktop-bridge"),
)
GST_PID = 333
GST_THREAD = "0xe7a330000c00"
GST_OBJECT = "vsockenc0"
QEMU_GUEST_HOST = "10.0.2.2"

_FAKE_DIRS = {
    "/": "bin\nboot\ndev\netc\nhome\nlib\nmedia\nmnt\nopt\nproc\nroot\nrun\nsbin\nsrv\nsys\ntmp\nusr\nvar",
    "/run/user/1000": "bus\npipewire-0\npipewire-0.lock\nwayland-0\nwayland-0.lock",
    "/home/retro": "Desktop\nDocuments\nDownloads\nwork",
    "/tmp": ".X11-unix",
    "/tmp/.X11-unix": "X0",
}
_BINARIES = {"/usr/bin/vkcube", "/usr/bin/glxgears", "/usr/bin/weston-simple-egl", "/usr/bin/pkill", "/usr/bin/cat"}
_FAKE_FILES = {
    "/etc/os-release": (
        'PRETTY_NAME="Ubuntu 24.04.2 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\n'
        'VERSION="24.04.2 LTS (Noble Numbat)"\nID=ubuntu\nID_LIKE=debian'
    ),
    "/etc/hostname": "{hostname}",
}
_SOCKETS = {"/run/user/1000/wayland-0", "/run/user/1000/pipewire-0", "/tmp/.X11-unix/X0", "/run/user/1000/bus"}


class DesktopError(SimError):
    """Something the simulated desktop refuses or cannot do."""

    default_phase = "desktop"


class DesktopUnavailable(DesktopError):
    """The desktop (its container, its desktop-bridge) is not there: the API answers 503."""


class StreamStartError(DesktopError):
    """Starting the video for a viewer failed: the API sends this message as a 0x31 StreamError."""

    default_phase = "stream"


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What desktop-bridge's /exec answers: an HTTP status and a JSON object (200) or a text body."""

    status: int
    body: dict[str, Any] | str

    @property
    def json(self) -> dict[str, Any]:
        if not isinstance(self.body, dict):
            raise DesktopError(f"exec answered {self.status} with text, not JSON: {self.body!r}")
        return self.body


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded access unit of the shared pipeline."""

    number: int  # 1-based, cumulative for the pipeline; also the counter stamped in the pixels
    pts_us: int  # pipeline running time
    data: bytes
    keyframe: bool
    published: float = 0.0  # time.monotonic() when the loop received it from the worker


@dataclass
class _Process:
    pid: int
    name: str
    argv: tuple[str, ...]
    system: bool = False

    @property
    def cmdline(self) -> str:
        return " ".join(self.argv)


def go_time(t: float | None = None) -> str:
    """Go slog's default time format in UTC, millisecond precision: 2026-08-08T12:34:56.789Z."""
    dt = datetime.fromtimestamp(time.time() if t is None else t, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _slog_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = "[" + " ".join(str(v) for v in value) + "]"
    else:
        text = str(value)
    if text == "" or any(c in text for c in ' ="\\\t\n') or not text.isprintable():
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
    return text


def slog_line(level: str, msg: str, **attrs: Any) -> str:
    """One line as Go's slog TextHandler writes it."""
    parts = [f"time={go_time()}", f"level={level}", f"msg={_slog_value(msg)}"]
    parts.extend(f"{k}={_slog_value(v)}" for k, v in attrs.items())
    return " ".join(parts)


def gst_line(elapsed_s: float, level: str, where: str, msg: str) -> str:
    """A GStreamer debug line of category vsockenc (timestamp = time since gst_init).

    ``where`` is ``file:line:function``. Matches the reference sample byte for byte for DEBUG.
    """
    total_ns = max(0, int(elapsed_s * 1e9))
    secs, ns = divmod(total_ns, 1_000_000_000)
    hours, rem = divmod(secs, 3600)
    minutes, seconds = divmod(rem, 60)
    ts = f"{hours}:{minutes:02d}:{seconds:02d}.{ns:09d}"
    return f"{ts} {GST_PID:>5} {GST_THREAD} {level:<5}{'vsockenc':>20} {where}:<{GST_OBJECT}> {msg}"


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


# --------------------------------------------------------------------------- desktop


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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = pid_base
        self._procs: dict[int, _Process] = {}
        self._pipeline: VideoPipeline | None = None
        self._pipeline_lock = asyncio.Lock()
        self._subscribers: set[Subscriber] = set()
        self._viewer_numbers = 0
        self._grace_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._booted = time.monotonic()  # gst_init / process start of desktop-bridge
        self._streamed = False
        self._oom_done = False
        self._shut = False
        self._scene: Scene | None = None  # screenshots without a running pipeline
        self._scene_lock = threading.Lock()
        self._animating = False  # read by the worker thread; written on the loop only
        self._stats_started = 0.0
        self.pipelines_started = 0

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """The container's processes come up (called once the container exists)."""
        self._loop = asyncio.get_running_loop()
        self._boot()

    def _boot(self) -> None:
        self._booted = time.monotonic()
        self._procs = {}
        w, h = self.config.width, self.config.height
        for name, cmd in SYSTEM_PROCESSES:
            pid = self._next_pid()
            argv = tuple(cmd.format(w=w, h=h, fps=int(round(self.fps))).split())
            self._procs[pid] = _Process(pid, name, argv, system=True)
        self._content_changed()
        self._log(f"[startup] GNOME headless: gnome-shell --headless --unsafe-mode --virtual-monitor {w}x{h}@{int(round(self.fps))}")
        self._slog("INFO", "desktop server listening", addr=":9876", session_id=self.session_id)

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

    def _next_pid(self) -> int:
        self._pid += 1 + (self._pid * 7919) % 13
        return self._pid

    @property
    def vkcube_running(self) -> bool:
        return any(p.name == "vkcube" for p in self._procs.values())

    @property
    def animating(self) -> bool:
        """vkcube (or another GL demo) keeps the screen changing. Safe to read from any thread."""
        return self._animating

    def _content_changed(self) -> None:
        """The process table changed (on the loop): recompute what the screen shows, re-plan the worker."""
        animating = any(p.name in ANIMATORS for p in self._procs.values())
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
        if not command:
            return ExecResult(400, "command is required\n")
        if not all(isinstance(a, str) for a in command):
            return ExecResult(400, "invalid JSON: json: cannot unmarshal value into Go struct field ExecRequest.command of type string\n")
        name = command[0]
        if name not in ALLOWED_COMMANDS or (name == "vkcube" and "exec_forbidden" in self.config.faults):
            self._slog("WARN", "exec: blocked disallowed command", command=name)
            return ExecResult(403, f"command not allowed: {name}\n")
        if name == "git" and not _git_allowed(command):
            self._slog("WARN", "exec: blocked git invocation", args=command)
            return ExecResult(403, GIT_NOT_ALLOWED + "\n")
        self._slog("INFO", "exec: executing command", command=command, background=background)
        if background:
            pid = self._next_pid()
            self._slog("INFO", "exec: started background command", pid=pid, command=command)
            self._start_process(pid, command)
            return ExecResult(200, {"success": True, "exit_code": 0, "pid": pid})
        output, code, error = await self._run_foreground(command, timeout if timeout > 0 else 30)
        body: dict[str, Any] = {"success": code == 0 and not error, "exit_code": code}
        if output:
            body["output"] = output
        if error:
            body["error"] = error
        return ExecResult(200, body)

    def _start_process(self, pid: int, command: list[str]) -> None:
        name = command[0].rsplit("/", 1)[-1]
        if name not in ANIMATORS:
            return  # echo, ls, … run in the background and exit at once
        if name == "vkcube" and "vkcube_dies" in self.config.faults:
            log.info("desktop %s: vkcube (pid %d) dies at once (fault vkcube_dies)", self.session_id, pid)
            return
        self._procs[pid] = _Process(pid, name, tuple(command))
        self._content_changed()

    async def _run_foreground(self, command: list[str], timeout: int) -> tuple[str, int, str]:
        name, args = command[0], command[1:]
        if name in ANIMATORS:  # runs until the request's timeout kills it (exec.CommandContext)
            pid = self._next_pid()
            if name == "vkcube" and "vkcube_dies" in self.config.faults:
                return "", 1, "exit status 1"
            self._procs[pid] = _Process(pid, name, tuple(command))
            self._content_changed()
            try:
                await asyncio.sleep(timeout)
            finally:
                if self._procs.pop(pid, None) is not None:
                    self._content_changed()
            return "", -1, "signal: killed"
        if name in ("pkill", "killall"):
            out, code = self._kill(name, args)
        elif name == "echo":
            out, code = " ".join(a for a in args if a != "-n"), 0
        elif name == "ls":
            out, code = self._ls(args)
        elif name == "cat":
            out, code = self._cat(args)
        elif name == "test":
            out, code = "", self._test(args)
        elif name == "npm":
            out, code = ("10.9.2", 0) if args[:1] in (["--version"], ["-v"]) else ("up to date in 1s", 0)
        elif name == "git":
            out, code = "", 0
        elif name == "claude":
            out, code = ("2.0.14 (Claude Code)", 0) if args[:1] == ["--version"] else ("", 0)
        else:  # the auth wrappers
            out, code = "", 0
        return out, code, ("" if code == 0 else f"exit status {code}")

    def _kill(self, name: str, args: list[str]) -> tuple[str, int]:
        signal0 = False
        full = False
        exact = False
        patterns: list[str] = []
        it = iter(args)
        for arg in it:
            if arg in ("-f", "--full"):
                full = True
            elif arg in ("-x", "--exact", "-e"):
                exact = True
            elif arg in ("-0", "--signal=0") or arg in ("-s0",):
                signal0 = True
            elif arg in ("-s", "--signal"):
                signal0 = next(it, "") in ("0",)
            elif arg.startswith("-") and len(arg) > 1:
                continue  # other signals (-9, -TERM, …) and options
            else:
                patterns.append(arg)
        if not patterns:
            if name == "pkill":
                return "pkill: no matching criteria specified\nTry `pkill --help' for more information.", 2
            return "Usage: killall [OPTION]... [--] NAME...", 1
        matched: list[_Process] = []
        for proc in self._procs.values():
            for pat in patterns:
                if name == "killall":
                    hit = proc.name == pat
                else:
                    subject = proc.cmdline if full else proc.name[:15]
                    try:
                        hit = bool(re.fullmatch(pat, subject) if exact else re.search(pat, subject))
                    except re.error:
                        return f"pkill: invalid regular expression: {pat}", 2
                if hit:
                    matched.append(proc)
                    break
        if not matched:
            if name == "killall":
                return "\n".join(f"{p}: no process found" for p in patterns), 1
            return "", 1
        if not signal0:
            changed = False
            for proc in matched:
                if not proc.system:  # the sim keeps its own desktop alive
                    self._procs.pop(proc.pid, None)
                    changed = True
            if changed:
                self._content_changed()
        return "", 0

    def _ls(self, args: list[str]) -> tuple[str, int]:
        paths = [a for a in args if not a.startswith("-")] or ["/home/retro"]
        out: list[str] = []
        code = 0
        for p in paths:
            norm = p.rstrip("/") or "/"
            if norm in _FAKE_DIRS:
                out.append(_FAKE_DIRS[norm])
            elif norm in _FAKE_FILES or norm in _SOCKETS or norm in _BINARIES:
                out.append(p)
            else:
                out.append(f"ls: cannot access '{p}': No such file or directory")
                code = 2
        return "\n".join(out), code

    def _cat(self, args: list[str]) -> tuple[str, int]:
        out: list[str] = []
        code = 0
        for p in (a for a in args if not a.startswith("-")):
            if p in _FAKE_FILES:
                out.append(_FAKE_FILES[p].format(hostname=str(getattr(self.container, "id", "desktop"))[:12]))
            elif p in _FAKE_DIRS:
                out.append(f"cat: {p}: Is a directory")
                code = 1
            else:
                out.append(f"cat: {p}: No such file or directory")
                code = 1
        return "\n".join(out), code

    def _test(self, args: list[str]) -> int:
        if len(args) == 2 and args[0] in ("-e", "-f", "-d", "-S", "-r", "-x"):
            p = args[1].rstrip("/") or "/"
            files = p in _FAKE_FILES or p in _BINARIES
            kind = {"-e": files or p in _FAKE_DIRS or p in _SOCKETS, "-f": files, "-d": p in _FAKE_DIRS,
                    "-S": p in _SOCKETS, "-r": files or p in _FAKE_DIRS, "-x": p in _BINARIES or p in _FAKE_DIRS}
            return 0 if kind[args[0]] else 1
        if len(args) == 2 and args[0] in ("-n", "-z"):
            return 0 if (bool(args[1]) == (args[0] == "-n")) else 1
        if len(args) == 1:
            return 0 if args[0] else 1
        if len(args) == 3 and args[1] in ("=", "!="):
            return 0 if ((args[0] == args[2]) == (args[1] == "=")) else 1
        return 2

    # -- screenshot -----------------------------------------------------------------------

    async def screenshot(self, fmt: str = "jpeg", quality: int = 70) -> tuple[bytes, str]:
        """The current picture as JPEG (default) or PNG: (bytes, content type)."""
        if not self.available:
            raise DesktopUnavailable("desktop is not running")
        pipeline = self._pipeline
        yuv = pipeline.last_yuv if pipeline is not None else None
        animating = self.animating
        t_s = time.monotonic() - self._booted
        return await asyncio.to_thread(self._encode_picture, yuv, animating, t_s, fmt, quality)

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
        mode = normalize_video_mode(init.video_mode, self.config.video_mode)
        if self._pipeline is not None:
            mode = self._pipeline.settings.mode
        if "stream_error" in self.config.faults:
            message = self.stream_error_message(mode)
            self._slog("ERROR", "failed to start video stream", err=message, session_id=self.session_id)
            raise StreamStartError(message)
        async with self._pipeline_lock:
            if self._grace_task is not None:
                self._grace_task.cancel()
                self._grace_task = None
            pipeline = self._pipeline
            if pipeline is None or pipeline.error is not None:
                pipeline = self._start_pipeline(init, mode)
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
        self._slog("INFO", "video client subscribed", client=sub.number, clients=len(self._subscribers),
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
        self._slog("INFO", "video client unsubscribed", client=sub.number, clients=len(self._subscribers),
                   session_id=self.session_id)
        if not self._subscribers and self._pipeline is not None and not self._shut:
            if self._grace_task is None or self._grace_task.done():
                self._grace_task = self._spawn(self._grace())

    async def _grace(self) -> None:
        await asyncio.sleep(self.config.video_grace_s)
        if not self._subscribers:
            await self._stop_pipeline("no clients for the grace period")

    def _start_pipeline(self, init: Init, mode: str) -> VideoPipeline:
        assert self._loop is not None
        gop = init.extra.get("gop_size")
        gop = gop if isinstance(gop, int) and not isinstance(gop, bool) and 1 <= gop <= 100_000 else self.config.gop
        bitrate = self.config.bitrate_kbps
        prerun = 0
        if "replay_burst" in self.config.faults:
            prerun = max(1, min(gop - 1, int(round(self.fps)))) if gop > 1 else 1
        settings = PipelineSettings(
            mode=mode, width=self.config.width, height=self.config.height, fps=self.fps, gop=gop,
            bitrate_kbps=bitrate, prerun_frames=prerun, faults=self.config.faults, seed=self.config.seed,
            delay_scale=self.config.delay_scale,
        )
        self.pipelines_started += 1
        pipeline = VideoPipeline(
            settings, name=f"{self.session_id[-6:]}-{self.pipelines_started}", loop=self._loop,
            animating=lambda: self.animating, on_frame=self._on_frame, on_error=self._on_pipeline_error,
        )
        self._pipeline = pipeline
        self._stats_started = time.monotonic()
        self._log_pipeline_start(settings)
        pipeline.start()
        return pipeline

    async def _stop_pipeline(self, why: str) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is None:
            return
        await pipeline.stop()
        if self.available:
            self._slog("INFO", "video pipeline stopped", reason=why, frames=pipeline.frames, session_id=self.session_id)

    def _on_pipeline_error(self, pipeline: VideoPipeline, message: str) -> None:
        if pipeline is not self._pipeline:
            return
        self._slog("ERROR", "video pipeline error", err=message, session_id=self.session_id)

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
        self._log_frame(pipeline.settings, frame)

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
        self._slog("WARN", "memory pressure: cgroup memory usage near limit", usage_mb=3981, limit_mb=4096)
        # The kernel kills the container's main process (the restart policy brings it back at once):
        # every viewer's socket dies with desktop-bridge, the processes and the pipeline are gone.
        self.container.restart(oom_killed=True)
        self._end_viewers("oom")
        self._procs.clear()
        self._content_changed()
        await self._stop_pipeline("container OOM-killed")
        self._log("Killed")
        self._boot()
        self._slog("INFO", "desktop-bridge restarted after container restart", restart_count=getattr(self.container, "restart_count", 1))

    async def _vm_crash_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._shut or self.host is None:
            return
        log.info("desktop %s: the VM crashes mid-stream (fault vm_crash_stream)", self.session_id)
        self._end_viewers("vm_crash")
        # The host runs the crash as its own task (it stops the API, hence this desktop): not awaited here.
        self.host.crash_vm(VM_CRASH_REASON)

    # -- logs ------------------------------------------------------------------------------

    def _log(self, line: str, stream: str = "stdout") -> None:
        try:
            self.container.log(line, stream=stream)
        except Exception as exc:  # noqa: BLE001 - a removed container; logging must never break the stream
            log.debug("container log failed: %s", exc)

    def _slog(self, level: str, msg: str, **attrs: Any) -> None:
        self._log(slog_line(level, msg, **attrs), "stderr")

    def _gst(self, level: str, where: str, msg: str) -> None:
        self._log(gst_line(time.monotonic() - self._booted, level, where, msg), "stderr")

    def _log_pipeline_start(self, s: PipelineSettings) -> None:
        port = getattr(self.qemu, "port", 15937) or 15937
        qemu_addr = f"{QEMU_GUEST_HOST}:{port}"
        if s.mode == "scanout":
            self._slog("INFO", "starting scanout mode (QEMU H.264 via TCP)", session_id=self.session_id)
            self._slog("INFO", "scanout source resolution", width=s.width, height=s.height)
            self._slog("INFO", "subscribed to QEMU scanout", scanout_id=SCANOUT_ID, qemu_addr=qemu_addr)
            self._slog("INFO", "sent initial CONFIG_REQ", bitrate_kbps=s.bitrate_kbps)
            return
        self._slog("INFO", "[STREAM] macOS ARM virtio-gpu detected, using native pipewiresrc with NV12")
        self._slog("INFO", "using vsockenc (macOS VideoToolbox via vsock)")
        self._gst("INFO", "gstvsockenc.c:214:gst_vsockenc_open_drm", "Opened DRM device fd=17")
        self._gst("INFO", "gstvsockenc.c:301:gst_vsockenc_connect",
                  f"Connected via TCP to {QEMU_GUEST_HOST}:{port} (TCP_NODELAY, sndbuf=1MB)")

    def _log_frame(self, s: PipelineSettings, frame: Frame) -> None:
        n = frame.number
        zero = "resource_ids_zero" in self.config.faults
        resource = 0 if zero else SCANOUT_RESOURCES[(n - 1) % len(SCANOUT_RESOURCES)]
        if s.mode == "scanout":
            if self.qemu is not None:
                self.qemu.frame_ready(SCANOUT_ID, resource)
                if getattr(self.qemu, "subscribers", 0):
                    self.qemu.publish(SCANOUT_ID, frame.data, pts_ns=frame.pts_us * 1000, keyframe=frame.keyframe)
            if n == 1 or n % 300 == 0:
                elapsed = max(1e-6, time.monotonic() - self._stats_started)
                self._slog("INFO", "scanout stream stats", frames=n, fps=f"{n / elapsed:.1f}",
                           last_size=len(frame.data), keyframe=frame.keyframe)
            return
        if n > LOG_EVERY_FRAME_UNTIL and n % LOG_SAMPLE_EVERY:
            return
        if zero:
            self._gst("WARN", "gstvsockenc.c:402:gst_vsockenc_get_resource_id", "Buffer is not DMA-BUF backed")
            self._gst("WARN", "gstvsockenc.c:541:gst_vsockenc_handle_frame", "Failed to get resource ID for frame")
        else:
            fd = 40 + (n - 1) % len(SCANOUT_RESOURCES)
            gem = resource - 36
            size = s.width * s.height * 4
            self._gst("INFO", "gstvsockenc.c:437:gst_vsockenc_get_resource_id",
                      f"DMA-BUF fd={fd} -> GEM handle={gem} -> resource_id={resource} (size={size}, blob_mem=1)")
        self._gst("DEBUG", "gstvsockenc.c:570:gst_vsockenc_handle_frame",
                  f"Sent frame {n}, resource_id={resource}, size={s.width}x{s.height}, keyframe={int(frame.keyframe)}")
        self._gst("DEBUG", "gstvsockenc.c:648:gst_vsockenc_finish_pending",
                  f"Finished pending frame pts={frame.pts_us * 1000} keyframe={int(frame.keyframe)} nal_count=1 total_size={len(frame.data)}")


def _git_allowed(cmd: list[str]) -> bool:
    """exec.go gitInvocationAllowed: only `git config --global user.name|user.email <value>`."""
    return (
        len(cmd) == 5 and cmd[:3] == ["git", "config", "--global"]
        and cmd[3] in ("user.name", "user.email") and not cmd[4].startswith("-")
    )


__all__ = [
    "ALLOWED_COMMANDS", "Desktop", "DesktopError", "DesktopUnavailable", "ExecResult", "Frame", "StreamStartError",
    "Subscriber", "VideoPipeline", "gst_line", "normalize_video_mode", "slog_line",
]
