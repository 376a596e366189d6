"""SSH to the guest (paramiko): readiness, commands, SFTP and local port forwards."""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import paramiko

from ..config import SshConfig
from ..deadline import Deadline
from ..errors import CommandError, CommandTimeout, HarnessError, PhaseTimeout
from ..redact import redact
from .base import CommandResult, CommandRunner, FileTransfer

log = logging.getLogger(__name__)

PHASE = "ssh"


class SshError(HarnessError):
    default_phase = PHASE


class HostKeyError(SshError):
    """The guest's host key is not the one in known_hosts (fatal, never retried)."""

    default_cause = "host_key_changed"


def _connect_failure_cause(exc: BaseException | None) -> str | None:
    """Why a connection attempt failed, from the exception paramiko or the socket raised:
    ``ssh_refused`` (nothing listens: sshd not up yet, or no port forward) or ``ssh_unresponsive``
    (the port accepts but no SSH banner ever comes); ``None`` when neither."""
    if isinstance(exc, (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError)):
        return "ssh_refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "ssh_unresponsive"
    # paramiko has no exception type for these two: its banner reader and its auth handler on a
    # transport that never started raise plain SSHException with these texts.
    if isinstance(exc, paramiko.SSHException) and any(t in str(exc) for t in ("banner", "No existing session")):
        return "ssh_unresponsive"
    return None


class _TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Accept an unknown host key once, record it in the known_hosts file, and log its fingerprint."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):  # noqa: D401 - paramiko API
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with self.known_hosts.open("a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        log.warning("trust-on-first-use: recorded host key %s %s for %s", key.get_name(), key.fingerprint, hostname)


def _close_quietly(chan: paramiko.Channel) -> None:
    """Closing a channel sends a message: on a dead transport (the VM went away) that raises EOFError."""
    try:
        chan.close()
    except (OSError, EOFError, paramiko.SSHException):
        pass


class LocalForward:
    """127.0.0.1:<local_port> → (remote_host, remote_port) through the SSH transport."""

    def __init__(self, transport: paramiko.Transport, remote_host: str, remote_port: int) -> None:
        self.transport = transport
        self.remote = (remote_host, remote_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.5)
        self.local_port = self._server.getsockname()[1]
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._chans: set[paramiko.Channel] = set()
        self._lock = threading.Lock()
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"fwd:{self.local_port}", daemon=True)
        self._accept_thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                conn, peer = self._server.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                break
            try:
                chan = self.transport.open_channel("direct-tcpip", self.remote, peer, timeout=10)
            except Exception as exc:  # noqa: BLE001 - reported, the client sees a closed socket
                log.warning("port forward to %s:%s failed: %s", *self.remote, exc)
                conn.close()
                continue
            with self._lock:
                self._conns.add(conn)
                self._chans.add(chan)
            t = threading.Thread(target=self._pump, args=(conn, chan), daemon=True)
            self._threads.append(t)
            t.start()

    def _pump(self, conn: socket.socket, chan: paramiko.Channel) -> None:
        try:
            while not self._closing.is_set():
                r, _, _ = select.select([conn, chan], [], [], 0.5)
                if conn in r:
                    data = conn.recv(65536)
                    if not data:
                        break
                    chan.sendall(data)
                if chan in r:
                    data = chan.recv(65536)
                    if not data:
                        break
                    conn.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
                self._chans.discard(chan)
            _close_quietly(chan)
            conn.close()

    def close(self) -> None:
        self._closing.set()
        try:
            self._server.close()
        except OSError:
            pass
        with self._lock:
            for c in list(self._conns):
                c.close()
            for ch in list(self._chans):
                _close_quietly(ch)
        self._accept_thread.join(timeout=2)
        for t in self._threads:
            t.join(timeout=2)


class SshDriver(CommandRunner, FileTransfer):
    """One paramiko connection to the guest. ``connect`` retries until its deadline."""

    def __init__(self, cfg: SshConfig) -> None:
        self.cfg = cfg
        self.client: paramiko.SSHClient | None = None
        self.forwards: list[LocalForward] = []

    # -- lifecycle -------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        t = self.client.get_transport() if self.client else None
        return bool(t and t.is_active())

    def _new_client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        known = Path(os.path.expanduser(self.cfg.known_hosts))
        if known.exists():
            try:
                client.load_host_keys(str(known))
            except (OSError, paramiko.SSHException, paramiko.hostkeys.InvalidHostKey, ValueError) as exc:
                raise SshError(f"cannot read known_hosts {known}: {exc}", hint="fix or remove the file") from None
        if self.cfg.trust_on_first_use:
            client.set_missing_host_key_policy(_TrustOnFirstUse(known))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return client

    def connect(self, timeout: float, on_wait=None) -> None:
        """Connect, retrying refused/timed-out attempts with backoff until ``timeout``."""
        if self.connected:
            return
        key = os.path.expanduser(self.cfg.key)
        if not os.path.exists(key):
            raise SshError(f"SSH key {key} does not exist", hint="set [ssh] key in the target config")
        deadline = Deadline(timeout)
        pause = 0.25
        last: BaseException | None = None
        attempt = 0
        while True:
            attempt += 1
            client = self._new_client()
            per_try = max(0.5, min(self.cfg.connect_timeout, deadline.remaining))
            try:
                client.connect(
                    self.cfg.host,
                    port=self.cfg.port,
                    username=self.cfg.user,
                    key_filename=key,
                    timeout=per_try,
                    banner_timeout=per_try,
                    auth_timeout=per_try,
                    allow_agent=False,
                    look_for_keys=False,
                )
                self.client = client
                log.info("ssh connected to %s@%s:%s after %d attempt(s)", self.cfg.user, self.cfg.host, self.cfg.port, attempt)
                return
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise HostKeyError(
                    f"the guest at {self.cfg.host}:{self.cfg.port} presented host key {exc.key.get_name()} "
                    f"{exc.key.fingerprint}, which does not match known_hosts",
                    hint="if the VM was re-created, remove its line from known_hosts "
                    f"(ssh-keygen -R '[{self.cfg.host}]:{self.cfg.port}'); otherwise treat it as an attack",
                ) from None
            except paramiko.SSHException as exc:
                client.close()
                if "not found in known_hosts" in str(exc):
                    raise HostKeyError(
                        f"the guest's host key is not in {self.cfg.known_hosts}",
                        hint="add it (ssh-keyscan -p PORT HOST >> known_hosts) or set [ssh] trust_on_first_use = true",
                    ) from None
                if isinstance(exc, paramiko.AuthenticationException):
                    raise SshError(
                        f"SSH authentication as {self.cfg.user} failed: {exc}",
                        hint="check [ssh] user and key, and the guest's authorized_keys",
                    ) from None
                last = exc
            except (OSError, EOFError) as exc:
                client.close()
                last = exc
            if deadline.expired:
                cause = _connect_failure_cause(last)
                raise PhaseTimeout(
                    f"SSH to {self.cfg.user}@{self.cfg.host}:{self.cfg.port} not ready after {timeout:.0f}s "
                    f"({attempt} attempts); last error: {type(last).__name__}: {last}",
                    phase=PHASE,
                    cause=cause,
                    hint=None if cause else "is the VM up and port forwarding to the guest's :22 configured?",
                ) from last
            if on_wait:
                on_wait(f"attempt {attempt}: {type(last).__name__}")
            time.sleep(min(pause, deadline.remaining))
            pause = min(pause * 2, 4.0)

    def close(self) -> None:
        for fwd in self.forwards:
            fwd.close()
        self.forwards.clear()
        if self.client is not None:
            self.client.close()
            self.client = None

    def _transport(self) -> paramiko.Transport:
        t = self.client.get_transport() if self.client else None
        if t is None or not t.is_active():
            raise SshError("not connected to the guest", hint="the SSH connection dropped; is the VM still up?")
        return t

    # -- commands --------------------------------------------------------------------
    def run(
        self, command: str, *, timeout: float, phase: str = PHASE, check: bool = True, log_command: str | None = None
    ) -> CommandResult:
        shown = redact(log_command or command)
        start = time.monotonic()
        deadline = Deadline(timeout)
        try:
            chan = self._transport().open_session(timeout=max(0.1, min(10.0, deadline.remaining)))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise CommandError(f"could not run `{shown}` over SSH: {exc}", command=shown, phase=phase) from None
        chan.settimeout(0.2)
        try:  # a guest whose sshd stops answering after the connection (a frozen VM) would hang here for good
            with _closed_at(chan, deadline.remaining):
                chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            chan.close()
            if deadline.expired:
                raise CommandTimeout(f"`{shown}` was not started within {timeout:.0f}s: the guest's sshd stopped "
                                     "answering", command=shown, phase=phase) from None
            raise CommandError(f"could not run `{shown}` over SSH: {exc}", command=shown, phase=phase) from None
        out, err = bytearray(), bytearray()
        try:
            while True:
                progressed = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    progressed = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    progressed = True
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if deadline.expired:
                    raise CommandTimeout(
                        f"`{shown}` did not finish within {timeout:.0f}s",
                        command=shown,
                        stdout=redact(out.decode("utf-8", "replace"))[-4000:],
                        stderr=redact(err.decode("utf-8", "replace"))[-4000:],
                        phase=phase,
                    )
                if not progressed:
                    select.select([chan], [], [], min(0.2, deadline.remaining))
            status = chan.recv_exit_status()
        finally:
            chan.close()
        result = CommandResult(
            command=shown,
            exit_status=status,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            duration_s=time.monotonic() - start,
        )
        log.debug("ssh `%s` -> %d in %.2fs", shown, status, result.duration_s)
        if check and status != 0:
            raise CommandError(
                f"`{shown}` exited {status}: {_tail(result.stdout + result.stderr)}",
                command=shown,
                exit_status=status,
                stdout=redact(result.stdout)[-4000:],
                stderr=redact(result.stderr)[-4000:],
                phase=phase,
            )
        return result

    def ping(self, timeout: float = 5.0) -> bool:
        """`echo ready`, the liveness probe Helix's own tooling uses."""
        try:
            return "ready" in self.run("echo ready", timeout=timeout, check=False).stdout
        except HarnessError:
            return False

    # -- files -----------------------------------------------------------------------
    #: Seconds an SFTP transfer may take (the CLI's .h264 of a long stream is tens of MB over loopback).
    SFTP_TIMEOUT = 120.0

    def _sftp(self, timeout: float) -> paramiko.SFTPClient:
        """An SFTP session whose every wait is bounded: paramiko's subsystem request has no timeout of its own
        (closing the channel at the deadline ends it), and each read waits at most ``timeout``."""
        chan = self._transport().open_session(timeout=min(10.0, timeout))
        try:
            with _closed_at(chan, timeout):
                chan.invoke_subsystem("sftp")
        except BaseException:
            chan.close()
            raise
        chan.settimeout(timeout)
        return paramiko.SFTPClient(chan)

    def get(self, remote: str, local: str | os.PathLike[str], *, phase: str = PHASE,
            timeout: float = SFTP_TIMEOUT) -> None:
        try:
            with self._sftp(timeout) as sftp:
                sftp.get(remote, str(local))
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise SshError(f"SFTP get {remote} failed: {exc or type(exc).__name__}", phase=phase) from None

    def read_text(self, remote: str, *, phase: str = PHASE, timeout: float = SFTP_TIMEOUT) -> str:
        try:
            with self._sftp(timeout) as sftp, sftp.open(remote, "r") as fh:
                return fh.read().decode("utf-8", "replace")
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise SshError(f"cannot read {remote} in the guest: {exc or type(exc).__name__}", phase=phase) from None

    # -- tunnels ---------------------------------------------------------------------
    def forward(self, remote_port: int, remote_host: str = "127.0.0.1") -> LocalForward:
        fwd = LocalForward(self._transport(), remote_host, remote_port)
        self.forwards.append(fwd)
        return fwd


@contextmanager
def _closed_at(chan: paramiko.Channel, seconds: float) -> Iterator[None]:
    """Close ``chan`` if the block still runs after ``seconds``: paramiko waits for the reply to a channel
    request (exec, subsystem) with no timeout of its own, and closing the channel ends that wait."""
    guard = threading.Timer(max(0.0, seconds), chan.close)
    guard.daemon = True
    guard.start()
    try:
        yield
    finally:
        guard.cancel()


def _tail(text: str, limit: int = 600) -> str:
    text = redact(text.strip())
    return text if len(text) <= limit else "…" + text[-limit:]
