"""harness.protocols.cli_output against `helix spectask` output written out from helix-stream.md §2-§3."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols import cli_output as c
from harness.protocols.errors import RemoteProtocolError

SID = "ses_01ke4rsx7jb62ms9zx8g68tnbe"
TASK = "spt_01ke4rsx7jb62ms9zx8g68tnbf"

# A full run of `helix spectask stream <sid> --duration 30`: header, one live block, the end line, the final block.
STREAM_OUTPUT = """\
📊 Video Stream for session ses_01ke4rsx7jb62ms9zx8g68tnbe
━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━
WebSocket URL: ws://localhost:8080/api/v1/external-agents/ses_01ke4rsx7jb62ms9zx8g68tnbe/ws/stream
Duration: 30 seconds
━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━

✅ Connected in 4ms

📤 Sending init message (1920x1080@60fps, 10000kbps)...
✅ Init sent, waiting for video frames...

📺 StreamInit: 1920x1080@60fps (H.264)
🔑 SPS: profile_idc=100 (High) constraint_set=[000100] level=4.0 (raw=0x28)
   ✅ constraint_set3_flag=1 (zero-latency decode enabled)

📈 Live Statistics (elapsed: 2s)
───────────────────────────────────────────────
Resolution:         1920x1080
Codec:              H.264
Video frames:       79 (1 keyframes)
Audio frames:       0
Total data:         1.3 MB
Instant FPS:        41 fps ⚠️
Average FPS:        39.5 fps
Video bitrate:      5.2 Mbps/s
Avg frame size:     16.4 KB
Frame size range:   2.1 KB - 131.0 KB
───────────────────────────────────────────────

⏰ Duration reached (30s)

📊 Final Statistics (elapsed: 30s)
───────────────────────────────────────────────
Resolution:         1920x1080
Codec:              H.264
Video frames:       1203 (11 keyframes)
Audio frames:       0
Total data:         18.7 MB
Instant FPS:        40 fps ⚠️
Average FPS:        40.1 fps
Video bitrate:      5.0 Mbps/s
Avg frame size:     15.9 KB
Frame size range:   1.9 KB - 131.0 KB
───────────────────────────────────────────────
"""

COBRA_STREAM_ERROR = """\
📊 Video Stream for session ses_01ke4rsx7jb62ms9zx8g68tnbe
━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━
WebSocket URL: ws://localhost:8080/api/v1/external-agents/ses_01ke4rsx7jb62ms9zx8g68tnbe/ws/stream
━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━

Error: WebSocket connection failed: websocket: bad handshake - Sandbox not connected
Usage:
  helix spectask stream <session-id> [flags]

Flags:
  -d, --duration int   Duration in seconds (0 = until signal)
  -h, --help           help for stream

WebSocket connection failed: websocket: bad handshake - Sandbox not connected
"""


def test_stream_final_statistics() -> None:
    assert "━" * 50 + "\n" in STREAM_OUTPUT and "\n" + "─" * 47 + "\n" in STREAM_OUTPUT
    stats = c.parse_stream_output(STREAM_OUTPUT)
    assert stats == c.StreamStats(
        resolution=(1920, 1080),
        codec="H.264",
        video_frames=1203,
        keyframes=11,
        audio_frames=0,
        average_fps=40.1,
        instant_fps=40,
        total_data="18.7 MB",
        elapsed_s=30.0,
        end_reason="duration",
        connection_error=None,
        stream_init=(1920, 1080, 60, "H.264"),
        video_bitrate="5.0 Mbps/s",
        avg_frame_size="15.9 KB",
        frame_size_range=("1.9 KB", "131.0 KB"),
    )


def test_stream_output_as_bytes_and_crlf() -> None:
    assert c.parse_stream_output(STREAM_OUTPUT.replace("\n", "\r\n").encode()).video_frames == 1203


def test_no_frames_no_stream_init_server_close() -> None:
    text = (
        "\n📭 Connection closed by server\n\n📊 Final Statistics (elapsed: 1m2s)\n" + "─" * 47 + "\n"
        "Codec:              Unknown(0x00)\nVideo frames:       0\nAudio frames:       0\nTotal data:         0 B\n"
        "Instant FPS:        0 fps\nAverage FPS:        0.0 fps\nVideo bitrate:      0 bps/s\n" + "─" * 47 + "\n"
    )
    stats = c.parse_stream_output(text)
    assert (stats.resolution, stats.stream_init, stats.video_frames, stats.keyframes) == (None, None, 0, 0)
    assert (stats.end_reason, stats.elapsed_s, stats.codec, stats.total_data) == ("server_closed", 62.0, "Unknown(0x00)", "0 B")
    assert stats.avg_frame_size is None and stats.frame_size_range is None


@pytest.mark.parametrize(
    ("line", "reason", "error"),
    [
        ("🛑 Interrupted...", "interrupted", None),
        ("❌ Connection error: websocket: close 1006 (abnormal closure): unexpected EOF", "connection_error",
         "websocket: close 1006 (abnormal closure): unexpected EOF"),
        ("⏰ Duration reached (30s)", "duration", None),
    ],
)
def test_end_reasons(line: str, reason: str, error: str | None) -> None:
    text = STREAM_OUTPUT.replace("⏰ Duration reached (30s)", line)
    stats = c.parse_stream_output(text)
    assert (stats.end_reason, stats.connection_error) == (reason, error)


def test_only_the_final_block_counts() -> None:
    live_only = STREAM_OUTPUT[: STREAM_OUTPUT.index("📊 Final Statistics")]
    with pytest.raises(RemoteProtocolError, match="Final Statistics") as info:
        c.parse_stream_output(live_only)
    assert info.value.phase == "cli" and info.value.data


def test_missing_line_is_named() -> None:
    text = STREAM_OUTPUT.replace("Average FPS:        40.1 fps\n", "")
    with pytest.raises(RemoteProtocolError, match="'Average FPS:'"):
        c.parse_stream_output(text)  # the live block's Average FPS must not be used


@pytest.mark.parametrize("text", ["", "garbage\n", "📊 Final Statistics\n", "📊 Final Statistics (elapsed: soon)\n"])
def test_garbage_stream_output(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        c.parse_stream_output(text)
    assert info.value.phase == "cli"


def test_cobra_error_form() -> None:
    message = "WebSocket connection failed: websocket: bad handshake - Sandbox not connected"
    assert c.parse_error_output(COBRA_STREAM_ERROR) == message
    with pytest.raises(RemoteProtocolError, match="the CLI said: Error: WebSocket connection failed"):
        c.parse_stream_output(COBRA_STREAM_ERROR)
    exec_failure = "Error: command not allowed: kitty\nError: command exited with code 1\nUsage:\n  helix spectask exec\n\ncommand exited with code 1\n"
    assert c.parse_error_output(exec_failure) == "command exited with code 1"
    assert c.parse_error_output("Error: no usage here\n") == "no usage here"
    assert c.parse_error_output(STREAM_OUTPUT) is None
    assert c.parse_error_output("") is None


START_NO_WAIT = f"""\
Creating new spec task...
✅ Created spec task: CLI Test Task (ID: {TASK})
   Agent: app_01ke4rsx7jb62ms9zx8g68tnbg
