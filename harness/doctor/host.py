"""The Mac itself: utmctl and the GUI login it needs, Hypervisor.framework, the frame-export port, disk and
memory.

Checks ``utmctl`` (it reaches UTM.app and lists the configured VM; Apple Events need the logged-in GUI
session, so SSH sessions fail: ``macos-frame-export.md`` §6, prior-art §5), ``hvf``, ``frame_export_port``
(free, or held by the running QEMU), ``disk`` and ``memory``. Thresholds:

- ``disk``: fail below :data:`DISK_FAIL_BYTES` (2 GiB) free on the reports dir, warn below
  :data:`DISK_WARN_BYTES` (5 GiB): a run keeps recordings, thumbnails and logs.
- ``memory``: fail below :data:`MEMORY_FAIL_BYTES` (1 GiB) available, warn below
  :data:`MEMORY_WARN_BYTES` (4 GiB): the harness decodes the stream (PyAV) next to a running VM.

The checks read these thresholds from this module, so a test that lowers one patches it here.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import socket
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping

from ..config import TargetConfig, expand
from ..errors import HarnessError
from .report import FAIL, OK, WARN, Check, DoctorError, host_system, sim_unprovisioned, skipped_for_sim

__all__ = [
    "GIB", "DISK_FAIL_BYTES", "DISK_WARN_BYTES", "MEMORY_FAIL_BYTES", "MEMORY_WARN_BYTES", "QEMU_PROCESS_MARKERS",
    "check_utmctl", "check_hvf", "port_listeners", "check_frame_export_port", "check_disk", "check_memory",
]

GIB = 1 << 30
DISK_FAIL_BYTES = 2 * GIB
DISK_WARN_BYTES = 5 * GIB
MEMORY_FAIL_BYTES = 1 * GIB
MEMORY_WARN_BYTES = 4 * GIB

#: A listening process whose name contains one of these is QEMU (UTM runs it as QEMULauncher).
QEMU_PROCESS_MARKERS = ("qemu",)

_FIX_NO_GUI = (
    "run the harness inside the Mac's logged-in GUI session (an auto-login user; Terminal.app or a "
    "LaunchAgent, not SSH), and allow the terminal to control UTM (System Settings → Privacy & Security → Automation)"
)


# -- utmctl ----------------------------------------------------------------------------------------------
def _over_ssh(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("SSH_CONNECTION") or environ.get("SSH_TTY"))


def check_utmctl(
    target: TargetConfig,
    *,
    system: str | None = None,
    environ: Mapping[str, str] | None = None,
    command_timeout: float = 15.0,
) -> Check:
    """utmctl is there and executable, reaches UTM.app (GUI login), and lists the configured VM."""
    name = "utmctl"
    if sim_unprovisioned(target):
        return skipped_for_sim(name, "its utmctl emulator")
    system = host_system(system)
    environ = os.environ if environ is None else environ
    path = Path(expand(target.vm.utmctl))
    if not path.exists():
        if system != "Darwin":
            return Check(name, WARN, f"skipped: not macOS ({system or 'unknown OS'}); no utmctl at {path}",
                         "run the doctor on the Mac that runs UTM")
        return Check(name, FAIL, f"utmctl not found at {path}",
                     "install UTM (https://mac.getutm.app) or set [vm] utmctl in the target config")
    if not path.is_file() or not os.access(path, os.X_OK):
        return Check(name, FAIL, f"{path} is not an executable file", f"chmod +x {shlex.quote(str(path))} or fix [vm] utmctl")
    from ..drivers.utm import UtmDriver, UtmNoGuiError

    ssh = system == "Darwin" and _over_ssh(environ)
    ssh_note = " (this shell is an SSH session: SSH_CONNECTION/SSH_TTY are set)" if ssh else ""
    # The driver wants a VM id; `list` needs none, so a placeholder lets the doctor list VMs without one.
    vm = target.vm if target.vm.id else replace(target.vm, id="-")
    driver = UtmDriver(vm, command_timeout=command_timeout)
    try:
        entries = driver.list()
    except UtmNoGuiError:
        return Check(name, FAIL,
                     "utmctl cannot reach UTM.app: it does not work from SSH sessions or before a GUI login "
                     f"(Apple Events fail with OSStatus -1743 errAEEventNotPermitted / -600 procNotFound){ssh_note}",
                     _FIX_NO_GUI, data={"cause": "utmctl_no_gui"})
    except HarnessError as exc:
        return Check(name, FAIL, f"`utmctl list` failed: {exc.message}{ssh_note}",
                     exc.hint or "open UTM.app once in the GUI session and retry")
    listing = ", ".join(f"{e.name} ({e.uuid}, {e.status})" for e in entries) or "no VMs"
    if not target.vm.id:
        return Check(name, FAIL, f"no [vm] id configured; `utmctl list` shows: {listing}",
                     "set [vm] id in the target config to the VM's UUID (column 1 of `utmctl list`)")
    wanted = target.vm.id
    entry = next((e for e in entries if e.uuid.lower() == wanted.lower()), None) or next(
        (e for e in entries if e.name == wanted), None)
    if entry is None:
        return Check(name, FAIL, f"VM {wanted} is not in `utmctl list` (it shows: {listing})",
                     "set [vm] id to a UUID from `utmctl list` (a re-created VM gets a new UUID)")
    data = {"vm_status": entry.status, "vm_name": entry.name, "vm_uuid": entry.uuid}
    finding = f"VM {entry.name} ({entry.uuid}) is {entry.status}"
    if ssh:
        return Check(name, WARN,
                     f"{finding}, but this shell is an SSH session: utmctl calls from SSH often fail with "
                     "OSStatus -1743/-600 (Apple Events need the GUI login session)", _FIX_NO_GUI, data)
    return Check(name, OK, finding, "", data)


# -- hvf -------------------------------------------------------------------------------------------------
def _sysctl_hv_support() -> str:
    proc = subprocess.run(["sysctl", "-n", "kern.hv_support"], capture_output=True, text=True, timeout=10,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DoctorError(f"sysctl kern.hv_support: {(proc.stderr.strip() or 'unknown oid')}")
    return proc.stdout.strip()


def check_hvf(*, system: str | None = None, sysctl: Callable[[], str] | None = None, sim: bool = False) -> Check:
    """``sysctl -n kern.hv_support`` is 1: Hypervisor.framework is there, so QEMU's hvf accelerator works."""
    name = "hvf"
    if sim:
        return Check(name, OK, "skipped: simulator target (no VM)")
    system = host_system(system)
    if system != "Darwin":
        return Check(name, OK, "skipped: not macOS")
    fix = ("run on Apple Silicon hardware with a logged-in GUI user, not inside a VM: GitHub's arm64 macOS "
           "runners cannot nest VMs")
    try:
        value = (sysctl or _sysctl_hv_support)()
    except FileNotFoundError:
        return Check(name, WARN, "cannot run sysctl", "check PATH (sysctl lives in /usr/sbin)")
    except (DoctorError, subprocess.SubprocessError, OSError) as exc:
        return Check(name, FAIL, f"kern.hv_support is missing: no Hypervisor.framework here ({exc})", fix)
    if value == "1":
        return Check(name, OK, "kern.hv_support = 1 (Hypervisor.framework available)")
    return Check(name, FAIL, f"kern.hv_support = {value or '(empty)'}: no Hypervisor.framework, QEMU cannot use hvf", fix)


