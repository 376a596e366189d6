"""The sim's Mac host: "UTM.app" with its one VM, the crash-report dir and the utmctl control server.

Real utmctl drives UTM.app over Apple Events; here the utmctl emulator (:mod:`helix_sim.host.utmctl`)
posts JSON to a loopback control server (aiohttp on 127.0.0.1, address in ``host/control.json``).
The server holds the VM registry and its utmctl status, and decides the utmctl faults, so an
emulator process needs nothing but the control file.

VM lifecycle (``status`` is what ``utmctl status`` prints):

- :meth:`UtmHost.start_vm`: ``starting``; after ``boot_delay_s`` the QEMU frame export binds and logs
  its startup lines, the guest boots (sshd), then ``started``. Returns at once, like ``utmctl start``.
- :meth:`UtmHost.stop_vm`: ``stopping``; the Helix API stops, the engine's containers go, the guest
  and QEMU stop; then ``stopped``. Returns at once too; :meth:`wait_status` polls.
- :meth:`UtmHost.crash_vm`: the QEMU process aborts: the same teardown without ``stopping``,
  ``stopped``, and a ``QEMULauncher-YYYY-MM-DD-HHMMSS.ips`` in the crash dir.

Faults: ``vm_crash_boot`` (every boot aborts before QEMU's frame export initialises),
``vm_crash_stream`` (the desktop calls :meth:`crash_vm` while streaming), ``utmctl_osstatus``
(the first ``SimConfig.osstatus_failures`` start/stop events fail with OSStatus -1743, more than the
driver retries; utmctl exits 0),
``utmctl_no_gui`` (every utmctl call fails: no GUI login session), ``sysroot_paths`` (the QEMU
binary under ``host/UTM.app`` keeps build-machine sysroot load commands, and every boot dies in dyld
with a "Library missing" report), ``stale_qemu`` (the binary's VERSION string differs from the
one QEMU logs: the logged one comes from :attr:`SimConfig.logged_qemu_version`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from aiohttp import web

from ..errors import SimError, SimTimeout
from ..config import SimConfig
from ..stack.docker_engine import DockerEngine
from .crash_reports import UTM_VERSION, write_crash_report
from .qemu import QemuError, QemuFrameExport
from .qemu_binary import write_qemu_binary

log = logging.getLogger("helix_sim.host")

#: OSStatus of the transient Apple Event failure (`utmctl_osstatus`).
OSSTATUS_FAULT = -1743
#: errAEEventFailed: how a scripting error raised inside UTM.app reaches utmctl.
OSSTATUS_EVENT_FAILED = -10000
OPERATION_NOT_AVAILABLE = "Operation not available."
NOT_SUPPORTED = "Operation not supported by the backend."
NO_GUEST_AGENT = "The QEMU guest agent is not running or not installed on the guest."


class HostError(SimError):
    """A VM operation "UTM.app" refuses (the emulator turns it into utmctl's output)."""

    default_phase = "vm"


class Guest(Protocol):
    """What the host needs of :class:`helix_sim.vm.sshd.GuestVM` (boot/shutdown may be sync or async)."""

    def boot(self) -> Any: ...

    def shutdown(self) -> Any: ...


async def call_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    """Await ``fn(*args)`` if it is a coroutine function, else run it in a worker thread."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):
        return await result
    return result


class UtmHost:
    """UTM.app with one VM (``config.vm_id`` / ``config.vm_name``)."""

    def __init__(
        self,
        config: SimConfig,
        host_dir: str | os.PathLike[str],
        *,
        qemu: QemuFrameExport,
        guest: Guest,
        engine: DockerEngine,
        on_power_off: Callable[[], Awaitable[None]] | None = None,
        osstatus_failures: int | None = None,
    ) -> None:
        self.config = config
        self.host_dir = Path(host_dir)
        self.crash_dir = self.host_dir / "DiagnosticReports"
        self.control_file = self.host_dir / "control.json"
        self.qemu = qemu
        self.guest = guest
        self.engine = engine
        self.on_power_off = on_power_off
        self.vm_id = config.vm_id
        self.vm_name = config.vm_name
        self.status = "stopped"
        #: How many more start/stop events fail under `utmctl_osstatus`.
        self.osstatus_failures_left = config.osstatus_failures if osstatus_failures is None else osstatus_failures
        self.crash_reports: list[Path] = []
        self.boots = 0
        self.control_url: str | None = None
        self._boot_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._crash_task: asyncio.Task[None] | None = None
        self._guest_booted = False
        self._teardown_lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rng = random.Random(config.seed or None)
        self.crash_dir.mkdir(parents=True, exist_ok=True)
        self.qemu_binary = self.write_qemu_binary()

    # --- VM registry -------------------------------------------------------------------

    def vms(self) -> list[dict[str, str]]:
        return [{"uuid": self.vm_id, "status": self.status, "name": self.vm_name}]

    def find_vm(self, identifier: str) -> bool:
        """UTM matches the UUID first, then the complete name (both exact)."""
        return identifier in (self.vm_id, self.vm_name)

    # --- lifecycle ---------------------------------------------------------------------

    def start_vm(self, *, disposable: bool = False) -> None:
        """``utmctl start``: ``starting`` now, the boot runs in the background."""
        if self.status not in ("stopped", "paused"):
            raise HostError(OPERATION_NOT_AVAILABLE)
        self._loop = asyncio.get_running_loop()
        self.status = "starting"
        self.boots += 1
        log.info("VM %s starting%s", self.vm_name, " (disposable)" if disposable else "")
        self._boot_task = asyncio.create_task(self._boot(), name="sim-vm-boot")

    async def _boot(self) -> None:
        try:
            if "sysroot_paths" in self.config.faults:
                # dyld cannot open the sysroot dylibs (the UTM sandbox blocks /Users/...): dead at launch.
                await asyncio.sleep(self.config.delay(self.config.boot_delay_s * 0.3))
                await self._crash("QEMU could not load its libraries (sysroot_paths)", stack="dyld")
                return
            if "vm_crash_boot" in self.config.faults:
                # QEMU aborts early in its init (qemu_spice_init): nothing reaches helix-debug.log.
                await asyncio.sleep(self.config.delay(self.config.boot_delay_s * 0.6))
                await self._crash("QEMU aborted during boot (vm_crash_boot)", stack="boot")
                return
            await asyncio.sleep(self.config.delay(self.config.boot_delay_s))
            try:
                await self.qemu.start()
            except QemuError as exc:  # QEMU keeps running without frame export, as the real one does
                log.warning("QEMU frame export failed to start: %s", exc)
            guest_boot = asyncio.ensure_future(call_maybe_async(self.guest.boot))
            try:
                await asyncio.shield(guest_boot)
            except asyncio.CancelledError:
                # A stop arrived mid-boot: let the guest finish booting so teardown can shut it down.
                await asyncio.gather(guest_boot, return_exceptions=True)
                self._guest_booted = True
                raise
            except Exception:  # noqa: BLE001 - the VM runs, its sshd does not: an SSH-phase failure
                log.exception("guest services failed to start; the VM runs without SSH")
            self._guest_booted = True
            if self.status == "starting":
                self.status = "started"
                log.info("VM %s started", self.vm_name)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a simulator bug: power off, no crash report to mislead triage
            log.exception("simulated VM boot failed")
            await self._teardown(skip_task=asyncio.current_task())
            self.status = "stopped"

    def stop_vm(self, mode: str = "force") -> None:
        """``utmctl stop --force|--kill|--request``: ``stopping`` now, teardown in the background."""
        if mode not in ("force", "kill", "request"):
            raise HostError(f"unknown stop method {mode!r}")
        if self.status in ("stopped", "stopping"):
            return
        self._loop = asyncio.get_running_loop()
        self.status = "stopping"
        log.info("VM %s stopping (%s)", self.vm_name, mode)
        self._stop_task = asyncio.create_task(self._stop(mode), name="sim-vm-stop")

    async def _stop(self, mode: str) -> None:
        if mode == "request":
            # The guest OS powers itself off: a little slower than pulling the plug.
            await asyncio.sleep(self.config.delay(min(1.0, self.config.boot_delay_s)))
        await self._teardown()
        self.status = "stopped"
        log.info("VM %s stopped", self.vm_name)

    def crash_vm(self, reason: str) -> "asyncio.Future[None]":
        """The QEMU process aborts (``vm_crash_stream``). Thread-safe; returns an awaitable future.

        Callable from a request handler that the crash itself will tear down: the crash runs as
        its own task, so do not await it from such a handler.
        """
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and (loop is None or running is loop):
            self._loop = running
            return self._schedule_crash(reason)
        if loop is None:
            raise HostError("crash_vm() called before the host's loop is known")
        return asyncio.run_coroutine_threadsafe(self._crash_from_thread(reason), loop)  # type: ignore[return-value]

    async def _crash_from_thread(self, reason: str) -> None:
        await self._schedule_crash(reason)

    def _schedule_crash(self, reason: str) -> "asyncio.Task[None]":
        if self._crash_task is not None and not self._crash_task.done():
            return self._crash_task
        self._crash_task = asyncio.create_task(self._crash(reason, stack="stream"), name="sim-vm-crash")
        return self._crash_task

    async def _crash(self, reason: str, *, stack: str) -> None:
        if self.status == "stopped":
            return
        log.warning("VM %s crashed: %s", self.vm_name, reason)
        path = self.write_crash_report(stack=stack)
        await self._teardown(skip_task=asyncio.current_task())
        self.status = "stopped"
        log.warning("QEMU exited from an error. (crash report %s)", path.name)

    async def _teardown(self, skip_task: asyncio.Task[Any] | None = None) -> None:
        """Power off: stop the API, drop the containers, shut the guest and QEMU down."""
        async with self._teardown_lock:
            boot = self._boot_task
            if boot is not None and boot is not skip_task and not boot.done():
                boot.cancel()
                await asyncio.gather(boot, return_exceptions=True)
            if self.on_power_off is not None:
                try:
                    await self.on_power_off()
                except Exception:  # noqa: BLE001 - teardown goes on
                    log.exception("power-off hook failed")
            self.engine.reset()
            if self._guest_booted:
                self._guest_booted = False
                try:
                    await call_maybe_async(self.guest.shutdown)
                except Exception:  # noqa: BLE001
                    log.exception("guest shutdown failed")
            await self.qemu.stop()

    async def wait_status(self, wanted: str, timeout: float) -> None:
        """Poll until ``status == wanted`` (for tests and the simulator's own shutdown)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.status != wanted:
            if loop.time() >= end:
                raise SimTimeout(
                    f"VM status stayed {self.status!r}, wanted {wanted!r} within {timeout:.1f}s", phase="vm"
                )
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Simulator shutdown: power the VM off if needed and stop the control server."""
        for task in (self._crash_task, self._stop_task):
            if task is not None and not task.done():
                await asyncio.gather(task, return_exceptions=True)
        if self.status != "stopped" or self._guest_booted or self.qemu.running:
            await self._teardown()
            self.status = "stopped"
        await self.stop_control_server()

    # --- host files ----------------------------------------------------------------------

    def write_crash_report(self, *, stack: str = "stream") -> Path:
        """A ``QEMULauncher-….ips`` in the crash dir (:mod:`.crash_reports`); remembered in ``crash_reports``."""
        path = write_crash_report(self.crash_dir, self._rng, stack=stack)
        self.crash_reports.append(path)
        return path

    def write_qemu_binary(self) -> Path:
        """UTM's QEMU framework binary under ``host/UTM.app`` (:mod:`.qemu_binary`)."""
        return write_qemu_binary(self.host_dir, self.config)

    # --- control server (utmctl ⇄ "UTM.app") --------------------------------------------

    async def start_control_server(self) -> str:
        """Serve the utmctl emulator on 127.0.0.1:<free port>; write ``control.json``. Returns the URL."""
        if self._runner is not None:
            assert self.control_url is not None
            return self.control_url
        self._loop = asyncio.get_running_loop()
        app = web.Application()
        app.router.add_post("/utmctl", self._handle_utmctl)
        app.router.add_get("/health", self._health)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self.control_url = f"http://127.0.0.1:{port}"
        self.host_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.control_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"url": self.control_url, "pid": os.getpid(), "vm_id": self.vm_id}) + "\n")
        os.replace(tmp, self.control_file)
        return self.control_url

    async def stop_control_server(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.control_file.unlink(missing_ok=True)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "status": self.status})

    async def _handle_utmctl(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"result": "bad_request", "message": "body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"result": "bad_request", "message": "body is not a JSON object"}, status=400)
        return web.json_response(self.utmctl_request(body))

    def utmctl_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """One utmctl command → a result the emulator renders. Fault decisions live here."""
        command = str(body.get("command") or "")
        identifier = body.get("identifier")
        if "utmctl_no_gui" in self.config.faults:
            return {"result": "no_gui"}
        if command == "version":
            return {"result": "ok", "version": UTM_VERSION}
        if command == "list":
            return {"result": "ok", "vms": self.vms()}
        if not isinstance(identifier, str) or not self.find_vm(identifier):
            return {"result": "not_found"}
        if command in ("start", "stop") and "utmctl_osstatus" in self.config.faults and self.osstatus_failures_left > 0:
            self.osstatus_failures_left -= 1
            log.info("utmctl %s: injected OSStatus %d (%d left)", command, OSSTATUS_FAULT, self.osstatus_failures_left)
            return {"result": "event_error", "osstatus": OSSTATUS_FAULT}
        try:
            if command == "status":
                return {"result": "ok", "status": self.status}
            if command == "start":
                self.start_vm(disposable=bool(body.get("disposable")))
                return {"result": "ok"}
            if command == "stop":
                self.stop_vm(str(body.get("mode") or "force"))
                return {"result": "ok"}
            if command in ("ip-address", "exec", "file"):
                if self.status != "started":
                    raise HostError(OPERATION_NOT_AVAILABLE)
                raise HostError(NO_GUEST_AGENT)
            if command == "attach":
                return {"result": "ok", "serial": None}
            if command in ("suspend", "clone", "delete", "usb"):
                raise HostError(NOT_SUPPORTED)
        except HostError as exc:
            return {"result": "event_error", "osstatus": OSSTATUS_EVENT_FAILED, "message": exc.message}
        return {"result": "bad_request", "message": f"unknown command {command!r}"}
