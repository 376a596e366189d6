"""Interfaces between drivers (the word *protocol* is kept for wire protocols)."""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class CommandRunner(abc.ABC):
    """Runs a shell command somewhere (the guest over SSH, or locally) with a timeout."""

    @abc.abstractmethod
    def run(
        self, command: str, *, timeout: float, phase: str, check: bool = True, log_command: str | None = None
    ) -> CommandResult:
        """Run ``command``; raise CommandError on timeout, or on non-zero exit when ``check``.

        ``log_command`` is what logs and errors show instead of ``command`` (for commands that
        source secrets).
        """
