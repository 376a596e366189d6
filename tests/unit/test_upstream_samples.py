"""Byte-exact samples of every stream message layout in helix-stream.md §4 and upstream-corrections.md.

The bytes are written out by hand from the layouts (upstream ``api/pkg/desktop/session_registry.go``,
``ws_stream.go``, ``spectask.go``), never produced by our own encoder, so a bug shared by the sim and
the harness cannot pass. Also: one classification rule (``classify``/``StreamTally``) for the live
capture and ``analyze``, the conditional ``Codec:`` line and both ``spectask start --help`` generations.
"""

from __future__ import annotations

import struct

import pytest

from harness.protocols import cli_output as c
from harness.protocols import stream as s
from harness.protocols.errors import LocalProtocolError, RemoteProtocolError

H = bytes.fromhex
AU = H("00 00 00 01 67 42 c0 1f 00 00 00 01 68 ce 3c 80 00 00 01 65 88 84")

# (name, bytes, expected event) for every S→C binary layout.
SERVER_SAMPLES = [
    ("0x01 video frame, real header (3840x2160, pts 0)", H("01 01 00 00 00 00 00 00 00 00 00 0f 00 08 70") + AU,
     s.VideoFrame(1, 0, 0, 3840, 2160, AU)),
    ("0x01 keyframe + replay, pts BE", H("01 01 03 00 00 00 00 00 00 41 1a 07 80 04 38") + AU,
     s.VideoFrame(1, 3, 16666, 1920, 1080, AU)),
    ("0x30 StreamInit 13 B", H("30 01 07 80 04 38 3c 00 00 00 00 00 01"), s.StreamInit(1, 1920, 1080, 60, 0, 0, 1)),
    ("0x31 StreamError u16 BE length", H("31 00 1e") + b"unexpected msg_type: 0x22 (34)",
     s.StreamError("unexpected msg_type: 0x22 (34)")),
    ("0x41 Pong 29 B", H("41 00 00 00 07 00 00 00 00 00 00 03 e8 00 06 0a 24 18 1e 40 00 00 05 00 01 00 02 01 2c"),
     s.Pong(7, 1000, 1_700_000_000_000_000, 5, 1, 2, 300)),
    ("0x50 CursorImage without bitmap", H("50 01 00 00 00 0a 00 00 00 14 00 00 00 ff ff ff ff 00 00 00 00 00 00 00 00"),
     s.CursorImage(1, 10, 20, -1, 0)),
    ("0x50 CursorImage with a 1x1 bitmap", H("50 02 00 00 00 00 00 00 00 00 00 00 00 03 00 00 00 04 00 00 00 14 00 00 00"
                                            "41 52 32 34 01 00 00 00 01 00 00 00 04 00 00 00 ff 00 00 ff"),
     s.CursorImage(2, 0, 0, 3, 4, 0x34325241, 1, 1, 4, H("ff 00 00 ff"))),
    ("0x51 CursorName", H("51 00 00 00 00 00 00 00 00 00 00 00 00 07") + b"default", s.CursorName(0, 0, 0, "default")),
    ("0x53 RemoteCursor", H("53 02 00 00 00 64 00 00 00 fb ff ff ff 07") + b"#0D99FF", s.RemoteCursor(2, 100, -5, "#0D99FF")),
    ("0x54 RemoteUser joined", H("54 01 2a 00 00 00 05") + b"alice" + H("07") + b"#ff0000" + H("00 00"),
     s.RemoteUser(1, 42, "alice", "#ff0000", "")),
    ("0x54 RemoteUser joined with avatar", H("54 01 03 00 00 00 00 00 05 00") + b"a.png",
     s.RemoteUser(1, 3, "", "", "a.png")),
    ("0x54 RemoteUser left: exactly 6 bytes", H("54 00 2a 00 00 00"), s.RemoteUserLeft(42)),
    ("0x55 AgentCursor 11 B", H("55 01 00 00 00 80 07 38 04 02 01"), s.AgentCursor(1, 1920, 1080, 2, 1)),
    ("0x56 RemoteTouch", H("56 03 00 00 00 09 00 00 00 01 0a 00 00 00 f6 ff ff ff ff 7f 00 00 07") + b"#ff0000",
     s.RemoteTouch(3, 9, 1, 10, -10, 32767, "#ff0000")),
    ("0x58 SelfId LE", H("58 2a 00 00 00"), s.SelfId(42)),
]

