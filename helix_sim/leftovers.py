"""What an earlier simulator left behind when it was killed, found and removed only when provably ours and dead.

Every simulator writes an owner marker (:data:`MARKER`) into its root: its pid and start time, and the pid and
start time of the process that launched it (the harness, a shell). At start, ``python -m helix_sim up`` looks
in the temp dir for simulator roots (``helix-sim-*``, the ``sim`` folder of a harness's ``helix-e2e-sim-*``)
that carry a marker of the current user whose simulator **and** launcher are both gone (a pid that exists
again with another start time counts as gone). For each it stops the processes that still belong to that root
(its sshd and watchdog, guest commands marked with it) and removes the root; a harness's ``helix-e2e-sim-*``
folder goes too once nothing but the simulator's stderr log is left in it. Anything unmarked, anyone
else's, or still owned by a live process is left alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("helix_sim.leftovers")

#: The owner marker in a simulator's root.
MARKER = ".helix-sim-owner.json"
#: Temp-dir prefixes of simulator roots: ``sim up``'s own temp root, and the harness's launch folder.
ROOT_PREFIXES = ("helix-sim-",)
LAUNCH_PREFIXES = ("helix-e2e-sim-",)
#: What a harness's launch folder holds besides the root (harness/runs/provision.py).
LAUNCH_LOGS = frozenset({"sim.stderr.log"})
_CREATE_TIME_SLACK = 0.05


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError):
        return None


def write_marker(root: Path) -> None:
    """Record this process (the simulator) and its parent (who launched it) as the root's owners."""
    me, parent = os.getpid(), os.getppid()
    data = {"format": 1, "pid": me, "start": _start_time(me), "launcher_pid": parent,
            "launcher_start": _start_time(parent), "root": str(root), "written": time.time()}
    tmp = root / (MARKER + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(root / MARKER)


def _alive(pid: Any, start: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    now = _start_time(pid)
    if now is None:
        return False
    return not isinstance(start, (int, float)) or abs(now - start) <= _CREATE_TIME_SLACK


def _read_marker(root: Path) -> dict[str, Any] | None:
    marker = root / MARKER
    try:
        if marker.is_symlink() or not marker.is_file() or marker.stat().st_uid != os.getuid():
            return None
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != 1 or data.get("root") != str(root):
        return None
    return data


def dead_roots(temp_dir: str | Path | None = None) -> list[Path]:
    """Simulator roots in ``temp_dir`` with our marker whose simulator and launcher are both gone."""
    base = Path(temp_dir or tempfile.gettempdir())
    found: list[Path] = []
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return found
    for entry in entries:
        try:
            if entry.is_symlink() or not entry.is_dir() or entry.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if entry.name.startswith(ROOT_PREFIXES):
            candidate = entry
        elif entry.name.startswith(LAUNCH_PREFIXES):
            candidate = entry / "sim"
        else:
            continue
        data = _read_marker(candidate)
        if data is None:
            continue
        if _alive(data.get("pid"), data.get("start")) or _alive(data.get("launcher_pid"), data.get("launcher_start")):
            continue
        found.append(candidate)
    return found


def _stop_what_belongs_to(root: Path) -> int:
    """Processes of ``root`` still running: its sshd/watchdog (their command lines name the root) and guest
    commands (marked with its VM)."""
    import psutil

    from .vm.processes import stop_guest_processes, stop_procs

    needle = str(root) + os.sep
    mine = []
    for p in psutil.process_iter(["cmdline", "uids"]):
        try:
            if p.pid == os.getpid() or p.info["uids"] is None or p.info["uids"].real != os.getuid():
                continue
            if any(needle in arg for arg in (p.info["cmdline"] or [])):
                mine.append(p)
        except psutil.Error:
            continue
    if mine:
        stop_procs(mine)
    return len(mine) + stop_guest_processes(str(root / "vm"))


def clean_leftovers(temp_dir: str | Path | None = None) -> list[Path]:
    """Stop and remove every dead simulator root (see the module's doc); returns what was removed."""
    removed: list[Path] = []
    for root in dead_roots(temp_dir):
        stopped = _stop_what_belongs_to(root)
        shutil.rmtree(root, ignore_errors=True)
        if root.exists():
            log.warning("could not remove the dead simulator root %s", root)
            continue
        removed.append(root)
        parent = root.parent
        if parent.name.startswith(LAUNCH_PREFIXES):
            try:
                rest = {p.name for p in parent.iterdir()}
            except OSError:
                rest = {"?"}
            if rest <= LAUNCH_LOGS:
                shutil.rmtree(parent, ignore_errors=True)
        log.info("removed the dead simulator root %s (%d leftover processes stopped)", root, stopped)
    return removed
