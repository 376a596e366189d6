"""HelixCliDriver against the simulated guest's Go toolchain and helix CLI, over SSH.

The contract: ``ensure_built`` builds the CLI and stamps it with the git SHA, and skips the build
when the stamp matches; a failed build is a ``build``-phase error; ``start_session`` returns the
``ses_`` id that ``spectask start --wait -q`` prints (anything else is an error); ``stream``
returns the parsed Final Statistics and leaves the ``.h264`` where it was told. Every command
sources ``.env.usercreds`` in the guest and only the command without that prefix is shown.
"""

from __future__ import annotations

import dataclasses
import re
import time

import pytest

from harness.drivers.helix_cli import HelixCliError

pytestmark = pytest.mark.timeout(90)


def test_ensure_built_skips_the_same_sha(rig) -> None:
    rig.stack_up()
    guest = dataclasses.replace(rig.guest, cli_path=str(rig.workdir / "cli-build-test"))
    cli = rig.cli_driver(guest)
    sha = rig.git_sha
    assert cli.ensure_built(sha, timeout=30) is True
    assert rig.ssh.run(f"cat {guest.cli_path}.gitsha", timeout=10).stdout.strip() == sha
    assert "spectask" in rig.ssh.run(f"{guest.cli_path} --help", timeout=20).stdout  # a working CLI
    assert cli.ensure_built(sha, timeout=30) is False  # same SHA: not rebuilt
    assert cli.ensure_built("0" * 40, timeout=30) is True  # another SHA: rebuilt
    assert cli.ensure_built("", timeout=30) is True  # no SHA known: always built


def test_a_failed_build_is_a_build_error(rig) -> None:
    guest = dataclasses.replace(rig.guest, helix_dir="~/no-checkout", cli_path=str(rig.workdir / "cli-fails"))
    with pytest.raises(HelixCliError) as err:
        rig.cli_driver(guest).ensure_built("", timeout=30)
    assert err.value.phase == "build" and "building the helix CLI failed" in err.value.message
    assert "Go" in (err.value.hint or "")


def test_start_session_returns_a_ses_id(rig) -> None:
    rig.stack_up()
    cli = rig.cli_driver()
    cli.ensure_built(rig.git_sha, timeout=30)
    started = cli.start_session(rig.creds.project, "driver-tests-cli", timeout=30)
    sid = started.session_id
    assert re.fullmatch(r"ses_[0-9a-z]{26}", sid)
    assert started.elapsed_s > 0 and abs(started.started_wall - time.time()) < 60
    assert rig.api.session(sid)["id"] == sid


def test_start_session_failure_shows_the_command_not_the_creds(rig) -> None:
    rig.stack_up()
    cli = rig.cli_driver()
    cli.ensure_built(rig.git_sha, timeout=30)
    with pytest.raises(HelixCliError) as err:
        cli.start_session("", "driver-tests-bad", timeout=30)
    e = err.value
    assert e.phase == "session" and "spectask start --project '' -n driver-tests-bad" in e.message
    assert "--project is required" in e.message  # what the CLI printed
    assert "usercreds" not in e.message and rig.info["api_key"] not in str(e)


def test_stream_final_statistics(rig) -> None:
    sid, _ = rig.session()
    remote = str(rig.workdir / "cli-stream.h264")
    result = rig.cli_driver().stream(sid, duration=2, output=remote, timeout=30)
    stats = result.stats
    assert result.exit_status == 0 and result.h264_remote == remote
    assert stats.end_reason == "duration" and stats.elapsed_s == pytest.approx(2.0, abs=0.6)
    assert stats.video_frames > 0 and stats.keyframes >= 1 and stats.average_fps > 0
    assert stats.resolution and stats.codec == "H.264"
    assert "Final Statistics" in result.output
    head = rig.ssh.run(f"head -c 4 {remote} | od -An -tx1", timeout=10).stdout.split()
    assert head == ["00", "00", "00", "01"]  # an Annex-B stream, where it was asked for


def test_stream_without_statistics_is_an_error(rig) -> None:
    rig.stack_up()
    cli = rig.cli_driver()
    cli.ensure_built(rig.git_sha, timeout=30)
    with pytest.raises(HelixCliError) as err:
        cli.stream("ses_01nonexistent0000000000000", duration=1, output=str(rig.workdir / "none.h264"), timeout=30)
    assert err.value.phase == "stream" and "no usable Final Statistics" in err.value.message