# C→S layouts: the client core never parses them (lossless UnknownMessage), the server parses only 0x40.
CLIENT_SAMPLES = [
    ("0x10 keyboard evdev", H("10 00 01 02 00 1e")),
    ("0x10 keyboard keysym", H("10 02 00 00 ff 0d")),
    ("0x11 mouse button", H("11 02 01 01")),
    ("0x11 hi-res wheel", H("11 03 00 00 ff 88")),
    ("0x12 mouse absolute", H("12 01 00 10 00 20 07 80 04 38")),
    ("0x13 mouse relative", H("13 01 ff f6 00 0a")),
    ("0x14 touch, f32 LE", H("14 00 01") + struct.pack("<ff", 10.5, 20.25)),
    ("0x20 control", b'\x20{"set_video_enabled":false}'),
    ("0x02 audio (never sent)", H("02 00 01")),
    ("0x03 batch (never sent)", H("03 00 02")),
]


@pytest.mark.parametrize(("raw", "event"), [(raw, ev) for _, raw, ev in SERVER_SAMPLES],
                         ids=[name for name, _, _ in SERVER_SAMPLES])
def test_every_server_layout_decodes_byte_exact(raw: bytes, event: s.Event) -> None:
    assert s.parse_binary(raw) == event
    assert event.encode() == raw
    client = s.StreamConnection(s.Role.CLIENT)
    assert client.receive(s.KIND_BINARY, raw) == event  # at any point, before the init too


@pytest.mark.parametrize("raw", [raw for _, raw in CLIENT_SAMPLES], ids=[name for name, _ in CLIENT_SAMPLES])
def test_client_layouts_stay_lossless(raw: bytes) -> None:
    assert s.parse_binary(raw) == s.UnknownMessage(raw[0], raw[1:])
    server = s.StreamConnection(s.Role.SERVER)
    server.receive(s.KIND_TEXT, s.Init("ses_x", 1920, 1080, 60, 10000).to_text())
    assert server.receive(s.KIND_BINARY, raw) == s.UnknownMessage(raw[0], raw[1:])


def test_remote_user_left_is_not_a_join_and_never_an_error() -> None:
    left = s.parse_binary(H("54 00 07 00 00 00"))
    assert isinstance(left, s.RemoteUserLeft) and not left.joined and left.action == s.REMOTE_USER_LEFT
    joined = s.parse_binary(SERVER_SAMPLES[9][1])
    assert isinstance(joined, s.RemoteUser) and joined.joined
    assert s.is_viewer_event(left) and s.is_viewer_event(joined) and s.is_viewer_event(s.SelfId(1))
    assert not s.is_error(left) and s.classify(left) is s.Category.VIEWER
    with pytest.raises(LocalProtocolError, match="RemoteUserLeft"):
        s.RemoteUser(s.REMOTE_USER_LEFT, 7, "x", "y")


@pytest.mark.parametrize("raw", [
    H("54 00 07 00 00"),  # left cut short
    H("54 00 07 00 00 00 00"),  # left with a trailing byte
    H("54 01 07 00 00 00 05 61"),  # joined, name cut
    H("55 01 00 00 00 80 07 38 04 02"),  # AgentCursor 10 of 11 bytes
    H("55 01 00 00 00 80 07 38 04 02 01 00"),  # 12 bytes
    H("53 02 00 00 00 64 00 00 00 fb ff ff ff 07 23"),  # RemoteCursor colour cut
    H("56 03 00 00 00 09 00 00 00 01 0a 00 00 00 f6 ff ff ff ff 7f 00 00"),  # RemoteTouch without colorLen
    H("41") + bytes(27),  # Pong is 29 bytes
    H("01 01 00 00 00"),  # video header cut
    H("40 00 00 00 01 00 00 00 00 00 00 00"),  # Ping of 12 bytes
])
def test_cut_or_overlong_fixed_layouts_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        s.parse_binary(raw)
    assert info.value.data is not None


def test_server_answers_any_ping_of_13_bytes_or_more() -> None:
    server = s.StreamConnection(s.Role.SERVER)
    server.receive(s.KIND_TEXT, s.Init("ses_x", 1920, 1080, 60, 10000).to_text())
    exact = H("40 00 00 00 01 00 00 00 00 00 00 00 02")
    longer = exact + H("de ad be ef")
    assert server.receive(s.KIND_BINARY, exact) == s.Ping(1, 2)
    ping = server.receive(s.KIND_BINARY, longer)
    assert ping == s.Ping(1, 2, H("de ad be ef")) and ping.encode() == longer
    assert ping.response(5).encode()[:13] == b"\x41" + exact[1:13]  # the pong echoes bytes 1..12
    with pytest.raises(RemoteProtocolError):  # < 13: the server ignores it (no pong)
        server.receive(s.KIND_BINARY, exact[:12])


