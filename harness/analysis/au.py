"""What the first NAL units of an access unit say, without decoding (no PyAV, no numpy).

Timing-only analysis (``helix-e2e analyze --no-decode``), the capture's sampler and the content
analyzer all ask the same questions of an Annex-B access unit: is it an IDR, does it carry SPS and
PPS, what picture size does its SPS give. They live here so that asking them never imports a decoder.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from ..errors import HarnessError
from ..protocols import h264 as _h264

log = logging.getLogger("harness.analysis.au")

NAL_SLICE = 1
NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8


class AuSummary(NamedTuple):
    """What the first NAL units of an access unit say, without decoding."""

    has_idr: bool
    has_sps: bool
    has_pps: bool
    size: tuple[int, int] | None  # (width, height) from the SPS, when it has one and it parses


def leading_nal_types(au: bytes, limit: int = 16) -> list[int]:
    """NAL unit types of ``au`` up to and including its first slice (VCL NAL), at most ``limit``."""
    types: list[int] = []
    find = au.find
    i = find(b"\x00\x00\x01")
    n = len(au)
    while 0 <= i and i + 3 < n and len(types) < limit:
        t = au[i + 3] & 0x1F
        types.append(t)
        if 1 <= t <= 5:
            break
        i = find(b"\x00\x00\x01", i + 3)
    return types


def is_idr(au: bytes) -> bool:
    """Whether ``au``'s first slice is an IDR slice (the frame decodes on its own)."""
    types = leading_nal_types(au)
    return bool(types) and types[-1] == NAL_IDR


def summarize_au(au: bytes) -> AuSummary:
    """IDR/SPS/PPS presence and the SPS picture size (parsed by ``protocols.h264``)."""
    types = leading_nal_types(au)
    has_sps = NAL_SPS in types
    size = None
    if has_sps:
        try:
            sps = _h264.au_info(au).sps
        except HarnessError as exc:
            log.debug("unparsable SPS: %s", exc)
            sps = None
        if sps is not None:
            size = (sps.width, sps.height)
    return AuSummary(NAL_IDR in types, has_sps, NAL_PPS in types, size)
