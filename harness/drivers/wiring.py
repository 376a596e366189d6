"""The drivers a target needs, built from its config and activated layer by layer.

:class:`Drivers` is what the strategy is handed (labgrid's Target, in small): each driver gets its
suppliers through its constructor (the SSH driver is the command runner and file transfer of the
stack, CLI and Docker drivers; the host driver gives the VM provider its crash evidence), so no
driver knows how the others were made and a test can hand the strategy fakes instead.

Some drivers exist only while a layer is up: the API client and docker-py need the stack's
credentials and a port forward over SSH, so :meth:`activate` ``("stack")`` opens them and
:meth:`deactivate` closes them again, clients before suppliers, idempotently.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import TargetConfig
from ..errors import HarnessError
from ..usercreds import Usercreds, parse_usercreds
from .base import VmProvider
from .capture import CaptureDriver
from .docker import DockerDriver
from .frame_export import FrameExportDriver
from .helix_api import HelixApi
from .helix_cli import HelixCliDriver
from .host import HostArtifacts
from .ssh import SshDriver
from .stack import StackDriver
from .utm import UtmDriver, UtmVm

log = logging.getLogger(__name__)

#: Layers with drivers of their own, bottom first.
LAYERS = ("ssh", "stack")


def vm_provider(target: TargetConfig, host: HostArtifacts, *, artifacts_dir: "str | Path | None" = None
                ) -> VmProvider | None:
    """The VM provider ``[vm] provider`` asks for: ``utm`` (default; ``None`` when no VM id is configured) or
    ``helix-app`` (Helix.app's bundled QEMU run by the harness; its logs go under ``artifacts_dir``)."""
    if target.vm.provider == "helix-app":
        from .helix_app import HelixAppVm

        where = Path(artifacts_dir) if artifacts_dir is not None else Path(tempfile.mkdtemp(prefix="helix-e2e-qemu-"))
        return HelixAppVm(target, host, artifacts_dir=where, command_timeout=target.timeouts["command"])
    if not target.vm.id:
        return None
    return UtmVm(UtmDriver(target.vm, command_timeout=target.timeouts["command"]), host)


@dataclass
class Drivers:
    host: HostArtifacts
    vm: VmProvider | None
    ssh: SshDriver
    stack: StackDriver
    cli: HelixCliDriver
    frame_export: FrameExportDriver
    capture: CaptureDriver
    guest_api_port: int = 8080
    ssh_timeout: float = 120.0
    #: How the stack layer's clients are made: (API base URL, token) → API client, and the SSH driver →
    #: docker client over it. Tests hand in fakes.
    make_api: Callable[[str, str], Any] = HelixApi
    make_docker: Callable[[Any], Any] = field(default=None)  # type: ignore[assignment]
    # Open while the stack layer is active:
    api: HelixApi | None = None
    docker: DockerDriver | None = None
    creds: Usercreds | None = None
    active: set[str] = field(default_factory=set)

    @classmethod
    def for_target(cls, target: TargetConfig, *, artifacts_dir: "str | Path | None" = None) -> "Drivers":
        """The drivers ``target`` needs; the VM provider decides the stack driver, the API's address and the
        CLI (see :class:`~harness.drivers.base.VmProvider`)."""
        t = target.timeouts
        host = HostArtifacts(target.host)
        ssh = SshDriver(target.ssh)
        vm = vm_provider(target, host, artifacts_dir=artifacts_dir)
        drivers = cls(
            host=host,
            vm=vm,
            ssh=ssh,
            stack=vm.make_stack(ssh, target.guest) if vm is not None else StackDriver(ssh, target.guest),
            cli=HelixCliDriver(ssh, target.guest, transfer=ssh),
            frame_export=FrameExportDriver(target.frame_export.host, target.frame_export.port, timeout=t["probe"]),
            capture=CaptureDriver(connect_timeout=t["first_frame"], first_frame_timeout=t["first_frame"],
                                  warmup_s=target.stream.warmup),
            guest_api_port=target.guest.api_port,
            ssh_timeout=t["ssh"],
            make_docker=lambda ssh_driver: DockerDriver(ssh_driver.client, ssh_driver, target.guest),
        )
        if vm is not None:
            drivers.cli = vm.make_cli(ssh, target.guest, api=lambda: drivers.api, env=drivers.cli_env)
        return drivers

    def cli_env(self) -> dict[str, str]:
        """What a host helix CLI needs to reach the API (HELIX_URL, HELIX_API_KEY), once the stack is up."""
        if self.api is None or self.creds is None:
            return {}
        return {"HELIX_URL": self.api.base_url, "HELIX_API_KEY": self.creds.api_key}

    def close(self) -> None:
        """Release the VM provider's connections (its QMP thread); the VM itself is left as it is."""
        if self.vm is not None:
            self.vm.close()

    def require_vm(self) -> VmProvider:
        if self.vm is None:
            raise HarnessError("no VM id configured", phase="boot", hint="set [vm] id in the target config")
        return self.vm

    # -- layers ------------------------------------------------------------------------
    def activate(self, layer: str, *, on_wait=None) -> None:
        """Open what ``layer`` needs (and the layers below it); idempotent."""
        if layer not in LAYERS:
            raise ValueError(f"unknown driver layer {layer!r}")
        if "ssh" not in self.active or not self.ssh.connected:
            self.ssh.connect(self.ssh_timeout, on_wait=on_wait)
            self.active.add("ssh")
        if layer == "stack" and "stack" not in self.active:
            self.creds = parse_usercreds(self.stack.read_usercreds())
            url = self.vm.api_base_url(self.ssh, self.guest_api_port) if self.vm is not None \
                else self.ssh.forward(self.guest_api_port).url
            self.api = self.make_api(url, self.creds.api_key)
            self.docker = self.make_docker(self.ssh)
            self.active.add("stack")

    def deactivate(self, layer: str) -> None:
        """Close ``layer`` and everything above it; safe to call at any time, twice."""
        if layer not in LAYERS:
            raise ValueError(f"unknown driver layer {layer!r}")
        if self.docker is not None:
            self.docker.close()
            self.docker = None
        if self.api is not None:
            self.api.close()
            self.api = None
        for fwd in self.ssh.forwards:
            fwd.close()
        self.ssh.forwards.clear()
        self.active.discard("stack")
        if layer == "ssh":
            self.ssh.close()
            self.active.discard("ssh")