STATUS_TEXT = '{"type":"stream_status","state":"starting_video","message":"Waiting for the first video frame"}'


def test_text_messages() -> None:
    status = s.parse_text(STATUS_TEXT)
    assert isinstance(status, s.StreamStatus) and status.starting_video
    assert (status.state, status.message, status.fields) == ("starting_video", "Waiting for the first video frame",
                                                            {"type": "stream_status"})
    assert status.to_text() == STATUS_TEXT and s.is_status_event(status) and not s.is_error(status)
    wrapped = s.parse_text('{"StreamStatus":{"state":"starting_video"}}')
    assert isinstance(wrapped, s.StreamStatus) and wrapped.state == "starting_video"
    built = s.StreamStatus("starting_video", "waiting", {"type": "stream_status"})
    assert s.parse_text(built.to_text()) == built
    server = s.StreamConnection(s.Role.SERVER)
    server.receive(s.KIND_TEXT, s.Init("ses_x", 1, 1, 1, 1).to_text())
    assert server.send(built) == (s.Kind.TEXT, built.to_text())
    # any other text stays a lossless TextMessage, never an error
    for text in ('{"state":5}', '{"hello":"world"}', "plain", '{"StreamStatus":"x"}', '{"state":"\\ud800"}'):
        event = s.parse_text(text)
        assert isinstance(event, s.TextMessage) and event.text == text
    assert s.parse_text(s.ConnectionComplete(1280, 720).to_text()) == s.ConnectionComplete(1280, 720)


def test_one_classification_for_every_event() -> None:
    for _, raw, event in SERVER_SAMPLES:
        assert isinstance(s.classify(event), s.Category)
    assert s.classify(s.StreamError("x")) is s.Category.ERROR and s.is_error(s.StreamError("x"))
    assert [s.is_cursor_event(e) for e in (s.CursorImage(0, 0, 0, 0, 0), s.CursorName(0, 0, 0, "x"),
                                           s.RemoteCursor(1, 0, 0), s.AgentCursor(1, 0, 0), s.RemoteTouch(1, 1, 0, 0, 0))] == [True] * 5
    assert s.classify(s.UnknownMessage(0x20)) is s.Category.UNKNOWN
    assert s.classify(s.TextMessage("x")) is s.Category.TEXT
    with pytest.raises(LocalProtocolError):
        s.classify("not an event")  # type: ignore[arg-type]


def test_tally_of_a_multi_viewer_stream() -> None:
    """A capture beside the CLI and a browser: joins, leaves, cursors, status, unknown types, one error."""
    ms = 1_000_000
    messages = [
        (0, 1, STATUS_TEXT),
        (1000 * ms, 1, STATUS_TEXT),
        (2000 * ms, 0, H("30 01 07 80 04 38 3c 00 00 00 00 00 01")),
        (2001 * ms, 1, s.ConnectionComplete(1920, 1080).to_text()),
        (2002 * ms, 0, H("58 02 00 00 00")),
        (2003 * ms, 0, s.RemoteUser(1, 2, "me", "#fff").encode()),
        (2004 * ms, 0, s.RemoteUser(1, 1, "cli", "#000").encode()),
        (2010 * ms, 0, s.VideoFrame(1, 3, 0, 1920, 1080, AU).encode()),  # replay: not the first live frame
        (2500 * ms, 0, s.VideoFrame(1, 1, 16666, 1920, 1080, AU).encode()),
        (2600 * ms, 0, H("54 00 01 00 00 00")),  # the CLI left
        (2700 * ms, 0, H("53 03 00 00 00 64 00 00 00 fb ff ff ff 00")),
        (2800 * ms, 0, H("55 01 00 00 00 80 07 38 04 02 01")),
        (2900 * ms, 0, b'\x20{"x":1}'),
        (2950 * ms, 0, b"\x52\x00"),
        (3000 * ms, 0, H("01 01 00")),  # malformed frame header
        (3100 * ms, 1, "later text"),
        (3200 * ms, 0, s.StreamError("boom").encode()),
    ]
    tally = s.StreamTally()
    client = s.StreamConnection(s.Role.CLIENT)
    client.send(s.Init("ses_x", 1920, 1080, 60, 10000))
    for t_ns, kind, data in messages:
        try:
            tally.add(t_ns, client.receive(kind, data))
        except RemoteProtocolError as exc:
            tally.add_error(t_ns, exc)
    r = tally.result()
    assert r["viewer_events"] == {"self_id": 2, "joins": 2, "leaves": 1, "joined_ids": [2, 1], "left_ids": [1]}
    assert r["protocol_error_count"] == 1 and "VideoFrame header" in r["protocol_errors"][0]
    assert r["stream_error_count"] == 1
    assert r["cursor_messages"] == 2
    assert r["unknown_message_types"] == {"0x20": 1, "0x52": 1} and r["unknown_messages"] == 2
    assert r["status_messages"] == 2 and r["text_messages"] == 1
    assert [(i["t_s"], i["state"]) for i in r["status_before_first_frame"]] == [(0.0, "starting_video"), (1.0, "starting_video")]
    assert r["time_to_first_frame_s"] == 2.5
    assert tally.messages == len(messages)


