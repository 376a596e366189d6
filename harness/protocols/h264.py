"""H.264 Annex-B: NAL iteration, emulation-prevention removal, exp-Golomb, SPS parsing, AU splitting.

Start codes are found with ``bytes.find`` (C speed); Python only loops per NAL, never per byte of a
payload. Bit-level parsing (exp-Golomb) runs on SPS NALs only, which are a few dozen bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "NAL_SLICE", "NAL_IDR", "NAL_SEI", "NAL_SPS", "NAL_PPS", "NAL_AUD", "START_CODE",
    "Nal", "Sps", "AuInfo", "BitReader", "iter_nals", "remove_emulation_prevention", "parse_sps", "au_info",
    "AnnexBAccessUnitSplitter", "DEFAULT_MAX_PENDING",
]

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
START_CODE = b"\x00\x00\x01"

_SLICES = frozenset((NAL_SLICE, NAL_IDR))
_AU_OPENERS = frozenset((NAL_AUD, NAL_SPS, NAL_PPS, NAL_SEI))
#: profile_idc values whose SPS carries chroma_format_idc, bit depths and scaling lists
_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


@dataclass(frozen=True, slots=True)
class Nal:
    """One NAL unit: ``payload`` is the header byte onwards, without start code, emulation bytes kept."""

    type: int
    ref_idc: int
    payload: bytes

    def __repr__(self) -> str:
        return f"Nal(type={self.type}, ref_idc={self.ref_idc}, payload=<{len(self.payload)} bytes>)"


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise LocalProtocolError(f"expected bytes, got {type(data).__name__}")


def _nal_spans(data: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each non-empty NAL; trailing zero bytes (4-byte start codes) are excluded."""
    find = data.find
    pos = find(START_CODE)
    while pos != -1:
        start = pos + 3
        nxt = find(START_CODE, start)
        end = len(data) if nxt == -1 else nxt
        while end > start and data[end - 1] == 0:
            end -= 1
        if end > start:
            yield start, end
        pos = nxt


def iter_nals(data: bytes) -> Iterator[Nal]:
    """NAL units of an Annex-B buffer (3- and 4-byte start codes); bytes before the first start code are skipped."""
    data = _as_bytes(data)
    for start, end in _nal_spans(data):
        header = data[start]
        yield Nal(header & 0x1F, (header >> 5) & 0x03, data[start:end])


def remove_emulation_prevention(payload: bytes) -> bytes:
    """EBSP → RBSP: drop each 0x03 that follows two zero bytes."""
    return _as_bytes(payload).replace(b"\x00\x00\x03", b"\x00\x00")


