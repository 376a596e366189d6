"""The whole simulator: Mac host, UTM VM, QEMU frame export and the Helix stack, on one asyncio loop.

``Simulator(config)`` composes the parts (docs/design.md "Simulator internals"):

- :class:`~helix_sim.stack.docker_engine.DockerEngine` on ``<root>/docker.sock``;
- :class:`~helix_sim.host.qemu.QemuFrameExport`, bound when the VM boots;
- :class:`~helix_sim.vm.sshd.GuestVM` (sshd) under ``<root>/vm``;
- :class:`~helix_sim.stack.api.HelixApiServer`, started when the engine starts the compose service ``api``
  and stopped when it stops; a ``sandbox-macos`` start makes the sandbox report online after
  ``sandbox_delay_s``;
- :class:`~helix_sim.host.utm_app.UtmHost` ("UTM.app") with its control server, the utmctl launcher
  (``host/bin/utmctl``, and the same script at ``host/UTM.app/Contents/MacOS/utmctl``) and the fake
  QEMU framework binary under ``host/UTM.app/Contents/Frameworks/``;
- ``<root>/target.toml``, a target config pointing the harness at all of this.

The VM starts ``stopped``; the harness boots it with utmctl. ``start()``/``stop()`` (or ``with``)
run the loop on a background thread; ``run_forever()`` runs it in the foreground until
SIGTERM/SIGINT (``python -m helix_sim up``). ``stop()`` stops everything it started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

from .errors import SimError, SimTimeout
from .config import SimConfig
from .host.qemu import QemuFrameExport
from .host.utm_app import UtmHost
from .host.utmctl import write_launcher
from .leftovers import write_marker
from .stack.api import HelixApiServer
from .stack.docker_engine import DockerEngine, SimContainer
from .vm.sshd import GuestVM

log = logging.getLogger("helix_sim.simulator")

T = TypeVar("T")

#: The keys of :meth:`Simulator.info` (the ``sim up --json`` line), in order.
INFO_KEYS = (
    "api_url", "api_key", "ssh_host", "ssh_port", "ssh_user", "ssh_key", "utmctl", "vm_id",
    "frame_export_port", "helix_debug_log", "crash_dir", "target_file",
)


class SimulatorError(SimError):
    default_phase = "sim"


def pick_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports (all held open together while picking)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # TOML basic strings accept JSON's escapes


class Simulator:
    """One simulator instance rooted at ``config.root``. Several can run side by side."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.root = Path(config.root).absolute()
        self.host_dir = self.root / "host"
        self.crash_dir = self.host_dir / "DiagnosticReports"
        self.helix_debug_log = self.host_dir / "helix-debug.log"
        self.utmctl_path = self.host_dir / "UTM.app" / "Contents" / "MacOS" / "utmctl"
        self.utmctl_bin = self.host_dir / "bin" / "utmctl"  # a convenience copy, like a PATH symlink
        self.target_file = self.root / "target.toml"
        self.engine: DockerEngine | None = None
        self.qemu: QemuFrameExport | None = None
        self.guest: GuestVM | None = None
        self.host: UtmHost | None = None
        self.api: HelixApiServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = False

    # --- public, thread side ------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> "Simulator":
        """Start on a background thread; returns once everything listens (or raises why not)."""
        if self._thread is not None:
            raise SimulatorError("simulator already started")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def on_ready(error: BaseException | None) -> None:
            if error is None:
                ready.set_result(None)
            else:
                ready.set_exception(error)

        def run() -> None:
            try:
                asyncio.run(self._serve(on_ready))
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                if not ready.done():
                    ready.set_exception(exc)
                else:
                    log.exception("the simulator loop failed")
            finally:
                if not ready.done():
                    ready.set_exception(SimulatorError("the simulator loop ended before it was ready"))

        self._thread = threading.Thread(target=run, name=f"helix-sim:{self.root.name}", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout)
        except concurrent.futures.TimeoutError:
            self.stop()
            raise SimTimeout(f"the simulator did not start within {timeout:.0f}s", phase="sim") from None
        except BaseException:
            self._thread.join(timeout)
            self._thread = None
            raise
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop everything started (servers, sshd, tasks, the loop thread). Idempotent."""
        thread = self._thread
        if thread is None:
            return
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop already closed
                pass
        thread.join(timeout)
        if thread.is_alive():
            raise SimTimeout(f"the simulator did not stop within {timeout:.0f}s", phase="sim")
        self._thread = None

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_forever(
        self,
        stop_event: threading.Event | None = None,
        *,
        on_ready: Callable[[dict[str, Any]], None] | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        """Run in the foreground until SIGTERM/SIGINT (main thread) or ``stop_event``; then stop all.

        ``on_ready(info)`` runs once everything listens. Startup errors are raised.
        """
        failure: list[BaseException] = []

        def ready(error: BaseException | None) -> None:
            if error is not None:
                failure.append(error)
            elif on_ready is not None:
                on_ready(self.info())

        asyncio.run(self._serve(ready, stop_event=stop_event, signals=install_signal_handlers))
        if failure:
            raise failure[0]

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the simulator's loop from another thread (tests, tools)."""
        if self._loop is None or self._loop.is_closed():
            coro.close()
            raise SimulatorError("the simulator is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def info(self) -> dict[str, Any]:
        """The ``sim up --json`` dict (provider helix-app: the forwards' ports, the app's key, plus ``qmp_port``
        and ``qemu_pid``, the QEMU the harness started, null until then)."""
        if not self._started or self.guest is None:
            raise SimulatorError("the simulator is not started")
        cfg = self.config
        info = {
            "api_url": f"http://127.0.0.1:{cfg.api_port}",
            "api_key": cfg.api_key,
            "ssh_host": self.guest.ssh_host,
            "ssh_port": self.guest.ssh_port,
            "ssh_user": self.guest.ssh_user,
            "ssh_key": str(self.guest.ssh_key),
            "utmctl": str(self.utmctl_path),
            "vm_id": cfg.vm_id,
            "frame_export_port": cfg.frame_export_port,
            "helix_debug_log": str(self.helix_debug_log),
            "crash_dir": str(self.crash_dir),
            "target_file": str(self.target_file),
        }
        if cfg.provider == "helix-app":
            info.update(self.host.info())
        return info

    # --- loop side ----------------------------------------------------------------------

    async def _serve(
        self,
        on_ready: Callable[[BaseException | None], None],
        *,
        stop_event: threading.Event | None = None,
        signals: bool = False,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_event = asyncio.Event()
        installed: list[int] = []
        if signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop_event.set)
                installed.append(sig)
        try:
            try:
                await self._astart()
            except BaseException as exc:
                on_ready(exc)
                return
            on_ready(None)
            if stop_event is None:
                await self._stop_event.wait()
            else:
                while not self._stop_event.is_set() and not stop_event.is_set():
                    try:
                        await asyncio.wait_for(self._stop_event.wait(), timeout=0.1)
                    except asyncio.TimeoutError:
                        pass
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self._astop()

    async def _astart(self) -> None:
        try:
            await self._build()
        except BaseException:
            await self._astop()
            raise
        self._started = True
        log.info("simulator up under %s (api :%d, ssh :%d, frame export :%d)", self.root,
                 self.config.api_port, self.config.ssh_port, self.config.frame_export_port)

    async def _build(self) -> None:
        for d in (self.root, self.host_dir, self.crash_dir, self.utmctl_path.parent, self.utmctl_bin.parent, self.root / "vm"):
            d.mkdir(parents=True, exist_ok=True)
        write_marker(self.root)  # a later simulator removes this root if this one is killed (helix_sim.leftovers)
        self.helix_debug_log.touch()
        cfg = self.config
        free = iter(pick_free_ports(3))
        cfg = cfg.with_(
            ssh_port=cfg.ssh_port or next(free),
            api_port=cfg.api_port or next(free),
            frame_export_port=cfg.frame_export_port or next(free),
            root=self.root,
        )
        self.config = cfg

        self.engine = DockerEngine(cfg, self.root / "docker.sock")
        await self.engine.start()
        if cfg.provider == "helix-app":
            from .host.helix_app import HelixAppFrameExport

            self.qemu = HelixAppFrameExport(cfg, self.helix_debug_log)
        else:
            self.qemu = QemuFrameExport(cfg, self.helix_debug_log)
        self.guest = GuestVM(
            self.root / "vm",
            cfg,
            api_url=f"http://localhost:{cfg.api_port}",
            docker_host=self.engine.docker_host,
            python=sys.executable,
        )
        await asyncio.to_thread(self.guest.prepare)
        if cfg.provider == "helix-app":
            from .host.helix_app import HelixAppHost

            self.host = HelixAppHost(cfg, self.host_dir, qemu=self.qemu, guest=self.guest, engine=self.engine,
                                     on_power_off=self._power_off)
        else:
            self.host = UtmHost(
                cfg, self.host_dir, qemu=self.qemu, guest=self.guest, engine=self.engine, on_power_off=self._power_off
            )
        self.api = HelixApiServer(cfg, self.engine, self.qemu, self.host)
        self.engine.on_service_start("api", self._api_started)
        self.engine.on_service_stop("api", self._api_stopped)
        self.engine.on_service_start("sandbox-macos", self._sandbox_started)
        self.engine.on_service_stop("sandbox-macos", self._sandbox_stopped)
        if cfg.provider == "helix-app":
            await self.host.start()
            self._write_target()
            return
        await self.host.start_control_server()
        # utmctl lives inside the (fake) UTM.app, as on a Mac: the doctor derives the QEMU framework
        # binary from utmctl's path (host/UTM.app/…/qemu-aarch64-softmmu).
        write_launcher(self.utmctl_path, control_file=self.host.control_file, python=sys.executable)
        write_launcher(self.utmctl_bin,
                       control_file=self.host.control_file, python=sys.executable)
        self._write_target()

    async def _astop(self) -> None:
        """Stop whatever was started, in reverse order. Each step runs even if one before failed."""
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        if self.host is not None:
            steps.append(("host", self.host.close))
        steps.append(("power-off", self._power_off))
        if self.qemu is not None:
            steps.append(("qemu", self.qemu.stop))
        if self.guest is not None:
            guest = self.guest
            steps.append(("guest", lambda: asyncio.to_thread(guest.shutdown)))
        if self.engine is not None:
            steps.append(("engine", self.engine.stop))
        for name, step in steps:
            try:
                await step()
            except Exception:  # noqa: BLE001 - keep stopping the rest
                log.exception("stopping %s failed", name)
        self._started = False

    # --- engine callbacks ---------------------------------------------------------------

    async def _api_started(self, container: SimContainer) -> None:
        assert self.api is not None
        await self.api.start(self.config.api_port)

    async def _api_stopped(self, container: SimContainer) -> None:
        if self.api is not None:
            await self.api.stop()

    async def _sandbox_started(self, container: SimContainer) -> None:
        # The API itself waits sandbox_delay_s before it lists desktop_versions.
        if self.api is not None:
            self.api.sandbox_online()

    async def _sandbox_stopped(self, container: SimContainer) -> None:
        if self.api is not None:
            self.api.sandbox_offline()

    async def _power_off(self) -> None:
        """The VM powers off: everything that ran inside it stops (the engine drops its containers)."""
        if self.api is not None:
            self.api.sandbox_offline()
            if self.api.running:
                await self.api.stop()

    # --- target config ------------------------------------------------------------------

    def _write_target(self) -> None:
        assert self.guest is not None
        cfg = self.config
        if cfg.provider == "helix-app":
            text = self.host.target_toml(api_port=cfg.api_port, frame_export_port=cfg.frame_export_port,
                                         helix_debug_log=self.helix_debug_log, width=cfg.width, height=cfg.height)
            tmp = self.target_file.with_suffix(".toml.tmp")
            tmp.write_text(text)
            tmp.replace(self.target_file)
            return
        text = f"""\
# Target config of the helix-e2e simulator rooted at {self.root}
name = "sim"
kind = "utm"

[vm]
id = {_toml_str(cfg.vm_id)}
utmctl = {_toml_str(self.utmctl_path)}

[ssh]
host = {_toml_str(self.guest.ssh_host)}
port = {self.guest.ssh_port}
user = {_toml_str(self.guest.ssh_user)}
key = {_toml_str(self.guest.ssh_key)}
known_hosts = {_toml_str(self.guest.known_hosts)}

[guest]
helix_dir = "~/helix"
api_port = {cfg.api_port}
# The CLI the guest builds (and its .gitsha stamp) stays inside this simulator's root: the guest's own /tmp.
cli_path = {_toml_str(self.guest.cli_path)}

[frame_export]
host = "127.0.0.1"
port = {cfg.frame_export_port}

[host]
helix_debug_log = {_toml_str(self.helix_debug_log)}
crash_dir = {_toml_str(self.crash_dir)}

[stream]
duration = 10
width = {cfg.width}
height = {cfg.height}

[timeouts]
boot = 30
ssh = 20
stack = 60
session = 60

# This target IS a running simulator (`sim up`): the harness drives it and does not start another.
[sim]
external = true
"""
        tmp = self.target_file.with_suffix(".toml.tmp")
        tmp.write_text(text)
        tmp.replace(self.target_file)
