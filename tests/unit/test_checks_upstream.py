"""Checks and drivers against upstream's real behaviour (upstream-corrections.md): zombie vkcube, a first
frame that never comes, QEMU's unexpected messages, the shm path, a task with no agent, CLI generations."""

from __future__ import annotations

import json
from types import SimpleNamespace

from harness.config import GuestConfig, StreamConfig, TargetConfig
from harness.drivers.base import CommandResult, CommandRunner
from harness.drivers.capture import CaptureResult
from harness.drivers.helix_api import HelixApi
from harness.drivers.helix_cli import HelixCliDriver
from harness.record import StreamRecord
from harness.report.metrics import build_metrics
from harness.record import RunRecord
from harness.timeline import Timeline
from harness.verdict import checks


def stream(**capture) -> StreamRecord:
    cap = CaptureResult(url="ws://x", recording="", h264="", end="duration", timing={"frames": 100, "fps": 40.0},
                        content={"motion": 0.9, "first_frame_is_idr_with_sps_pps": True})
    for key, value in capture.items():
        setattr(cap, key, value)
    return StreamRecord(session_id="ses_x", capture=cap, vkcube_running_before=True, vkcube_running_after=True,
                        vkcube_state_after="running", vkcube_pid=4242)


def test_a_zombie_vkcube_is_vkcube_dies_not_a_static_screen():
    run = stream()
    run.vkcube_running_after, run.vkcube_state_after = False, "zombie"
    f = checks.vkcube(run)
    assert (f.ok, f.layer, f.cause) == (False, "desktop", "vkcube_dies")
    assert any("state Z" in e for e in f.evidence) and "zombie" in f.message


def test_a_first_frame_that_never_comes_has_its_own_cause():
    statuses = [{"t_s": 0.0, "state": "starting_video", "text": "{}"}, {"t_s": 2.0, "state": "starting_video",
                                                                      "text": "{}"}]
    run = stream(end="error", first_frame_timed_out=True, error="no video frame within 6.0s of the init",
                 timing={}, tally={"status_before_first_frame": statuses})
    for check in (checks.stream_errors, lambda r: checks.fps_in_band(r, TargetConfig())):
        f = check(run)
        assert (f.layer, f.cause) == ("stream", "no_first_frame"), f.as_dict()
        assert any("starting_video" in e for e in f.evidence)


def test_qemu_unexpected_messages_are_blamed_on_the_frame_export():
    run = stream(end="closed", close_code=1006, stream_errors=["unexpected msg_type: 0x07"])
    f = checks.stream_errors(run)
    assert (f.layer, f.cause) == ("frame_export", "qemu_unexpected_msg")
    other = checks.stream_errors(stream(end="closed", stream_errors=["failed to start pipeline"]))
    assert other.cause == "stream_error"


def test_the_shm_path_names_itself():
    zero = SimpleNamespace(nonzero=0, zero=50, zero_reasons=["Buffer is not DMA-BUF backed"], by_source={"vsockenc": 50},
                           samples=["resource_id=0"])
    scan = SimpleNamespace(resource_ids=zero)
    none = SimpleNamespace(resource_ids=SimpleNamespace(nonzero=0, zero=0, zero_reasons=[], by_source={}, samples=[]))
    run = SimpleNamespace(desktop_scan=scan, host_scan=none, capture=None)
    f = checks.resource_ids(run)
    assert f.cause == "resource_ids_zero" and f.message.startswith("shm path: vsockenc sends resource_id=0")


def test_scanout_pts_is_reported_as_synthetic():
    record = RunRecord(streams=[stream(timing={"frames": 100, "fps": 40.0, "fps_pts": 60.0})])
    m = build_metrics(record, TargetConfig(), Timeline())
    assert m["fps_pts"] is None and "synthetic" in m["fps_pts_note"] and m["fps"] == 40.0
    shm = TargetConfig(stream=StreamConfig(video_mode="shm"))
    assert build_metrics(record, shm, Timeline())["fps_pts"] == 60.0


class _Api(HelixApi):
    def __init__(self, task: dict) -> None:  # no HTTP: the task comes from the test
        self.task = task

    def spec_task(self, task_id: str) -> dict:
        return self.task


def test_a_task_without_agent_is_no_agent_and_a_provisioning_one_is_not_a_failure():
    failed = {"id": "spt_x", "status": "backlog",
              "metadata": {"error": "no agent configured - set DefaultHelixAppID on project"}}
    err = _Api(failed).task_failure("spt_x")
    assert err.cause == "no_agent" and "DefaultHelixAppID" in err.hint
    other = _Api({"status": "backlog", "metadata": {"error": "git clone failed"}}).task_failure("spt_x")
    assert other.cause == "task_failed"
    assert _Api({"status": "backlog", "metadata": {}}).task_failure("spt_x") is None


