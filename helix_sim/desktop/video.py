"""The simulator's video source: a frame renderer and a libx264 encoder.

``Scene.render`` draws yuv420p frames: a moving, rotating "cube" on a dark background while vkcube
runs, a static desktop otherwise, and plain black on request. Every non-black frame carries the
frame counter stamp (``harness.protocols.stamp``), so the harness can read back which frame it got.

``H264Encoder`` is libx264 through PyAV's ``CodecContext``, set up like Helix's encoders: no B-frames,
zero latency, a fixed GOP and SPS+PPS before every IDR. ``corrupt_au`` damages an access unit for
the ``corrupt_h264`` fault.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.video.frame import PictureType

from harness.protocols.stamp import STAMP_HEIGHT, fits, stamp
from ..errors import SimError

log = logging.getLogger("helix_sim.video")

_BLACK_Y = 16
_NEUTRAL = 128
_CUBE_BG_Y = 40


def _check_size(width: int, height: int) -> None:
    if not (isinstance(width, int) and isinstance(height, int)) or width < 64 or height < 64 or width % 2 or height % 2:
        raise SimError(f"video size must be even and at least 64x64, got {width}x{height}", phase="sim")


class Scene:
    """Renders yuv420p frames of ``width`` x ``height`` as arrays of shape (height*3//2, width), uint8.

    The returned array is one of the scene's own buffers and is overwritten by the next ``render``
    call: copy it to keep it (black frames come from a read-only buffer). Frames too narrow for the
    stamp (< 416 px) are rendered without it.
    """

    def __init__(self, width: int, height: int) -> None:
        _check_size(width, height)
        self.width = width
        self.height = height
        self.stamped = fits(width, height)
        if not self.stamped:
            log.warning("%dx%d is too small for the frame-counter stamp; frames carry no counter", width, height)
        self._desktop = self._make_desktop()
        self._cube_bg = self._make_cube_bg()
        self._black = self._blank(_BLACK_Y, _NEUTRAL, _NEUTRAL)
        self._black.flags.writeable = False  # shared by every black frame
        self._out = np.empty_like(self._desktop)
        self._mode: str | None = None
        self._box: tuple[int, int] | None = None  # top-left of the last drawn cube
        # The cube: a square box of side s (even), rotating square inside it.
        top = STAMP_HEIGHT + 8
        s = int(min(width * 0.45, (height - top) * 0.6)) // 2 * 2
        self._side = max(8, s)
        self._top = top
        hs = self._side // 2
        self._coords = (np.arange(hs, dtype=np.float32) - np.float32((hs - 1) / 2)) * np.float32(2)
        self._radius = np.float32(self._side * 0.5 / math.sqrt(2) * 0.98)  # fits the box at any angle
        self._cell = np.float32(4.0 / self._radius)  # 8 checker cells across the square
        # Shades by (horizontal face, positive side, checker), then the background: luma and colour.
        self._lut_y = np.array([95, 135, 170, 210, 130, 170, 205, 245, _CUBE_BG_Y], np.uint8)
        self._lut_u = np.array([170, 160, 110, 100, 90, 80, 150, 140, _NEUTRAL], np.uint8)
        self._lut_v = np.array([100, 110, 170, 160, 170, 160, 90, 100, _NEUTRAL], np.uint8)

    # -- static images -----------------------------------------------------------------------

    def _blank(self, y: int, u: int, v: int) -> np.ndarray:
        w, h = self.width, self.height
        buf = np.empty((h * 3 // 2, w), np.uint8)
        buf[:h] = y
        planes_u, planes_v = self._uv(buf)
        planes_u[:] = u
        planes_v[:] = v
        return buf

    def _planes(self, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = buf[: self.height]
        u, v = self._uv(buf)
        return y, u, v

    def _uv(self, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, h = self.width, self.height
        chroma = buf[h:].reshape(-1)
        n = (w // 2) * (h // 2)
        return chroma[:n].reshape(h // 2, w // 2), chroma[n : 2 * n].reshape(h // 2, w // 2)

    def _make_desktop(self) -> np.ndarray:
        """A GNOME-like screen: wallpaper gradient, a top bar and two windows with 'text'."""
        w, h = self.width, self.height
        buf = self._blank(90, 150, 110)
        y, u, v = self._planes(buf)
        y[:] = (70 + 50 * np.linspace(0, 1, h, dtype=np.float32))[:, None].astype(np.uint8)
        bar = max(STAMP_HEIGHT + 8, h // 30) // 2 * 2
        y[:bar] = 35
        u[: bar // 2] = _NEUTRAL
        v[: bar // 2] = _NEUTRAL
        for x0, y0, x1, y1 in ((0.08, 0.15, 0.55, 0.80), (0.45, 0.30, 0.93, 0.92)):
            cx0, cx1 = int(x0 * w) // 2 * 2, int(x1 * w) // 2 * 2
            cy0, cy1 = int(y0 * h) // 2 * 2, int(y1 * h) // 2 * 2
            title = max(8, h // 24) // 2 * 2
            y[cy0:cy1, cx0:cx1] = 230
            y[cy0 : cy0 + title, cx0:cx1] = 200
            u[cy0 // 2 : cy1 // 2, cx0 // 2 : cx1 // 2] = _NEUTRAL
            v[cy0 // 2 : cy1 // 2, cx0 // 2 : cx1 // 2] = _NEUTRAL
            line = max(4, h // 60)
            rng = np.random.default_rng(cx0 * 7 + cy0)
            for row in range(cy0 + title + line, cy1 - 2 * line, 2 * line):
                length = int(rng.uniform(0.3, 0.9) * (cx1 - cx0 - 4 * line))
                y[row : row + line // 2 + 1, cx0 + 2 * line : cx0 + 2 * line + length] = 60
        return buf

    def _make_cube_bg(self) -> np.ndarray:
        """vkcube's flat dark background."""
        return self._blank(_CUBE_BG_Y, _NEUTRAL, _NEUTRAL)

    # -- rendering ---------------------------------------------------------------------------

    def render(self, counter: int, t_s: float, *, vkcube: bool, black: bool = False) -> np.ndarray:
        """The frame for ``counter`` at scene time ``t_s``. See the class docstring about buffer reuse."""
        if black:
            return self._black
        out = self._out
        if vkcube:
            if self._mode != "cube":
                out[:] = self._cube_bg
                self._mode = "cube"
                self._box = None
            self._draw_cube(out, t_s)
        elif self._mode != "desktop":
            out[:] = self._desktop
            self._mode = "desktop"
        if self.stamped:
            stamp(out[: self.height], counter)
        return out

    def _draw_cube(self, out: np.ndarray, t_s: float) -> None:
        y, u, v = self._planes(out)
        s, hs = self._side, self._side // 2
        if self._box is not None:  # erase the previous cube (the background is flat)
            x0, y0 = self._box
            y[y0 : y0 + s, x0 : x0 + s] = _CUBE_BG_Y
            u[y0 // 2 : y0 // 2 + hs, x0 // 2 : x0 // 2 + hs] = _NEUTRAL
            v[y0 // 2 : y0 // 2 + hs, x0 // 2 : x0 // 2 + hs] = _NEUTRAL
        # A smooth Lissajous path below the stamp, and a steady rotation.
        span_x = self.width - s
        span_y = self.height - self._top - s
        x0 = int(span_x * (0.5 + 0.5 * math.sin(2 * math.pi * 0.13 * t_s))) // 2 * 2
        y0 = self._top + int(span_y * (0.5 + 0.5 * math.sin(2 * math.pi * 0.21 * t_s + 1.0))) // 2 * 2
        self._box = (x0, y0)
        # The square, computed at chroma resolution (one sample per 2x2 luma pixels) in rotated
        # coordinates a, b: four faces split by its diagonals, each with a checker texture that turns
        # and slides, so much of the cube changes every frame even where the path turns around.
        angle = 2 * math.pi * 0.35 * t_s
        c, sn = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        k = self._coords
        a = np.add.outer(k * sn, k * c)
        b = np.subtract.outer(k * c, k * sn)
        abs_a, abs_b = np.abs(a), np.abs(b)
        horizontal = abs_a > abs_b
        outside = np.maximum(abs_a, abs_b) > self._radius
        positive = np.where(horizontal, a, b) > 0
        scroll = np.float32(64 + (3.0 * t_s) % 2)  # the texture also slides: 3 cells/s
        a *= self._cell
        a += scroll  # positive, so that the int conversion floors
        b *= self._cell
        b += 64
        idx = (a.astype(np.int16) + b.astype(np.int16)).astype(np.uint8)
        idx &= 1
        idx |= horizontal.view(np.uint8) << 2
        idx |= positive.view(np.uint8) << 1
        np.putmask(idx, outside, 8)  # entry 8 of the tables is the background
        y[y0 : y0 + s, x0 : x0 + s] = np.repeat(np.repeat(self._lut_y.take(idx), 2, axis=0), 2, axis=1)
        u[y0 // 2 : y0 // 2 + hs, x0 // 2 : x0 // 2 + hs] = self._lut_u.take(idx)
        v[y0 // 2 : y0 // 2 + hs, x0 // 2 : x0 // 2 + hs] = self._lut_v.take(idx)


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One complete Annex-B access unit from the encoder."""

    data: bytes
    keyframe: bool


class H264Encoder:
    """libx264 (PyAV CodecContext): ultrafast, zerolatency, no B-frames, SPS+PPS before every IDR.

    ``pts_us`` is in microseconds (time base 1/1000000). One input frame gives one access unit.
    """

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        gop: int = 120,
        bitrate_kbps: int = 4000,
        *,
        threads: int = 1,
    ) -> None:
        _check_size(width, height)
        if not (fps > 0 and gop >= 1 and bitrate_kbps > 0 and threads >= 1):
            raise SimError(
                f"bad encoder settings: fps={fps} gop={gop} bitrate_kbps={bitrate_kbps} threads={threads}", phase="sim"
            )
        self.width, self.height, self.fps, self.gop = width, height, fps, gop
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 1_000_000)
        ctx.framerate = Fraction(fps).limit_denominator(1001)
        ctx.bit_rate = bitrate_kbps * 1000
        ctx.gop_size = gop
        ctx.max_b_frames = 0
        ctx.thread_count = threads
        x264_params = ":".join(
            (
                "repeat-headers=1",
                f"keyint={gop}",
                f"min-keyint={gop}",
                "scenecut=0",
                "bframes=0",
                f"threads={threads}",
                "sliced-threads=0",
                f"vbv-maxrate={bitrate_kbps}",
                f"vbv-bufsize={bitrate_kbps}",
            )
        )
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1", "x264-params": x264_params}
        try:
            ctx.open()
        except av.FFmpegError as exc:
            raise SimError(
                f"could not open libx264: {exc}", phase="sim", hint="PyAV must be built with libx264"
            ) from exc
        self._ctx: av.CodecContext | None = ctx

    def encode(self, yuv: np.ndarray, pts_us: int, *, force_idr: bool = False) -> list[EncodedFrame]:
        """Encode one yuv420p frame (shape (h*3//2, w), uint8). Returns the access units now ready."""
        ctx = self._ctx
        if ctx is None:
            raise SimError("H264Encoder.encode() after close()", phase="sim")
        if yuv.shape != (self.height * 3 // 2, self.width) or yuv.dtype != np.uint8:
            raise SimError(
                f"expected a ({self.height * 3 // 2}, {self.width}) uint8 yuv420p frame, got {yuv.shape} {yuv.dtype}",
                phase="sim",
            )
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = pts_us
        frame.time_base = ctx.time_base
        if force_idr:
            frame.pict_type = PictureType.I
        try:
            packets = ctx.encode(frame)
        except av.FFmpegError as exc:
            raise SimError(f"libx264 failed: {exc}", phase="sim") from exc
        return [EncodedFrame(bytes(p), bool(p.is_keyframe)) for p in packets]

    def close(self) -> None:
        """Flush and release the encoder (idempotent)."""
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            try:
                ctx.encode(None)
            except av.FFmpegError as exc:
                log.debug("libx264 flush: %s", exc)

    def __enter__(self) -> "H264Encoder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def corrupt_au(au: bytes, rng: random.Random) -> bytes:
    """A damaged copy of ``au`` (same length): a zeroed run and bit flips in the slice data.

    Every NAL before the last slice (SPS, PPS, SEI) and the start of the slice itself are kept, so the
    decoder sees a valid slice that breaks part-way: it reports the AU as corrupt (or fails it).
    """
    if len(au) < 8:
        return bytes(au)
    data = bytearray(au)
    start = au.rfind(b"\x00\x00\x01")  # the last NAL is the (last) slice
    first = au.find(b"\x00\x00\x01")
    if start < 0:
        start = 0
    body = start + 3 + 4  # NAL header + the first bytes of the slice header
    if body >= len(data) - 2:
        body = (first + 4) if first >= 0 else 1
    length = len(data) - body
    if length <= 0:
        return bytes(au)
    # Zero a long run in the slice data (no valid CAVLC/CABAC continuation, so the decoder reliably
    # reports the slice as broken), and flip bits after it.
    at = body + rng.randrange(0, max(1, length // 2))
    run = max(8, length // 4)
    data[at : at + run] = bytes(len(data[at : at + run]))
    for _ in range(max(1, length // 64)):
        j = rng.randrange(min(at + run, len(data) - 1), len(data))
        data[j] ^= 1 << rng.randrange(8)
    return bytes(data)
