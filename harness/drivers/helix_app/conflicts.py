"""What must not run beside the harness's QEMU: Helix.app itself, a stale QEMU, anything on the app's ports.

Helix.app's ``Start()`` calls ``killStaleQEMU``, which SIGKILLs the process group in ``qemu.pid`` and any
PID ``lsof -ti tcp:41444`` names (helix-app-vm.md §5): a running app kills our QEMU, and a stale QEMU
(the app's, or ours from a run that was killed) holds the ports ours needs. The provider refuses to boot
while any of these exist and the doctor reports them; both say which process it is and how to stop it.
Light on purpose (the doctor imports it): psutil and sockets only.
"""

from __future__ import annotations

import errno
import shlex
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ...config import TargetConfig, expand

#: The app's executable inside any Helix.app bundle (/Applications, or a dev build's for-mac/build/bin).
APP_EXECUTABLE = "Helix.app/Contents/MacOS/Helix for Mac"
#: The file the app writes its QEMU's PID to (equal to its process group), in the data dir.
APP_PID_FILE = "qemu.pid"
#: The file the harness writes its own QEMU's PID and QMP port to, to adopt it after a killed run.
OWN_PID_FILE = "helix-e2e-qemu.pid"
#: A process is QEMU when its name or first argument contains this.
QEMU_MARKER = "qemu-system"
#: The port names of [vm], in the order they are checked, with what uses them.
PORT_ROLES = (("qmp_port", "QMP"), ("ssh_port", "SSH forward"), ("api_port", "API forward"),
              ("frame_export_port", "frame export"))


@dataclass(frozen=True)
class Proc:
    pid: int
    cmdline: str

    def describe(self) -> str:
        text = self.cmdline if len(self.cmdline) <= 160 else self.cmdline[:157] + "..."
        return f"pid {self.pid} ({text})" if text else f"pid {self.pid}"


@dataclass(frozen=True)
class Conflict:
    """Something that stops our QEMU from running safely: its cause (a row of harness/causes.py), one line
    saying what and why, and how to stop it."""

    cause: str  # helix_app_running | stale_qemu_pid | helix_app_port_busy
    finding: str
    fix: str
    pid: int | None = None
    source: str = "port"  # how it was found: "app" (a running Helix.app), "pid_file" (qemu.pid), "port"


def _proc(pid: int) -> Proc | None:
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        try:
            cmd = " ".join(p.cmdline()) or p.name()
        except (psutil.AccessDenied, psutil.ZombieProcess):
            cmd = p.name()
        return Proc(pid, cmd)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return Proc(pid, "")


def is_qemu(proc: Proc) -> bool:
    return QEMU_MARKER in proc.cmdline.split(" ", 1)[0] or QEMU_MARKER in proc.cmdline[:200]


def app_data_dir_of(home: str) -> str:
    return os.path.join(home, "Library", "Application Support", "Helix")


def helix_app_processes(data_dir: str) -> list[Proc]:
    """Running Helix.app executables that use ``data_dir`` (the app's data dir is under its user's HOME; one
    whose environment we cannot read counts, to be safe)."""
    import psutil

    want = os.path.realpath(expand(data_dir))
    found: list[Proc] = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            argv = p.info.get("cmdline") or []
            if not any(isinstance(a, str) and a.endswith(APP_EXECUTABLE) for a in argv[:2]):
                continue
            try:
                home = p.environ().get("HOME", "")
            except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
                home = ""
            if home and os.path.realpath(app_data_dir_of(home)) != want:
                continue  # another user's (or another simulated host's) Helix.app, with its own data dir
            found.append(Proc(p.pid, " ".join(argv)))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def read_pid_file(path: Path) -> tuple[int, list[str]] | None:
    """``(pid, rest of the line)`` from a pid file, or None when missing or unreadable."""
    try:
        words = path.read_text().split()
        return int(words[0]), words[1:]
    except (OSError, ValueError, IndexError):
        return None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Can a server bind ``host:port`` now, and does nothing answer there?"""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return False
        raise
    finally:
        sock.close()
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return False
    except OSError:
        return True


def port_holders(port: int) -> list[Proc]:
    """Processes listening on TCP ``port`` (our own user's, where the system table is closed to us)."""
    import psutil

    pids: list[int] = []
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid and c.pid not in pids:
                pids.append(c.pid)
    except psutil.AccessDenied:  # macOS: the system-wide table needs root; scan our own processes
        for p in psutil.process_iter(["pid"]):
            try:
                getter = getattr(p, "net_connections", None) or p.connections
                if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in getter(kind="tcp")):
                    pids.append(p.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
    return [proc for proc in (_proc(pid) for pid in pids) if proc is not None]


def _kill_fix(proc: Proc) -> str:
    return f"kill {proc.pid}   # then check: ps -p {proc.pid}"


def find_conflicts(target: TargetConfig, *, own_pid: int | None = None) -> list[Conflict]:
    """Everything that must go before the harness starts its QEMU; ``own_pid`` (our adopted QEMU) is ours."""
    vm = target.vm
    data_dir = Path(expand(vm.data_dir))
    out: list[Conflict] = []
    for app in helix_app_processes(vm.data_dir):
        out.append(Conflict(
            "helix_app_running",
            f"Helix.app is running ({app.describe()}): its killStaleQEMU would SIGKILL the harness's QEMU",
            "quit it: osascript -e 'quit app \"Helix\"'   (the app survives SIGTERM; then: " + _kill_fix(app) + ")",
            app.pid, "app"))
    recorded = read_pid_file(data_dir / APP_PID_FILE)
    if recorded is not None and recorded[0] != own_pid:
        proc = _proc(recorded[0])
        if proc is not None:
            out.append(Conflict(
                "stale_qemu_pid",
                f"{data_dir / APP_PID_FILE} names {proc.describe()}, which still runs: a stale QEMU of Helix.app",
                f"{_kill_fix(proc)}; then rm {shlex.quote(str(data_dir / APP_PID_FILE))}", proc.pid, "pid_file"))
    seen: set[int | None] = set()  # one line per process holding ports (it may be the one qemu.pid names too)
    for name, role in PORT_ROLES:
        port = getattr(vm, name)
        if port_free(port):
            continue
        holders = [h for h in port_holders(port) if h.pid != own_pid]
        if not holders and own_pid is not None:
            continue  # ours (the adopted QEMU, or the simulator's forward on its behalf)
        if not holders:
            out.append(Conflict("helix_app_port_busy", f"{role} port {port} ([vm] {name}) is in use by a process "
                                "this user cannot see", f"find it: lsof -nP -iTCP:{port} -sTCP:LISTEN (sudo)"))
            continue
        for holder in holders:
            if holder.pid in seen:
                continue
            seen.add(holder.pid)
            if APP_EXECUTABLE in holder.cmdline:
                cause, what = "helix_app_running", "Helix.app"
            elif is_qemu(holder):
                cause, what = "stale_qemu_pid", "a stale QEMU"
            else:
                cause, what = "helix_app_port_busy", "another process"
            out.append(Conflict(cause, f"{role} port {port} ([vm] {name}) is held by {what}: {holder.describe()}",
                                _kill_fix(holder) if cause != "helix_app_port_busy" else
                                f"stop it ({_kill_fix(holder)}) or move [vm] {name}", holder.pid))
    return out