# -- frame_export_port -----------------------------------------------------------------------------------
def _port_bindable(host: str, port: int) -> tuple[bool | None, str]:
    """Can QEMU bind ``host:port`` now? (True, "") / (False, reason) / (None, reason) when we cannot tell."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return None, f"cannot resolve {host}: {exc.strerror}"
    family, socktype, proto, _, addr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server does: ignore TIME_WAIT leftovers
        sock.bind(addr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return False, "address in use"
        return None, exc.strerror or str(exc)
    finally:
        sock.close()
    # BSD lets a specific-address bind succeed next to a wildcard listener: make sure nobody answers.
    try:
        with socket.create_connection(addr[:2], timeout=0.5):
            return False, "something accepts connections"
    except OSError:
        return True, ""


def port_listeners(port: int) -> list[tuple[int | None, str, str]]:
    """``(pid, name, cmdline)`` of processes listening on TCP ``port``; pid None when hidden (another user)."""
    import psutil

    def proc_info(pid: int | None) -> tuple[int | None, str, str]:
        if pid is None:
            return None, "unknown (another user's process?)", ""
        try:
            proc = psutil.Process(pid)
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return pid, "unknown", ""
        try:
            cmdline = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            cmdline = ""
        return pid, name, cmdline

    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # macOS needs root for the system-wide table: scan our own processes
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                getter = getattr(proc, "net_connections", None) or proc.connections
                if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in getter(kind="tcp")):
                    found.append(proc_info(proc.pid))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found
    pids = []
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid not in pids:
            pids.append(c.pid)
    return [proc_info(pid) for pid in pids]


def _is_qemu(name: str, cmdline: str, *, sim: bool) -> bool:
    if any(marker in name.lower() for marker in QEMU_PROCESS_MARKERS):
        return True
    # The simulator's QEMU stand-in runs inside `python -m helix_sim up` or `helix-e2e sim up`.
    return sim and ("helix_sim" in cmdline or "helix-e2e sim up" in cmdline)


def check_frame_export_port(
    host: str,
    port: int,
    *,
    vm_status: str | None = None,
    sim: bool = False,
    listeners: Callable[[int], list[tuple[int | None, str, str]]] = port_listeners,
) -> Check:
    """The frame-export port is free (VM not running) or held by the running QEMU; anything else holding it
    makes QEMU log ``Failed to bind TCP socket on port N`` and the frame export never starts."""
    name = "frame_export_port"
    where = f"{host}:{port}"
    free, reason = _port_bindable(host, port)
    if free is None:
        return Check(name, WARN, f"cannot test {where}: {reason}", "check [frame_export] host (QEMU listens on 127.0.0.1)")
    owners = [] if free else listeners(port)
    data = {"port": port, "listeners": [{"pid": pid, "name": pname} for pid, pname, _ in owners]}
    if free:
        if vm_status == "started":
            return Check(name, WARN,
                         f"the VM is started but nothing listens on {where}: QEMU's frame export is not running",
                         "check QEMU's log for `Failed to bind TCP socket on port` and that helix-port / "
                         "HELIX_FRAME_EXPORT_PORT match [frame_export] port", data)
        return Check(name, OK, f"{where} is free (QEMU binds it when the VM starts)", "", data)
    if not owners:
        return Check(name, FAIL,
                     f"{where} is in use by a process this user cannot see: QEMU would log "
                     f"`Failed to bind TCP socket on port {port}`",
                     f"find it with `lsof -nP -iTCP:{port} -sTCP:LISTEN` (perhaps with sudo) and stop it", data)
    others = [(pid, pname) for pid, pname, cmd in owners if not _is_qemu(pname, cmd, sim=sim)]
    if others:
        who = ", ".join(f"pid {pid} ({pname})" if pid is not None else pname for pid, pname in others)
        kill = " ".join(str(pid) for pid, _ in others if pid is not None)
        return Check(name, FAIL,
                     f"{where} is held by {who}, not QEMU: QEMU will log `Failed to bind TCP socket on port {port}` "
                     "and the frame export won't start",
                     f"stop it{f' (kill {kill})' if kill else ''}, or move the frame export to a free port "
                     "([frame_export] port and QEMU's helix-port / HELIX_FRAME_EXPORT_PORT)", data)
    who = ", ".join(f"pid {pid} ({pname})" for pid, pname, _ in owners)
    if vm_status == "stopped":
        return Check(name, FAIL,
                     f"{where} is held by {who} while the VM is stopped: a stale QEMU; the next start will log "
                     f"`Failed to bind TCP socket on port {port}`",
                     f"quit the stale QEMU (kill {' '.join(str(p) for p, _, _ in owners if p is not None)}) "
                     "or stop the other VM that uses this port", data)
    qemu = "the simulator's QEMU" if sim and not any(_is_qemu(n, "", sim=False) for _, n, _ in owners) else "the running QEMU"
    return Check(name, OK, f"{where} is held by {qemu}: {who}", "", data)


# -- disk / memory ---------------------------------------------------------------------------------------
def check_disk(reports_dir: str | os.PathLike[str] = "reports") -> Check:
    """Free space where the run writes artifacts (the nearest existing parent of ``reports_dir``)."""
    name = "disk"
    path = Path(expand(str(reports_dir))).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    finding = f"{free / GIB:.1f} GiB free for {path}"
    fix = "free disk space (a run keeps recordings, thumbnails and logs) or pass --report-dir on another disk"
    data = {"free_bytes": free, "path": str(path)}
    if free < DISK_FAIL_BYTES:
        return Check(name, FAIL, f"{finding} (need at least {DISK_FAIL_BYTES / GIB:.0f} GiB)", fix, data)
    if free < DISK_WARN_BYTES:
        return Check(name, WARN, f"{finding} (below {DISK_WARN_BYTES / GIB:.0f} GiB)", fix, data)
    return Check(name, OK, finding, "", data)


def check_memory(*, available: int | None = None) -> Check:
    """Available memory (psutil): the harness decodes video next to a VM that holds its own RAM."""
    import psutil

    name = "memory"
    vm = psutil.virtual_memory()
    avail = vm.available if available is None else available
    finding = f"{avail / GIB:.1f} GiB available of {vm.total / GIB:.1f} GiB"
    fix = "close other applications or give the VM less memory in UTM"
    data = {"available_bytes": avail, "total_bytes": vm.total}
    if avail < MEMORY_FAIL_BYTES:
        return Check(name, FAIL, f"{finding} (need at least {MEMORY_FAIL_BYTES / GIB:.0f} GiB)", fix, data)
    if avail < MEMORY_WARN_BYTES:
        return Check(name, WARN, f"{finding} (below {MEMORY_WARN_BYTES / GIB:.0f} GiB)", fix, data)
    return Check(name, OK, finding, "", data)
