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


@dataclass(frozen=True)
class VmHealth:
    """What a provider can tell about its VM after a run (crash evidence): a cause it recognised (``None``:
    nothing of its own to say; the checks then judge by status and SSH) and the lines that prove it."""

    cause: str | None = None
    lines: tuple[str, ...] = ()


class VmProvider(abc.ABC):
    """A VM and the app that runs it (UTM, or Helix.app's own QEMU). The strategy boots and stops the VM
    only through this interface, so a second provider is a second set of drivers, not a branch in the
    strategy. Errors carry their cause (``vm_crashed_boot``, ``utmctl_osstatus``, …).

    Besides the VM itself a provider owns what differs between the apps that run it, each with UTM's
    behaviour as the default: how the stack comes up (:meth:`make_stack`), where the API is reached
    (:meth:`api_base_url`), which helix CLI runs (:meth:`make_cli`), and what a failed phase means for
    the VM (:meth:`explain`, :meth:`health`). Host evidence (QEMU's log, crash reports) goes through the
    :class:`~harness.drivers.host.HostArtifacts` the provider is built with."""

    #: What the progress line and the report call the provider ("utm", "helix-app").
    name: str = "vm"
    #: Where :meth:`status` comes from, for messages ("utmctl status", "QEMU (QMP query-status)").
    status_source: str = "utmctl status"
    #: The status that means running, for messages.
    running_status: str = "started"
    #: What the boot and the final power-off wait for, as the timeline shows them.
    boot_label: str = "utmctl status `started`"
    stop_label: str = "utmctl stop and status `stopped`"

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

    # -- what differs between providers (UTM's behaviour by default) --------------------------------------
    def make_stack(self, runner: CommandRunner, guest):
        """The driver that brings the Helix stack up in the guest (UTM's dev VM: ``./stack start``)."""
        from .stack import StackDriver

        return StackDriver(runner, guest)

    def api_base_url(self, ssh, guest_api_port: int) -> str:
        """The Helix API's base URL as the harness reaches it (UTM forwards only SSH: a local SSH forward)."""
        return ssh.forward(guest_api_port).url

    def make_cli(self, ssh, guest, *, api: "Callable[[], object]", env: "Callable[[], dict[str, str]]"):
        """The helix CLI driver (UTM's dev VM: built in the guest from ~/helix/api, run over SSH)."""
        from .helix_cli import HelixCliDriver

        return HelixCliDriver(ssh, guest, transfer=ssh)

    def explain(self, phase: str, error: BaseException) -> "BaseException | None":
        """A failed phase seen from the VM's side: an error naming what really happened (a hung or dead VM
        behind an SSH timeout), chained to ``error``, or ``None`` when the VM has nothing to add."""
        return None

    def process_id(self) -> int | None:
        """The VM's process when the harness runs it itself (Helix.app's QEMU), else ``None``."""
        return None

    def health(self) -> VmHealth:
        """The VM's own evidence after a run (see :class:`VmHealth`)."""
        return VmHealth()

    def close(self) -> None:
        """Release what the provider holds besides the VM (connections, threads); the VM is left as it is."""
