"""A real ``qemu-system-aarch64`` in place of Helix.app's: the launcher the harness runs as "the bundled QEMU".

The harness starts Helix.app's QEMU with the app's command line (HVF, qemu-utm's ``helix-port``, SPICE
with ``gl=es``), which no QEMU on a Linux CI host can run. The sim's "bundled QEMU" is this launcher
(``<root>/host/bin/qemu-system-aarch64``, written by :func:`write_launcher`). It

1. reads what the sim needs from the app's command line (:func:`parse_app_argv`: the QMP port, the
   SLIRP host forwards, ``helix-port``, the ``-spice`` value);
2. hands the sim (:class:`helix_sim.host.helix_app.HelixAppHost`, over a unix socket) its PID and its
   stdout/stderr file descriptors (SCM_RIGHTS), so the sim can write the console and the ``helix:``
   lines where QEMU's own output goes;
3. ``exec``\\ s the real QEMU the sim answers with (:func:`real_argv`): TCG, ``-M none`` (no CPU, ~0 %
   CPU: helix-app-vm.md §7), no disk, QMP on the harness's port plus a private QMP port for the sim.

So the PID the harness holds, its process group, its QMP, its events and its exit are a real QEMU's.
``--version`` execs the real QEMU's. Stdlib only: it starts for every boot.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .._paths import write_python_launcher

#: The unix socket of the sim's Helix.app host (set by the launcher script).
CONTROL_ENV = "HELIX_SIM_APP_CONTROL"
QEMU_NAME = "qemu-system-aarch64"
#: How long the launcher waits for the sim's answer.
CONTROL_TIMEOUT_S = 30.0


def find_qemu() -> str | None:
    """The real ``qemu-system-aarch64`` on this host (Debian: package ``qemu-system-arm``), or None."""
    return shutil.which(QEMU_NAME)


@dataclass
class AppArgs:
    """What the sim reads from Helix.app's QEMU command line."""

    qmp: tuple[str, int] | None = None
    hostfwd: list[tuple[str, int, int]] = field(default_factory=list)  # (host address, host port, guest port)
    helix_port: int | None = None
    spice: str | None = None

    def forward_to(self, guest_port: int) -> int | None:
        """The host port forwarded to ``guest_port`` (22: SSH, 8080: the API)."""
        return next((hp for _, hp, gp in self.hostfwd if gp == guest_port), None)


def _opts(value: str) -> list[str]:
    return [part for part in value.split(",") if part]


def parse_app_argv(argv: list[str]) -> AppArgs:
    """The QMP address (``-qmp tcp:HOST:PORT,…``), ``hostfwd=tcp:[HOST]:PORT-:GUEST`` rules, ``helix-port=``
    of the GPU device and the ``-spice`` value. Anything unparsable is left out."""
    out = AppArgs()
    it = iter(range(len(argv)))
    for i in it:
        flag = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if flag == "-qmp" and value.startswith("tcp:"):
            addr = _opts(value[4:])[0] if _opts(value[4:]) else ""
            host, _, port = addr.rpartition(":")
            if port.isdigit():
                out.qmp = (host or "127.0.0.1", int(port))
        elif flag == "-netdev":
            for opt in _opts(value):
                if opt.startswith("hostfwd=tcp:"):
                    rule = opt[len("hostfwd=tcp:"):]
                    host_part, _, guest_part = rule.partition("-")
                    host, _, port = host_part.rpartition(":")
                    guest_port = guest_part.rpartition(":")[2]
                    if port.isdigit() and guest_port.isdigit():
                        out.hostfwd.append((host, int(port), int(guest_port)))
        elif flag == "-device" and "helix-port=" in value:
            for opt in _opts(value):
                if opt.startswith("helix-port=") and opt[len("helix-port="):].isdigit():
                    out.helix_port = int(opt[len("helix-port="):])
        elif flag == "-spice":
            out.spice = value
    return out


def real_argv(qemu: str, *, qmp_port: int, monitor_port: int, extra: tuple[str, ...] = ()) -> list[str]:
    """A real QEMU with no guest: no machine (so no CPU spins), no devices, QMP for the harness on
    ``127.0.0.1:qmp_port`` and a second QMP monitor on ``127.0.0.1:monitor_port`` for the sim (QEMU serves
    one client per monitor; events go to every monitor). TCP, not a unix socket: a sim root can be deeper
    than a socket path may be long."""
    return [qemu, "-M", "none", "-nodefaults", "-display", "none", "-name", "helix-sim-vm",
            "-qmp", f"tcp:127.0.0.1:{qmp_port},server,nowait",
            "-qmp", f"tcp:127.0.0.1:{monitor_port},server,nowait", *extra]


def control_address(value: str) -> str:
    """The control socket's address for ``socket.connect``/``bind``: ``@name`` is Linux's abstract namespace
    (no path, no length trouble, nothing to remove), anything else a path."""
    return "\0" + value[1:] if value.startswith("@") else value


def _fail(message: str) -> int:
    sys.stderr.write(f"{QEMU_NAME}: {message}\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-version"]):
        real = find_qemu()
        if real is None:
            return _fail("no real qemu-system-aarch64 on this host (install qemu-system-arm)")
        os.execv(real, [real, "--version"])
    control = os.environ.get(CONTROL_ENV, "")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONTROL_TIMEOUT_S)
            sock.connect(control_address(control))
            message = json.dumps({"argv": argv, "pid": os.getpid()}).encode() + b"\n"
            socket.send_fds(sock, [message], [1, 2])
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        return _fail(f"helix-e2e simulator not reachable at {control!r}: {exc.strerror or exc}")
    try:
        answer = json.loads(reply.decode())
    except ValueError:
        return _fail("helix-e2e simulator gave no usable answer")
    if answer.get("error"):
        return _fail(str(answer["error"]))
    exec_argv = [str(a) for a in answer.get("exec") or []]
    if not exec_argv:
        return _fail("helix-e2e simulator gave no QEMU to run")
    os.execv(exec_argv[0], exec_argv)
    return 1  # not reached


def write_launcher(path: str | os.PathLike[str], *, control: str | os.PathLike[str], python: str | None = None
                   ) -> Path:
    """The sim's "bundled QEMU": a shell script that runs this module with the right interpreter and path."""
    where = str(control) if str(control).startswith("@") else str(Path(control).absolute())
    return write_python_launcher(path, module="helix_sim.host.real_qemu", python=python, python_flags="-s",
                                 env={CONTROL_ENV: where}, comment=[
                                     "qemu-system-aarch64 of the helix-e2e simulator's Helix.app: hands its output "
                                     "to the sim, then", "execs a real QEMU (see helix_sim/host/real_qemu.py)."])


if __name__ == "__main__":
    raise SystemExit(main())
