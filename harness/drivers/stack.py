"""The Helix stack in the guest: `./stack start` over SSH, then readiness by polling the API."""

from __future__ import annotations

import logging
import shlex
from typing import Callable

from ..config import GuestConfig, shell_path
from ..errors import CommandError, HarnessError
from .base import CommandRunner

log = logging.getLogger(__name__)

PHASE = "stack"


class StackError(HarnessError):
    default_phase = PHASE


class StackDriver:
    #: What the stack phase waits for, as the timeline shows it.
    label = "./stack start, the API and an online sandbox"

    def __init__(self, runner: CommandRunner, guest: GuestConfig) -> None:
        self.runner = runner
        self.guest = guest

    def start(self, *, timeout: float, on_stage: Callable[[str], None] | None = None) -> str:
        """`COMPOSE_PROFILES=code-macos ./stack start`; the script does no health check itself."""
        if on_stage:
            on_stage("./stack start")
        cmd = f"{self.guest.cd_helix} && COMPOSE_PROFILES={shlex.quote(self.guest.compose_profiles)} ./stack start"
        try:
            result = self.runner.run(cmd, timeout=timeout, phase=PHASE)
        except CommandError as exc:
            raise StackError(
                f"./stack start failed (exit {exc.exit_status}): {_last_lines(exc.stdout + exc.stderr)}",
                cause="stack_start_failed",
                hint="read the compose output above; `docker compose -f "
                f"{self.guest.compose_file} ps` in the guest shows what is up",
            ) from exc
        return result.stdout

    def git_sha(self, *, timeout: float = 20) -> str:
        res = self.runner.run(f"git -C {shell_path(self.guest.helix_dir)} rev-parse HEAD", timeout=timeout,
                              phase=PHASE, check=False)
        sha = res.stdout.strip()
        return sha if res.ok and len(sha) >= 7 else ""

    def compose_ps(self, *, timeout: float = 30) -> str:
        res = self.runner.run(
            f"{self.guest.cd_helix} && docker compose -f {shlex.quote(self.guest.compose_file)} ps",
            timeout=timeout,
            phase=PHASE,
            check=False,
        )
        return res.stdout + res.stderr

    def read_usercreds(self, *, timeout: float = 20) -> str:
        path = self.guest.usercreds_path
        cmd = f"cat {shell_path(path)}"
        res = self.runner.run(cmd, timeout=timeout, phase="session", check=False, log_command=cmd)
        if not res.ok:
            raise StackError(
                f"cannot read {path} in the guest (exit {res.exit_status})",
                phase="session",
                cause="usercreds",
                hint="create ~/helix/.env.usercreds with HELIX_API_KEY, HELIX_URL, HELIX_PROJECT, HELIX_UBUNTU_AGENT",
            )
        return res.stdout


def _last_lines(text: str, n: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])
