"""The frame-counter stamp: exact round trips, rejection of non-stamps, survival through libx264."""

from __future__ import annotations

import av
import numpy as np
import pytest

from harness.protocols.stamp import (
    BLOCK,
    COUNTER_MASK,
    LEVEL_ONE,
    LEVEL_ZERO,
    STAMP_BITS,
    STAMP_WIDTH,
    read_stamp,
    stamp,
)
from harness.errors import HarnessError


def _plane(width: int = 640, height: int = 64, value: int = 90) -> np.ndarray:
    return np.full((height, width), value, np.uint8)


@pytest.mark.parametrize("counter", [0, 1, 2, 0x5A5A5A, 123456, COUNTER_MASK])
def test_round_trip(counter: int) -> None:
    y = _plane()
    stamp(y, counter)
    assert read_stamp(y) == counter


def test_layout_matches_the_design() -> None:
    y = _plane()
    stamp(y, 0b101)
    assert STAMP_BITS == 24 and STAMP_WIDTH == 26 * 16
    centres = y[8, BLOCK // 2 : STAMP_WIDTH : BLOCK]
    assert centres[0] == LEVEL_ONE and centres[-1] == LEVEL_ZERO  # guards 1 … 0
    assert list(centres[1:-1]) == [LEVEL_ZERO] * 21 + [LEVEL_ONE, LEVEL_ZERO, LEVEL_ONE]  # MSB first
    assert (y[:16, :STAMP_WIDTH] == np.repeat(centres, 16)[None, :]).all()  # flat 16x16 blocks
    assert (y[16:] == 90).all() and (y[:, STAMP_WIDTH:] == 90).all()  # nothing else touched


def test_counter_wraps_modulo_24_bits() -> None:
    y = _plane()
    stamp(y, (1 << STAMP_BITS) + 7)
    assert read_stamp(y) == 7


def test_works_on_strided_views() -> None:
    padded = np.full((64, 704), 60, np.uint8)
    view = padded[:, :640]  # like a decoded plane with line_size > width
    stamp(view, 4242)
    assert read_stamp(view) == 4242


@pytest.mark.parametrize("value", [16, 0, 235, 255, 128])
def test_flat_frames_have_no_stamp(value: int) -> None:
    assert read_stamp(_plane(value=value)) is None


def test_noise_and_ambiguous_levels_are_rejected() -> None:
    rng = np.random.default_rng(0)
    assert all(read_stamp(rng.integers(0, 256, (64, 640), dtype=np.uint8)) is None for _ in range(50))
    y = _plane()
    stamp(y, 99)
    y[:16, 5 * BLOCK : 6 * BLOCK] = 128  # one block half-way between the levels
    assert read_stamp(y) is None


def test_too_small() -> None:
    assert read_stamp(_plane(width=STAMP_WIDTH - 2)) is None
    with pytest.raises(HarnessError):
        stamp(_plane(width=STAMP_WIDTH - 2), 1)
    with pytest.raises(HarnessError):
        stamp(_plane(), -1)


def test_survives_libx264_at_2mbps_720p() -> None:
    from helix_sim.desktop.video import H264Encoder, Scene

    width, height, fps = 1280, 720, 30
    scene = Scene(width, height)
    counters = [i * 9973 % (1 << 24) for i in range(45)]  # many bit patterns, not just small numbers
    decoder = av.CodecContext.create("h264", "r")
    read = []
    with H264Encoder(width, height, fps, gop=30, bitrate_kbps=2000) as encoder:
        for i, counter in enumerate(counters):
            yuv = scene.render(counter, i / fps, vkcube=True)
            for au in encoder.encode(yuv, i * 33_333):
                for frame in decoder.decode(av.Packet(au.data)):
                    plane = frame.planes[0]
                    y = np.frombuffer(plane, np.uint8, count=plane.line_size * height).reshape(height, -1)[:, :width]
                    read.append(read_stamp(y))
    assert read == counters
