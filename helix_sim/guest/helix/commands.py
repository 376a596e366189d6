"""The ``helix`` command tree: the root and the ``spectask`` (``st``) subtree, with Use/Short/Long/Args and
flags as in the Go source; the commands the harness does not use answer "not simulated".

Two generations (``SimConfig.cli``, baked into the built launcher as ``HELIX_CLI_GENERATION``):
``2026-08`` is helixml/helix 68f96d7 (``start -a/--agent``); ``2026-11`` is the newer CLI of
upstream-corrections.md §2: no ``--agent`` (task creation sends no app_id, the project default is used),
``--runtime ubuntu-desktop|headless-ubuntu`` (default: the project's setting), and the new ``board``,
``get``, ``create`` and ``update`` commands.
"""

from __future__ import annotations

from typing import Callable

from .cobra import Command, Flag, exact_args, maximum_args, minimum_args
from .benchmark import BENCHMARK_LONG, run_benchmark
from .spectask import not_simulated, run_exec, run_list, run_resume, run_screenshot, run_start, run_stop
from .stream import run_stream

GENERATIONS = ("2026-08", "2026-11")
NEWEST = "2026-11"
#: ``--runtime`` values of the newer CLI.
RUNTIMES = ("ubuntu-desktop", "headless-ubuntu")

_START_LONG = """Start a spec task planning session which creates a sandbox desktop.

If no task-id is provided, a new spec task will be created.
Use --project to specify which project to create the task in.
Use --agent to specify which Helix agent/app to use (e.g., app_01xxx).

Example workflow:
  1. Fork a sample project:  helix project fork modern-todo-app --name "My Project"
  2. Start a spec task:      helix spectask start --project prj_xxx --agent app_xxx -n "Add dark mode"
  3. Connect via browser:    Visit /sessions/<session-id> to access the desktop"""

_STOP_LONG = """Stops a running sandbox session and its container.

Use --all to stop all sessions with external agents.

Examples:
  helix spectask stop ses_01xxx      # Stop specific session
  helix spectask stop --all          # Stop all sessions
"""

_STREAM_LONG = """Connects to the WebSocket video streaming protocol and displays real-time statistics.

This command streams raw H.264/HEVC/AV1 video frames directly over WebSocket.
This is ideal for testing and debugging the video pipeline.

Statistics displayed:
  - Frame rate (FPS)
  - Bitrate (Mbps)
  - Frame sizes and types (keyframe vs delta)
  - Resolution and codec
  - Keyframe count

Video modes:
  - shm:      Shared memory path (default, most compatible, 1-2 CPU copies)
  - native:   Native GStreamer DMA-BUF (requires GStreamer 1.24+, fewer copies)
  - zerocopy: pipewirezerocopysrc plugin (true zero-copy, requires plugin)

Examples:
  helix spectask stream ses_01xxx                             # Run until Ctrl+C (1080p default)
  helix spectask stream ses_01xxx --width 3840 --height 2160  # Stream at 4K resolution
  helix spectask stream ses_01xxx --duration 30               # Run for 30 seconds
  helix spectask stream ses_01xxx --output video.h264         # Save raw video to file
  helix spectask stream ses_01xxx --video-mode zerocopy       # Test zero-copy streaming
  helix spectask stream ses_01xxx --mouse-sweep               # Sweep mouse to trigger cursor updates
  helix spectask stream ses_01xxx -v                          # Verbose mode (show each frame)
"""

_EXEC_LONG = """Execute a command inside a running session container.

This command allows you to run arbitrary commands in the desktop container
associated with a Helix session. Useful for:
  - Running scripts or tools
  - Debugging container state
  - Setting up test environments
  - Installing dependencies

Examples:
  # Run a simple command
  helix spectask exec ses_01xxx ls -la /home/retro/work

  # Run a background process
  helix spectask exec ses_01xxx --background python3 server.py

  # Run with environment variables
  helix spectask exec ses_01xxx --env FOO=bar --env BAZ=qux printenv

  # Run a shell command
  helix spectask exec ses_01xxx bash -c "echo hello && pwd"
"""


_START_LONG_2026_11 = """Start a spec task planning session which creates a sandbox desktop.

If no task-id is provided, a new spec task will be created.
Use --project to specify which project to create the task in; the task uses the project's agent.
Use --runtime to choose the sandbox runtime (ubuntu-desktop or headless-ubuntu; a headless task
has no desktop to stream). It defaults to the project's setting.

Example workflow:
  1. Fork a sample project:  helix project fork modern-todo-app --name "My Project"
  2. Start a spec task:      helix spectask start --project prj_xxx --runtime ubuntu-desktop -n "Add dark mode"
  3. Connect via browser:    Visit /sessions/<session-id> to access the desktop"""


