"""The `helix` CLI inside the guest: build it, start a spectask session, stream with it.

Every invocation sources `.env.usercreds` in the guest, so the API key never appears in a
command line we send or log (helix-stream.md §1: the CLI reads HELIX_URL / HELIX_API_KEY).
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass

from ..config import GuestConfig
from ..errors import CommandError, HarnessError
from ..protocols import cli_output
from ..protocols.errors import RemoteProtocolError
from .base import CommandRunner

log = logging.getLogger(__name__)


class HelixCliError(HarnessError):
    default_phase = "session"


@dataclass(frozen=True)
class CliStream:
    stats: "cli_output.StreamStats"
    output: str
    exit_status: int
    h264_remote: str


class HelixCliDriver:
    def __init__(self, runner: CommandRunner, guest: GuestConfig) -> None:
        self.runner = runner
        self.guest = guest

    @property
    def cli(self) -> str:
        return self.guest.cli_path

    def _creds_prefix(self) -> str:
        return f"set -a && . {self.guest.usercreds_path} && set +a && "

    def ensure_built(self, git_sha: str, *, timeout: float) -> bool:
        """`cd ~/helix/api && CGO_ENABLED=0 go build -o /tmp/helix .`, skipped when /tmp/helix
        was built from the same git SHA. Returns True when it built."""
        stamp = f"{self.cli}.gitsha"
        if git_sha:
            res = self.runner.run(
                f"test -x {shlex.quote(self.cli)} && cat {shlex.quote(stamp)}", timeout=20, phase="build", check=False
            )
            if res.ok and res.stdout.strip() == git_sha:
                log.info("helix CLI at %s already built from %s", self.cli, git_sha[:12])
                return False
        try:
            self.runner.run(
                f"cd {self.guest.helix_dir}/api && CGO_ENABLED=0 go build -o {shlex.quote(self.cli)} .",
                timeout=timeout,
                phase="build",
            )
        except CommandError as exc:
            raise HelixCliError(
                f"building the helix CLI failed: {(exc.stderr or exc.stdout).strip()[-500:]}",
                phase="build",
                hint="is Go installed in the guest and does ~/helix/api build by hand?",
            ) from exc
        if git_sha:
            self.runner.run(f"echo {shlex.quote(git_sha)} > {shlex.quote(stamp)}", timeout=20, phase="build")
        return True

    def start_session(self, project: str, name: str, *, timeout: float) -> str:
        """`helix spectask start --project P -n NAME --wait -q` → `ses_…` (anything else is an error)."""
        cmd = f"{self.cli} spectask start --project {shlex.quote(project)} -n {shlex.quote(name)} --wait -q"
        res = self.runner.run(self._creds_prefix() + cmd, timeout=timeout, phase="session", check=False, log_command=cmd)
        text = res.stdout + res.stderr
        if res.exit_status != 0:
            err = cli_output.parse_error_output(text)
            raise HelixCliError(f"`{cmd}` exited {res.exit_status}: {err or text.strip()[-300:]}")
        try:
            started = cli_output.parse_start_output(text)
        except RemoteProtocolError as exc:
            raise HelixCliError(f"cannot read `spectask start` output: {exc.message}") from None
        if started.session_id:
            return started.session_id
        if started.task_id:
            raise HelixCliError(
                f"spectask start printed only the task id {started.task_id}: the sandbox was still provisioning after "
                "the CLI's 3-minute wait",
                hint="check the sandbox (`docker compose ps`, sandbox logs); `spectask start` exits 0 even then",
            )
        raise HelixCliError(f"spectask start printed no ses_ id: {text.strip()[-300:]!r}")

    def stream(self, session_id: str, *, duration: int, output: str, timeout: float, extra: str = "") -> CliStream:
        """`helix spectask stream SES --duration D -o FILE`; the exit code says little (0 even with
        zero frames), so the Final Statistics are parsed."""
        cmd = f"{self.cli} spectask stream {shlex.quote(session_id)} --duration {int(duration)} -o {shlex.quote(output)}"
        if extra:
            cmd += " " + extra
        res = self.runner.run(self._creds_prefix() + cmd, timeout=timeout, phase="stream", check=False, log_command=cmd)
        try:
            stats = cli_output.parse_stream_output(res.stdout)
        except RemoteProtocolError as exc:
            raise HelixCliError(
                f"`{cmd}` (exit {res.exit_status}) printed no usable Final Statistics: {exc.message}",
                phase="stream",
            ) from None
        return CliStream(stats=stats, output=res.stdout, exit_status=res.exit_status, h264_remote=output)
