"""The guest sshd's keeper: sshd dies with the simulator, whatever ends the simulator.

The VM (:class:`~helix_sim.vm.sshd.GuestVM`) starts ``python -m helix_sim.vm.watchdog --root VM_ROOT -- sshd -D
…`` in a session of its own, with a pipe on stdin whose write end only the simulator holds. The watchdog
runs sshd as its child with a parent-death signal (``PR_SET_PDEATHSIG``: SIGTERM when the watchdog goes),
and then:

- sshd exits: the watchdog exits with sshd's status (the VM sees it as sshd's exit);
- SIGTERM/SIGINT (the VM's own shutdown): sshd and its sessions are stopped, then the watchdog exits;
- EOF on stdin: the simulator is gone (``kill -9``, a crash, a killed pytest): the watchdog stops sshd's
  tree bottom-up and every guest process that carries the VM's marker (``HELIX_SIM_GUEST``), reaps them
  and exits.

It imports nothing of the simulator but :mod:`helix_sim.vm.processes`.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import signal
import subprocess
import sys
from typing import Any, Sequence

from .processes import stop_guest_processes, stop_tree

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """preexec_fn (the forked child, before exec): SIGTERM when the watchdog dies; never outlive it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the EOF watch alone
        return
    if os.getppid() != parent:  # the watchdog died before the prctl took effect
        os._exit(1)


def _status(returncode: int) -> int:
    """A shell's view of a child's end: its exit status, or 128 + the signal that killed it."""
    return 128 - returncode if returncode < 0 else returncode


def watch(command: Sequence[str], *, marker: str, poll_s: float = 0.5) -> int:
    parent = os.getpid()
    stop: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        child = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, close_fds=True,
                                 preexec_fn=lambda: _die_with_parent(parent))
    except OSError as exc:
        print(f"helix-sim watchdog: cannot start {command[0]}: {exc}", file=sys.stderr, flush=True)
        return 127
    eof = False
    while child.poll() is None and not stop and not eof:
        try:
            ready, _, _ = select.select([sys.stdin.fileno()], [], [], poll_s)
        except InterruptedError:
            continue
        except (OSError, ValueError):  # no usable stdin: as if the simulator were gone
            eof = True
            break
        if ready:
            try:
                eof = not os.read(sys.stdin.fileno(), 4096)
            except OSError:
                eof = True
    if child.poll() is not None and not stop and not eof:
        return _status(child.returncode)
    if eof:
        print("helix-sim watchdog: the simulator is gone; stopping sshd and the guest's processes",
              file=sys.stderr, flush=True)
    stop_tree(child.pid)
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    if eof:
        stop_guest_processes(marker)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helix_sim.vm.watchdog")
    parser.add_argument("--marker", required=True, help="the HELIX_SIM_GUEST value of this VM's guest processes")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- sshd -D -e -f CONFIG")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to watch")
    return watch(command, marker=args.marker)


if __name__ == "__main__":
    raise SystemExit(main())