def test_tally_caps_its_lists() -> None:
    tally = s.StreamTally(max_items=3)
    for i in range(10):
        tally.add(i, s.RemoteUserLeft(i))
        tally.add_error(i, f"bad {i}")
        tally.add(i, s.TextMessage(f"t{i}"))
    r = tally.result()
    assert r["viewer_events"]["leaves"] == 10 and r["viewer_events"]["left_ids"] == [0, 1, 2]
    assert r["protocol_error_count"] == 10 and len(r["protocol_errors"]) == 3
    assert len(r["status_before_first_frame"]) == 3 and r["time_to_first_frame_s"] is None


# ---------------------------------------------------------------- spectask stream: the conditional Codec line

RULE = "─" * 47
SCANOUT_FAILED = f"""\
✅ Connected in 5ms

📤 Sending init message (1920x1080@60fps, 10000kbps)...
✅ Init sent, waiting for video frames...


❌ Connection error: websocket: close 1006 (abnormal closure): unexpected EOF

📊 Final Statistics (elapsed: 0s)
{RULE}
Video frames:       0
Audio frames:       0
Total data:         34 B
Instant FPS:        0 fps
Average FPS:        0.0 fps
Video bitrate:      0 bps/s
{RULE}
Error: websocket: close 1006 (abnormal closure): unexpected EOF
Usage:
  helix spectask stream <session-id> [flags]

Flags:
  -h, --help   help for stream

websocket: close 1006 (abnormal closure): unexpected EOF
"""


def test_no_stream_init_no_codec_zero_frames_parses_to_what_it_is() -> None:
    stats = c.parse_stream_output(SCANOUT_FAILED)
    assert (stats.stream_init, stats.codec, stats.resolution, stats.video_frames) == (None, None, None, 0)
    assert stats.end_reason == "connection_error"
    assert stats.connection_error == "websocket: close 1006 (abnormal closure): unexpected EOF"
    assert stats.cli_error == stats.connection_error == stats.error


def test_codec_line_is_read_when_present() -> None:
    with_codec = SCANOUT_FAILED.replace("Video frames:       0\n", "Codec:              H.264\nVideo frames:       0\n")
    assert c.parse_stream_output(with_codec).codec == "H.264"


# ---------------------------------------------------------------- spectask start --help, two generations

START_HELP_2026_08 = """\
Start a spec task planning session which creates a sandbox desktop.

Usage:
  helix spectask start [task-id] [flags]

Flags:
  -a, --agent string         Agent ID to use (e.g., app_01xxx)
      --attach stringArray   Attach file(s) to the task (repeatable).
  -h, --help                 help for start
  -n, --name string          Task name (default "CLI Test Task")
  -p, --project string       Project ID (required when creating new task)
      --prompt string        Task prompt/description
  -q, --quiet                Only output the task ID (session ID with --wait)
      --wait                 Block until the sandbox has booted
"""
START_HELP_2026_11 = """\
Start a spec task planning session.

Usage:
  helix spectask start [task-id] [flags]

Flags:
  -h, --help             help for start
  -n, --name string      Task name (default "CLI Test Task")
  -p, --project string   Project ID (required when creating new task)
      --prompt string    Task prompt/description
  -q, --quiet            Only output the task ID (session ID with --wait)
      --runtime string   Sandbox runtime: ubuntu-desktop|headless-ubuntu (default: the project's setting)
      --wait             Block until the sandbox has booted

Global Flags:
      --url string   Helix API URL
"""


