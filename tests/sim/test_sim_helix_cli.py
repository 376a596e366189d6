"""The simulated `helix` CLI: byte-exact formatting, cobra's error output, and the commands on the wire.

Expected strings come from the Go source (helixml/helix 68f96d7, api/pkg/cli/spectask) and, for the
formatting helpers and cobra/pflag output, from a Go build of those functions and flag sets.
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from helix_sim.gofmt import NS_PER_MS, NS_PER_S, go_duration, go_round
from helix_sim.guest.helix.cli import main as helix_main
from helix_sim.guest.helix.stream import init_message
from helix_sim.guest.helix.stream_stats import StreamStats, close_error_text, format_bits, format_bytes, parse_sps
from helix_sim.guest.helix.timing import CliTiming

pytestmark = pytest.mark.timeout(60)

SID = "ses_01ke4rsx7jb62ms9zx8g68tnbe"
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None, generation: str = "2026-11") -> tuple[int, str]:
    out = io.BytesIO()
    rc = helix_main(list(args), stdout=out, env={"HELIX_CLI_ARGV0": "/tmp/helix", "HELIX_CLI_GENERATION": generation,
                                                 **(env or {})})
    return rc, out.getvalue().decode()


def cli_0826(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """The 2026-08 CLI (helixml/helix 68f96d7): ``start -a/--agent``, no ``--runtime``."""
    return cli(*args, env=env, generation="2026-08")


# --- Go formatting (values from a Go build of spectask.go's helpers) ---------------------------


@pytest.mark.parametrize("value,text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KB"), (1536, "1.5 KB"), (10239, "10.0 KB"), (1048575, "1024.0 KB"),
    (1048576, "1.0 MB"), (123456789, "117.7 MB"), (999999, "976.6 KB"), (1073741824, "1.0 GB"),
])
def test_format_bytes(value, text):
    assert format_bytes(value) == text


@pytest.mark.parametrize("value,text", [
    (0, "0 bps"), (999, "999 bps"), (1000, "1.0 Kbps"), (1049, "1.0 Kbps"), (1050, "1.1 Kbps"), (1950, "1.9 Kbps"),
    (9800000, "9.8 Mbps"), (9850000, "9.8 Mbps"), (999999999, "1000.0 Mbps"), (2500000000, "2.5 Gbps"),
])
def test_format_bits(value, text):
    assert format_bits(value) == text


@pytest.mark.parametrize("ns,plain,ms,s", [
    (0, "0s", "0s", "0s"), (999, "999ns", "0s", "0s"), (1500, "1.5µs", "0s", "0s"),
    (499999, "499.999µs", "0s", "0s"), (500000, "500µs", "1ms", "0s"), (4400000, "4.4ms", "4ms", "0s"),
    (4500000, "4.5ms", "5ms", "0s"), (1203400000, "1.2034s", "1.203s", "1s"), (999500000, "999.5ms", "1s", "1s"),
    (30000000000, "30s", "30s", "30s"), (62000000000, "1m2s", "1m2s", "1m2s"), (59500000000, "59.5s", "59.5s", "1m0s"),
    (3600000000000, "1h0m0s", "1h0m0s", "1h0m0s"), (3723500000000, "1h2m3.5s", "1h2m3.5s", "1h2m4s"),
])
def test_go_durations(ns, plain, ms, s):
    assert go_duration(ns) == plain
    assert go_duration(go_round(ns, NS_PER_MS)) == ms
    assert go_duration(go_round(ns, NS_PER_S)) == s


def test_init_message_is_marshalled_like_a_go_map():
    assert init_message(SID, 1920, 1080, 60, 10000) == (
        '{"bitrate":10000,"fps":60,"height":1080,"packet_size":1024,"play_audio_local":false,'
        f'"session_id":"{SID}","type":"init","video_supported_formats":1,"width":1920}}'
    )
    assert init_message("ses_<&>", 1280, 720, 40, 4000, "shm") == (
        '{"bitrate":4000,"fps":40,"height":720,"packet_size":1024,"play_audio_local":false,'
        '"session_id":"ses_\\u003c\\u0026\\u003e","type":"init","video_mode":"shm","video_supported_formats":1,'
        '"width":1280}'
    )


def test_parse_sps_and_close_errors():
    sps = parse_sps(b"\x00\x00\x00\x01\x67\x64\x10\x1f\xac" + b"\x00\x00\x01\x68")
    assert (sps.profile_idc, sps.constraint_byte, sps.level_idc, sps.flag(3)) == (100, 0x10, 31, 1)
    assert parse_sps(b"\x00\x00\x01\x27\x42\xc0\x1e\x00")  # 3-byte start code, nal_ref_idc bits set
    assert parse_sps(b"\x00\x00\x01\x65\x88\x84") is None
    assert close_error_text(4000, "superseded") == "websocket: close 4000: superseded"
    assert close_error_text(1006, "unexpected EOF") == "websocket: close 1006 (abnormal closure): unexpected EOF"
    assert close_error_text(1005) == "websocket: close 1005 (no status)"
    assert close_error_text(1001) == "websocket: close 1001 (going away)"


# --- the statistics block ------------------------------------------------------------------------


def video(flags: int, payload: bytes, w: int = 1280, hgt: int = 720) -> bytes:
    return struct.pack(">BBBQHH", 0x01, 0x01, flags, 0, w, hgt) + payload


STREAM_INIT = struct.pack(">BBHHBBIB", 0x30, 0x01, 1280, 720, 40, 0, 0, 1)
COMPLETE = '{"ConnectionComplete":{"capabilities":{"touch":false},"width":1280,"height":720}}'
SPS = bytes.fromhex("000000016764101fac2b")
RULE = "─" * 47


def test_stats_block_is_byte_exact():
    stats = StreamStats(start_ns=0)
    lines: list[str] = []
    stats.on_message(True, STREAM_INIT, 0, emit=lines.append)
    stats.on_message(False, COMPLETE.encode(), 0, emit=lines.append)
    stats.on_message(True, video(0x01, SPS + bytes(1000 - len(SPS))), 0, emit=lines.append)
    for i in range(1, 80):  # 40 fps for 2 s
        stats.on_message(True, video(0x00, b"\x01" * 500), i * 25_000_000, emit=lines.append)
    stats.on_message(True, b"\x31\x00\x04oops", 1_990_000_000, emit=lines.append)  # StreamError: no case
    assert lines == [
        "📺 StreamInit: 1280x720@40fps (H.264)\n",
        "🔑 SPS: profile_idc=100 (High) constraint_set=[000100] level=3.1 (raw=0x10)\n",
        "   ✅ constraint_set3_flag=1 (zero-latency decode enabled)\n",
    ]
    assert stats.render(2_000_000_000, final=True) == (
        "\n📊 Final Statistics (elapsed: 2s)\n"
        f"{RULE}\n"
        "Resolution:         1280x720\n"
        "Codec:              H.264\n"
        "Video frames:       80 (1 keyframes)\n"
        "Audio frames:       0\n"
        "Total data:         40.8 KB\n"
        "Instant FPS:        40 fps ⚠️\n"
        "Average FPS:        40.0 fps\n"
        "Video bitrate:      166.8 Kbps/s\n"
        "Avg frame size:     521 B\n"
        "Frame size range:   500 B - 1000 B\n"
        f"{RULE}\n"
    )


def test_stats_block_with_no_frames_and_a_fast_stream():
    assert StreamStats(start_ns=0).render(30_400_000_000, final=True) == (
        "\n📊 Final Statistics (elapsed: 30s)\n"
        f"{RULE}\n"
        "Video frames:       0\n"
        "Audio frames:       0\n"
        "Total data:         0 B\n"
        "Instant FPS:        0 fps\n"
        "Average FPS:        0.0 fps\n"
        "Video bitrate:      0 bps/s\n"
        f"{RULE}\n"
    )
    stats = StreamStats(start_ns=0)
    for i in range(130):  # 60 fps, replay burst included: every 0x01 counts
        stats.on_message(True, video(0x02 if i < 10 else 0x00, bytes(985)), 1_000_000 * (i // 10) + i * 16_666_667)
    block = stats.render(62_400_000_000, final=False)
    assert block.startswith("\n📈 Live Statistics (elapsed: 1m2s)\n")
    assert "\nVideo frames:       130\n" in block and "\nInstant FPS:        60 fps ✅\n" in block
    assert "\nAverage FPS:        2.1 fps\n" in block and "\nFrame size range:   985 B - 985 B\n" in block


# --- cobra's error output (checked against a Go build with the same flag sets) -----------------

STREAM_USAGE = """Usage:
  /tmp/helix spectask stream <session-id> [flags]

