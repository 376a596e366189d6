"""Typed errors shared by every layer.

Every error the harness raises on purpose is a :class:`HarnessError`. It names the
*phase* it happened in (``boot``, ``ssh``, ``stack``, ``session``, ``stream`` ...) and,
where we know one, a *hint*: what the user should do about it. ``str(err)`` renders
``[phase] message (hint: ...)`` so a one-line summary is always useful.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every deliberate harness error."""

    default_phase: str | None = None

    def __init__(self, message: str, *, phase: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.phase = phase if phase is not None else self.default_phase
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.phase:
            text = f"[{self.phase}] {text}"
        if self.hint:
            text = f"{text} (hint: {self.hint})"
        return text


class ConfigError(HarnessError):
    """A target config, env override or option is invalid."""

    default_phase = "config"


class PhaseTimeout(HarnessError):
    """A phase did not reach its goal before its deadline."""


class CommandError(HarnessError):
    """A command (local or over SSH) failed.

    Carries the command, exit status and the captured output so a report can show them.
    """

    def __init__(
        self,
        message: str,
        *,
        command: str | list[str] | None = None,
        exit_status: int | None = None,
        stdout: str = "",
        stderr: str = "",
        phase: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, phase=phase, hint=hint)
        self.command = command
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr


class CheckFailed(HarnessError):
    """An assertion about the product failed (not an infrastructure problem)."""