class BitReader:
    """MSB-first bit reader over RBSP bytes with exp-Golomb decoding. Running out raises ``RemoteProtocolError``."""

    __slots__ = ("_value", "_bits", "pos", "what")

    def __init__(self, data: bytes, what: str = "bitstream") -> None:
        self._value = int.from_bytes(data, "big")
        self._bits = len(data) * 8
        self.pos = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return self._bits - self.pos

    def u(self, count: int) -> int:
        """Read ``count`` bits as an unsigned int."""
        if count == 0:
            return 0
        end = self.pos + count
        if end > self._bits:
            raise RemoteProtocolError(f"{self.what} truncated: need {count} bits at bit {self.pos} of {self._bits}")
        value = (self._value >> (self._bits - end)) & ((1 << count) - 1)
        self.pos = end
        return value

    def flag(self) -> bool:
        return bool(self.u(1))

    def ue(self) -> int:
        """Unsigned exp-Golomb ue(v) (at most 32 leading zeros)."""
        remaining = self._bits - self.pos
        rest = self._value & ((1 << remaining) - 1) if remaining > 0 else 0
        if rest == 0:
            raise RemoteProtocolError(f"{self.what} truncated: exp-Golomb code at bit {self.pos} has no 1 bit")
        zeros = remaining - rest.bit_length()
        if zeros > 32:
            raise RemoteProtocolError(f"{self.what}: exp-Golomb code at bit {self.pos} has {zeros} leading zeros")
        self.pos += zeros
        return self.u(zeros + 1) - 1

    def se(self) -> int:
        """Signed exp-Golomb se(v)."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


@dataclass(frozen=True, slots=True)
class Sps:
    """The SPS fields the harness checks. ``width``/``height`` are the cropped display size."""

    profile_idc: int
    constraint_flags: tuple[int, ...]  # constraint_set0_flag … constraint_set5_flag
    level_idc: int
    width: int
    height: int
    sps_id: int = 0
    chroma_format_idc: int = 1
    bit_depth_luma: int = 8
    bit_depth_chroma: int = 8
    frame_mbs_only: bool = True
    coded_width: int = 0
    coded_height: int = 0
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, right, top, bottom (in crop units)
    pic_order_cnt_type: int = 0
    max_num_ref_frames: int = 0
    vui_present: bool = False

    @property
    def constraint_set3(self) -> bool:
        return bool(self.constraint_flags[3])

    @property
    def level(self) -> str:
        """``level_idc`` as the CLI prints it (``%d.%d``), e.g. 40 → ``4.0``."""
        return f"{self.level_idc // 10}.{self.level_idc % 10}"


def _skip_scaling_list(reader: BitReader, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            delta = reader.se()
            if not -128 <= delta <= 127:
                raise RemoteProtocolError(f"SPS: delta_scale {delta} out of range")
            next_scale = (last + delta + 256) % 256
        last = last if next_scale == 0 else next_scale


def _bounded(value: int, limit: int, name: str) -> int:
    if value > limit:
        raise RemoteProtocolError(f"SPS: {name}={value} exceeds {limit}")
    return value


def parse_sps(nal_payload: bytes) -> Sps:
    """Parse an SPS NAL (header byte included, emulation bytes kept) up to ``vui_parameters_present_flag``."""
    nal_payload = _as_bytes(nal_payload)
    if not nal_payload or nal_payload[0] & 0x1F != NAL_SPS:
        kind = nal_payload[0] & 0x1F if nal_payload else None
        raise RemoteProtocolError(f"not an SPS NAL (type {kind})", data=nal_payload[:32])
    reader = BitReader(remove_emulation_prevention(nal_payload[1:]), "SPS")
    try:
        return _parse_sps(reader)
    except RemoteProtocolError as exc:
        if exc.data is None:
            exc.data = nal_payload[:64]
        raise


def _parse_sps(r: BitReader) -> Sps:
    profile_idc = r.u(8)
    flags_byte = r.u(8)
    level_idc = r.u(8)
    constraint_flags = tuple((flags_byte >> (7 - i)) & 1 for i in range(6))
    sps_id = _bounded(r.ue(), 31, "seq_parameter_set_id")
    chroma_format_idc, separate_planes, depth_luma, depth_chroma = 1, 0, 8, 8
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = _bounded(r.ue(), 3, "chroma_format_idc")
        if chroma_format_idc == 3:
            separate_planes = r.u(1)
        depth_luma = _bounded(r.ue(), 6, "bit_depth_luma_minus8") + 8
        depth_chroma = _bounded(r.ue(), 6, "bit_depth_chroma_minus8") + 8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():
                    _skip_scaling_list(r, 16 if index < 6 else 64)
    _bounded(r.ue(), 12, "log2_max_frame_num_minus4")
    poc_type = _bounded(r.ue(), 2, "pic_order_cnt_type")
    if poc_type == 0:
        _bounded(r.ue(), 12, "log2_max_pic_order_cnt_lsb_minus4")
    elif poc_type == 1:
        r.u(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        for _ in range(_bounded(r.ue(), 255, "num_ref_frames_in_pic_order_cnt_cycle")):
            r.se()
    max_num_ref_frames = r.ue()
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if r.flag():  # frame_cropping_flag
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    vui_present = r.flag()

    coded_width = width_mbs * 16
    coded_height = (2 - frame_mbs_only) * height_map_units * 16
    chroma_array_type = 0 if separate_planes else chroma_format_idc
    if chroma_array_type == 0:
        unit_x, unit_y = 1, 2 - frame_mbs_only
    else:
        sub_width = 1 if chroma_array_type == 3 else 2
        sub_height = 2 if chroma_array_type == 1 else 1
        unit_x, unit_y = sub_width, sub_height * (2 - frame_mbs_only)
    width = coded_width - unit_x * (crop[0] + crop[1])
    height = coded_height - unit_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise RemoteProtocolError(f"SPS: cropping {crop} leaves no picture of {coded_width}x{coded_height}")
    return Sps(
        profile_idc, constraint_flags, level_idc, width, height, sps_id, chroma_format_idc, depth_luma,
        depth_chroma, bool(frame_mbs_only), coded_width, coded_height, crop, poc_type, max_num_ref_frames,
        vui_present,
    )


@dataclass(frozen=True, slots=True)
class AuInfo:
    """What an access unit contains; ``sps`` is its first SPS, parsed."""

    has_sps: bool
    has_pps: bool
    has_idr: bool
    nal_types: tuple[int, ...]
    sps: Sps | None


def au_info(au: bytes) -> AuInfo:
    """NAL types of one access unit and its SPS (a broken SPS raises ``RemoteProtocolError``)."""
    au = _as_bytes(au)
    types = []
    sps = None
    for start, end in _nal_spans(au):
        nal_type = au[start] & 0x1F
        types.append(nal_type)
        if nal_type == NAL_SPS and sps is None:
            sps = parse_sps(au[start:end])
    return AuInfo(NAL_SPS in types, NAL_PPS in types, NAL_IDR in types, tuple(types), sps)


#: Pending bytes the splitter holds before it gives up on the current access unit (a 4K IDR is a few MB).
DEFAULT_MAX_PENDING = 64 * 1024 * 1024


class AnnexBAccessUnitSplitter:
    """Incremental Annex-B → access units, for plain ``.h264`` files.

    A new AU starts at an AUD/SPS/PPS/SEI after a slice, or at a slice whose first_mb_in_slice is 0
    after a slice. Bytes are kept losslessly (the concatenated output equals the input) as long as no
    access unit outgrows ``max_pending``: then the bytes already scanned are dropped and counted in
    ``skipped_bytes`` (``skips`` times), so input without start codes costs bounded memory.
    """

    def __init__(self, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if not isinstance(max_pending, int) or max_pending < 16:
            raise LocalProtocolError(f"max_pending must be an int >= 16, got {max_pending!r}")
        self.max_pending = max_pending
        self.skipped_bytes = 0
        self.skips = 0
        self._buf = bytearray()
        self._scan = 0  # where the next start-code search begins
        self._au_start = 0
        self._seen_slice = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the access units completed by them."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        find = buf.find
        pos = self._scan
        size = len(buf)
        while True:
            sc = find(START_CODE, pos)
            if sc == -1:
                pos = max(pos, size - 2)
                break
            if sc + 5 > size:  # need the NAL header and the first slice-header byte
                pos = sc
                break
            nal_type = buf[sc + 3] & 0x1F
            is_slice = nal_type in _SLICES
            if self._seen_slice and (nal_type in _AU_OPENERS or (is_slice and buf[sc + 4] & 0x80)):
                cut = sc - 1 if sc > self._au_start and buf[sc - 1] == 0 else sc
                with memoryview(buf) as view:
                    out.append(bytes(view[self._au_start : cut]))
                self._au_start = cut
                self._seen_slice = False
            if is_slice:
                self._seen_slice = True
            pos = sc + 3
        if self._au_start:
            del buf[: self._au_start]
            pos -= self._au_start
            self._au_start = 0
        pos = max(pos, 0)
        if len(buf) > self.max_pending and pos > 0:  # no AU boundary for too long: drop what was scanned
            del buf[:pos]
            self.skipped_bytes += pos
            self.skips += 1
            self._seen_slice = False
            pos = 0
        self._scan = pos
        return out

    def flush(self) -> list[bytes]:
        """End of stream: the last (possibly incomplete) access unit, if any."""
        rest = bytes(self._buf)
        self._buf = bytearray()
        self._scan = self._au_start = 0
        self._seen_slice = False
        return [rest] if rest else []
