"""The sim's video source: Scene rendering, the libx264 encoder and AU corruption."""

from __future__ import annotations

import logging
import random
import time

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from harness.analysis.content import NAL_IDR, NAL_PPS, NAL_SPS, leading_nal_types
from harness.protocols.stamp import STAMP_HEIGHT, STAMP_WIDTH, read_stamp
from helix_sim.errors import SimError
from helix_sim.desktop.video import EncodedFrame, H264Encoder, Scene, corrupt_au

W, H = 448, 256


def _y(yuv: np.ndarray, height: int = H) -> np.ndarray:
    return yuv[:height]


def test_shape_dtype_and_buffer_reuse() -> None:
    scene = Scene(W, H)
    a = scene.render(0, 0.0, vkcube=True)
    assert a.shape == (H * 3 // 2, W) and a.dtype == np.uint8
    b = scene.render(1, 0.025, vkcube=True)
    assert b is a  # one buffer, overwritten by the next call
    assert scene.render(2, 0.05, vkcube=False) is a


def test_vkcube_moves_every_frame_and_stamps_the_counter() -> None:
    scene = Scene(W, H)
    prev = None
    for i in range(80):
        frame = scene.render(1000 + i, i / 40, vkcube=True).copy()
        assert read_stamp(_y(frame)) == 1000 + i
        body = _y(frame)[STAMP_HEIGHT:]
        assert 20 < body.mean() < 120  # dark background, bright cube: not black
        if prev is not None:
            changed = np.count_nonzero(body != prev)
            assert changed > 0.02 * body.size  # a real change, not a pixel or two
        prev = body
    chroma = frame[H:]
    assert (chroma != 128).any()  # the cube has colour


def test_desktop_is_static_except_the_stamp() -> None:
    scene = Scene(W, H)
    first = scene.render(7, 0.0, vkcube=False).copy()
    scene.render(8, 0.3, vkcube=True)  # switching modes restores the desktop afterwards
    later = scene.render(9, 5.0, vkcube=False).copy()
    assert read_stamp(_y(first)) == 7 and read_stamp(_y(later)) == 9
    differ = first != later
    assert differ.any()
    assert not differ[STAMP_HEIGHT:H].any() and not differ[:STAMP_HEIGHT, STAMP_WIDTH:].any()
    assert not differ[H:].any()


def test_black_has_no_stamp() -> None:
    scene = Scene(W, H)
    black = scene.render(5, 0.0, vkcube=True, black=True)
    assert (_y(black) == 16).all() and (black[H:] == 128).all()
    assert read_stamp(_y(black)) is None


def test_small_frames_render_without_stamp(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="helix_sim.video"):
        scene = Scene(320, 192)
    assert not scene.stamped and "too small" in caplog.text
    frame = scene.render(3, 0.1, vkcube=True)
    assert frame.shape == (288, 320) and read_stamp(frame[:192]) is None


@pytest.mark.parametrize("size", [(63, 64), (64, 63), (101, 64), (64.0, 64)])
def test_bad_sizes(size) -> None:
    with pytest.raises(SimError):
        Scene(*size)


def test_render_speed_720p() -> None:
    scene = Scene(1280, 720)
    scene.render(0, 0.0, vkcube=True)
    samples = []
    for i in range(1, 61):
        start = time.perf_counter()
        scene.render(i, i / 60, vkcube=True)
        samples.append(time.perf_counter() - start)
    assert sorted(samples)[len(samples) // 2] < 0.002


# -- encoder -------------------------------------------------------------------------------


def _encode(n: int, *, gop: int = 30, force: frozenset[int] = frozenset(), size=(W, H), vkcube=True):
    width, height = size
    scene = Scene(width, height)
    out: list[EncodedFrame] = []
    with H264Encoder(width, height, 40, gop=gop, bitrate_kbps=1500) as encoder:
        for i in range(n):
            got = encoder.encode(scene.render(i, i / 40, vkcube=vkcube), i * 25_000, force_idr=i in force)
            assert len(got) == 1  # zero latency: one AU per frame, at once
            out.extend(got)
    return out


def test_encoder_gop_headers_and_forced_idr() -> None:
    frames = _encode(75, gop=30, force=frozenset({40}))
    keys = [i for i, f in enumerate(frames) if f.keyframe]
    assert keys == [0, 30, 40, 70]  # a forced IDR restarts the GOP count
    for i, f in enumerate(frames):
        assert isinstance(f.data, bytes) and f.data.startswith(b"\x00\x00\x00\x01")
        types = leading_nal_types(f.data)
        if f.keyframe:
            assert types[0] == NAL_SPS and NAL_PPS in types and types[-1] == NAL_IDR  # SPS+PPS before every IDR
        else:
            assert types == [1]


def test_encoder_output_decodes_in_order_with_no_b_frames() -> None:
    frames = _encode(40)
    decoder = av.CodecContext.create("h264", "r")
    counters = []
    for f in frames:
        for frame in decoder.decode(av.Packet(f.data)):
            assert frame.pict_type in (PictureType.I, PictureType.P)
            plane = frame.planes[0]
            y = np.frombuffer(plane, np.uint8, count=plane.line_size * H).reshape(H, -1)[:, :W]
            counters.append(read_stamp(y))
    assert counters == list(range(40))  # one frame out per AU in, no reordering delay


def test_encoder_errors_and_close() -> None:
    encoder = H264Encoder(W, H, 40)
    with pytest.raises(SimError):
        encoder.encode(np.zeros((H, W), np.uint8), 0)
    encoder.close()
    encoder.close()  # idempotent
    with pytest.raises(SimError):
        encoder.encode(np.zeros((H * 3 // 2, W), np.uint8), 0)
    with pytest.raises(SimError):
        H264Encoder(W, H, 0)


def test_encode_speed_720p_one_core() -> None:
    scene = Scene(1280, 720)
    frames = [scene.render(i, i / 60, vkcube=True).copy() for i in range(60)]
    with H264Encoder(1280, 720, 60, bitrate_kbps=4000) as encoder:
        encoder.encode(frames[0], 0)
        start = time.perf_counter()
        for i, yuv in enumerate(frames[1:], 1):
            encoder.encode(yuv, i * 16_667)
        fps = 59 / (time.perf_counter() - start)
    assert fps > 120  # "well over 60 fps" on one core (threads=1)


# -- corruption ----------------------------------------------------------------------------


def test_corrupt_au_keeps_headers_and_breaks_the_slice() -> None:
    frames = _encode(60, size=(320, 192))
    rng = random.Random(7)
    bad = {0, 13, 30, 47}
    decoder = av.CodecContext.create("h264", "r")
    flagged = 0
    for i, f in enumerate(frames):
        data = f.data
        if i in bad:
            damaged = corrupt_au(data, rng)
            assert damaged != data and len(damaged) == len(data)
            assert damaged[:4] == b"\x00\x00\x00\x01"
            assert leading_nal_types(damaged)[:2] == leading_nal_types(data)[:2]  # SPS/PPS/slice headers intact
            data = damaged
        try:
            out = decoder.decode(av.Packet(data))
        except av.FFmpegError:
            flagged += i in bad
            continue
        flagged += sum(frame.is_corrupt for frame in out)
    assert flagged == len(bad)


def test_corrupt_au_on_tiny_input() -> None:
    rng = random.Random(0)
    assert corrupt_au(b"\x00\x00\x01", rng) == b"\x00\x00\x01"
    assert len(corrupt_au(b"\x00\x00\x00\x01\x41\x9a\x00\x11\x22\x33\x44", rng)) == 11
