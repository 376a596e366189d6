"""harness.protocols.hxfr against byte-exact samples from macos-frame-export.md §1, plus fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols import hxfr as h
from harness.protocols.errors import LocalProtocolError, RemoteProtocolError

HXFR = bytes.fromhex("48 58 46 52")  # magic 0x52465848, little-endian

# Feb-5 QEMU's reply to resource_id=0: HelixErrorResponse{header{0xFF, flags 0, session 1, 260}, -2, "Error: -2"}
ERROR_REPLY = (
    HXFR + bytes.fromhex("ff 00 01 00 04 01 00 00") + bytes.fromhex("fe ff ff ff") + b"Error: -2" + b"\x00" * 247
)
# vsockenc's FRAME_REQUEST: resource 0, 1920x1080 NV12, stride 1920, pts 0, duration 16666667 ns, keyframe.
FRAME_REQUEST = HXFR + bytes.fromhex(
    "01 00 01 00 2c 00 00 00"
    "00 00 00 00  80 07 00 00  38 04 00 00  4e 56 31 32  80 07 00 00"
    "00 00 00 00 00 00 00 00  2b 50 fe 00 00 00 00 00  01  00 00 00 00 00 00 00"
)


def frame_request(**kw: object) -> h.FrameRequest:
    args = dict(resource_id=0, width=1920, height=1080, format=h.FORMAT_NV12, stride=1920, pts_ns=0,
                duration_ns=16_666_667, force_keyframe=1)
    args.update(kw)
    return h.FrameRequest(**args)  # type: ignore[arg-type]


def feed_all(conn: h.HxfrConnection, data: bytes, step: int = 1) -> list:
    events = []
    for i in range(0, len(data), step):
        conn.receive_data(data[i : i + step])
        while (event := conn.next_event()) is not h.NEED_DATA:
            events.append(event)
    return events


# ---------------------------------------------------------------- byte-exact samples


def test_header_layout() -> None:
    assert h.HEADER.size == 12 and h.HEADER.format == "<IBBHI"
    assert struct.pack("<I", h.MAGIC) == b"HXFR"


def test_error_reply_for_resource_id_zero() -> None:
    assert len(ERROR_REPLY) == 272
    event = h.ErrorResponse(h.ErrorCode.RESOURCE_NOT_FOUND, "Error: -2")
    assert event.encode() == ERROR_REPLY
    client = h.HxfrConnection(h.Role.CLIENT)
    client.send(frame_request())
    assert feed_all(client, ERROR_REPLY) == [event]
    assert event.code is h.ErrorCode.RESOURCE_NOT_FOUND and event.session_id == 1
    assert client.outstanding == 0  # an error reply answers the request


def test_frame_request_56_bytes() -> None:
    assert len(FRAME_REQUEST) == 56
    assert frame_request().encode() == FRAME_REQUEST
    server = h.HxfrConnection(h.Role.SERVER)
    assert feed_all(server, FRAME_REQUEST, step=7) == [frame_request()]


def test_frame_request_with_pixel_data() -> None:
    pixels = bytes(range(256)) * 4
    raw = frame_request(pixel_data=pixels).encode()
    flags, payload_size = raw[5], struct.unpack_from("<I", raw, 8)[0]
    assert flags == h.FLAG_PIXEL_DATA and payload_size == 44 + len(pixels)
    assert raw[12:56] == FRAME_REQUEST[12:56] and raw[56:] == pixels
    parsed = h.decode_message(h.MsgType.FRAME_REQUEST, flags, 1, raw[12:])
    assert parsed.pixel_data == pixels and parsed.has_pixel_data
    with pytest.raises(RemoteProtocolError, match="FLAG_PIXEL_DATA"):  # extra bytes without the flag
        h.decode_message(h.MsgType.FRAME_REQUEST, 0, 1, raw[12:])


def test_frame_response_layout() -> None:
    annexb = bytes.fromhex("00 00 00 01 67 42 c0 1f 00 00 00 01 68 ce 3c 80 00 00 00 01 65 88 84 00")
    raw = (
        HXFR + bytes([0x02, 0x00]) + struct.pack("<HI", 1, 24 + 4 + len(annexb))
        + struct.pack("<q", 1_000_000) + struct.pack("<q", 999_000) + b"\x01" + b"\x00\x00\x00" + struct.pack("<I", 1)
        + struct.pack("<I", len(annexb)) + annexb
    )
    assert len(raw) == 36 + 4 + len(annexb)
    event = h.FrameResponse(pts=1_000_000, dts=999_000, is_keyframe=True, nals=[annexb])
    assert event.is_keyframe == 1 and event.nals == (annexb,)
    assert event.encode() == raw
    assert feed_all(h.HxfrConnection("client"), raw) == [event]
    assert event.data == annexb


def test_frame_response_nal_table_checks() -> None:
    def body(count: int, *nals: bytes, tail: bytes = b"") -> bytes:
        return struct.pack("<qqB3xI", 0, 0, 0, count) + b"".join(struct.pack("<I", len(n)) + n for n in nals) + tail

    assert h.decode_message(2, 0, 1, body(2, b"ab", b"")).nals == (b"ab", b"")
    for bad in (body(1), body(1, b"abc")[:-1], body(1, b"a", tail=b"x"), body(0xFFFFFFFF), b"\x00" * 23):
        with pytest.raises(RemoteProtocolError):
            h.decode_message(2, 0, 1, bad)


def test_scanout_and_subscribe_messages() -> None:
    sub = h.Subscribe(1)
    assert sub.encode() == HXFR + bytes.fromhex("30 00 01 00 04 00 00 00 01 00 00 00")
    assert h.Subscribe(3).session_id == 3  # header session_id = scanout_id
    resp = HXFR + bytes.fromhex("31 00 02 00 08 00 00 00 02 00 00 00 01 00 00 00")
    assert feed_all(h.HxfrConnection("client"), resp) == [h.SubscribeResponse(2, 1)]
    scan = h.ScanoutResponse(1, 1, "Virtual-2")
    raw = scan.encode()
    assert len(raw) == 12 + 72 and struct.unpack_from("<I", raw, 8)[0] == 72
    assert raw[12:20] == bytes.fromhex("01 00 00 00 01 00 00 00") and raw[20:29] == b"Virtual-2" and raw[29:] == bytes(55)
    enable = h.EnableScanout(2, 1920, 1080, 60)
    assert enable.encode()[8:] == bytes.fromhex("10 00 00 00 02 00 00 00 80 07 00 00 38 04 00 00 3c 00 00 00")
    assert h.DisableScanout(2).encode()[4:] == bytes.fromhex("21 00 01 00 04 00 00 00 02 00 00 00")


def test_config_ping_pong_keyframe() -> None:
    config = h.ConfigRequest(1920, 1080, 8_000_000, 60, 1, 100, 41, 1)
    raw = config.encode()
    assert struct.unpack_from("<I", raw, 8)[0] == 28 and len(raw) == 40
    assert raw[12:] == struct.pack("<IIIII", 1920, 1080, 8_000_000, 60, 1) + bytes([100, 41, 1]) + bytes(5)
    ping = h.Ping(session_id=7)
    assert ping.encode() == HXFR + bytes.fromhex("10 00 07 00 00 00 00 00")
    assert ping.response() == h.Pong(session_id=7)
    assert ping.response().encode() == HXFR + bytes.fromhex("11 00 07 00 00 00 00 00")
    assert h.KeyframeRequest().encode() == HXFR + bytes.fromhex("03 00 01 00 00 00 00 00")


def test_unknown_types_are_lossless() -> None:
    raw = HXFR + bytes.fromhex("05 02 09 00 03 00 00 00 aa bb cc")  # CONFIG_RESP: defined, never sent
    events = feed_all(h.HxfrConnection("client"), raw)
    assert events == [h.UnknownMessage(5, 2, 9, b"\xaa\xbb\xcc")]
    assert events[0].encode() == raw


def test_events_validate_themselves() -> None:
    for bad in (
        lambda: frame_request(width=-1),
        lambda: frame_request(pts_ns=2**63),
        lambda: frame_request(pixel_data="x"),
        lambda: h.ErrorResponse(-2, "x" * 257),
        lambda: h.ScanoutResponse(1, 1, "a\x00b"),
        lambda: h.Subscribe(1, session_id=70000),
        lambda: h.FrameResponse(0, 0, 0, b"not-a-tuple"),
    ):
        with pytest.raises(LocalProtocolError):
            bad()


# ---------------------------------------------------------------- connection


def test_partial_header_and_body_wait() -> None:
    conn = h.HxfrConnection("client")
    conn.receive_data(ERROR_REPLY[:11])
    assert conn.next_event() is h.NEED_DATA
    conn.receive_data(ERROR_REPLY[11:100])
    assert conn.next_event() is h.NEED_DATA
    conn.receive_data(ERROR_REPLY[100:] + h.Pong().encode()[:3])
    assert isinstance(conn.next_event(), h.ErrorResponse)
    assert conn.next_event() is h.NEED_DATA
    conn.receive_data(h.Pong().encode()[3:])
    assert conn.next_event() == h.Pong()
    conn.receive_data(b"")
    assert conn.next_event() is h.EOF and conn.state is h.State.CLOSED
    assert repr(h.EOF) == "EOF" and repr(h.NEED_DATA) == "NEED_DATA"


def test_eof_inside_a_message() -> None:
    conn = h.HxfrConnection("client")
    conn.receive_data(ERROR_REPLY[:20])
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="EOF inside a message"):
        conn.next_event()
    assert conn.state is h.State.ERROR


def test_bad_magic_raises_with_data_and_sticks() -> None:
    conn = h.HxfrConnection("server")
    conn.receive_data(h.Ping().encode())
    bad = b"GET / HTTP/1.1\r\n"
    conn.receive_data(bad)
    assert conn.next_event() == h.Ping()
    with pytest.raises(RemoteProtocolError, match="bad magic 0x20544547.*offset 12") as info:
        conn.next_event()
    assert info.value.data == bad[:12]
    assert conn.state is h.State.ERROR
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.send(h.Pong())


def test_payload_size_is_capped_before_allocating() -> None:
    conn = h.HxfrConnection("client", max_payload=1024)
    conn.receive_data(HXFR + bytes.fromhex("02 00 01 00 ff ff ff ff"))
    with pytest.raises(RemoteProtocolError, match="exceeds the cap"):
        conn.next_event()
    default = h.HxfrConnection("server")
    assert default.max_payload == 64 * 1024 * 1024 + 44
    default.receive_data(HXFR + bytes([1, 1, 1, 0]) + struct.pack("<I", 64 * 1024 * 1024 + 45))
    with pytest.raises(RemoteProtocolError):
        default.next_event()


def test_fixed_size_mismatch_fails_without_waiting_for_the_body() -> None:
    conn = h.HxfrConnection("client")
    conn.receive_data(HXFR + bytes.fromhex("ff 00 01 00 00 01 00 00"))  # ERROR with payload 256, not 260
    with pytest.raises(RemoteProtocolError, match="ERROR payload_size 256, expected 260"):
        conn.next_event()


def test_no_reply_and_error_reply_are_different_outcomes() -> None:
    client = h.HxfrConnection(h.Role.CLIENT)
    first, second = frame_request(pts_ns=1), frame_request(pts_ns=2)
    client.send(first)
    client.send(second)
    assert client.outstanding == 2
    assert client.next_event() is h.NEED_DATA  # v10 QEMU: silence
    assert client.expire_outstanding() == h.NoReply(first, 2)
    assert client.outstanding == 0 and client.expire_outstanding() is None
    client.send(first)
    client.receive_data(ERROR_REPLY)
    assert isinstance(client.next_event(), h.ErrorResponse)
    assert client.expire_outstanding() is None


def test_subscribe_stream_responses_need_no_request() -> None:
    client = h.HxfrConnection("client")
    client.send(h.Subscribe(1))
    frames = [h.FrameResponse(i, i, i == 0, [b"\x00\x00\x00\x01\x65"], session_id=1) for i in range(3)]
    wire = h.SubscribeResponse(1, 1).encode() + b"".join(f.encode() for f in frames)
    assert feed_all(client, wire, step=5) == [h.SubscribeResponse(1, 1), *frames]
    assert client.outstanding == 0


def test_direction_checks() -> None:
    with pytest.raises(LocalProtocolError):
        h.HxfrConnection("client").send(h.ErrorResponse(-1, "x"))
    with pytest.raises(LocalProtocolError):
        h.HxfrConnection("server").send(frame_request())
    with pytest.raises(LocalProtocolError):
        h.HxfrConnection("server").send(h.NoReply(frame_request()))  # type: ignore[arg-type]
    assert h.HxfrConnection("server").send(h.UnknownMessage(0x40, 0, 1, b"x"))[4] == 0x40
    conn = h.HxfrConnection("client")
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"late")


def test_byte_logs_keep_the_last_64_kib() -> None:
    client = h.HxfrConnection("client")
    big = frame_request(pixel_data=bytes(range(256)) * 400)  # 102400 B of pixels
    data = client.send(big)
    assert client.bytes_sent == len(data) and len(client.sent) == 64 * 1024
    assert bytes(client.sent) == data[-64 * 1024 :]
    client.send(h.Ping())
    assert bytes(client.sent[-12:]) == h.Ping().encode() and len(client.sent) == 64 * 1024
    client.receive_data(ERROR_REPLY)
    assert bytes(client.received) == ERROR_REPLY and client.bytes_received == 272


def test_hexdump() -> None:
    dump = h.hexdump(ERROR_REPLY, limit=32)
    assert dump.splitlines() == [
        "00000000  48 58 46 52 ff 00 01 00  04 01 00 00 fe ff ff ff  |HXFR............|",
        "00000010  45 72 72 6f 72 3a 20 2d  32 00 00 00 00 00 00 00  |Error: -2.......|",
        "... 240 more bytes",
    ]
    assert h.hexdump(b"ab", offset=16) == "00000010  61 62                                             |ab|"
    assert h.hexdump(b"") == ""


# ---------------------------------------------------------------- fuzz

TYPES = [0x01, 0x02, 0x03, 0x04, 0x05, 0x10, 0x11, 0x20, 0x21, 0x22, 0x30, 0x31, 0xFF, 0x42]
BODY_SIZES = {0x01: 44, 0x02: 24, 0x04: 28, 0x20: 16, 0x21: 4, 0x22: 72, 0x30: 4, 0x31: 8, 0xFF: 260}


@st.composite
def framed(draw: st.DrawFn) -> bytes:
    """One message: mostly well-framed with the right body size, sometimes off by a little."""
    msg_type = draw(st.sampled_from(TYPES))
    size = BODY_SIZES.get(msg_type, 0)
    if draw(st.booleans()):
        body = draw(st.binary(min_size=size, max_size=size))
    else:
        body = draw(st.binary(max_size=80))
    if msg_type == 0x02 and draw(st.booleans()):  # a NAL table
        nals = draw(st.lists(st.binary(max_size=8), max_size=3))
        body = body[:20].ljust(20, b"\0") + struct.pack("<I", len(nals)) + b"".join(
            struct.pack("<I", len(n)) + n for n in nals
        )
    if msg_type == 0x01:
        body += draw(st.binary(max_size=8))  # pixel data (valid only with flag 0x01)
    flags = draw(st.sampled_from([0, 0, 1, 0xFF]))
    size_delta = draw(st.sampled_from([0, 0, 0, 0, -1, 1, 4]))
    header = h.HEADER.pack(h.MAGIC, msg_type, flags, draw(st.integers(0, 65535)), max(0, len(body) + size_delta))
    return header + body


streams = st.lists(st.one_of(framed(), framed(), st.binary(max_size=16)), max_size=6).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(["client", "server"]), streams, st.integers(1, 64), st.booleans())
def test_fuzz_connection(role: str, data: bytes, step: int, eof: bool) -> None:
    conn = h.HxfrConnection(role, max_payload=4096)
    try:
        for i in range(0, len(data), step):
            conn.receive_data(data[i : i + step])
            while (event := conn.next_event()) is not h.NEED_DATA:
                assert event is not h.EOF
                assert isinstance(event.encode(), bytes)  # every decoded event can be re-sent
        if eof:
            conn.receive_data(b"")
            while (event := conn.next_event()) is not h.EOF:
                assert event is not h.NEED_DATA
    except RemoteProtocolError:
        assert conn.state is h.State.ERROR


u = lambda bits: st.integers(0, 2**bits - 1)  # noqa: E731
i64 = st.integers(-(2**63), 2**63 - 1)
kw = dict(session_id=u(16), flags=u(8))
events = st.one_of(
    st.builds(h.FrameRequest, u(32), u(32), u(32), u(32), u(32), i64, i64, u(8), st.binary(max_size=20), **kw),
    st.builds(h.FrameResponse, i64, i64, u(8), st.lists(st.binary(max_size=10), max_size=3), **kw),
    st.builds(h.KeyframeRequest, **kw), st.builds(h.Ping, **kw), st.builds(h.Pong, **kw),
    st.builds(h.ConfigRequest, u(32), u(32), u(32), u(32), u(32), u(8), u(8), u(8), **kw),
    st.builds(h.EnableScanout, u(32), u(32), u(32), u(32), **kw),
    st.builds(h.DisableScanout, u(32), **kw),
    st.builds(h.ScanoutResponse, u(32), u(32), st.from_regex(r"[A-Za-z0-9\-]{0,64}", fullmatch=True), **kw),
    st.builds(h.Subscribe, u(32), **kw), st.builds(h.SubscribeResponse, u(32), u(32), **kw),
    st.builds(h.ErrorResponse, st.integers(-(2**31), 2**31 - 1), st.from_regex(r"[ -~]{0,256}", fullmatch=True), **kw),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(events, min_size=1, max_size=5), st.integers(1, 50))
def test_roundtrip_event_streams(sent: list, step: int) -> None:
    wire = b"".join(event.encode() for event in sent)
    got = feed_all(h.HxfrConnection("server", max_payload=1 << 20), wire, step)
    assert got == sent