OLD_HELP = """Start a spec task and wait for its desktop session

Usage:
  helix spectask start [flags]

Flags:
  -a, --agent string     Helix agent (app) ID
  -h, --help             help for start
  -n, --name string      task name
      --project string   project ID
  -q, --quiet            print only the session ID
      --wait             wait for the session
"""
NEW_HELP = OLD_HELP.replace("  -a, --agent string     Helix agent (app) ID\n", "").replace(
    "  -q, --quiet", "      --runtime string   ubuntu-desktop|headless-ubuntu (default: the project's)\n  -q, --quiet")


class _Runner(CommandRunner):
    def __init__(self, help_text: str) -> None:
        self.help_text = help_text
        self.commands: list[str] = []

    def run(self, command, *, timeout, phase, check=True, log_command=None) -> CommandResult:
        self.commands.append(command)
        if "--help" in command:
            return CommandResult(command, 0, self.help_text, "", 0.0)
        return CommandResult(command, 0, "ses_01ke4rsx7jb62ms9zx8g68tnbe\n", "", 0.0)


def test_cli_generations_get_the_flags_they_have():
    old = _Runner(OLD_HELP)
    HelixCliDriver(old, GuestConfig()).start_session("prj", "n", timeout=5, agent="app_1")
    assert "--agent app_1" in old.commands[-1] and "--runtime" not in old.commands[-1]
    new = _Runner(NEW_HELP)
    HelixCliDriver(new, GuestConfig()).start_session("prj", "n", timeout=5, agent="app_1")
    assert "--runtime ubuntu-desktop" in new.commands[-1] and "--agent" not in new.commands[-1]
    none = _Runner(OLD_HELP)
    HelixCliDriver(none, GuestConfig()).start_session("prj", "n", timeout=5)  # no agent named: no --agent
    assert "--agent" not in none.commands[-1]
    assert json.dumps(none.commands)  # plain strings


#: The SPS and PPS that start the simulator's 1280x720 CLI .h264 (x264, baseline).
SPS_PPS = bytes.fromhex("000000016742c020da014016e840000003004000001423c60ca80000000168ce3c80")


def _cli_run(cli_frames: int, *, replay: int, frames: int = 120, keyframes: int = 2, elapsed: float = 3.0):
    from harness.drivers.helix_cli import CliStream
    from harness.protocols.cli_output import StreamStats

    run = stream(timing={"frames": frames, "fps": 40.0, "replay_frames": replay, "keyframes": keyframes})
    stats = StreamStats(resolution=(1280, 720), codec="H.264", video_frames=cli_frames, keyframes=2, audio_frames=0,
                        average_fps=round(cli_frames / elapsed, 2), instant_fps=40, total_data="1 MB",
                        elapsed_s=elapsed, end_reason="duration", connection_error=None,
                        stream_init=(1280, 720, 40, "H.264"))
    run.cli = CliStream(stats=stats, output="", exit_status=0, h264_remote="/tmp/x.h264")
    run.cli_h264, run.cli_h264_head = "/tmp/x.h264", SPS_PPS
    return run


def test_the_cli_cross_check_allows_for_whichever_viewer_got_the_replay_burst():
    target = TargetConfig(stream=StreamConfig(duration=3.0))
    # The CLI joined first (no replay) while the native client got 20 replay frames: it agrees.
    assert checks.cli_agrees(_cli_run(120, replay=20), target).ok
    # The native client joined first (no replay) and the CLI got the GOP so far: it agrees.
    assert checks.cli_agrees(_cli_run(160, replay=0), target).ok
    # Both joined together: each got the burst.
    assert checks.cli_agrees(_cli_run(140, replay=20), target).ok
    # The CLI at half the native rate disagrees, whoever got the burst.
    half = checks.cli_agrees(_cli_run(60, replay=20), target)
    assert (half.ok, half.layer, half.cause) == (False, "client", "cli_disagrees")
    assert "CLI Average FPS 20.0" in half.message


def test_a_cli_h264_with_a_broken_sps_is_a_finding_not_a_crash():
    run = _cli_run(120, replay=20)
    run.cli_h264_head = bytes.fromhex("0000000167640028") + bytes.fromhex("0000000168ee3c80")
    f = checks.cli_agrees(run, TargetConfig(stream=StreamConfig(duration=3.0)))
    assert (f.ok, f.cause) == (False, "cli_h264_no_headers") and "SPS" in f.message
