"""Commands and files on the harness's own host: the helix CLI as a host binary (Helix.app's VM has no
source to build it from), run with a timeout, its process group stopped whatever happens."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from typing import Callable, Mapping

from ..errors import CommandError, CommandTimeout, HarnessError
from ..redact import redact
from .base import CommandResult, CommandRunner, FileTransfer

log = logging.getLogger(__name__)

#: How long a command gets after SIGTERM (its whole process group) before SIGKILL.
TERM_GRACE_S = 2.0


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the command's process group, then SIGKILL; always reaped."""
    for sig, wait in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class LocalRunner(CommandRunner, FileTransfer):
    """Runs shell commands on this host (``/bin/sh -c``) in their own process group, with ``env`` added to
    the environment; a timeout or an interrupt stops the whole group. ``get`` copies a local file."""

    def __init__(self, env: "Mapping[str, str] | Callable[[], Mapping[str, str]] | None" = None) -> None:
        self._env = env

    @property
    def env(self) -> dict[str, str]:
        """What is added to the environment (a callable is read at each command: the API's URL and key are
        known only once the stack is up)."""
        env = self._env() if callable(self._env) else self._env
        return dict(env or {})

    def run(self, command: str, *, timeout: float, phase: str = "host", check: bool = True,
            log_command: str | None = None) -> CommandResult:
        shown = redact(log_command or command)
        start = time.monotonic()
        env = {**os.environ, **self.env}
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, start_new_session=True)
        except OSError as exc:
            raise CommandError(f"could not run `{shown}`: {exc.strerror or exc}", command=shown, phase=phase) from None
        try:
            out_b, err_b = proc.communicate(timeout=max(0.1, timeout))
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            out_b, err_b = proc.communicate()
            raise CommandTimeout(f"`{shown}` did not finish within {timeout:.0f}s", command=shown,
                                 stdout=redact(out_b.decode("utf-8", "replace"))[-4000:],
                                 stderr=redact(err_b.decode("utf-8", "replace"))[-4000:], phase=phase) from None
        except BaseException:  # Ctrl-C: never leave the command behind
            _stop_group(proc)
            proc.communicate()
            raise
        result = CommandResult(command=shown, exit_status=proc.returncode, stdout=out_b.decode("utf-8", "replace"),
                               stderr=err_b.decode("utf-8", "replace"), duration_s=time.monotonic() - start)
        log.debug("local `%s` -> %d in %.2fs", shown, result.exit_status, result.duration_s)
        if check and result.exit_status != 0:
            raise CommandError(f"`{shown}` exited {result.exit_status}: {redact((result.stdout + result.stderr)[-600:])}",
                               command=shown, exit_status=result.exit_status, stdout=redact(result.stdout)[-4000:],
                               stderr=redact(result.stderr)[-4000:], phase=phase)
        return result

    def get(self, remote: str, local: "str | os.PathLike[str]", *, phase: str = "host") -> None:
        if os.path.abspath(remote) == os.path.abspath(local):
            return
        try:
            shutil.copyfile(remote, local)
        except OSError as exc:
            raise HarnessError(f"cannot copy {remote}: {exc.strerror or exc}", phase=phase) from None