def build_tree(argv0: str, generation: str = NEWEST) -> Command:
    """The `helix` root with the `spectask` subtree (Use/Short/Args/flags as in the Go source) of a generation."""
    if generation not in GENERATIONS:
        generation = NEWEST
    newer = generation >= "2026-11"
    who = (
        [Flag("runtime", "string", "", "Sandbox runtime: ubuntu-desktop|headless-ubuntu (default: the project's setting)")]
        if newer else [Flag("agent", "string", "", "Agent ID to use (e.g., app_01xxx)", "a")]
    )
    start = Command(
        "start [task-id]", "Start a spec task planning session (creates sandbox)",
        _START_LONG_2026_11 if newer else _START_LONG,
        args=maximum_args(1), run=run_start,
        flags=[
            Flag("name", "string", "CLI Test Task", "Task name", "n"),
            Flag("project", "string", "", "Project ID (required when creating new task)", "p"),
            *who,
            Flag("prompt", "string", "", "Task prompt/description"),
            Flag("prompt-file", "string", "", "Read the task prompt from a file (e.g. a design doc) — dispatch a full "
                 "brief without committing it to the repo. Appended after --prompt if both are set."),
            Flag("attach", "stringArray", [], "Attach file(s) to the task (repeatable). Uploaded as spec-task "
                 "attachments the agent reads at design/tasks/<task>/attachments/<name> — good for logs/large "
                 "context without bloating the prompt."),
            Flag("quiet", "bool", False, "Only output the task ID (session ID with --wait)", "q"),
            Flag("wait", "bool", False, "Block until the sandbox has booted, then print session-level connect info "
                 "(default: return immediately with the task URL — the browser page shows it loading)"),
            Flag("no-wait", "bool", False, "Deprecated: no-wait is now the default; kept as a no-op for back-compat",
                 hidden=True),
        ],
    )
    stream = Command(
        "stream <session-id>", "Connect to video stream and display real-time statistics", _STREAM_LONG,
        args=exact_args(1), run=run_stream,
        flags=[
            Flag("duration", "int", 0, "Run for specified seconds (0 = until interrupted)", "d"),
            Flag("output", "string", "", "Write raw video frames to file", "o"),
            Flag("verbose", "bool", False, "Print each frame received", "v"),
            Flag("width", "int", 1920, "Video stream width in pixels"),
            Flag("height", "int", 1080, "Video stream height in pixels"),
            Flag("fps", "int", 60, "Video stream frames per second"),
            Flag("bitrate", "int", 10000, "Video stream bitrate in kbps"),
            Flag("video-mode", "string", "", "Video capture mode: shm, native, or zerocopy (default: container env)"),
            Flag("mouse-sweep", "bool", False, "Sweep mouse horizontally across middle of screen to trigger cursor "
                 "shape changes"),
        ],
    )
    exec_cmd = Command(
        "exec <session-id> <command> [args...]", "Execute a command inside a session container", _EXEC_LONG,
        args=minimum_args(2), run=run_exec,
        flags=[
            Flag("background", "bool", False, "Run command in background (don't wait for output)"),
            Flag("env", "stringArray", [], "Environment variables (KEY=VALUE format, can be repeated)"),
            Flag("timeout", "int", 30, "Timeout in seconds (0 for no timeout)"),
        ],
    )
    stop = Command("stop <session-id>", "Stop a running sandbox session", _STOP_LONG, args=maximum_args(1),
                   run=run_stop, flags=[Flag("all", "bool", False, "Stop all sessions with external agents")])

    def stub(use: str, short: str, args: Callable[[list[str]], str | None] | None = None,
             aliases: tuple[str, ...] = ()) -> Command:
        return Command(use, short, aliases=aliases, args=args, run=not_simulated)

    spectask = Command(
        "spectask", "Spec task testing and management", aliases=("st",),
        children=[
            start,
            Command("screenshot <session-id>", "Test screenshot endpoint (tests RevDial connectivity)",
                    args=exact_args(1), run=run_screenshot),
            Command("list", "List active spec task sessions with external agents", run=run_list),
            Command("resume <session-id>", "Resume an existing session (tests session restore functionality)",
                    args=exact_args(1), run=run_resume),
            stub("list-agents", "List agents (apps) in an organization", aliases=("agents",)),
            stream,
            stop,
            stub("interact <session-id>", "Interact with a Helix session - chat, view history, send prompts",
                 exact_args(1)),
            stub("live <session-id>", "Combined live view with video stream stats and session chat", exact_args(1)),
            stub("test", "Run automated tests against a session"),
            stub("send <session-id> <message>", "Send a message to a session and optionally wait for completion",
                 exact_args(2)),
            Command("mcp", "Direct MCP tool access for testing", children=[
                stub("session <session-id> <tool>", "Call Session MCP tools", exact_args(2)),
                stub("desktop <session-id> <tool>", "Call Desktop MCP tools", exact_args(2)),
                stub("list <session-id>", "List available MCP tools for a session", exact_args(1)),
            ]),
            stub("e2e", "Run end-to-end integration test"),
            stub("health", "Check system health and container status"),
            stub("keyboard-test <session-id>", "Test keyboard input over WebSocket stream", exact_args(1)),
            stub("scroll-test <session-id>", "Test scroll input over DirectInput WebSocket", exact_args(1)),
            Command("benchmark <session-id>", "Benchmark video streaming performance with GPU stress test",
                    BENCHMARK_LONG, args=exact_args(1), run=run_benchmark, flags=[
                        Flag("duration", "int", 10, "Benchmark duration in seconds", "d"),
                        Flag("width", "int", 3840, "Video stream width in pixels (default: 4K)"),
                        Flag("height", "int", 2160, "Video stream height in pixels (default: 4K)"),
                        Flag("fps", "int", 60, "Target frames per second"),
                        Flag("bitrate", "int", 30000, "Video bitrate in kbps (default: 30Mbps for 4K)"),
                        Flag("skip-vkcube", "bool", False, "Skip vkcube check (for static screen testing)"),
                        Flag("video-mode", "string", "", "Video capture mode: shm, native, or zerocopy (default: "
                             "container env)"),
                        Flag("output", "string", "", "Write raw H.264 video frames to file", "o"),
                    ]),
            stub("latency <session-id>", "Measure key-to-eyeball input latency", exact_args(1)),
            exec_cmd,
            stub("copy <session-id> <local-file>", "Copy a file into a session container", exact_args(2)),
            *([stub("board", "Show the project's task board"),
               stub("get <task-id>", "Show a spec task", exact_args(1)),
               stub("create", "Create a spec task without starting it"),
               stub("update <task-id>", "Update a spec task", exact_args(1))] if newer else []),
        ],
    )
    return Command(argv0, "Helix", "Private GenAI Platform", children=[spectask])
