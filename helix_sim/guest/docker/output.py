"""How a docker command ends and writes: :class:`CliError` (message to stderr, exit code) and flushed writes."""

from __future__ import annotations

import sys

from ...gofmt import GoError


class CliError(GoError):
    """Ends the command: ``message`` goes to stderr, ``code`` is the exit status."""


def print_out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def print_err(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def print_bytes(data: bytes, stream: int = 1) -> None:
    target = sys.stderr if stream == 2 else sys.stdout
    target.flush()
    target.buffer.write(data)
    target.buffer.flush()