Flags:
      --bitrate int         Video stream bitrate in kbps (default 10000)
  -d, --duration int        Run for specified seconds (0 = until interrupted)
      --fps int             Video stream frames per second (default 60)
      --height int          Video stream height in pixels (default 1080)
  -h, --help                help for stream
      --mouse-sweep         Sweep mouse horizontally across middle of screen to trigger cursor shape changes
  -o, --output string       Write raw video frames to file
  -v, --verbose             Print each frame received
      --video-mode string   Video capture mode: shm, native, or zerocopy (default: container env)
      --width int           Video stream width in pixels (default 1920)
"""

START_USAGE = """Usage:
  /tmp/helix spectask start [task-id] [flags]

Flags:
  -a, --agent string         Agent ID to use (e.g., app_01xxx)
      --attach stringArray   Attach file(s) to the task (repeatable). Uploaded as spec-task attachments the agent reads at design/tasks/<task>/attachments/<name> — good for logs/large context without bloating the prompt.
  -h, --help                 help for start
  -n, --name string          Task name (default "CLI Test Task")
  -p, --project string       Project ID (required when creating new task)
      --prompt string        Task prompt/description
      --prompt-file string   Read the task prompt from a file (e.g. a design doc) — dispatch a full brief without committing it to the repo. Appended after --prompt if both are set.
  -q, --quiet                Only output the task ID (session ID with --wait)
      --wait                 Block until the sandbox has booted, then print session-level connect info (default: return immediately with the task URL — the browser page shows it loading)
"""
#: The newer CLI (upstream-corrections.md §2): no --agent, --runtime ubuntu-desktop|headless-ubuntu.
START_USAGE_2026_11 = """Usage:
  /tmp/helix spectask start [task-id] [flags]

