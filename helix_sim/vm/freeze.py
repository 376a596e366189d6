"""The guest's processes frozen and thawed with QEMU's state: a paused VM (QMP ``stop``, event ``STOP``) or a
stuck main loop runs no guest code, so sshd, every SSH session and everything the guest started stop
(SIGSTOP) until the VM runs again (``RESUME``: SIGCONT). A frozen guest must be thawed before it is shut
down: a stopped process does not act on SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal

import psutil

from .processes import descendants

log = logging.getLogger("helix_sim.vm")

#: Set in every guest process by guest-env.sh (the VM root): how commands that left sshd's tree are found.
GUEST_ENV = "HELIX_SIM_GUEST"


def guest_processes(sshd_pid: int | None, root: str | os.PathLike[str]) -> list[psutil.Process]:
    """sshd, its sessions, and every process marked as the guest's (``HELIX_SIM_GUEST`` = the VM root)."""
    found: dict[int, psutil.Process] = {}
    if sshd_pid is not None:
        try:
            found[sshd_pid] = psutil.Process(sshd_pid)
        except psutil.Error:
            pass
        for _, proc in descendants(sshd_pid):
            found[proc.pid] = proc
    marker, me = str(root), os.getpid()
    for proc in psutil.process_iter():
        if proc.pid in found or proc.pid == me:
            continue
        try:
            if proc.environ().get(GUEST_ENV) == marker:
                found[proc.pid] = proc
        except psutil.Error:
            continue
    return list(found.values())


def signal_all(procs: list[psutil.Process], sig: int) -> int:
    """Send ``sig`` to each process still there; how many got it."""
    sent = 0
    for proc in procs:
        try:
            proc.send_signal(sig)
            sent += 1
        except psutil.Error:
            continue
    return sent


class GuestFreezer:
    """Freeze and thaw one guest (by its sshd and its VM root); idempotent both ways."""

    def __init__(self, guest) -> None:
        self.guest = guest
        self._frozen: list[psutil.Process] = []

    @property
    def frozen(self) -> bool:
        return bool(self._frozen)

    def freeze(self) -> int:
        if self._frozen:
            return len(self._frozen)
        procs = guest_processes(self.guest.sshd_pid, self.guest.root)
        signal_all(procs, signal.SIGSTOP)
        self._frozen = procs
        log.info("guest frozen (%d processes)", len(procs))
        return len(procs)

    def thaw(self) -> int:
        procs, self._frozen = self._frozen, []
        # Anything forked while freezing, too: a thaw must leave nothing stopped.
        procs += [p for p in guest_processes(self.guest.sshd_pid, self.guest.root)
                  if p.pid not in {q.pid for q in procs}]
        sent = signal_all(procs, signal.SIGCONT)
        if procs:
            log.info("guest thawed (%d processes)", sent)
        return sent
