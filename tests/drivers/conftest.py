"""Direct tests of ``harness/drivers/``: each driver against the simulator component it talks to.

This file is the one place that knows how to start a simulator (``running_sim``: the two imports
below are its public surface) and how to build each driver (:class:`Rig`). If the simulator's
import path or a driver's constructor changes, this is the file to fix.

- ``rig`` (module scope): one simulator per test module, started with the module's ``SIM_OPTIONS``
  (``SimConfig`` fields, e.g. ``{"faults": {"exec_forbidden"}}``) over :data:`FAST`.
- ``make_rig`` (function scope): more simulators for one test, e.g. with a fault that would break
  the module's shared one; each is stopped when the test ends.

A :class:`Rig` climbs the target's layers on demand (``boot`` → ``ssh`` → ``stack_up`` →
``session``) through the drivers' stable core methods, each step done once. The guest's helix CLI is
built under the rig's own temp dir, not at the machine-wide ``/tmp/helix`` (parallel runs share it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest

from harness.config import TargetConfig, load_target
from harness.deadline import poll_until
from harness.drivers.docker import DockerDriver
from harness.drivers.helix_api import HelixApi
from harness.drivers.helix_cli import HelixCliDriver
from harness.drivers.host import HostArtifacts
from harness.drivers.ssh import SshDriver
from harness.drivers.stack import StackDriver
from harness.drivers.utm import UtmDriver
from harness.usercreds import Usercreds, parse_usercreds
from helix_sim.config import SimConfig
from helix_sim.simulator import Simulator

#: Fast and small: the sim's modelled delays (boot, sandbox, session start) scaled down, and a
#: small picture so the simulated encoder costs little CPU.
FAST: dict[str, Any] = {"delay_scale": 0.3, "width": 640, "height": 368}
#: The longest any one layer may take on a loaded 2-core host (the sim needs about a second).
LAYER_TIMEOUT = 30.0


@contextlib.contextmanager
def running_sim(root: Path, **options: Any) -> Iterator[dict[str, Any]]:
    """A started simulator rooted at ``root``; yields ``Simulator.info()``; stops it on exit."""
    with Simulator(SimConfig(root=root, **{**FAST, **options})) as sim:
        yield sim.info()


class Rig:
    """One simulator's connection settings and the drivers built on them."""

    def __init__(self, info: dict[str, Any], workdir: Path) -> None:
        self.info = info
        self.workdir = workdir
        self.target: TargetConfig = load_target(info["target_file"], env={})
        self.guest = dataclasses.replace(self.target.guest, cli_path=str(workdir / "helix-cli"))
        self._closers: list[Callable[[], None]] = []
        self._booted = False
        self._ssh: SshDriver | None = None
        self._creds: Usercreds | None = None
        self._api: HelixApi | None = None
        self._docker: DockerDriver | None = None
        self._session: tuple[str, str] | None = None
        self.git_sha = ""

    # -- drivers (built here only) ----------------------------------------------------
    def utm_driver(self, *, sleep: Callable[[float], None] = time.sleep) -> UtmDriver:
        return UtmDriver(self.target.vm, command_timeout=20.0, sleep=sleep)

    def ssh_driver(self, **ssh_changes: Any) -> SshDriver:
        driver = SshDriver(dataclasses.replace(self.target.ssh, **ssh_changes))
        self._closers.append(driver.close)
        return driver

    def host_driver(self) -> HostArtifacts:
        return HostArtifacts(self.target.host)

    def stack_driver(self, guest=None) -> StackDriver:
        return StackDriver(self.ssh, guest or self.guest)

    def cli_driver(self, guest=None) -> HelixCliDriver:
        return HelixCliDriver(self.ssh, guest or self.guest)

    def api_driver(self, token: str | None = None, base_url: str | None = None) -> HelixApi:
        api = HelixApi(base_url or self.info["api_url"], self.info["api_key"] if token is None else token)
        self._closers.append(api.close)
        return api

    def docker_driver(self) -> DockerDriver:
        driver = DockerDriver(self.ssh.client, self.ssh, self.guest)
        self._closers.append(driver.close)
        return driver

    @contextlib.contextmanager
    def guest_frozen(self, driver: SshDriver) -> Iterator[None]:
        """The guest's sshd processes serving ``driver``'s connection (the one holding its socket, and its
        children) are stopped (SIGSTOP) in the block: a VM frozen after the connection was made."""
        local_port = driver.client.get_transport().sock.getsockname()[1]
        frozen: list[psutil.Process] = []
        for proc in psutil.process_iter():
            try:
                conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
            except psutil.Error:
                continue
            if proc.pid != os.getpid() and any(c.raddr and c.raddr.port == local_port for c in conns):
                frozen = [proc, *proc.children(recursive=True)]
                break
        assert frozen, f"no process serves local port {local_port}"
        for proc in frozen:
            proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            for proc in frozen:
                try:
                    proc.send_signal(signal.SIGCONT)
                except psutil.Error:
                    pass

    # -- layers, each reached once ----------------------------------------------------
    def boot(self) -> "Rig":
        """``utmctl start``, then ``status`` polled until ``started``."""
        if not self._booted:
            utm = self.utm_driver()
            utm.start()
            poll_until(lambda: utm.status() == "started", timeout=LAYER_TIMEOUT, what="utmctl status `started`",
                       interval=0.05, max_interval=0.2)
            self._booted = True
        return self

    @property
    def ssh(self) -> SshDriver:
        """The rig's shared SSH connection (boots the VM first)."""
        if self._ssh is None:
            self.boot()
            driver = self.ssh_driver()
            driver.connect(LAYER_TIMEOUT)
            self._ssh = driver
        return self._ssh

    def stack_up(self) -> "Rig":
        """``./stack start``, the usercreds read and the sandbox online."""
        if self._creds is None:
            stack = self.stack_driver()
            stack.start(timeout=LAYER_TIMEOUT)
            self._creds = parse_usercreds(stack.read_usercreds())
            self.git_sha = stack.git_sha()
            api = self.api
            poll_until(lambda: api.ready_sandbox(api.sandboxes()), timeout=LAYER_TIMEOUT,
                       what="an online sandbox", interval=0.05, max_interval=0.5)
        return self

    @property
    def creds(self) -> Usercreds:
        self.stack_up()
        assert self._creds is not None
        return self._creds

    @property
    def api(self) -> HelixApi:
        if self._api is None:
            self._api = self.api_driver()
        return self._api

    @property
    def docker(self) -> DockerDriver:
        if self._docker is None:
            self._docker = self.docker_driver()
        return self._docker

    def session(self) -> tuple[str, str]:
        """(session id, desktop container) of one `spectask start` session, started once."""
        if self._session is None:
            self._session = self.new_session()
        return self._session

    def new_session(self, name: str = "driver-tests") -> tuple[str, str]:
        self.stack_up()
        cli = self.cli_driver()
        cli.ensure_built(self.git_sha, timeout=LAYER_TIMEOUT)
        started = cli.start_session(self.creds.project, name, timeout=LAYER_TIMEOUT)
        sid = started.session_id
        api = self.api
        poll_until(lambda: api.container_of(api.session(sid))[0], timeout=LAYER_TIMEOUT,
                   what="the session's dev_container_id", interval=0.05, max_interval=0.5)
        cid, cname = api.container_of(api.session(sid))
        return sid, cname or cid

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()
        self._closers.clear()


@contextlib.contextmanager
def _rig(prefix: str, options: dict[str, Any]) -> Iterator[Rig]:
    # A short root: sshd and the Docker socket live under it (unix socket paths are limited).
    workdir = Path(tempfile.mkdtemp(prefix=f"hxdrv-{prefix}-"))
    try:
        with running_sim(workdir / "sim", **options) as info:
            rig = Rig(info, workdir)
            try:
                yield rig
            finally:
                rig.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """The module's simulator, configured by the module's ``SIM_OPTIONS``."""
    options = dict(getattr(request.module, "SIM_OPTIONS", {}))
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").removesuffix("_driver")
    with _rig(name, options) as r:
        yield r


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    """``make_rig(faults={...}, qemu_behaviour=...)``: one more simulator for this test only."""
    with contextlib.ExitStack() as stack:
        yield lambda **options: stack.enter_context(_rig("x", options))