def test_start_help_of_both_generations() -> None:
    old = c.parse_start_help(START_HELP_2026_08)
    assert old.has_agent and not old.has_runtime and old.runtime_choices == ()
    assert old.flags["agent"] == c.HelpFlag("agent", "a", "string", "Agent ID to use (e.g., app_01xxx)")
    assert old.flags["name"].default == "CLI Test Task" and old.flags["wait"].type is None
    new = c.parse_start_help(START_HELP_2026_11)
    assert not new.has_agent and new.has_runtime and new.has_flag("url")
    assert new.runtime_choices == ("ubuntu-desktop", "headless-ubuntu") and c.RUNTIME_DESKTOP in new.runtime_choices
    worded = START_HELP_2026_11.replace("ubuntu-desktop|headless-ubuntu", "ubuntu-desktop or headless-ubuntu")
    assert c.parse_start_help(worded).runtime_choices == c.RUNTIMES


@pytest.mark.parametrize("text", ["", "Error: unknown command \"start\" for \"helix spectask\"\nRun 'helix spectask --help' for usage.\n",
                                  "Flags:\n  no flags here\n"])
def test_start_help_that_is_not_help(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        c.parse_start_help(text)
    assert info.value.phase == "cli"


def test_session_ids() -> None:
    assert c.is_session_id("ses_01ke4rsx7jb62ms9zx8g68tnbe")
    for bad in ("", "ses_", "ses_01KE4RSX7JB62MS9ZX8G68TNBE", "spt_01ke4rsx7jb62ms9zx8g68tnbe",
                "ses_01ke4rsx7jb62ms9zx8g68tnbe;x", None, 5):
        assert not c.is_session_id(bad)


def test_offline_verdict_equals_the_live_one(tmp_path) -> None:
    """The live capture's loop (StreamConnection.receive + StreamTally) and `analyze` of its recording agree."""
    from harness.analysis.recording import VERDICT_KEYS, analyze_recording
    from harness.protocols.recording import RecordingWriter

    ms = 1_000_000
    messages = [(0, 1, STATUS_TEXT), (900 * ms, 1, "not json"), (1000 * ms, 0, H("30 01 07 80 04 38 3c 00 00 00 00 00 01")),
                (1001 * ms, 0, H("58 05 00 00 00")), (1002 * ms, 0, s.RemoteUser(1, 5, "me", "#fff").encode()),
                (1003 * ms, 0, s.RemoteUser(1, 4, "cli", "#000").encode())]
    messages += [(1100 * ms + i * 25 * ms, 0, s.VideoFrame(1, 1 if i % 30 == 0 else 0, i * 16666, 64, 64, AU).encode())
                 for i in range(120)]
    messages += [(1500 * ms, 0, H("54 00 04 00 00 00")), (1600 * ms, 0, H("55 01 00 00 00 80 07 38 04 02 01")),
                 (1700 * ms, 0, b"\x57\x01"), (1800 * ms, 0, H("01 01")), (1900 * ms, 0, H("31 00 01 ff")),
                 (2000 * ms, 0, s.StreamError("unexpected msg_type: 0x22").encode())]
    messages.sort(key=lambda m: m[0])

    live = s.StreamTally()
    live_errors: list[str] = []
    conn = s.StreamConnection(s.Role.CLIENT)
    conn.send(s.Init("ses_x", 64, 64, 40, 1000))
    path = tmp_path / "live.hxwsrec"
    with open(path, "wb") as fh:
        writer = RecordingWriter(fh)
        for t_ns, kind, data in messages:
            writer.write(t_ns, kind, data)
            try:
                event = conn.receive(kind, data)
            except RemoteProtocolError as exc:
                live.add_error(t_ns, exc)
                continue
            live.add(t_ns, event)
            if s.is_error(event):
                live_errors.append(event.message)
        writer.close()
    live_verdict = {**live.result(), "stream_errors": live_errors}
    offline = analyze_recording(path, decode=False)
    assert {k: offline[k] for k in VERDICT_KEYS} == {k: live_verdict[k] for k in VERDICT_KEYS}
    assert offline["viewer_events"]["leaves"] == 1 and offline["protocol_error_count"] == 2
    assert offline["unknown_message_types"] == {"0x57": 1} and offline["time_to_first_frame_s"] == 1.1