Starting planning for task {TASK}...
✅ Task status: planning

✅ Task created — planning started: {TASK}
   Open in browser: http://localhost:8080/orgs/org_x/projects/prj_y/tasks/{TASK}
   The sandbox provisions in the background; the page shows it loading.
"""
START_WAIT = f"""\
Creating new spec task...
✅ Created spec task: CLI Test Task (ID: {TASK})
   Agent: app_01ke4rsx7jb62ms9zx8g68tnbg
Starting planning for task {TASK}...
✅ Task status: planning
⏳ Waiting for sandbox to start (this takes ~15 seconds)...
   Starting dev container...

✅ Sandbox is running!
   Session ID: {SID}

📺 Connect to Desktop:
   Open in browser: http://localhost:8080/sessions/{SID}

📷 Test screenshot:
   helix spectask screenshot {SID}
"""
START_TIMEOUT = START_WAIT[: START_WAIT.index("\n✅ Sandbox")] + f"\n\n⏳ Task created ({TASK}) — sandbox still provisioning after 3m.\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{TASK}\n", c.StartResult(None, TASK, False)),
        (f"{SID}\n", c.StartResult(SID, None, False)),
        (START_NO_WAIT, c.StartResult(None, TASK, False)),
        (START_WAIT, c.StartResult(SID, TASK, False)),
        (START_TIMEOUT, c.StartResult(None, TASK, True)),
    ],
)
def test_start_output_forms(text: str, expected: c.StartResult) -> None:
    assert c.parse_start_output(text) == expected


@pytest.mark.parametrize("text", ["", "ok\n", "ses_short\n", "Error: unauthorized\nUsage:\n  helix spectask start\n\nunauthorized\n"])
def test_start_output_without_ids(text: str) -> None:
    with pytest.raises(RemoteProtocolError, match="no session id") as info:
        c.parse_start_output(text)
    assert info.value.phase == "cli"
    if "unauthorized" in text:
        assert "Error: unauthorized" in info.value.message


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("1m2s", 62.0), ("1.203s", 1.203), ("4ms", 0.004),
                                               ("1h0m0s", 3600.0), ("0s", 0.0), ("0", 0.0), ("1µs", 1e-6)])
def test_go_durations(text: str, seconds: float) -> None:
    assert c.parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "30", "1x", "1m2", "--1s"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        c.parse_go_duration(text)


LINES = STREAM_OUTPUT.splitlines() + START_WAIT.splitlines() + COBRA_STREAM_ERROR.splitlines() + [
    "Video frames:       9" * 3, "Average FPS:        1e400 fps", "Average FPS:        . fps", "Video frames:       " + "9" * 5000,
]
outputs = st.one_of(st.text(max_size=200), st.lists(st.one_of(st.sampled_from(LINES), st.text(max_size=20)), max_size=40).map("\n".join))


@settings(max_examples=600, deadline=None)
@given(outputs)
def test_fuzz_parsers(text: str) -> None:
    for parse in (c.parse_stream_output, c.parse_start_output):
        try:
            parse(text)
        except RemoteProtocolError as exc:
            assert exc.phase == "cli"
    result = c.parse_error_output(text)
    assert result is None or isinstance(result, str)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_fuzz_go_duration(text: str) -> None:
    try:
        assert c.parse_go_duration(text) >= 0 or text.strip().startswith("-")
    except RemoteProtocolError:
        pass
