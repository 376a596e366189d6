"""Typed errors shared by every layer.

Every error the harness raises on purpose is a :class:`HarnessError`. It names the
*phase* it happened in (``boot``, ``ssh``, ``stack``, ``session``, ``stream`` ...), where we
know one a *cause* (a name in :data:`harness.causes.CAUSES`: what triage blames, decided where the
failure is understood, never from the message text), and a *hint*: what the user should do about it.
``str(err)`` renders ``[phase] message (hint: ...)`` so a one-line summary is always useful.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every deliberate harness error."""

    default_phase: str | None = None
    default_cause: str | None = None

    def __init__(self, message: str, *, phase: str | None = None, hint: str | None = None,
                 cause: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.phase = phase if phase is not None else self.default_phase
        self.cause = cause if cause is not None else self.default_cause
        self.hint = hint

    @property
    def hint(self) -> str | None:
        """The hint given where the error was raised, else its cause's hint from the table."""
        if self._hint:
            return self._hint
        if self.cause:
            from .causes import CAUSES

            row = CAUSES.get(self.cause)
            return row.hint if row is not None and row.hint else None
        return None

    @hint.setter
    def hint(self, value: str | None) -> None:
        self._hint = value

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


def cause_of(exc: BaseException | None) -> str | None:
    """The first cause named along an error's chain (``__cause__``/``__context__``), or ``None``."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 8:
        seen.append(exc)
        named = getattr(exc, "cause", None)
        if isinstance(named, str) and named:
            return named
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


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
        cause: str | None = None,
    ) -> None:
        super().__init__(message, phase=phase, hint=hint, cause=cause)
        self.command = command
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr


class CheckFailed(HarnessError):
    """An assertion about the product failed (not an infrastructure problem)."""


class CommandTimeout(CommandError):
    """A command did not finish within its timeout (it was abandoned; its output so far is kept)."""
