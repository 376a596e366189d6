"""Interfaces between drivers (the word *protocol* is kept for wire protocols)."""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import Callable


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


class FileTransfer(abc.ABC):
    """Moves files out of the guest (SFTP over the SSH connection)."""

    @abc.abstractmethod
    def get(self, remote: str, local: "str | os.PathLike[str]", *, phase: str) -> None:
        """Copy ``remote`` to ``local``; raise a HarnessError naming ``phase`` on failure."""


class VmProvider(abc.ABC):
    """A VM and the app that runs it (UTM today; Helix.app's own QEMU next). The strategy boots and
    stops the VM only through this interface, so a second provider is a second set of drivers, not a
    branch in the strategy. Errors carry their cause (``vm_crashed_boot``, ``utmctl_osstatus``, …)."""

    #: What the progress line and the report call the provider ("utm", "helix-app").
    name: str = "vm"

    @abc.abstractmethod
    def status(self) -> str:
        """The VM's state in the provider's words (UTM: stopped, starting, started, …)."""

    @abc.abstractmethod
    def version(self) -> str:
        """The provider's version (``utmctl version``), for provenance; raises HarnessError if unknown."""

    @abc.abstractmethod
    def power_on(self, *, timeout: float, on_wait: "Callable[[str], None] | None" = None) -> None:
        """Start the VM and return once it runs; raise (with a cause) when it crashes or times out."""

    @abc.abstractmethod
    def power_off(self, *, timeout: float, phase: str, on_wait: "Callable[[str], None] | None" = None) -> None:
        """Stop the VM (forcefully) and return once it is stopped."""

    @abc.abstractmethod
    def is_running(self, status: str) -> bool:
        """Whether ``status`` (from :meth:`status`) means the VM is up."""
