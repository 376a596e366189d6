"""harness.protocols.stream against byte-exact samples from helix-stream.md §4, plus fuzzing."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.protocols import stream as s
from harness.protocols.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

# The real header from the reference: 3840x2160, pts 0, not a keyframe.
REAL_VIDEO_HEADER = bytes.fromhex("01 01 00 00 00 00 00 00 00 00 00 0f 00 08 70")
AU = bytes.fromhex("00 00 00 01 67 42 c0 1f 00 00 00 01 68 ce 3c 80 00 00 01 65 88 84")


# ---------------------------------------------------------------- byte-exact samples


def test_real_video_frame_header_parses() -> None:
    frame = s.parse_binary(REAL_VIDEO_HEADER + AU)
    assert frame == s.VideoFrame(codec=s.CODEC_H264, flags=0, pts_us=0, width=3840, height=2160, data=AU)
    assert not frame.is_keyframe and not frame.is_replay
    assert frame.encode() == REAL_VIDEO_HEADER + AU
    assert s.VIDEO_FRAME_HEADER.size == 15


def test_video_frame_flags_and_pts_are_big_endian() -> None:
    frame = s.VideoFrame(1, s.FLAG_KEYFRAME | s.FLAG_REPLAY, 1_700_000_000_000_000, 1920, 1080, b"")
    assert frame.encode() == bytes.fromhex("01 01 03 00 06 0a 24 18 1e 40 00 07 80 04 38")
    assert frame.is_keyframe and frame.is_replay


def test_stream_init_13_bytes() -> None:
    raw = bytes.fromhex("30 01 07 80 04 38 3c 00 00 00 00 00 01")
    init = s.parse_binary(raw)
    assert init == s.StreamInit(codec=1, width=1920, height=1080, fps=60)
    assert (init.audio_channels, init.sample_rate, init.touch) == (0, 0, 1)
    assert init.encode() == raw
    assert s.StreamInit(1, 1280, 720, 40, 2, 48000, 1).encode() == bytes.fromhex("30 01 05 00 02 d0 28 02 00 00 bb 80 01")


def test_stream_error_u16_length_utf8() -> None:
    message = "GPU encoder unavailable on this host"
    raw = b"\x31" + struct.pack(">H", len(message)) + message.encode()
    assert raw[:3] == bytes.fromhex("31 00 24")
    assert s.parse_binary(raw) == s.StreamError(message)
    assert s.StreamError(message).encode() == raw
    assert s.StreamError("é").encode() == bytes.fromhex("31 00 02 c3 a9")


def test_ping_and_pong() -> None:
    ping_raw = bytes.fromhex("40 00 00 00 07 00 00 00 00 00 00 03 e8")
    ping = s.parse_binary(ping_raw)
    assert ping == s.Ping(seq=7, client_time_us=1000)
    assert ping.encode() == ping_raw
    pong = ping.response(server_time_us=0x0102030405060708, encoder_latency_ms=5, canary_p50_ms=1,
                         canary_p99_ms=2, canary_max_ms=300)
    raw = pong.encode()
    assert len(raw) == 29
    assert raw == bytes.fromhex(
        "41 00000007 00000000000003e8 0102030405060708 0005 0001 0002 012c".replace(" ", "")
    )
    assert s.parse_binary(raw) == pong


def test_cursor_name_little_endian() -> None:
    raw = bytes.fromhex("51 02 00 00 00 03 00 00 00 fe ff ff ff 07") + b"default"
    event = s.parse_binary(raw)
    assert event == s.CursorName(last_mover_id=2, hot_x=3, hot_y=-2, name="default")
    assert event.encode() == raw


def test_cursor_image_with_and_without_bitmap() -> None:
    bare = bytes.fromhex("50 01 00 00 00 0a 00 00 00 14 00 00 00 ff ff ff ff 00 00 00 00 00 00 00 00")
    assert len(bare) == 25
    event = s.parse_binary(bare)
    assert event == s.CursorImage(1, 10, 20, -1, 0)
    assert not event.has_bitmap and event.encode() == bare

    pixels = bytes(range(16))  # 2x2 RGBA8888
    raw = (
        bytes.fromhex("50 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00 02 00 00 00")
        + struct.pack("<I", 16 + len(pixels))  # bitmapSize includes the 16-byte bitmap header
        + bytes.fromhex("52 41 32 34 02 00 00 00 02 00 00 00 08 00 00 00")
        + pixels
    )
    event = s.parse_binary(raw)
    assert event == s.CursorImage(0, 0, 0, 1, 2, format=0x34324152, width=2, height=2, stride=8, pixels=pixels)
    assert event.encode() == raw


def test_cursor_image_bitmap_size_checks() -> None:
    head = bytes.fromhex("50 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00")
    with pytest.raises(RemoteProtocolError, match="smaller than its 16-byte header"):
        s.parse_binary(head + struct.pack("<I", 8) + b"\x00" * 8)
    with pytest.raises(RemoteProtocolError):
        s.parse_binary(head + struct.pack("<I", 40) + b"\x00" * 16)


def test_self_id_and_remote_user() -> None:
    assert s.parse_binary(bytes.fromhex("58 2a 00 00 00")) == s.SelfId(42)
    raw = (
        bytes.fromhex("54 01 2a 00 00 00")
        + b"\x05alice" + b"\x07#ff0000" + struct.pack("<H", 21) + b"https://x.test/a.png?"
    )
    user = s.parse_binary(raw)
    assert user == s.RemoteUser(s.REMOTE_USER_JOINED, 42, "alice", "#ff0000", "https://x.test/a.png?")
    assert user.encode() == raw
    with pytest.raises(RemoteProtocolError):
        s.parse_binary(raw + b"x")  # trailing garbage
    with pytest.raises(RemoteProtocolError):
        s.parse_binary(raw[:-1])


def test_connection_complete_text_is_gorilla_write_json() -> None:
    text = s.ConnectionComplete(1920, 1080).to_text()
    assert text == '{"ConnectionComplete":{"capabilities":{"touch":false},"width":1920,"height":1080}}\n'
    assert s.parse_text(text) == s.ConnectionComplete(1920, 1080)
    assert s.parse_text(text.strip()) == s.ConnectionComplete(1920, 1080, touch=False)
    with pytest.raises(RemoteProtocolError):
        s.parse_text('{"ConnectionComplete":{"width":"1920","height":1080}}')


def test_init_text_as_the_cli_sends_it() -> None:
    init = s.Init("ses_01ke4rsx7jb62ms9zx8g68tnbe", 1920, 1080, 60, 10000)
    # Go json.Marshal(map[string]interface{}) sorts keys; the CLI's init is such a map.
    assert init.to_text() == (
        '{"bitrate":10000,"fps":60,"height":1080,"packet_size":1024,"play_audio_local":false,'
        '"session_id":"ses_01ke4rsx7jb62ms9zx8g68tnbe","type":"init","video_supported_formats":1,"width":1920}'
    )
    # The field order in the reference parses to the same event.
    ref_order = (
        '{"type":"init","session_id":"ses_01ke4rsx7jb62ms9zx8g68tnbe","width":1920,"height":1080,"fps":60,'
        '"bitrate":10000,"packet_size":1024,"play_audio_local":false,"video_supported_formats":1}'
    )
    assert s.parse_text(ref_order) == init
    with_mode = s.Init("ses_x", 1280, 720, 40, 5000, video_mode="shm", extra={"gop_size": 60})
    assert '"gop_size":60' in with_mode.to_text() and '"video_mode":"shm"' in with_mode.to_text()
    assert s.parse_text(with_mode.to_text()) == with_mode


def test_init_missing_fields_get_go_zero_values() -> None:
    init = s.parse_text('{"type":"init"}')
    assert init == s.Init("", 0, 0, 0, 0, packet_size=0, video_supported_formats=0)
    with pytest.raises(RemoteProtocolError, match="width"):
        s.parse_text('{"type":"init","width":1920.0}')
    with pytest.raises(RemoteProtocolError):
        s.parse_text('{"type":"init","play_audio_local":0}')


def test_other_text_and_unknown_binary_are_lossless() -> None:
    assert s.parse_text("hello") == s.TextMessage("hello")
    assert s.parse_text('{"type":"other"}') == s.TextMessage('{"type":"other"}')
    control = b'\x20{"set_video_enabled":false}'
    event = s.parse_binary(control)
    assert event == s.UnknownMessage(0x20, control[1:])
    assert event.encode() == control
    assert s.parse_binary(b"\x03") == s.UnknownMessage(3, b"")


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x01" + b"\x00" * 13, b"\x30" + b"\x00" * 11, b"\x30" + b"\x00" * 13, b"\x40" * 12, b"\x41" + b"\x00" * 27,
     b"\x58\x00", bytes.fromhex("31 00 05 61"), bytes.fromhex("31 00 01 ff"), bytes.fromhex("51 00 00 00 00 00 00 00 00 00 00 00 00 05 61")],
)
def test_malformed_binary_raises_remote_error_with_data(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        s.parse_binary(raw)
    assert info.value.data is not None and info.value.phase == "protocol"


def test_events_validate_themselves() -> None:
    with pytest.raises(LocalProtocolError):
        s.VideoFrame(1, 0, 0, 70000, 1080, b"")
    with pytest.raises(LocalProtocolError):
        s.StreamInit(1, 1920, 1080, 256)
    with pytest.raises(LocalProtocolError):
        s.Ping(-1, 0)
    with pytest.raises(LocalProtocolError):
        s.CursorName(0, 0, 0, "x" * 256)
    with pytest.raises(LocalProtocolError):
        s.Init("ses", True, 1, 1, 1)
    with pytest.raises(LocalProtocolError):
        s.Init("ses", 1, 1, 1, 1, extra={"type": "x"})
    with pytest.raises(LocalProtocolError):
        s.CursorImage(0, 0, 0, 0, 0, pixels=b"x")
    assert s.VideoFrame(1, 0, 0, 1, 1, bytearray(b"ab")).data == b"ab"
    with pytest.raises(TypeError):
        ProtocolError("abstract")
    assert s.codec_name(0x01) == "H.264" and s.codec_name(0x07) == "Unknown(0x07)"


# ---------------------------------------------------------------- connection


def test_server_flow() -> None:
    server = s.StreamConnection(s.Role.SERVER)
    assert server.state is s.State.AWAITING_INIT
    with pytest.raises(LocalProtocolError):
        server.send(s.StreamInit(1, 1920, 1080, 60))
    # binary before the init is skipped, as the real server does
    early = server.receive(s.KIND_BINARY, s.Ping(1, 2).encode())
    assert early == s.UnknownMessage(0x40, s.Ping(1, 2).encode()[1:])
    init = s.Init("ses_x", 1920, 1080, 60, 10000)
    assert server.receive(s.KIND_TEXT, init.to_text().encode()) == init
    assert server.state is s.State.STREAMING and server.init == init
    sent = [
        server.send(s.StreamInit(1, 1920, 1080, 60)),
        server.send(s.ConnectionComplete(1920, 1080)),
        server.send(s.VideoFrame(1, 1, 0, 1920, 1080, AU)),
    ]
    assert [kind for kind, _ in sent] == [s.Kind.BINARY, s.Kind.TEXT, s.Kind.BINARY]
    assert sent[1][1].startswith('{"ConnectionComplete"')
    assert server.receive(0, s.Ping(9, 1).encode()) == s.Ping(9, 1)
    assert server.receive(0, b"\x12\x01\x00\x10\x00\x20\x07\x80\x04\x38") == s.UnknownMessage(0x12, bytes.fromhex("01 00 10 00 20 07 80 04 38"))
    with pytest.raises(LocalProtocolError):
        server.send(s.Ping(1, 1))
    server.close()
    with pytest.raises(LocalProtocolError):
        server.send(s.VideoFrame(1, 1, 0, 1, 1, b""))


@pytest.mark.parametrize("text", ["not json", '{"type":"hello"}', "[]", '{"type":"init","width":"wide"}'])
def test_server_drops_a_bad_first_text(text: str) -> None:
    server = s.StreamConnection("server")
    with pytest.raises(RemoteProtocolError):
        server.receive(s.KIND_TEXT, text)
    assert server.state is s.State.CLOSED


def test_client_flow() -> None:
    client = s.StreamConnection(s.Role.CLIENT)
    with pytest.raises(LocalProtocolError):
        client.send(s.Ping(1, 1))
    kind, text = client.send(s.Init("ses_x", 1920, 1080, 60, 10000))
    assert kind is s.Kind.TEXT and json.loads(text)["type"] == "init"
    assert client.state is s.State.STREAMING
    with pytest.raises(LocalProtocolError):
        client.send(s.Init("ses_x", 1920, 1080, 60, 10000))
    with pytest.raises(LocalProtocolError):
        client.send(s.VideoFrame(1, 0, 0, 1, 1, b""))
    assert client.send(s.Ping(1, 5)) == (s.Kind.BINARY, s.Ping(1, 5).encode())
    assert client.receive(s.KIND_BINARY, bytes.fromhex("30 01 07 80 04 38 3c 00 00 00 00 00 01")).fps == 60
    assert client.receive(s.KIND_TEXT, s.ConnectionComplete(1920, 1080).to_text()) == s.ConnectionComplete(1920, 1080)
    assert client.receive(s.KIND_BINARY, memoryview(REAL_VIDEO_HEADER + AU)).width == 3840
    # a C→S message arriving at the client stays lossless but unparsed
    assert isinstance(client.receive(0, s.Ping(1, 1).encode()), s.UnknownMessage)
    with pytest.raises(RemoteProtocolError):
        client.receive(s.KIND_TEXT, b"\xff\xfe")
    with pytest.raises(LocalProtocolError):
        client.receive(7, b"")
    assert client.state is s.State.STREAMING  # a bad message does not close the client


# ---------------------------------------------------------------- fuzz

KNOWN_TYPES = [0x01, 0x30, 0x31, 0x40, 0x41, 0x50, 0x51, 0x53, 0x54, 0x55, 0x56, 0x58, 0x02, 0x20]
binary_messages = st.one_of(
    st.binary(max_size=48),
    st.builds(lambda t, rest: bytes([t]) + rest, st.sampled_from(KNOWN_TYPES), st.binary(max_size=48)),
    st.builds(  # length-prefixed messages with a plausible length byte
        lambda t, n, rest: bytes([t]) + rest[:13] + bytes([n]) + rest[13:],
        st.sampled_from([0x31, 0x51, 0x53, 0x54, 0x56]), st.integers(0, 20), st.binary(max_size=40),
    ),
)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                         st.text(max_size=8))
init_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["init", "init", "Init", 3])},
    optional={k: json_scalars for k in ["session_id", "width", "height", "fps", "bitrate", "packet_size",
                                        "play_audio_local", "video_supported_formats", "video_mode", "gop_size"]},
).map(json.dumps)
cc_like = st.fixed_dictionaries(
    {"ConnectionComplete": st.one_of(json_scalars, st.fixed_dictionaries(
        {}, optional={"width": json_scalars, "height": json_scalars,
                      "capabilities": st.one_of(json_scalars, st.fixed_dictionaries({}, optional={"touch": json_scalars}))}))}
).map(json.dumps)
texts = st.one_of(st.text(max_size=40), init_like, cc_like, st.just("[" * 5000), st.just('"\\ud800"'),
                  st.just('{"type":"init","session_id":"\\udc00"}'))


@settings(max_examples=1500, deadline=None)
@given(binary_messages)
def test_fuzz_parse_binary(raw: bytes) -> None:
    try:
        event = s.parse_binary(raw)
    except RemoteProtocolError:
        return
    assert event.encode() == raw  # every binary event is lossless


@settings(max_examples=800, deadline=None)
@given(texts)
def test_fuzz_parse_text(text: str) -> None:
    try:
        event = s.parse_text(text)
    except RemoteProtocolError:
        return
    if isinstance(event, s.TextMessage):
        assert event.to_text() == text
    else:
        assert s.parse_text(event.to_text()) == event


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["client", "server"]),
       st.lists(st.one_of(st.tuples(st.just(0), binary_messages), st.tuples(st.just(1), texts)), max_size=6))
def test_fuzz_connection_receive(role: str, messages: list) -> None:
    conn = s.StreamConnection(role)
    for kind, data in messages:
        if conn.state is s.State.CLOSED:
            break
        try:
            conn.receive(kind, data)
        except RemoteProtocolError:
            pass


u = lambda bits: st.integers(0, 2**bits - 1)  # noqa: E731
i32 = st.integers(-(2**31), 2**31 - 1)
short = st.text(max_size=10)
events = st.one_of(
    st.builds(s.VideoFrame, u(8), u(8), u(64), u(16), u(16), st.binary(max_size=20)),
    st.builds(s.StreamInit, u(8), u(16), u(16), u(8), u(8), u(32), u(8)),
    st.builds(s.StreamError, short),
    st.builds(s.Ping, u(32), u(64)),
    st.builds(s.Pong, u(32), u(64), u(64), u(16), u(16), u(16), u(16)),
    st.builds(s.CursorImage, u(32), i32, i32, i32, i32),
    st.builds(s.CursorImage, u(32), i32, i32, i32, i32, u(32), u(32), u(32), i32, st.binary(max_size=20)),
    st.builds(s.CursorName, u(32), i32, i32, short),
    st.builds(s.SelfId, u(32)),
    st.builds(s.RemoteUser, st.integers(1, 255), u(32), short, short, short),
    st.builds(s.RemoteUserLeft, u(32)),
    st.builds(s.RemoteCursor, u(32), i32, i32, short),
    st.builds(s.AgentCursor, u(32), u(16), u(16), u(8), u(8)),
    st.builds(s.RemoteTouch, u(32), u(32), u(8), i32, i32, u(32), short),
    st.builds(s.Ping, u(32), u(64), st.binary(max_size=8)),
    st.builds(s.UnknownMessage, st.sampled_from([0x02, 0x03, 0x10, 0x20, 0x52, 0x57, 0x59]), st.binary(max_size=10)),
)


@settings(max_examples=600, deadline=None)
@given(events)
def test_roundtrip_binary_events(event: s.Event) -> None:
    assert s.parse_binary(event.encode()) == event
