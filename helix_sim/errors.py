"""The simulator's own errors (it is the far end of the wire and shares no code with the harness but
``harness.protocols``). Like the harness's errors, each names the part of the simulator it came from
(``phase``) and, where we know one, what to do (``hint``); ``str(err)`` renders ``[phase] message (hint: …)``.
"""

from __future__ import annotations


class SimError(Exception):
    """Base of every deliberate simulator error."""

    default_phase: str | None = None

    def __init__(self, message: str, *, phase: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.phase = phase if phase is not None else self.default_phase
        self.hint = hint

    def __str__(self) -> str:
        text = f"[{self.phase}] {self.message}" if self.phase else self.message
        return f"{text} (hint: {self.hint})" if self.hint else text


class SimConfigError(SimError):
    """A simulator setting (fault name, QEMU behaviour, resolution …) is invalid."""

    default_phase = "config"


class SimTimeout(SimError):
    """Something the simulator waits for (sshd, a child process) did not happen in time."""


class SimCommandError(SimError):
    """A process the simulator ran failed; carries the command, exit status and output."""

    def __init__(self, message: str, *, command: str | list[str] | None = None, exit_status: int | None = None,
                 stdout: str = "", stderr: str = "", phase: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, phase=phase, hint=hint)
        self.command = command
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr
