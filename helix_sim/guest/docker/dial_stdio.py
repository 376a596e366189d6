"""``docker system dial-stdio``: a raw byte pipe between stdin/stdout and the engine socket."""

from __future__ import annotations

import os
import select
import socket

from .engine import cannot_connect, docker_host
from .output import CliError


def dial_stdio(stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Copy stdin → engine socket and engine socket → stdout until either side ends.

    As ``docker system dial-stdio`` does: stdin EOF half-closes the socket and waits for the
    engine to finish; engine EOF ends the pipe at once.
    """
    host = docker_host()
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(host[len("unix://"):])
        elif host.startswith("tcp://"):
            hostport = host[len("tcp://"):].rstrip("/")
            h, _, p = hostport.rpartition(":")
            sock = socket.create_connection((h, int(p)))
        else:
            raise CliError(f"unsupported DOCKER_HOST {host}")
    except OSError:
        raise cannot_connect() from None
    stdin_open = True
    try:
        while True:
            watch = [sock] + ([stdin_fd] if stdin_open else [])
            readable, _, _ = select.select(watch, [], [])
            if stdin_open and stdin_fd in readable:
                data = os.read(stdin_fd, 64 * 1024)
                if data:
                    sock.sendall(data)
                else:
                    stdin_open = False
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
            if sock in readable:
                data = sock.recv(64 * 1024)
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    n = os.write(stdout_fd, view)
                    view = view[n:]
    except (BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        sock.close()
