"""The `helix` CLI: build it, start a spectask session, stream with it.

Three drivers, one interface (what the strategy calls):

- :class:`HelixCliDriver`: the CLI built inside the guest (UTM's dev VM has the source). Every
  invocation sources `.env.usercreds` in the guest, so the API key never appears in a command line we
  send or log (helix-stream.md §1: the CLI reads HELIX_URL / HELIX_API_KEY).
- :class:`HostHelixCli`: a helix CLI binary on the host (Helix.app's VM image has no source checkout:
  upstream-corrections.md §2), run locally with HELIX_URL / HELIX_API_KEY in its environment.
- :class:`ApiOnlyCli`: no CLI at all: the session starts over the REST API, as `spectask start --wait`
  does it (api/pkg/cli/spectask/spectask.go: createSpecTask, triggerStartPlanning, waitForTaskSession),
  and the CLI cross-check is skipped with :attr:`~ApiOnlyCli.unavailable_reason`.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..config import GuestConfig, shell_path
from ..deadline import Deadline
from ..errors import CommandError, CommandTimeout, HarnessError
from ..protocols import cli_output
from ..protocols.errors import RemoteProtocolError
from .base import CommandRunner, FileTransfer

log = logging.getLogger(__name__)


class HelixCliError(HarnessError):
    default_phase = "session"


class TaskWithoutSession(HelixCliError):
    """`spectask start --wait` gave back only the task id (``spt_…``) after its wait: the task may still be
    provisioning, or it may have failed (no agent configured); its status on the API says which."""

    default_cause = "no_container"

    def __init__(self, message: str, *, task_id: str, **kw) -> None:
        super().__init__(message, **kw)
        self.task_id = task_id


@dataclass(frozen=True)
class CliStream:
    stats: "cli_output.StreamStats"
    output: str
    exit_status: int
    h264_remote: str


@dataclass(frozen=True)
class StartedSession:
    session_id: str
    started_wall: float  # time.time() when the command was sent
    elapsed_s: float


@dataclass
class BackgroundStream:
    """A `spectask stream` running beside the native capture; filled in when its context exits."""

    remote: str
    result: CliStream | None = None
    error: str = ""
    h264_local: str = ""
    h264_head: bytes = b""  # the first 64 KiB of the fetched .h264 (its SPS/PPS, for the cross-check)
    skipped: str = ""  # why no CLI stream ran (no CLI configured): the cross-check test skips with it


class HelixCliDriver:
    """The helix CLI built in the guest from ``~/helix/api`` and run there over SSH."""

    #: Whether a CLI exists to run (else the cross-check is skipped with :attr:`unavailable_reason`).
    available = True
    unavailable_reason = ""
    #: Progress text of the session phase's two steps ("" = the step does nothing).
    build_label = "building the helix CLI"
    start_label = "helix spectask start --wait"

    def __init__(self, runner: CommandRunner, guest: GuestConfig, *, transfer: FileTransfer | None = None) -> None:
        self.runner = runner
        self.guest = guest
        self._start_help: cli_output.StartHelp | None = None
        self.transfer = transfer if transfer is not None else (runner if isinstance(runner, FileTransfer) else None)

    @property
    def cli(self) -> str:
        """The CLI's path as one shell word."""
        return shell_path(self.guest.cli_path)

    def _creds_prefix(self) -> str:
        return f"set -a && . {shell_path(self.guest.usercreds_path)} && set +a && "

    def ensure_built(self, git_sha: str, *, timeout: float) -> bool | None:
        """`cd ~/helix/api && CGO_ENABLED=0 go build -o /tmp/helix .`, skipped when /tmp/helix
        was built from the same git SHA. Returns True when it built."""
        stamp = shell_path(f"{self.guest.cli_path}.gitsha")
        if git_sha:
            res = self.runner.run(f"test -x {self.cli} && cat {stamp}", timeout=20, phase="build", check=False)
            if res.ok and res.stdout.strip() == git_sha:
                log.info("helix CLI at %s already built from %s", self.guest.cli_path, git_sha[:12])
                return False
        try:
            self.runner.run(
                f"cd {shell_path(self.guest.helix_dir.rstrip('/') + '/api')} && CGO_ENABLED=0 go build -o {self.cli} .",
                timeout=timeout,
                phase="build",
            )
        except CommandError as exc:
            raise HelixCliError(
                f"building the helix CLI failed: {(exc.stderr or exc.stdout).strip()[-500:]}",
                phase="build",
                cause="cli_build_failed",
                hint="is Go installed in the guest and does ~/helix/api build by hand?",
            ) from exc
        if git_sha:
            self.runner.run(f"echo {shlex.quote(git_sha)} > {stamp}", timeout=20, phase="build")
        return True

    def start_help(self, *, timeout: float = 20) -> "cli_output.StartHelp":
        """What this CLI's `spectask start` accepts (read once): CLI generations differ (`--agent` went away,
        `--runtime ubuntu-desktop|headless-ubuntu` came)."""
        if self._start_help is None:
            res = self.runner.run(f"{self.cli} spectask start --help", timeout=timeout, phase="session", check=False)
            try:
                self._start_help = cli_output.parse_start_help(res.stdout + res.stderr)
            except RemoteProtocolError as exc:
                raise HelixCliError(f"cannot read `spectask start --help` (exit {res.exit_status}): {exc.message}",
                                    cause="session_failed") from None
        return self._start_help

    def start_args(self, agent: str = "") -> list[str]:
        """The generation-dependent flags: `--runtime ubuntu-desktop` where it exists (a headless task has no
        desktop and no stream), `--agent A` only where it exists and the usercreds name an agent."""
        help_ = self.start_help()
        args: list[str] = []
        if help_.has_runtime and (not help_.runtime_choices or cli_output.RUNTIME_DESKTOP in help_.runtime_choices):
            args += ["--runtime", cli_output.RUNTIME_DESKTOP]
        if help_.has_agent and agent:
            args += ["--agent", agent]
        return args

    def start_session(self, project: str, name: str, *, timeout: float, agent: str = "") -> StartedSession:
        """`helix spectask start --project P -n NAME [--runtime …] [--agent …] --wait -q` → `ses_…` (anything
        else is an error; a bare task id is :class:`TaskWithoutSession`)."""
        extra = self.start_args(agent)
        started_wall, t0 = time.time(), time.monotonic()
        session_id = self._start(project, name, extra, timeout=timeout)
        return StartedSession(session_id, started_wall, round(time.monotonic() - t0, 3))

    def _start(self, project: str, name: str, extra: list[str], *, timeout: float) -> str:
        flags = "".join(f" {shlex.quote(a)}" for a in extra)
        cmd = (f"{self.cli} spectask start --project {shlex.quote(project)} -n {shlex.quote(name)}{flags} "
               "--wait -q")
        try:
            res = self.runner.run(self._creds_prefix() + cmd, timeout=timeout, phase="session", check=False,
                                  log_command=cmd)
        except CommandTimeout as exc:
            # Stuck at "Starting desktop container..." (the CLI's own progress line): no container came.
            waiting_for_container = "desktop container" in (exc.stdout + exc.stderr)
            raise HelixCliError(
                exc.message, cause="no_container" if waiting_for_container else "session_start_timeout",
                hint="`spectask start --wait` waited for a desktop container that never came: read the sandbox's "
                "logs (docker compose logs sandbox-macos) and `docker ps -a` in the sandbox" if waiting_for_container
                else None,
            ) from exc
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
            raise TaskWithoutSession(
                f"spectask start printed only the task id {started.task_id}: no session after the CLI's wait",
                task_id=started.task_id,
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

    @contextmanager
    def background_stream(self, session_id: str, *, duration: float, timeout: float, local: Path,
                          deadline: Deadline, transfer: FileTransfer | None = None) -> Iterator[BackgroundStream]:
        """Run `spectask stream` on its own thread for the body of the ``with``; on exit wait for it (until
        ``deadline``), fetch its `.h264` to ``local`` and remove it from the guest, whether or not it finished.
        Failures end up in the result's ``error``: the cross-check test reports them, they never raise."""
        bg = BackgroundStream(remote=f"/tmp/helix-e2e-{session_id}.h264")
        transfer = transfer if transfer is not None else self.transfer

        def run() -> None:
            try:
                bg.result = self.stream(session_id, duration=max(1, int(round(duration))), output=bg.remote,
                                        timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - reported by the cross-check test
                bg.error = str(exc)

        thread = threading.Thread(target=run, name="helix-cli-stream", daemon=True)
        thread.start()
        try:
            yield bg
        finally:
            # Its SSH command is bounded by its own timeout, and so is this wait.
            thread.join(timeout=max(1.0, deadline.remaining))
            if bg.result is not None:
                try:
                    transfer.get(bg.remote, local, phase="stream")
                    bg.h264_local = str(local)
                    with open(local, "rb") as fh:
                        bg.h264_head = fh.read(1 << 16)
                except Exception as exc:  # noqa: BLE001 - paramiko raises EOFError on a dead link; crash checks say why
                    bg.error = f"fetching the CLI's .h264 failed: {type(exc).__name__}: {exc}"
            elif not bg.error:
                bg.error = "the CLI stream did not finish in time"
            # Leave nothing in the guest, whether or not the CLI finished.
            try:
                self.runner.run(f"rm -f {shlex.quote(bg.remote)}", timeout=min(20.0, max(1.0, deadline.remaining)),
                                phase="stream", check=False)
            except Exception as exc:  # noqa: BLE001 - cleanup is never the verdict (the crash checks say why SSH died)
                log.info("could not remove the CLI's .h264 in the guest: %s", exc)


class HostHelixCli(HelixCliDriver):
    """A helix CLI binary on the host (``[vm] helix_cli``: the darwin build of upstream's ``api/``), run
    locally. Nothing is built; the API's URL and key reach it through its environment (``env()``, read when
    a command runs: the stack layer knows them), never through a command line."""

    build_label = ""

    def __init__(self, path: str, runner: CommandRunner) -> None:
        super().__init__(runner, GuestConfig(cli_path=path))
        self.path = path

    def _creds_prefix(self) -> str:
        return ""  # the runner's environment carries HELIX_URL and HELIX_API_KEY

    def ensure_built(self, git_sha: str, *, timeout: float) -> bool | None:
        return None  # a host binary: nothing to build


class ApiOnlyCli:
    """No helix CLI on the host: the session starts over the REST API, and no CLI stream runs."""

    available = False
    build_label = ""
    start_label = "POST /api/v1/spec-tasks/from-prompt (no helix CLI configured)"
    unavailable_reason = ("no helix CLI is configured ([vm] helix_cli): the session was started over the REST API "
                          "and the CLI cross-check is skipped")

    def __init__(self, api: "Callable[[], Any]", *, prompt: str = "helix-e2e streaming check") -> None:
        self._api = api
        self.prompt = prompt

    def ensure_built(self, git_sha: str, *, timeout: float) -> bool | None:
        return None

    def start_session(self, project: str, name: str, *, timeout: float) -> StartedSession:
        started_wall, t0 = time.time(), time.monotonic()
        api = self._api()
        if api is None:
            raise HelixCliError("the API client is not connected (the stack layer is down)")
        _task, session_id = api.start_spec_task(project, name, self.prompt, timeout=timeout)
        if not cli_output.is_session_id(session_id):
            raise HelixCliError(f"the spec task's planning_session_id {session_id!r} is not a ses_ id",
                                cause="no_session_id")
        return StartedSession(session_id, started_wall, round(time.monotonic() - t0, 3))

    @contextmanager
    def background_stream(self, session_id: str, *, duration: float, timeout: float, local: Path,
                          deadline: Deadline, transfer: FileTransfer | None = None) -> Iterator[BackgroundStream]:
        yield BackgroundStream(remote="", skipped=self.unavailable_reason)
