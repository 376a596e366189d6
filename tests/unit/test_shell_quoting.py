"""Config values reach guest shell commands as data, never as shell (issue 12).

The drivers' commands are run for real by bash in a temporary home: a hostile value (set past the
config's own validation, as defence in depth) must not run anything, and ``~/my helix`` must still
mean the guest user's home.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness.config import GuestConfig, shell_path
from harness.drivers.base import CommandResult, CommandRunner
from harness.drivers.docker import DockerDriver
from harness.drivers.helix_cli import HelixCliDriver
from harness.drivers.stack import StackDriver
from harness.errors import CommandError

HOSTILE = ".env.usercreds;touch${IFS}pwned"


class BashRunner(CommandRunner):
    """Runs each command with bash in ``home`` (as the guest's login shell would), recording it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.commands: list[str] = []

    def run(self, command, *, timeout, phase, check=True, log_command=None) -> CommandResult:
        self.commands.append(command)
        env = {"HOME": str(self.home), "PATH": os.environ["PATH"]}
        t0 = time.monotonic()
        proc = subprocess.run(["bash", "-c", command], cwd=self.home, env=env, capture_output=True, text=True,
                              timeout=timeout)
        result = CommandResult(command, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)
        if check and proc.returncode:
            raise CommandError(f"`{command}` exited {proc.returncode}", exit_status=proc.returncode,
                               stdout=proc.stdout, stderr=proc.stderr, phase=phase)
        return result


def hostile(guest: GuestConfig, **values: str) -> GuestConfig:
    """``guest`` with values the config's validation would refuse (set directly: defence in depth)."""
    out = replace(guest)
    for key, value in values.items():
        object.__setattr__(out, key, value)
    return out


@pytest.mark.parametrize("path, word", [
    ("/tmp/helix", "/tmp/helix"),
    ("~/helix", '"$HOME"/helix'),
    ("~/my helix", "\"$HOME\"/'my helix'"),
    ("~", '"$HOME"'),
    ("a;b", "'a;b'"),
])
def test_shell_path_quotes_and_keeps_home(path, word):
    assert shell_path(path) == word


def test_hostile_values_run_nothing(tmp_path):
    home = tmp_path / "home"
    (home / "helix").mkdir(parents=True)
    runner = BashRunner(home)
    guest = hostile(GuestConfig(), usercreds=HOSTILE, cli_path="/tmp/x;touch${IFS}pwned2",
                    helix_dir="~/helix;touch${IFS}pwned3", compose_file="c.yaml;touch${IFS}pwned4",
                    sandbox_service="sb;touch${IFS}pwned5")
    stack, cli = StackDriver(runner, guest), HelixCliDriver(runner, guest)
    with pytest.raises(Exception):
        stack.read_usercreds(timeout=10)
    stack.git_sha(timeout=10)
    with pytest.raises(Exception):
        cli.start_session("prj", "name", timeout=10)
    docker = DockerDriver.__new__(DockerDriver)  # only its shell command builder: no engine needed
    docker.guest, docker.runner = guest, runner
    docker._in_sandbox("ps", timeout=10, check=False)
    assert len(runner.commands) >= 4
    assert not list(home.rglob("pwned*")) and not list(tmp_path.rglob("pwned*")), runner.commands


def test_a_home_relative_path_with_a_space_works(tmp_path):
    home = tmp_path / "home"
    helix = home / "my helix"
    helix.mkdir(parents=True)
    (helix / ".env.usercreds").write_text("HELIX_API_KEY=hl-x\n")
    runner = BashRunner(home)
    guest = GuestConfig(helix_dir="~/my helix")
    assert StackDriver(runner, guest).read_usercreds(timeout=10) == "HELIX_API_KEY=hl-x\n"
    runner.run(guest.cd_helix + " && pwd > where", timeout=10, phase="t")
    assert (helix / "where").read_text().strip() == str(helix)
