"""The sim's Mac host with Helix.app instead of UTM: the bundle, the data dir, and a real QEMU as the VM.

Helix.app (helix-app-vm.md) runs its bundled ``qemu-system-aarch64`` itself; the harness's ``helix-app``
provider does the same, with the app's command line. Here:

- **Files** (:meth:`HelixAppHost.write_files`): ``host/Helix.app`` with the 75 KB Mach-O wrapper
  ``Contents/MacOS/qemu-system-aarch64`` (LC_RPATH ``@executable_path/../Frameworks``, loading
  ``@rpath/libqemu-aarch64-softmmu.dylib``), that dylib (with the build's ``[HELIX] VERSION:``), the EDK2
  firmware and the KosmicKrisp ICD; the data dir ``host/home/Library/Application Support/Helix`` with the
  app's key ``ssh/helix_ed25519`` and ``vm/helix-desktop/disk.qcow2``; the launcher the harness runs as the
  bundled QEMU (``host/bin/qemu-system-aarch64``, :mod:`.real_qemu`), a host ``helix`` CLI
  (``host/bin/helix``: the darwin CLI's stand-in) and a known_hosts for the SSH forward.
- **The VM is a real QEMU** (:mod:`.real_qemu`): the launcher hands over its stdout/stderr and execs
  ``qemu-system-aarch64 -M none`` with the harness's QMP port and a private QMP port, on which this host
  follows QEMU's events. While QEMU runs, the SLIRP forwards (:mod:`.hostfwd`) carry SSH and the API to the
  guest; after ``boot_delay_s`` the frame export binds ``helix-port`` (its ``helix:`` lines go to QEMU's
  stderr, and to helix-debug.log as qemu-utm's hard-coded path does) and the guest boots (sshd).
- **The guest follows QEMU**: ``STOP`` freezes the guest's processes and the forwards, ``RESUME`` thaws
  them; ``POWERDOWN`` shuts the guest down and quits QEMU (a guest's ACPI power-off); QEMU gone (quit,
  killed, crashed) stops the guest, the forwards, the frame export and the stack.

Faults (place ``host.helix_app``): ``qemu_exit_at_start`` (the real QEMU gets the app's ``-spice … gl=es``,
which it rejects: it exits 1 at once), ``qemu_deadlock`` (once the guest booted, QEMU is SIGSTOPped: its
main loop, QMP and the forwards stop at 0 % CPU, and "other threads" keep printing ``[HELIX] … dropping
frame`` and ``[KEEPALIVE]`` lines), ``edk2_no_boot`` (QEMU runs, the guest never boots: EDK2's ``Out Of
Resource!`` on the console), ``stale_qemu_pid`` (a real QEMU left over holds the QMP port and
``qemu.pid``), ``helix_app_running`` (``Helix for Mac`` runs with this data dir).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import psutil

from .._wait import poll_until
from ..config import SimConfig
from ..errors import SimError, SimTimeout
from ..vm.freeze import GuestFreezer
from .helix_app_files import (APP_BUNDLE, APP_EXECUTABLE, DATA_DIR, HOME, target_toml, write_bundle,
                              write_cli_launcher)
from .hostfwd import HostForward
from .qemu import QemuFrameExport
from .real_qemu import control_address, find_qemu, parse_app_argv, real_argv, write_launcher

log = logging.getLogger("helix_sim.helix_app")

#: Fault timings (scaled by delay_scale): the deadlock comes this long after the guest booted.
DEADLOCK_AFTER_S = 1.0
#: How often the "other threads" of a deadlocked QEMU print their lines.
DROP_LINE_INTERVAL_S = 0.5
#: EDK2 on the serial console when it runs out of PCI resources (hostmem=512M with ipa-granule-size on M1).
EDK2_CONSOLE = (
    "UEFI firmware (version edk2-stable202408-prebuilt.qemu.org built at 16:28:50 on Sep 12 2024)",
    "PciHostBridgeResourceConflict: Root Bridge 0",
    "PciBus: [00|02|00] BAR 0 Out Of Resource!",
    "PciHostBridge: SubmitResources - Out Of Resource!",
    "BdsDxe: failed to load Boot0001 \"UEFI Misc Device\": Not Found",
    "UEFI Interactive Shell v2.2",
    "Shell> ",
)


class HelixAppError(SimError):
    default_phase = "vm"


class HelixAppFrameExport(QemuFrameExport):
    """qemu-utm's frame export as Helix.app's QEMU runs it: ``helix_log`` lines go to QEMU's stderr with the
    ``helix:`` prefix (and, as in every qemu-utm build, to the hard-coded helix-debug.log)."""

    stderr_fd: int | None = None

    def log(self, message: str) -> None:
        super().log(message)
        fd = self.stderr_fd
        if fd is not None:
            try:
                os.write(fd, f"helix: {message}\n".encode())
            except OSError:
                pass


@dataclass
class _Vm:
    """One QEMU the harness started through the launcher."""

    pid: int
    argv: list[str]
    stdout_fd: int
    stderr_fd: int
    monitor: int  # the sim's own QMP port
    forwards: list[HostForward] = field(default_factory=list)
    client: Any = None  # qemu.qmp.QMPClient on the private monitor
    listener: Any = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    booted: bool = False
    deadlocked: bool = False
    gone: bool = False


def _pub(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class HelixAppHost:
    """The Mac with Helix.app: its files, the real QEMU the harness starts, and the faults of this place."""

    def __init__(self, config: SimConfig, host_dir: str | os.PathLike[str], *, qemu: HelixAppFrameExport, guest,
                 engine, on_power_off: Callable[[], Awaitable[None]] | None = None) -> None:
        self.config = config
        self.host_dir = Path(host_dir).absolute()
        self.qemu = qemu
        self.guest = guest
        self.engine = engine
        self.on_power_off = on_power_off
        self.crash_dir = self.host_dir / "DiagnosticReports"
        self.data_dir = self.host_dir / DATA_DIR
        self.launcher = self.host_dir / "bin" / "qemu-system-aarch64"
        self.helix_cli = self.host_dir / "bin" / "helix"
        self.known_hosts = self.host_dir / "known_hosts"
        # The launcher's control socket: Linux's abstract namespace, else a short path (sim roots can be deep).
        self.control = (f"@helix-sim-app-{os.getpid()}-{id(self):x}" if sys.platform.startswith("linux")
                        else str(Path(tempfile.mkdtemp(prefix="hsa-", dir="/tmp")) / "app.sock"))
        self.ssh_key = self.data_dir / "ssh" / "helix_ed25519"
        self.ssh_port, self.api_port, self.qmp_port = _free_ports(3)
        self.qemu_system = find_qemu()
        self.status = "stopped"
        self.vm: _Vm | None = None
        self.last_qemu_pid: int | None = None
        self.freezer = GuestFreezer(guest)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control: socket.socket | None = None
        self._control_thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._stale: subprocess.Popen[bytes] | None = None
        self._app: subprocess.Popen[bytes] | None = None

    @property
    def app_dir(self) -> Path:
        return self.host_dir / APP_BUNDLE

    @property
    def qemu_pid(self) -> int | None:
        """The QEMU this host knows of: the running VM's, else the stale one's (fault), else None."""
        if self.vm is not None and not self.vm.gone:
            return self.vm.pid
        if self._stale is not None and self._stale.poll() is None:
            return self._stale.pid
        return None

    # --- files --------------------------------------------------------------------------------------

    def write_files(self) -> None:
        write_bundle(self.host_dir, self.config)
        vm_dir = self.data_dir / "vm" / "helix-desktop"
        vm_dir.mkdir(parents=True, exist_ok=True)
        (vm_dir / "disk.qcow2").write_bytes(b"QFI\xfb")
        (self.data_dir / "ssh").mkdir(parents=True, exist_ok=True)
        for src, dst in ((self.guest.ssh_key, self.ssh_key), (_pub(self.guest.ssh_key), _pub(self.ssh_key))):
            shutil.copyfile(src, dst)
        self.ssh_key.chmod(0o600)
        host_pub = _pub(self.guest.host_key).read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.ssh_port} {host_pub[0]} {host_pub[1]}\n")
        (self.guest.home / "etc").mkdir(parents=True, exist_ok=True)  # the drm manager's env file (sim path)
        write_launcher(self.launcher, control=self.control, python=sys.executable)
        write_cli_launcher(self.helix_cli, self.config)

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.write_files)
        self._start_control()
        faults = self.config.faults
        if "stale_qemu_pid" in faults:
            self._start_stale_qemu()
        if "helix_app_running" in faults:
            self._start_app()

    async def close(self) -> None:
        """Simulator shutdown: no QEMU, forward, app or thread of this host survives it."""
        vm = self.vm
        if vm is not None and not vm.gone:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(vm.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            await self._vm_gone(vm)
        self._stop_control()
        for proc in (self._stale, self._app):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait(timeout=10)
        self._stale = self._app = None

    def info(self) -> dict[str, Any]:
        """What ``sim up --json`` says about this host (on top of the simulator's keys)."""
        return {"api_url": f"http://127.0.0.1:{self.api_port}", "ssh_port": self.ssh_port, "ssh_key": str(self.ssh_key),
                "utmctl": "", "qmp_port": self.qmp_port, "qemu_pid": self.qemu_pid, "provider": "helix-app"}

    def crash_vm(self, reason: str) -> None:
        """QEMU dies (the desktop's ``vm_crash_stream``): SIGKILL to the real process; the watcher sees it go."""
        vm = self.vm
        if vm is not None and not vm.gone:
            log.warning("QEMU pid %d aborts: %s", vm.pid, reason)
            try:
                os.kill(vm.pid, signal.SIGKILL)  # not SIGABRT: no core file in the harness's cwd
            except ProcessLookupError:
                pass

    # --- fault processes ------------------------------------------------------------------------------

    def _start_stale_qemu(self) -> None:
        if self.qemu_system is None:
            raise HelixAppError("stale_qemu_pid needs a real qemu-system-aarch64 (install qemu-system-arm)")
        argv = real_argv(self.qemu_system, qmp_port=self.qmp_port, monitor_port=_free_ports(1)[0])
        self._stale = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        (self.data_dir / "qemu.pid").write_text(f"{self._stale.pid}\n")
        poll_until(lambda: not self._port_free(self.qmp_port) or self._stale.poll() is not None, timeout=10,
                   what="the stale QEMU's QMP port", phase="vm")
        log.info("fault stale_qemu_pid: QEMU pid %d holds QMP port %d", self._stale.pid, self.qmp_port)

    @staticmethod
    def _port_free(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return False
        except OSError:
            return True

    def _start_app(self) -> None:
        path = self.host_dir / APP_EXECUTABLE
        path.write_text(f"#!{sys.executable}\n# Helix.app's executable, as the helix_app_running fault runs it.\n"
                        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)  # as the real app\n"
                        "while True:\n    time.sleep(3600)\n")
        path.chmod(0o755)
        env = {**os.environ, "HOME": str(self.host_dir / HOME)}
        self._app = subprocess.Popen([str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        log.info("fault helix_app_running: Helix for Mac pid %d", self._app.pid)

    # --- the launcher's control socket --------------------------------------------------------------

    def _start_control(self) -> None:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(control_address(self.control))
        server.listen(8)
        server.settimeout(0.2)
        self._control = server
        self._closing.clear()
        self._control_thread = threading.Thread(target=self._serve_control, name="sim-helix-app-control", daemon=True)
        self._control_thread.start()

    def _stop_control(self) -> None:
        self._closing.set()
        if self._control_thread is not None:
            self._control_thread.join(5)
        if self._control is not None:
            self._control.close()
        self._control = self._control_thread = None
        if not self.control.startswith("@"):
            shutil.rmtree(Path(self.control).parent, ignore_errors=True)

    def _serve_control(self) -> None:
        assert self._control is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._control.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                fds: list[int] = []
                try:
                    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 2)
                    request = json.loads(data.decode())
                    reply = asyncio.run_coroutine_threadsafe(
                        self._launch(list(request["argv"]), int(request["pid"]), fds), self._loop).result(15)
                    fds = []  # handed over
                except Exception as exc:  # noqa: BLE001 - the launcher prints it as QEMU's error
                    log.exception("the QEMU launcher's request failed")
                    reply = {"error": f"helix-e2e simulator: {exc}"}
                finally:
                    for fd in fds:
                        os.close(fd)
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass

    # --- one QEMU ---------------------------------------------------------------------------------------

    async def _launch(self, argv: list[str], pid: int, fds: list[int]) -> dict[str, Any]:
        """The launcher of ``pid`` asks which QEMU to exec; ``fds`` are its stdout and stderr."""
        if self.qemu_system is None:
            raise HelixAppError("no real qemu-system-aarch64 on this host (install qemu-system-arm)")
        if len(fds) != 2:
            raise HelixAppError("the launcher sent no stdout/stderr")
        if self.vm is not None and not self.vm.gone:
            raise HelixAppError(f"Could not set up host forwarding rule: QEMU pid {self.vm.pid} already runs")
        app = parse_app_argv(argv)
        qmp_port = app.qmp[1] if app.qmp else self.qmp_port
        monitor = _free_ports(1)[0]
        if "qemu_exit_at_start" in self.config.faults:
            for fd in fds:
                os.close(fd)
            log.info("fault qemu_exit_at_start: QEMU pid %d gets the app's -spice option", pid)
            return {"exec": real_argv(self.qemu_system, qmp_port=qmp_port, monitor_port=monitor,
                                      extra=("-spice", app.spice or "unix=on,gl=es"))}
        vm = _Vm(pid, argv, fds[0], fds[1], monitor)
        self.vm = vm
        self.last_qemu_pid = pid
        self.status = "starting"
        vm.tasks.append(asyncio.create_task(self._run_vm(vm, app), name=f"sim-qemu-{pid}"))
        return {"exec": real_argv(self.qemu_system, qmp_port=qmp_port, monitor_port=monitor)}

    def console(self, vm: _Vm, text: str) -> None:
        """The guest's serial console (QEMU's stdout with -serial mon:stdio)."""
        try:
            os.write(vm.stdout_fd, text.encode())
        except OSError:
            pass

    def stderr(self, vm: _Vm, line: str) -> None:
        try:
            os.write(vm.stderr_fd, (line + "\n").encode())
        except OSError:
            pass

    async def _run_vm(self, vm: _Vm, app) -> None:
        cfg = self.config
        try:
            await self._connect_monitor(vm)
            if vm.gone:
                return
            vm.tasks.append(asyncio.create_task(self._watch(vm), name=f"sim-qemu-watch-{vm.pid}"))
            for name, guest_port in (("ssh", 22), ("api", self.guest_api_port(app))):
                port = app.forward_to(guest_port) or (self.ssh_port if guest_port == 22 else self.api_port)
                target = self.guest.ssh_port if guest_port == 22 else guest_port
                forward = HostForward(name, port, target)
                try:
                    await forward.start()
                except OSError as exc:
                    self.stderr(vm, f"qemu-system-aarch64: Could not set up host forwarding rule 'tcp::{port}-:"
                                    f"{guest_port}': {exc.strerror}")
                    os.kill(vm.pid, signal.SIGKILL)
                    return
                vm.forwards.append(forward)
            self.status = "booting"
            await asyncio.sleep(cfg.delay(cfg.boot_delay_s))
            if "edk2_no_boot" in cfg.faults:
                self.console(vm, "\r\n".join(EDK2_CONSOLE))
                log.info("fault edk2_no_boot: the guest never boots")
                self.status = "running"
                return
            self.qemu.stderr_fd = vm.stderr_fd
            if app.helix_port:
                self.qemu.port = app.helix_port
            try:
                await self.qemu.start()
            except Exception:  # noqa: BLE001 - QEMU runs on without frame export, as the real one does
                log.exception("the frame export did not start")
            await asyncio.to_thread(self.guest.boot)
            vm.booted = True
            self.console(vm, "\r\nUbuntu 24.04 LTS helix ttyAMA0\r\n\r\nhelix login: ")
            self.status = "running"
            if "qemu_deadlock" in cfg.faults:
                await asyncio.sleep(cfg.delay(DEADLOCK_AFTER_S))
                await self._deadlock(vm)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a sim bug: QEMU goes on, the log says why
            log.exception("the simulated VM of QEMU pid %d failed", vm.pid)

    def guest_api_port(self, app) -> int:
        """The guest port the API forward targets (the app: 8080; the sim's API listens on its own port)."""
        return next((gp for _, _, gp in app.hostfwd if gp != 22), self.config.api_port)

    async def _connect_monitor(self, vm: _Vm) -> None:
        from qemu.qmp import EventListener, QMPClient

        loop = asyncio.get_running_loop()
        end = loop.time() + 15.0
        client = QMPClient(f"helix-sim-{vm.pid}")
        listener = EventListener()
        client.register_listener(listener)
        while True:
            try:
                await asyncio.wait_for(client.connect(("127.0.0.1", vm.monitor)), 5)
                break
            except Exception:  # noqa: BLE001 - refused until QEMU listens
                if not _alive(vm.pid) or loop.time() > end:
                    await self._vm_gone(vm)
                    return
                await asyncio.sleep(0.05)
        vm.client, vm.listener = client, listener

    async def _watch(self, vm: _Vm) -> None:
        """QEMU's events and its life: the guest follows them."""
        while not vm.gone:
            for event in vm.listener.clear() if vm.listener is not None else []:
                name = event.get("event")
                log.info("QEMU pid %d: QMP event %s %s", vm.pid, name, event.get("data") or "")
                if name == "STOP":
                    await self._freeze(vm, "paused")
                elif name == "RESUME":
                    await self._thaw(vm)
                elif name == "POWERDOWN" and not self.freezer.frozen:
                    vm.tasks.append(asyncio.create_task(self._acpi_power_off(vm)))
            if not _alive(vm.pid):
                break
            await asyncio.sleep(0.05)
        await self._vm_gone(vm)

    async def _freeze(self, vm: _Vm, status: str) -> None:
        for forward in vm.forwards:
            forward.freeze()
        await asyncio.to_thread(self.freezer.freeze)
        self.status = status

    async def _thaw(self, vm: _Vm) -> None:
        await asyncio.to_thread(self.freezer.thaw)
        for forward in vm.forwards:
            forward.thaw()
        self.status = "running"

    async def _acpi_power_off(self, vm: _Vm) -> None:
        """The guest powers itself off (ACPI): its services stop, then QEMU exits."""
        await asyncio.sleep(self.config.delay(0.3))
        await self._guest_down(vm)
        try:
            await asyncio.wait_for(vm.client.execute("quit"), 5)
        except Exception:  # noqa: BLE001 - QEMU went away first
            pass

    async def _deadlock(self, vm: _Vm) -> None:
        """The BQL deadlock: QEMU's main loop stops (SIGSTOP, so QMP and SLIRP stop too), the vCPUs with it."""
        if vm.gone:
            return
        log.warning("fault qemu_deadlock: QEMU pid %d's main loop stops", vm.pid)
        vm.deadlocked = True
        os.kill(vm.pid, signal.SIGSTOP)
        await self._freeze(vm, "deadlocked")
        vm.tasks.append(asyncio.create_task(self._other_threads(vm)))

    async def _other_threads(self, vm: _Vm) -> None:
        """The encoder's threads of a deadlocked QEMU keep logging (design/2026-02-28-…-deadlock.md)."""
        drops = 0
        while not vm.gone:
            drops += 1
            self.stderr(vm, f"[HELIX] Client 1: dropping frame (need 3145728, have 0/1048576 bytes free, "
                            f"total drops={drops})")
            if drops % 4 == 0:
                self.stderr(vm, "[KEEPALIVE] Re-encoded scanout 0 (no new frame for 2000 ms)")
            await asyncio.sleep(DROP_LINE_INTERVAL_S)

    async def _guest_down(self, vm: _Vm) -> None:
        """Everything inside the VM stops: the stack, the containers, the guest (thawed first)."""
        if self.freezer.frozen:
            await asyncio.to_thread(self.freezer.thaw)
        if self.on_power_off is not None:
            try:
                await self.on_power_off()
            except Exception:  # noqa: BLE001 - power-off goes on
                log.exception("power-off hook failed")
        self.engine.reset()
        if vm.booted:
            vm.booted = False
            try:
                await asyncio.to_thread(self.guest.shutdown)
            except Exception:  # noqa: BLE001
                log.exception("guest shutdown failed")

    async def _vm_gone(self, vm: _Vm) -> None:
        """QEMU exited (quit, powerdown, killed, crashed): the forwards close and the VM's world stops."""
        if vm.gone:
            return
        vm.gone = True
        me = asyncio.current_task()
        for task in vm.tasks:
            if task is not me and not task.done():
                task.cancel()
        await asyncio.gather(*[t for t in vm.tasks if t is not me], return_exceptions=True)
        for forward in vm.forwards:
            await forward.stop()
        await self._guest_down(vm)
        await self.qemu.stop()
        self.qemu.stderr_fd = None
        if vm.client is not None:
            try:
                await asyncio.wait_for(vm.client.disconnect(), 2)
            except Exception:  # noqa: BLE001 - QEMU is gone: the connection is too
                pass
        for fd in (vm.stdout_fd, vm.stderr_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.vm is vm:
            self.status = "stopped"
        log.info("QEMU pid %d is gone: the VM is off", vm.pid)

    async def wait_status(self, wanted: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.status != wanted:
            if loop.time() >= end:
                raise SimTimeout(f"Helix.app VM status stayed {self.status!r}, wanted {wanted!r}", phase="vm")
            await asyncio.sleep(0.02)

    # --- the target file -----------------------------------------------------------------------------

    def target_toml(self, **kw) -> str:
        return target_toml(self, **kw)