Flags:
      --attach stringArray   Attach file(s) to the task (repeatable). Uploaded as spec-task attachments the agent reads at design/tasks/<task>/attachments/<name> — good for logs/large context without bloating the prompt.
  -h, --help                 help for start
  -n, --name string          Task name (default "CLI Test Task")
  -p, --project string       Project ID (required when creating new task)
      --prompt string        Task prompt/description
      --prompt-file string   Read the task prompt from a file (e.g. a design doc) — dispatch a full brief without committing it to the repo. Appended after --prompt if both are set.
  -q, --quiet                Only output the task ID (session ID with --wait)
      --runtime string       Sandbox runtime: ubuntu-desktop|headless-ubuntu (default: the project's setting)
      --wait                 Block until the sandbox has booted, then print session-level connect info (default: return immediately with the task URL — the browser page shows it loading)
"""


def cobra_error(msg: str, usage: str) -> str:
    return f"Error: {msg}\n{usage}\n{msg}\n"


@pytest.mark.parametrize("args,msg", [
    (("spectask", "stream"), "accepts 1 arg(s), received 0"),
    (("st", "stream", "a", "b"), "accepts 1 arg(s), received 2"),
    (("spectask", "stream", SID, "--duration", "abc"),
     'invalid argument "abc" for "-d, --duration" flag: strconv.ParseInt: parsing "abc": invalid syntax'),
    (("spectask", "stream", SID, "-d"), "flag needs an argument: 'd' in -d"),
    (("spectask", "stream", SID, "-qz"), "unknown shorthand flag: 'q' in -qz"),
    (("spectask", "stream", SID, "--nope"), "unknown flag: --nope"),
    (("spectask", "stream", SID, "--verbose=maybe"),
     'invalid argument "maybe" for "-v, --verbose" flag: strconv.ParseBool: parsing "maybe": invalid syntax'),
])
def test_cobra_flag_and_arg_errors(args, msg):
    assert cli(*args) == (1, cobra_error(msg, STREAM_USAGE))


def test_cobra_error_from_a_command():
    assert cli_0826("spectask", "start", "-n", "x") == (
        1, cobra_error("--project is required when creating a new task", START_USAGE))
    assert cli("spectask", "start", "-n", "x") == (
        1, cobra_error("--project is required when creating a new task", START_USAGE_2026_11))
    assert cli("spectask", "start", "-p", "prj_x", "-a", "app_x") == (
        1, cobra_error("unknown shorthand flag: 'a' in -a", START_USAGE_2026_11))
    assert cli("foo") == (1, 'Error: unknown command "foo" for "/tmp/helix"\n'
                             "Run '/tmp/helix --help' for usage.\n"
                             'unknown command "foo" for "/tmp/helix"\n')


def test_start_help_of_both_generations_reads_with_the_harness_parser():
    """harness.protocols.cli_output.parse_start_help reads the help each CLI generation prints."""
    from harness.protocols.cli_output import RUNTIME_DESKTOP, parse_start_help

    rc, old = cli_0826("spectask", "start", "--help")
    assert rc == 0 and old.endswith(START_USAGE) and "Use --agent to specify" in old
    help_old = parse_start_help(old)
    assert help_old.has_agent and not help_old.has_runtime and help_old.runtime_choices == ()
    assert (help_old.flags["agent"].shorthand, help_old.flags["agent"].type) == ("a", "string")
    rc, new = cli("spectask", "start", "--help")
    assert rc == 0 and new.endswith(START_USAGE_2026_11) and "--agent" not in new
    help_new = parse_start_help(new)
    assert not help_new.has_agent and help_new.has_runtime
    assert help_new.runtime_choices == ("ubuntu-desktop", "headless-ubuntu") and RUNTIME_DESKTOP in help_new.runtime_choices
    assert help_new.flags["runtime"].default is None and help_new.flags["wait"].type is None
    assert help_new.flags["name"].default == "CLI Test Task"
    rc, tree = cli("spectask", "--help")
    assert all(f"\n  {c} " in tree for c in ("board", "get", "create", "update"))
    assert "\n  board " not in cli_0826("spectask", "--help")[1]
    assert cli("spectask", "start", "--help", generation="bogus")[1] == new  # an unknown marker: the newest


def test_help_goes_to_stdout_with_exit_0():
    rc, out = cli("st", "exec", "--help")
    assert rc == 0
    assert out.startswith("Execute a command inside a running session container.\n\n")
    assert out.endswith(
        "Usage:\n  /tmp/helix spectask exec <session-id> <command> [args...] [flags]\n\nFlags:\n"
        "      --background        Run command in background (don't wait for output)\n"
        "      --env stringArray   Environment variables (KEY=VALUE format, can be repeated)\n"
        "  -h, --help              help for exec\n"
        "      --timeout int       Timeout in seconds (0 for no timeout) (default 30)\n"
    )
    rc, out = cli("spectask")
    assert rc == 0 and "\nAliases:\n  spectask, st\n" in out and "\n  keyboard-test Test keyboard input" in out


# --- REST commands against a scripted HTTP server --------------------------------------------------


class FakeApi:
    """Answers (method, path) from a table and records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                api.requests.append((self.command, self.path, dict(self.headers), body))
                answers = api.routes.get((self.command, self.path.split("?")[0]), [(404, b"404 page not found\n")])
                status, payload = answers[0] if len(answers) == 1 else answers.pop(0)
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.env = {"HELIX_URL": self.url, "HELIX_API_KEY": "hl-test"}

    def route(self, method: str, path: str, *answers: tuple[int, object]) -> None:
        self.routes[(method, path)] = [
            (status, body if isinstance(body, bytes) else json.dumps(body).encode()) for status, body in answers
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def api():
    fake = FakeApi()
    yield fake
    fake.close()


TASK = {"id": "spt_01kabc", "name": "Testing RevDial connectivity", "status": "backlog",
        "organization_id": "org_01k1", "project_id": "prj_01k2", "planning_session_id": ""}


def test_start_prints_the_task_id_and_sends_the_cli_payload(api):
    api.route("POST", "/api/v1/spec-tasks/from-prompt", (201, TASK))
    api.route("POST", "/api/v1/spec-tasks/spt_01kabc/start-planning", (200, {**TASK, "status": "spec_generation"}))
    rc, out = cli_0826("spectask", "start", "-p", "prj_01k2", "-a", "app_01k3", "-n", "<name>", env=api.env)
    assert rc == 0
    assert out == (
        "Creating new spec task...\n"
        "✅ Created spec task: Testing RevDial connectivity (ID: spt_01kabc)\n"
        "   Agent: app_01k3\n"
        "Starting planning for task spt_01kabc...\n"
        "✅ Task status: spec_generation\n"
        "\n✅ Task created — planning started: spt_01kabc\n"
        f"   Open in browser: {api.url}/orgs/org_01k1/projects/prj_01k2/tasks/spt_01kabc\n"
        "   The sandbox provisions in the background; the page shows it loading.\n"
    )
    method, path, headers, body = api.requests[0]
    assert body == (b'{"app_id":"app_01k3","name":"\\u003cname\\u003e","project_id":"prj_01k2",'
                    b'"prompt":"Testing RevDial connectivity"}')
    assert headers["Authorization"] == "Bearer hl-test" and headers["Content-Type"] == "application/json"
    assert api.requests[1][:2] == ("POST", "/api/v1/spec-tasks/spt_01kabc/start-planning")
    assert cli("spectask", "start", "-q", "-p", "prj_01k2", env=api.env) == (0, "spt_01kabc\n")
    # The newer CLI sends no app_id (the project's agent) and the runtime when asked for one.
    api.requests.clear()
    rc, out = cli("spectask", "start", "-q", "-p", "prj_01k2", "--runtime", "ubuntu-desktop", env=api.env)
    assert (rc, out) == (0, "spt_01kabc\n")
    assert api.requests[0][3] == (b'{"name":"CLI Test Task","project_id":"prj_01k2",'
                                  b'"prompt":"Testing RevDial connectivity","sandbox_runtime":"ubuntu-desktop"}')


def test_start_wait_polls_until_the_session_has_a_container(api):
    env = {**api.env, **CliTiming(wait_poll_s=0.01).to_env()}
    api.route("POST", "/api/v1/spec-tasks/from-prompt", (201, TASK))
    api.route("POST", "/api/v1/spec-tasks/spt_01kabc/start-planning", (200, TASK))
    api.route("GET", "/api/v1/spec-tasks/spt_01kabc", (200, TASK), (200, {**TASK, "planning_session_id": SID}))
    api.route("GET", f"/api/v1/sessions/{SID}",
              (200, {"id": SID, "config": {"status_message": "Waiting for sandbox..."}}),
              (200, {"id": SID, "config": {"status_message": "Waiting for sandbox..."}}),
              (200, {"id": SID, "config": {"status_message": "Starting desktop..."}}),
              (200, {"id": SID, "config": {"status_message": "Starting desktop...", "dev_container_id": "c0ffee"}}))
    rc, out = cli("spectask", "start", "-p", "prj_01k2", "--wait", env=env)
    assert rc == 0
    assert out.endswith(
        "⏳ Waiting for sandbox to start (this takes ~15 seconds)...\n"
        "   Waiting for sandbox...\n"
        "   Starting desktop...\n"
        "\n✅ Sandbox is running!\n"
        f"   Session ID: {SID}\n"
        "\n📺 Connect to Desktop:\n"
        f"   Open in browser: {api.url}/sessions/{SID}\n"
        "\n📷 Test screenshot:\n"
        f"   helix spectask screenshot {SID}\n"
    )


def test_start_wait_timeout_still_exits_0(api):
    env = {**api.env, **CliTiming(wait_poll_s=0.01, wait_timeout_s=0.05).to_env()}
    api.route("POST", "/api/v1/spec-tasks/from-prompt", (201, TASK))
    api.route("POST", "/api/v1/spec-tasks/spt_01kabc/start-planning", (200, TASK))
    api.route("GET", "/api/v1/spec-tasks/spt_01kabc", (200, {**TASK, "planning_session_id": SID}))
    api.route("GET", f"/api/v1/sessions/{SID}", (200, {"id": SID, "config": {}}))
    assert cli("spectask", "start", "-q", "-p", "x", "--wait", env=env) == (0, "spt_01kabc\n")
    rc, out = cli("spectask", "start", "-p", "x", "--wait", env=env)
    assert rc == 0 and out.endswith("\n⏳ Task created (spt_01kabc) — sandbox still provisioning after 3m.\n"
                                    f"   Open in browser: {api.url}/orgs/org_01k1/projects/prj_01k2/tasks/spt_01kabc\n")


def test_exec_payload_output_and_errors(api):
    path = f"/api/v1/external-agents/{SID}/exec"
    api.route("POST", path, (200, {"success": True, "output": "", "pid": 42}))
    rc, out = cli("spectask", "exec", SID, "--background", "--env", "WAYLAND_DISPLAY=wayland-0",
                  "--env", "XDG_RUNTIME_DIR=/run/user/1000", "--", "vkcube", "--wsi", "wayland", "--present_mode", "1",
                  env=api.env)
    assert (rc, out) == (0, "Command started in background\n")
    assert api.requests[-1][3] == (b'{"command":["vkcube","--wsi","wayland","--present_mode","1"],"background":true,'
                                   b'"env":{"WAYLAND_DISPLAY":"wayland-0","XDG_RUNTIME_DIR":"/run/user/1000"}}')

    api.route("POST", path, (200, {"success": True, "output": "hello", "exit_code": 0}))
    assert cli("spectask", "exec", SID, "echo", "hello", env=api.env) == (0, "hello\n")
    assert api.requests[-1][3] == b'{"command":["echo","hello"]}'

    api.route("POST", path, (200, {"success": False, "output": "", "error": "exit status 1", "exit_code": 1}))
    rc, out = cli("spectask", "exec", SID, "--", "pkill", "-0", "-f", "vkcube", env=api.env)
    assert rc == 1 and out.startswith("Error: exit status 1\nError: command exited with code 1\nUsage:\n")
    assert out.endswith("\ncommand exited with code 1\n")

    api.route("POST", path, (403, b"command not allowed: kitty\n"))
    rc, out = cli("spectask", "exec", SID, "kitty", env=api.env)
    assert rc == 1 and out.startswith("Error: exec API returned 403: command not allowed: kitty\n\nUsage:")

    rc, out = cli("spectask", "exec", SID, "--env", "NOEQUALS", "ls", env=api.env)
    assert out.startswith("Error: invalid environment variable format: NOEQUALS (expected KEY=VALUE)\n")


def test_stop_list_and_connection_errors(api):
    api.route("DELETE", f"/api/v1/sessions/{SID}/stop-external-agent",
              (200, {"message": "external Zed agent stopped", "session_id": SID}))
    assert cli("spectask", "stop", SID, env=api.env) == (0, f"Stopping session {SID}...\nSession {SID} stopped.\n")
    rc, out = cli("spectask", "stop", "ses_nope", env=api.env)
    assert rc == 1 and out.startswith("Stopping session ses_nope...\nError: stop failed: 404 - 404 page not found\n\n")

    api.route("GET", "/api/v1/sessions", (200, {"sessions": [
        {"session_id": SID, "type": "text", "metadata": {"dev_container_id": "c0ffee",
                                                         "container_name": "ubuntu-external-01ke"}},
        {"session_id": "ses_other", "type": "text", "metadata": {}},
    ], "page": 1, "pageSize": 50, "totalCount": 2, "totalPages": 1}))
    assert cli("spectask", "list", env=api.env) == (0, (
        "Active Sessions with External Agents:\n\n"
        f"Session: {SID}\n  Type: text\n  Container: ubuntu-external-01ke\n"
        f"  Screenshot: helix spectask screenshot {SID}\n\n"
        "Found 1 session(s) with external agents.\n"
    ))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    rc, out = cli("spectask", "stop", SID, env={"HELIX_URL": f"http://127.0.0.1:{dead}"})
    assert rc == 1
    assert out.startswith(
        f"Stopping session {SID}...\nError: failed to stop session: Delete "
        f'"http://127.0.0.1:{dead}/api/v1/sessions/{SID}/stop-external-agent": '
        f"dial tcp 127.0.0.1:{dead}: connect: connection refused\nUsage:"
    )


def test_screenshot_writes_a_file(api, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    api.route("GET", f"/api/v1/external-agents/{SID}/screenshot", (200, b"\xff\xd8jpeg\xff\xd9"))
    rc, out = cli("spectask", "screenshot", SID, env=api.env)
    assert rc == 0
    match = re.fullmatch(rf"Testing screenshot for session {SID}\.\.\.\n✅ Screenshot saved: "
                         r"(screenshot-\d{8}-\d{6}\.jpg) \(8 bytes\)\n", out)
    assert match and (tmp_path / match.group(1)).read_bytes() == b"\xff\xd8jpeg\xff\xd9"


# --- stream against a scripted WebSocket server ------------------------------------------------------


class FakeStream:
    """A websockets server running ``script(ws)`` per connection; records init and close codes."""

    def __init__(self, script) -> None:
        self.inits: list[str] = []
        self.closes: list[int | None] = []
        self.paths: list[str] = []
        self.headers: list = []

        def handler(ws) -> None:
            self.paths.append(ws.request.path)
            self.headers.append(ws.request.headers)
            self.inits.append(ws.recv(timeout=5))
            try:
                script(ws)
                ws.recv(timeout=10)  # until the client closes
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd else None)
            except TimeoutError:
                self.closes.append(-1)

        self.server = serve(handler, "127.0.0.1", 0, compression=None)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.port = self.server.socket.getsockname()[1]
        self.env = {"HELIX_URL": f"http://127.0.0.1:{self.port}", "HELIX_API_KEY": "hl-test"}

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture
def stream_server():
    made: list[FakeStream] = []

    def make(script) -> FakeStream:
        made.append(FakeStream(script))
        return made[-1]

    yield make
    for server in made:
        server.close()


def _final_block(out: str) -> str:
    return out[out.index("📊 Final Statistics"):]


HEADER = (
    f"📊 Video Stream for session {SID}\n{'━' * 50}\n"
    "WebSocket URL: ws://127.0.0.1:{port}/api/v1/external-agents/" + SID + "/ws/stream\n"
)


def test_stream_counts_replay_frames_ignores_stream_errors_and_ends_on_close_1000(stream_server, tmp_path):
    key = SPS + b"\x00\x00\x01\x68\xee\x3c\x80" + b"\x00\x00\x01\x65" + bytes(300)
    frames = [video(0x03, key), video(0x02, b"\x00\x00\x01\x41" + bytes(100)), video(0x02, b"\x00\x00\x01\x41" + bytes(90)),
              video(0x01, key)] + [video(0x00, b"\x00\x00\x01\x41" + bytes(50 + i)) for i in range(5)]

    def script(ws) -> None:
        ws.send(STREAM_INIT)
        ws.send(COMPLETE)
        ws.send(b"\x58\x07\x00\x00\x00")
        ws.send(b"\x31\x00\x0cencoder died")  # 0x31 StreamError: the CLI has no case for it
        for f in frames:
            ws.send(f)
        ws.close(1000)

    server = stream_server(script)
    out_file = tmp_path / "out.h264"
    rc, out = cli("spectask", "stream", SID, "-o", str(out_file), "--width", "1280", "--height", "720", "--fps", "40",
                  "--bitrate", "4000", "--video-mode", "scanout", env=server.env)
    assert rc == 0, out
    assert server.inits == [init_message(SID, 1280, 720, 40, 4000, "scanout")]
    assert server.paths == [f"/api/v1/external-agents/{SID}/ws/stream"]
    assert server.headers[0]["Authorization"] == "Bearer hl-test"
    assert "Sec-WebSocket-Protocol" not in server.headers[0] and "Sec-WebSocket-Extensions" not in server.headers[0]
    head = HEADER.format(port=server.port) + f"Output file: {out_file}\n{'━' * 50}\n\n"
    assert out.startswith(head)
    rest = out[len(head):]
    assert re.match(r"✅ Connected in \d+(\.\d+)?(ms|µs|s)\n\n", rest)
    assert (
        "\n📤 Sending init message (1280x720@40fps, 4000kbps, mode=scanout)...\n"
        "✅ Init sent, waiting for video frames...\n\n"
        f"📁 Writing video data to {out_file}\n\n"
        "📺 StreamInit: 1280x720@40fps (H.264)\n"
        "🔑 SPS: profile_idc=100 (High) constraint_set=[000100] level=3.1 (raw=0x10)\n"
        "   ✅ constraint_set3_flag=1 (zero-latency decode enabled)\n"
        "\n📭 Connection closed by server\n"
        "\n📊 Final Statistics (elapsed: 0s)\n"
    ) in rest
    final = _final_block(out)
    assert "\nVideo frames:       9 (2 keyframes)\n" in final
    total = len(STREAM_INIT) + len(COMPLETE) + 5 + 15 + sum(len(f) for f in frames)
    assert f"\nTotal data:         {format_bytes(total)}\n" in final
    assert f"\nFrame size range:   {format_bytes(54)} - {format_bytes(len(key))}\n" in final
    assert out.endswith(f"{RULE}\n")
    assert out_file.read_bytes() == b"".join(f[15:] for f in frames)


def test_stream_close_4000_and_abrupt_close_exit_1(stream_server):
    def superseded(ws) -> None:
        ws.send(video(0x01, SPS))
        ws.close(4000, "superseded")

    server = stream_server(superseded)
    rc, out = cli("spectask", "stream", SID, env=server.env)
    msg = "websocket: close 4000: superseded"
    assert rc == 1
    assert f"\n❌ Connection error: {msg}\n\n📊 Final Statistics (elapsed: 0s)\n" in out
    assert "\nVideo frames:       1 (1 keyframes)\n" in out
    assert out.endswith(f"{RULE}\n" + cobra_error(msg, STREAM_USAGE))

    def abrupt(ws) -> None:
        ws.send(video(0x00, b"\x00\x00\x01\x41"))
        ws.socket.shutdown(socket.SHUT_RDWR)  # the server drops TCP: no close frame

    server = stream_server(abrupt)
    rc, out = cli("spectask", "stream", SID, env=server.env)
    msg = "websocket: close 1006 (abnormal closure): unexpected EOF"
    assert rc == 1 and f"\n❌ Connection error: {msg}\n" in out and out.endswith("\n" + msg + "\n")


def test_stream_duration_sends_close_1000_and_prints_live_blocks(stream_server):

    def steady(ws) -> None:
        ws.send(STREAM_INIT)
        for i in range(200):
            ws.send(video(0x01 if i % 40 == 0 else 0x00, (SPS if i % 40 == 0 else b"") + bytes(200)))
            time.sleep(0.02)  # the fake encoder's frame pacing

    server = stream_server(steady)
    started = time.monotonic()
    rc, out = cli("spectask", "stream", SID, "-d", "1", env={**server.env, **CliTiming(stats_interval_s=0.3).to_env()})
    assert rc == 0, out
    assert time.monotonic() - started < 5
    assert "Duration: 1 seconds\n" in out
    assert out.count("\n📈 Live Statistics (elapsed: ") >= 2 and "\n📈 Live Statistics (elapsed: 0s)\n" in out
    assert "\n⏰ Duration reached (1s)\n\n📊 Final Statistics (elapsed: 1s)\n" in out
    frames = int(re.search(r"^Video frames:\s+(\d+)", _final_block(out), re.M).group(1))
    assert 20 <= frames <= 60
    poll = time.monotonic() + 5
    while not server.closes and time.monotonic() < poll:
        time.sleep(0.01)
    assert server.closes == [1000]


def test_stream_verbose_prints_each_frame(stream_server):
    def script(ws) -> None:
        ws.send(COMPLETE)
        ws.send(video(0x01, SPS))
        ws.send(video(0x00, b"\x00\x00\x01\x41\x9a"))
        ws.close(1000)

    server = stream_server(script)
    rc, out = cli("spectask", "stream", SID, "-v", env=server.env)
    assert rc == 0
    stamp = r"\[\d\d:\d\d:\d\d\.\d{3}\]"
    assert re.search(rf"^{stamp} Control: {re.escape(COMPLETE[:100])}\n", out, re.M)
    assert re.search(rf"^{stamp} Video: H\.264 10 bytes \(KEY\)\n", out, re.M)
    assert re.search(rf"^{stamp} Video: H\.264 5 bytes \(delta\)\n", out, re.M)


def test_stream_handshake_failures(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_503() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nSandbox not connected")

    thread = threading.Thread(target=answer_503, daemon=True)
    thread.start()
    rc, out = cli("spectask", "stream", SID, env={"HELIX_URL": f"http://127.0.0.1:{port}"})
    thread.join(5)
    listener.close()
    msg = "WebSocket connection failed: websocket: bad handshake - Sandbox not connected"
    assert (rc, out) == (1, HEADER.format(port=port) + f"{'━' * 50}\n\n" + cobra_error(msg, STREAM_USAGE))

    rc, out = cli("spectask", "stream", SID, env={"HELIX_URL": f"http://127.0.0.1:{port}"})  # nothing listens now
    msg = f"WebSocket connection failed: dial tcp 127.0.0.1:{port}: connect: connection refused"
    assert (rc, out) == (1, HEADER.format(port=port) + f"{'━' * 50}\n\n" + cobra_error(msg, STREAM_USAGE))


def test_stream_process_sigint_prints_final_stats_and_exits_0(stream_server, tmp_path):
    def steady(ws) -> None:
        ws.send(STREAM_INIT)
        for _ in range(500):
            ws.send(video(0x00, bytes(100)))
            time.sleep(0.02)  # the fake encoder's frame pacing

    server = stream_server(steady)
    env = {**os.environ, **server.env, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "helix_sim.guest.helix", "spectask", "stream", SID],
                            stdout=subprocess.PIPE, env=env, cwd=tmp_path)
    lines: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        seen = b""
        deadline = time.monotonic() + 15
        while b"StreamInit" not in seen:
            seen += lines.get(timeout=max(0.01, deadline - time.monotonic()))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    while not lines.empty():
        seen += lines.get()
    out = seen.decode()
    assert "\n🛑 Interrupted...\n\n📊 Final Statistics (elapsed: " in out
    assert out.startswith(f"📊 Video Stream for session {SID}\n") and out.endswith(f"{RULE}\n")
    poll = time.monotonic() + 5
    while not server.closes and time.monotonic() < poll:
        time.sleep(0.01)
    assert server.closes == [1000]


# --- benchmark (benchmark_cmd.go) ----------------------------------------------------------------------

HEAVY = "━" * 74
LIGHT = "─" * 75


def _bench_stats(duration: int, arrivals_ms: list[int], sizes: list[int], keyframes: set[int]):
    from helix_sim.guest.helix.benchmark import BenchmarkStats

    stats = BenchmarkStats(start_ns=0, duration=duration)
    stats.on_binary(STREAM_INIT, 0, None)
    for i, (t, size) in enumerate(zip(arrivals_ms, sizes)):
        stats.on_binary(video(0x01 if i in keyframes else 0x00, bytes(size)), t * 1_000_000, None)
    return stats


def test_benchmark_results_are_byte_exact():
    """printBenchmarkResults for a known arrival pattern (values worked out from benchmark_cmd.go)."""
    stats = _bench_stats(3, [i * 25 for i in range(100)], [1000] + [500] * 99, {0})
    assert [stats.progress(k) for k in (1, 2, 3, 4)] == [
        "  [ 1/ 3s] Frames:  100 | Current FPS:  40 | Total: 50.8 KB\n",
        "  [ 2/ 3s] Frames:  100 | Current FPS:  40 | Total: 50.8 KB\n",
        "  [ 3/ 3s] Frames:  100 | Current FPS:  20 | Total: 50.8 KB\n",
        "  [ 4/ 3s] Frames:  100 | Current FPS:   0 | Total: 50.8 KB\n",
    ]
    assert stats.results(3_100_000_000, 60) == (
        f"\n{HEAVY}\n📊 BENCHMARK RESULTS\n{HEAVY}\n\n"
        "  Resolution:       1280x720\n"
        "  Codec:            H.264\n"
        "  Duration:         3.1s\n"
        "\n"
        "  📈 Frame Rate:\n"
        "     Average:       32.3 fps ⚠️  (54% of 60 target)\n"
        "     Min/Max:       20 / 40 fps\n"
        "     Total Frames:  100 (1 keyframes)\n"
        "\n"
        "  📦 Bandwidth:\n"
        "     Average:       134.2 Kbps/s\n"
        "     Total Data:    50.8 KB\n"
        "     Avg Frame:     520 B\n"
        "     Frame Range:   500 B - 1000 B\n"
        "\n"
        "  📉 Frame Jitter (inter-frame arrival variance):\n"
        "     Interval:      min=25ms avg=25ms max=25ms\n"
        "     Gaps >50ms:    0 (0.0%)\n"
        "     Gaps >100ms:   0 (0.0%)\n"
        "     Gaps >200ms:   0 (0.0%)\n"
        f"\n{HEAVY}\n"
        "⚠️  DEGRADED: Only 54% of target FPS - check GPU/encoder load\n"
        f"{HEAVY}\n"
    )
    # 60 frames in the second, with one 250 ms hole: EXCELLENT, and the jitter warning.
    arrivals = [i * 16 for i in range(30)] + [29 * 16 + 250 + i * 8 for i in range(30)]
    stats = _bench_stats(1, arrivals, [2000] * 60, {0, 30})
    text = stats.results(1_000_400_000, 60)
    assert "  Duration:         1s\n" in text and "     Average:       60.0 fps ✅ (100% of 60 target)\n" in text
    assert "     Min/Max:       60 / 60 fps\n     Total Frames:  60 (2 keyframes)\n" in text
    assert "     Interval:      min=8ms avg=16ms max=250ms\n" in text
    assert "     Gaps >50ms:    1 (1.7%)\n     Gaps >100ms:   1 (1.7%)\n     Gaps >200ms:   1 (1.7%)\n" in text
    assert "     ⚠️  High jitter detected! Max gap: 250ms\n" in text
    assert text.endswith(f"{HEAVY}\n✅ EXCELLENT: Achieving 100% of target FPS\n{HEAVY}\n")
    # No frames at all: no Resolution/Codec/Min-Max/frame lines, POOR.
    from helix_sim.guest.helix.benchmark import BenchmarkStats

    empty = BenchmarkStats(start_ns=0, duration=2).results(2_000_000_000, 60)
    assert "Resolution" not in empty and "Min/Max" not in empty and "Avg Frame" not in empty
    assert "     Average:       0.0 fps ⚠️  (0% of 60 target)\n" in empty and "Interval:" not in empty
    assert "\n  📉 Frame Jitter (inter-frame arrival variance):\n\n" + HEAVY in empty
    assert empty.endswith("❌ POOR: Only 0% of target FPS - significant bottleneck\n" + HEAVY + "\n")


def test_benchmark_help_and_vkcube_failures(api):
    rc, out = cli("spectask", "benchmark", "--help")
    assert rc == 0 and out.startswith("Measures video streaming FPS over the WebSocket connection.\n")
    assert out.endswith(
        "Flags:\n"
        "      --bitrate int         Video bitrate in kbps (default: 30Mbps for 4K) (default 30000)\n"
        "  -d, --duration int        Benchmark duration in seconds (default 10)\n"
        "      --fps int             Target frames per second (default 60)\n"
        "      --height int          Video stream height in pixels (default: 4K) (default 2160)\n"
        "  -h, --help                help for benchmark\n"
        "  -o, --output string       Write raw H.264 video frames to file\n"
        "      --skip-vkcube         Skip vkcube check (for static screen testing)\n"
        "      --video-mode string   Video capture mode: shm, native, or zerocopy (default: container env)\n"
        "      --width int           Video stream width in pixels (default: 4K) (default 3840)\n"
    )
    # exec refused: a warning, then the dial fails (no WebSocket server there): exit 1 with Go's text
    api.route("POST", f"/api/v1/external-agents/{SID}/exec", (403, b"command not allowed: vkcube\n"))
    rc, out = cli("spectask", "benchmark", SID, "-d", "1", "--video-mode", "shm", env=api.env)
    assert rc == 1
    assert out.startswith(f"🚀 Video Streaming Benchmark\n{HEAVY}\nSession:    {SID}\nDuration:   1 seconds\n"
                          f"Resolution: 3840x2160 @ 60fps target\nBitrate:    30000 kbps\nVideo Mode: shm\n{HEAVY}\n\n"
                          "🎮 Starting vkcube (GPU stress test)...\n"
                          "⚠️  Warning: Failed to start vkcube: exec API returned 403: command not allowed: vkcube\n\n"
                          "   You may need to start it manually for accurate FPS testing\n"
                          "\n📡 Connecting to video stream...\nError: WebSocket connection failed: ")
    body = api.requests[0][3]
    assert body == (b'{"background":true,"command":["vkcube","--wsi","wayland","--present_mode","1"],'
                    b'"env":{"WAYLAND_DISPLAY":"wayland-0","XDG_RUNTIME_DIR":"/run/user/1000"}}')
    rc, out = cli("spectask", "benchmark", SID, "--skip-vkcube", "-o", "/nonexistent/dir/x.h264", env=api.env)
    assert rc == 1 and "\nOutput:     /nonexistent/dir/x.h264\n" in out
    assert "Error: failed to create output file: open /nonexistent/dir/x.h264: no such file or directory\n" in out


# --- end to end against the simulator's API ----------------------------------------------------------


def test_cli_against_the_simulator(tmp_path):
    simulator = pytest.importorskip("helix_sim.simulator", reason="helix_sim.simulator is not importable yet")
    import docker
    import requests

    from harness.deadline import poll_until
    from helix_sim.config import SimConfig

    config = SimConfig(root=tmp_path / "sim", width=448, height=256, boot_delay_s=0.05, sandbox_delay_s=0.05,
                       session_delay_s=0.1, video_grace_s=0.3, cli_wait_poll_s=0.1)
    with simulator.Simulator(config) as sim:
        info = sim.info()

        async def boot() -> None:
            sim.host.start_vm()
            await sim.host.wait_status("started", 10)

        sim.call(boot())
        client = docker.DockerClient(base_url=sim.engine.docker_host, version="1.43")
        for service in ("api", "sandbox-macos"):
            client.containers.create(f"helix-{service}:dev", name=f"helix-{service}-1",
                                     labels={"com.docker.compose.service": service}).start()
        client.close()
        env = {**sim.guest.cli_env(), "HELIX_URL": info["api_url"], "HELIX_API_KEY": info["api_key"]}
        auth = {"Authorization": f"Bearer {info['api_key']}"}
        poll_until(lambda: any("desktop_versions" in s for s in
                               requests.get(info["api_url"] + "/api/v1/sandboxes", headers=auth, timeout=5).json()),
                   timeout=15, what="the sandbox online", interval=0.05)

        rc, out = cli("spectask", "start", "--project", config.project_id, "-n", "e2e", "--wait", "-q", env=env)
        assert rc == 0, out
        # -q still shows the status messages: waitForTaskSession prints them whatever the flags
        assert re.fullmatch(r"(   .+\n)*ses_[0-9a-z]{26}\n", out), out
        sid = out.splitlines()[-1]

        rc, out = cli("spectask", "exec", sid, "--background", "--env", "WAYLAND_DISPLAY=wayland-0", "--env",
                      "XDG_RUNTIME_DIR=/run/user/1000", "--", "vkcube", "--wsi", "wayland", "--present_mode", "1",
                      env=env)
        assert (rc, out) == (0, "Command started in background\n")
        rc, out = cli("spectask", "exec", sid, "--", "kitty", env=env)
        assert rc == 1 and out.startswith("Error: exec API returned 403: command not allowed: kitty")

        rc, out = cli("spectask", "stream", sid, "-d", "2", "--width", "448", "--height", "256", "--fps", "40", env=env)
        assert rc == 0, out
        assert "📺 StreamInit: 448x256@40fps (H.264)\n" in out and "\n⏰ Duration reached (2s)\n" in out
        final = _final_block(out)
        frames, keyframes = re.search(r"^Video frames:\s+(\d+)(?: \((\d+) keyframes\))?", final, re.M).groups()
        assert int(frames) > 10 and int(keyframes or 0) >= 1
        assert re.search(r"^Resolution:\s+448x256$", final, re.M)

        rc, out = cli("spectask", "benchmark", sid, "-d", "1", "--width", "448", "--height", "256", "--fps", "40",
                      env=env)
        assert rc == 0, out
        assert out.startswith(f"🚀 Video Streaming Benchmark\n{HEAVY}\nSession:    {sid}\nDuration:   1 seconds\n"
                              f"Resolution: 448x256 @ 40fps target\nBitrate:    30000 kbps\n{HEAVY}\n\n"
                              "🎮 Starting vkcube (GPU stress test)...\n✅ vkcube started\n\n📡 Connecting to video stream...\n"
                              f"✅ Connected\n✅ Stream initialized\n\n📊 Running benchmark for 1 seconds...\n{LIGHT}\n")
        assert re.search(r"\n  \[ 1/ 1s\] Frames: +\d+ \| Current FPS: +\d+ \| Total: [\d.]+ [KM]?B\n"
                         r"\n✅ Benchmark complete\n\n🛑 Stopping vkcube...\n\n" + HEAVY, out), out
        results = out[out.index("📊 BENCHMARK RESULTS"):]
        assert "  Resolution:       448x256\n  Codec:            H.264\n" in results
        assert re.search(r"\n     Average:       \d+\.\d fps (⚠️ |✅) \(\d+% of 40 target\)\n", results)
        assert re.search(r"\n     Total Frames:  \d+ \([1-9]\d* keyframes\)\n", results)
        assert results.endswith(f"{HEAVY}\n") and "  📉 Frame Jitter (inter-frame arrival variance):\n" in results
        # it stopped its vkcube with pkill -f: never reaped, a zombie is left (exec.go)
        desktop = sim.api.session_desktop(sid)
        assert not desktop.vkcube_running and "Z" in {p.state for p in desktop.processes._procs.values()
                                                      if p.name == "vkcube"}

        rc, out = cli("spectask", "list", env=env)
        assert rc == 0 and f"Session: {sid}\n" in out and out.endswith("Found 1 session(s) with external agents.\n")
        assert cli("spectask", "stop", sid, env=env) == (0, f"Stopping session {sid}...\nSession {sid} stopped.\n")
