"""The guest's processes, seen from the host: stopping a process tree bottom-up (SIGTERM, a grace
period, SIGKILL) and, when the simulator runs as its own process, adopting and reaping orphaned guest
commands (Linux's child subreaper).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

import psutil

from .._wait import poll_until
from ..errors import SimTimeout

log = logging.getLogger("helix_sim.vm")

#: How long shutdown() gives sshd and its sessions to exit after SIGTERM before SIGKILL.
STOP_GRACE = 3.0
_PR_SET_CHILD_SUBREAPER = 36
_subreaper = False


def become_subreaper() -> bool:
    """Linux: adopt orphaned descendants, so :meth:`~helix_sim.vm.sshd.GuestVM.shutdown` can stop *and reap* them.

    A guest command whose SSH connection closed mid-command (the client was interrupted) leaves
    sshd's tree; without this it is re-parented to PID 1, which may not reap it. Only for a
    process that runs nothing but the simulator (``python -m helix_sim up``).
    """
    global _subreaper
    if sys.platform.startswith("linux") and not _subreaper:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        except (OSError, AttributeError):
            _subreaper = False
    return _subreaper


def reap_adopted() -> None:
    """Reap exited children we adopted as subreaper (nothing else of ours is left by then)."""
    if not _subreaper:
        return
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError, OSError):
            pass


def descendants(pid: int) -> list[tuple[int, psutil.Process]]:
    """(depth, process) for every descendant of ``pid`` (depth 1 = child)."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for p in procs:
        depth, cur = 1, p
        try:
            while (parent := cur.ppid()) != pid and parent > 1 and depth < 64:
                depth += 1
                cur = psutil.Process(parent)
        except psutil.Error:
            pass
        out.append((depth, p))
    return out


def gone(p: psutil.Process) -> bool:
    """Exited (a zombie has exited; its parent reaps it)."""
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def stop_procs(procs: list[psutil.Process]) -> None:
    """SIGTERM, wait up to STOP_GRACE, then SIGKILL and wait again."""
    for method in ("terminate", "kill"):
        alive = [p for p in procs if not gone(p)]
        if not alive:
            return
        for p in alive:
            try:
                getattr(p, method)()
            except psutil.Error:
                pass
        try:
            poll_until(lambda: all(gone(p) for p in alive), timeout=STOP_GRACE, what="sshd sessions to exit",
                       phase="ssh", interval=0.005, max_interval=0.05)
        except SimTimeout:
            log.warning("%d sshd session process(es) ignored %s", sum(not gone(p) for p in alive), method)


#: Set by guest-env.sh in every guest process: the VM root (finds commands that outlived their session).
GUEST_ENV = "HELIX_SIM_GUEST"


def stop_tree(pid: int) -> None:
    """Stop ``pid``'s descendants bottom-up, deepest first (per-connection sshd processes and their sessions
    call setsid(), so no process group covers them; each parent is still there to reap its children), then
    what was forked meanwhile, then ``pid`` itself (not waited for: its parent reaps it)."""
    tree = descendants(pid)
    for level in sorted({depth for depth, _ in tree}, reverse=True):
        stop_procs([p for depth, p in tree if depth == level])
    stop_procs([p for _, p in descendants(pid)])
    try:
        os.kill(pid, 15)
    except (ProcessLookupError, PermissionError):
        pass


def stop_guest_processes(marker: str) -> int:
    """Stop every process whose environment carries ``HELIX_SIM_GUEST=<marker>`` (this VM's guest commands);
    returns how many there were."""
    me = os.getpid()
    strays = []
    for p in psutil.process_iter():
        if p.pid == me:
            continue
        try:
            if p.environ().get(GUEST_ENV) == marker:
                strays.append(p)
        except psutil.Error:
            continue
    if strays:
        log.debug("stopping %d guest process(es) that outlived their SSH session", len(strays))
        stop_procs(strays)
    return len(strays)
