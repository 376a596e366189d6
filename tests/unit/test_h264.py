"""harness.protocols.h264 on real libx264 streams (PyAV), hand-built SPSs, and fuzzing."""

from __future__ import annotations

import fractions
import random
import time

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols import h264
from harness.protocols.errors import LocalProtocolError, RemoteProtocolError


def encode(width: int, height: int, frames: int, pix_fmt: str = "yuv420p", **options: str) -> list[bytes]:
    """Encode a short clip with libx264 as the sim does; return one Annex-B access unit per packet."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.framerate = 30
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "repeat-headers": "1", "bf": "0", **options}
    packets = []
    for index in range(frames):
        frame = av.VideoFrame(width, height, pix_fmt)
        for plane in frame.planes:
            plane.update(bytes([(index * 37 + 11) % 256]) * plane.buffer_size)
        frame.pts = index
        packets += [bytes(p) for p in ctx.encode(frame)]
    packets += [bytes(p) for p in ctx.encode(None)]
    return packets


def split(data: bytes, chunks: list[int] | None = None) -> list[bytes]:
    splitter = h264.AnnexBAccessUnitSplitter()
    out: list[bytes] = []
    pos = 0
    for size in chunks or [len(data)]:
        out += splitter.feed(data[pos : pos + size])
        pos += size
    out += splitter.feed(data[pos:])
    return out + splitter.flush()


@pytest.fixture(scope="module")
def stream_720p() -> list[bytes]:
    return encode(1280, 720, 45, g="15")


@pytest.fixture(scope="module")
def stream_1080p() -> list[bytes]:
    return encode(1920, 1080, 12, g="6")


# ---------------------------------------------------------------- real streams


def test_sps_of_720p(stream_720p: list[bytes]) -> None:
    info = h264.au_info(stream_720p[0])
    assert info.has_sps and info.has_pps and info.has_idr
    assert info.nal_types[:2] == (h264.NAL_SPS, h264.NAL_PPS)
    sps = info.sps
    assert (sps.width, sps.height) == (1280, 720)
    assert (sps.coded_width, sps.coded_height, sps.crop) == (1280, 720, (0, 0, 0, 0))
    assert sps.profile_idc == 66 and len(sps.constraint_flags) == 6 and sps.frame_mbs_only


def test_sps_of_1080p_is_cropped_from_1088(stream_1080p: list[bytes]) -> None:
    sps = h264.au_info(stream_1080p[0]).sps
    assert (sps.width, sps.height) == (1920, 1080)
    assert (sps.coded_width, sps.coded_height) == (1920, 1088)
    assert sps.crop == (0, 0, 0, 4)  # 4 crop units × 2 rows (4:2:0)
    assert sps.level == f"{sps.level_idc // 10}.{sps.level_idc % 10}"


@pytest.mark.parametrize("fixture", ["stream_720p", "stream_1080p"])
def test_splitter_reproduces_the_encoders_access_units(fixture: str, request: pytest.FixtureRequest) -> None:
    packets = request.getfixturevalue(fixture)
    data = b"".join(packets)
    assert split(data) == packets
    rng = random.Random(7)
    assert split(data, [rng.randint(1, 5000) for _ in range(len(data) // 2500)]) == packets
    assert split(data, [1] * 3000) == packets  # byte-by-byte through the first headers


def test_repeat_headers_put_sps_pps_before_every_idr(stream_720p: list[bytes]) -> None:
    infos = [h264.au_info(au) for au in stream_720p]
    assert [i for i, info in enumerate(infos) if info.has_idr] == [0, 15, 30]
    assert all(info.has_sps and info.has_pps for info in infos if info.has_idr)
    assert not any(info.has_sps for info in infos if not info.has_idr)
    assert infos[1].sps is None


def test_sliced_1080p_pictures_stay_one_access_unit(stream_1080p: list[bytes]) -> None:
    # zerolatency uses sliced threads: several slices per picture, only the first with first_mb_in_slice 0
    slice_counts = [sum(t in (1, 5) for t in h264.au_info(au).nal_types) for au in stream_1080p]
    assert max(slice_counts) > 1
    assert len(split(b"".join(stream_1080p))) == 12


def test_access_unit_delimiters() -> None:
    packets = encode(320, 240, 8, **{"x264-params": "aud=1"})
    assert all(h264.au_info(p).nal_types[0] == h264.NAL_AUD for p in packets)
    assert split(b"".join(packets)) == packets


@pytest.mark.parametrize(
    ("pix_fmt", "profile", "chroma", "crop", "depth"),
    [("yuv444p", 244, 3, (0, 14, 0, 6), 8), ("yuv422p", 122, 2, (0, 7, 0, 6), 8), ("yuv420p10le", 110, 1, (0, 7, 0, 3), 10)],
)
def test_high_profiles(pix_fmt: str, profile: int, chroma: int, crop: tuple, depth: int) -> None:
    sps = h264.au_info(encode(642, 362, 1, pix_fmt)[0]).sps
    assert (sps.profile_idc, sps.chroma_format_idc, sps.bit_depth_luma) == (profile, chroma, depth)
    assert (sps.width, sps.height, sps.coded_width, sps.coded_height) == (642, 362, 656, 368)
    assert sps.crop == crop


# ---------------------------------------------------------------- hand-built bitstreams


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, count: int, value: int) -> BitWriter:
        self.bits += [(value >> (count - 1 - i)) & 1 for i in range(count)]
        return self

    def ue(self, value: int) -> BitWriter:
        value += 1
        return self.u(value.bit_length() - 1, 0).u(value.bit_length(), value)

    def se(self, value: int) -> BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = self.bits + [1]
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def add_emulation_prevention(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def sps_nal(w: BitWriter) -> bytes:
    return b"\x67" + add_emulation_prevention(w.rbsp())


def test_exp_golomb() -> None:
    # bits: 1 | 010 | 011 | 00100 | 011 | 1  →  ue 0, 1, 2, 3; se(k=2) = -1; u(1) = 1
    reader = h264.BitReader(bytes([0b1010_0110, 0b0100_0111]))
    assert [reader.ue(), reader.ue(), reader.ue(), reader.ue()] == [0, 1, 2, 3]
    assert reader.se() == -1
    assert reader.u(1) == 1 and reader.pos == 16 and reader.remaining == 0
    reader = h264.BitReader(BitWriter().se(1).se(-2).se(7).ue(65535).rbsp())
    assert [reader.se(), reader.se(), reader.se(), reader.ue()] == [1, -2, 7, 65535]
    with pytest.raises(RemoteProtocolError, match="truncated"):
        h264.BitReader(b"\x00").ue()
    with pytest.raises(RemoteProtocolError, match="leading zeros"):
        h264.BitReader(bytes(5) + b"\xff").ue()


def test_emulation_prevention_removal() -> None:
    assert h264.remove_emulation_prevention(bytes.fromhex("00 00 03 00 00 03")) == bytes(4)
    assert h264.remove_emulation_prevention(bytes.fromhex("00 00 03 03 01")) == bytes.fromhex("00 00 03 01")
    assert h264.remove_emulation_prevention(bytes.fromhex("00 03 00 00 03 01")) == bytes.fromhex("00 03 00 00 01")
    assert h264.remove_emulation_prevention(bytearray(b"\x00\x00\x03")) == b"\x00\x00"


def test_interlaced_sps_crops_in_units_of_four_rows() -> None:
    w = BitWriter().u(8, 77).u(8, 0x40).u(8, 40).ue(0)  # Main, level 4.0
    w.ue(0).ue(0).ue(2).ue(4).u(1, 0)  # log2_max_frame_num, poc 0 + lsb, refs, gaps
    w.ue(119).ue(33).u(1, 0).u(1, 1).u(1, 1)  # 120 MBs wide, 34 map units, fields, mbaff, direct8x8
    w.u(1, 1).ue(0).ue(0).ue(0).ue(2).u(1, 0)  # crop bottom 2 units; no VUI
    sps = h264.parse_sps(sps_nal(w))
    assert (sps.coded_width, sps.coded_height) == (1920, 1088)
    assert (sps.width, sps.height) == (1920, 1080)  # CropUnitY = 2 × (2 − frame_mbs_only) = 4
    assert not sps.frame_mbs_only and sps.constraint_flags == (0, 1, 0, 0, 0, 0) and not sps.vui_present


@pytest.mark.parametrize("chroma", [1, 3])
def test_scaling_lists_and_poc_type_1(chroma: int) -> None:
    w = BitWriter().u(8, 100).u(8, 0x10).u(8, 41).ue(1)  # High, constraint_set3, sps_id 1
    w.ue(chroma)
    if chroma == 3:
        w.u(1, 0)  # separate_colour_plane_flag
    w.ue(0).ue(0).u(1, 0).u(1, 1)  # bit depths, bypass, seq_scaling_matrix_present_flag
    for index in range(8 if chroma != 3 else 12):
        present = index % 2 == 0
        w.u(1, int(present))
        if present:
            size = 16 if index < 6 else 64
            if index == 0:
                w.se(-8)  # nextScale 0: "use the default list", no more deltas
            else:
                for j in range(size):
                    w.se(1 if j % 3 else -2)
    w.ue(0).ue(1).u(1, 0).se(-3).se(2).ue(3).se(1).se(-1).se(5)  # poc type 1 with a 3-entry cycle
    w.ue(1).u(1, 0).ue(79).ue(44).u(1, 1).u(1, 1).u(1, 0).u(1, 1)  # 1280x720, VUI present
    sps = h264.parse_sps(sps_nal(w))
    assert (sps.width, sps.height, sps.sps_id, sps.chroma_format_idc) == (1280, 720, 1, chroma)
    assert sps.constraint_set3 and sps.pic_order_cnt_type == 1 and sps.vui_present


def test_sps_with_emulation_prevention_before_the_dimensions() -> None:
    w = BitWriter().u(8, 66).u(8, 0xC0).u(8, 30).ue(0).ue(0).ue(2).ue(1).u(1, 0)
    w.ue(2**20 - 1).ue(44).u(1, 1).u(1, 1).u(1, 1).ue(0).ue(2**22).ue(0).ue(0).u(1, 0)
    nal = sps_nal(w)
    assert b"\x00\x00\x03" in nal[:-2] and nal[1:] != w.rbsp()
    sps = h264.parse_sps(nal)
    assert (sps.width, sps.height) == (2**24 - 2 * 2**22, 720)


def test_bad_sps_raises_remote_errors() -> None:
    with pytest.raises(RemoteProtocolError, match="not an SPS"):
        h264.parse_sps(b"\x68\xce")
    with pytest.raises(RemoteProtocolError, match="truncated"):
        h264.parse_sps(b"\x67\x42\xc0")
    w = BitWriter().u(8, 66).u(8, 0).u(8, 30).ue(0).ue(0).ue(2).ue(1).u(1, 0).ue(0).ue(0).u(1, 1).u(1, 1)
    w.u(1, 1).ue(8).ue(0).ue(0).ue(0).u(1, 0)  # crops 16 px off a 16 px picture
    with pytest.raises(RemoteProtocolError, match="leaves no picture") as info:
        h264.parse_sps(sps_nal(w))
    assert info.value.data is not None


def test_iter_nals_start_codes() -> None:
    data = b"junk" + bytes.fromhex("00 00 00 01 67 64 00 00 00 01 68 ee 00 00 01 65 88 00 00 00 00 01 06 05 00 00 01")
    nals = list(h264.iter_nals(data))
    assert [(n.type, n.ref_idc) for n in nals] == [(7, 3), (8, 3), (5, 3), (6, 0)]
    assert [n.payload for n in nals] == [b"\x67\x64", b"\x68\xee", b"\x65\x88", b"\x06\x05"]
    assert list(h264.iter_nals(b"\x00\x00\x02\x01")) == []
    assert "payload=<2 bytes>" in repr(nals[0])


def test_splitter_rules_on_synthetic_units() -> None:
    sc = b"\x00\x00\x00\x01"
    aud, sps, pps, sei = sc + b"\x09\xf0", sc + b"\x67\x42", sc + b"\x68\xce", sc + b"\x06\x05"
    idr0, idr_next = sc + b"\x65\x88", b"\x00\x00\x01\x65\x21"  # first_mb 0 / first_mb != 0
    p0, p_next = sc + b"\x41\x9a", b"\x00\x00\x01\x41\x11"
    aus = [aud + sps + pps + sei + idr0 + idr_next, aud + p0 + p_next, p0, sei + p0, sps + pps + idr0]
    assert split(b"".join(aus)) == aus
    splitter = h264.AnnexBAccessUnitSplitter()
    assert splitter.feed(aus[0]) == [] and splitter.feed(aus[1][:3]) == []
    assert splitter.feed(aus[1][3:]) == [aus[0]]
    assert splitter.flush() == [aus[1]] and splitter.flush() == []


def test_splitter_bounds_what_it_holds_and_counts_what_it_drops() -> None:
    splitter = h264.AnnexBAccessUnitSplitter(max_pending=1024)
    sc = b"\x00\x00\x00\x01"
    good = sc + b"\x67\x42" + sc + b"\x68\xce" + sc + b"\x65\x88" + b"\xab" * 100
    out = []
    for _ in range(50):  # 50 KiB without a start code
        out += splitter.feed(b"\xff" * 1000)
        assert len(splitter._buf) <= 1024 + 1000
    assert out == [] and splitter.skips > 0 and splitter.skipped_bytes >= 48_000
    out += splitter.feed(good + good)
    out += splitter.flush()
    assert len(out) == 2 and out[1] == good  # what follows the cut splits normally again
    assert out[0].endswith(good) and set(out[0][: -len(good)]) <= {0xFF}  # the unscanned tail leads the next AU
    assert splitter.skipped_bytes + sum(map(len, out)) == 50_000 + 2 * len(good)  # every byte is accounted for
    # below the cap the splitter stays lossless
    small = h264.AnnexBAccessUnitSplitter(max_pending=1 << 20)
    assert b"".join(small.feed(good * 3) + small.flush()) == good * 3 and small.skipped_bytes == 0
    with pytest.raises(LocalProtocolError):
        h264.AnnexBAccessUnitSplitter(max_pending=0)


def test_splitter_and_au_info_are_fast() -> None:
    headers = b"".join(b"\x00\x00\x00\x01" + n.payload for n in h264.iter_nals(encode(1920, 1080, 1)[0]) if n.type in (7, 8))
    au = headers + b"\x00\x00\x00\x01\x65\x88" + b"\xab" * 300_000
    data = au * 200  # 60 MB, the size of ~40 s of 1080p keyframes
    start = time.perf_counter()
    splitter = h264.AnnexBAccessUnitSplitter()
    count = 0
    for pos in range(0, len(data), 65536):
        for unit in splitter.feed(data[pos : pos + 65536]):
            count += 1
            assert h264.au_info(unit).has_idr
    count += len(splitter.flush())
    elapsed = time.perf_counter() - start
    assert count == 200
    assert elapsed < 3.0, f"60 MB took {elapsed:.2f} s: a per-byte Python loop crept in"


# ---------------------------------------------------------------- fuzz

annexb = st.lists(
    st.one_of(
        st.sampled_from([b"\x00\x00\x01", b"\x00\x00\x00\x01", b"\x00\x00", b"\x00"]),
        st.builds(lambda h, rest: bytes([h]) + rest, st.sampled_from([0x09, 0x67, 0x68, 0x06, 0x65, 0x41, 0x01]),
                  st.binary(max_size=12)),
        st.binary(max_size=8),
    ),
    max_size=20,
).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(annexb, st.lists(st.integers(1, 12), max_size=10))
def test_fuzz_splitter_is_lossless_and_chunking_invariant(data: bytes, chunks: list[int]) -> None:
    whole = split(data)
    assert b"".join(whole) == data
    assert split(data, chunks) == whole
    for nal in h264.iter_nals(data):
        assert nal.payload and nal.payload in data


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=40), annexb)
def test_fuzz_sps_and_au_info(sps_body: bytes, au: bytes) -> None:
    try:
        sps = h264.parse_sps(b"\x67" + sps_body)
        assert sps.width > 0 and sps.height > 0
    except RemoteProtocolError:
        pass
    try:
        info = h264.au_info(au)
        assert len(info.nal_types) == len(list(h264.iter_nals(au)))
    except RemoteProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 2), min_size=1, max_size=8))
def test_exp_golomb_roundtrip(values: list[int]) -> None:
    writer = BitWriter()
    for value in values:
        writer.ue(value)
    reader = h264.BitReader(writer.rbsp())
    assert [reader.ue() for _ in values] == values
