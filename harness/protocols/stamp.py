"""The simulator's frame counter, written into and read back from the luma plane.

One row of ``STAMP_BITS + 2`` flat 16×16 luma blocks at the top-left corner of the picture:

    [guard 1][bit 23] ... [bit 0][guard 0]

A ``1`` is luma 235 and a ``0`` is luma 16 (limited range white and black). The blocks sit on
the macroblock grid, so an H.264 encoder codes each one as a flat macroblock and the levels survive
lossy compression well (libx264 at 2-4 Mbps, deblocking on or off). The reader samples four pixels
around the centre of each block (clear of deblocked edges) and only accepts a row whose guards read
1 and 0 and whose every block is clearly light or dark, so a black frame, a white frame or ordinary
screen content reads as ``None``.

``helix_sim.desktop.video`` writes the stamp; ``harness.analysis.content`` reads it.
"""

from __future__ import annotations

import numpy as np

from ..errors import HarnessError

STAMP_BITS = 24
BLOCK = 16
#: Blocks in the row: a leading guard (1), the data bits (MSB first), a trailing guard (0).
BLOCKS = STAMP_BITS + 2
#: Pixels the stamp covers: width x height.
STAMP_WIDTH = BLOCKS * BLOCK
STAMP_HEIGHT = BLOCK
LEVEL_ONE = 235
LEVEL_ZERO = 16
#: A sampled block is a 1 above this level and a 0 below ``_LOW``; anything between is "not a stamp".
_HIGH = 165.0
_LOW = 86.0
COUNTER_MASK = (1 << STAMP_BITS) - 1

_SHIFTS = np.arange(STAMP_BITS - 1, -1, -1, dtype=np.int64)
# Sample points of every block: rows and columns 6 and 9 (around the centre, clear of the edges).
_SAMPLE_ROWS = slice(6, 10, 3)
_SAMPLE_COLS = slice(6, 10, 3)
# Thresholds for the sum of a block's four samples.
_HIGH4 = 4 * _HIGH
_LOW4 = 4 * _LOW


def fits(width: int, height: int) -> bool:
    """True when a picture of this size has room for the stamp."""
    return width >= STAMP_WIDTH and height >= STAMP_HEIGHT


def stamp(y: np.ndarray, counter: int) -> None:
    """Write ``counter`` (taken modulo 2**STAMP_BITS) into the top-left of the luma plane ``y`` in place.

    ``y`` is a 2-D uint8 array (a strided view is fine). Raises HarnessError when it is too small.
    """
    if y.ndim != 2 or not fits(y.shape[1], y.shape[0]):
        raise HarnessError(
            f"a {STAMP_WIDTH}x{STAMP_HEIGHT} frame-counter stamp does not fit a luma plane of shape {y.shape}",
            phase="sim",
            hint=f"use a resolution at least {STAMP_WIDTH} pixels wide",
        )
    if counter < 0:
        raise HarnessError(f"frame counter must be >= 0, got {counter}", phase="sim")
    bits = (int(counter) & COUNTER_MASK) >> _SHIFTS & 1
    levels = np.empty(BLOCKS, dtype=np.uint8)
    levels[0] = LEVEL_ONE
    levels[1:-1] = np.where(bits == 1, LEVEL_ONE, LEVEL_ZERO)
    levels[-1] = LEVEL_ZERO
    y[:STAMP_HEIGHT, :STAMP_WIDTH] = np.repeat(levels, BLOCK)[None, :]


def read_stamp(y: np.ndarray) -> int | None:
    """The counter stamped in the luma plane ``y``, or None when there is no readable stamp."""
    if y.ndim != 2 or not fits(y.shape[1], y.shape[0]):
        return None
    # Quick reject (most frames of a real desktop): the guard blocks' centre pixels.
    if y[8, 8] <= _HIGH or y[8, STAMP_WIDTH - 8] >= _LOW:
        return None
    # Four pixels around the centre of every block (rows 6 and 9, columns 6 and 9), summed:
    # BLOCKS values in 0..4*255, as a list (cheaper to walk in Python than many small numpy ops).
    rows = y[_SAMPLE_ROWS, :STAMP_WIDTH].reshape(2, BLOCKS, BLOCK)[:, :, _SAMPLE_COLS]
    values = rows.sum(axis=(0, 2), dtype=np.int32).tolist()
    if not values[0] > _HIGH4 or values[-1] >= _LOW4:
        return None
    counter = 0
    for v in values[1:-1]:
        if v > _HIGH4:
            counter = counter << 1 | 1
        elif v <= _LOW4:
            counter <<= 1
        else:
            return None
    return counter
