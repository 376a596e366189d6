"""SshDriver against the simulated guest's real OpenSSH sshd.

The contract: ``connect`` retries until its deadline and says why it gave up (refused vs no
banner); a host key that is not the known one fails at once, never retried; ``run`` returns exit
status and output, raises ``CommandError`` (with what the command printed) on a non-zero exit
when asked to and on its own timeout, and shows ``log_command`` instead of the command; SFTP
``get``/``read_text`` copy bytes exactly; ``forward`` carries TCP both ways until closed.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time

import paramiko
import pytest

from harness.drivers.ssh import HostKeyError, SshError
from harness.errors import CommandError, PhaseTimeout

pytestmark = pytest.mark.timeout(90)

#: connect() deadline for the faults that never let it in (each must end within it + slack).
FAULT_TIMEOUT = 1.5


def test_connect_run_and_ping(rig) -> None:
    ssh = rig.ssh
    assert ssh.connected
    res = ssh.run("echo out; echo err >&2; pwd", timeout=10)
    assert (res.exit_status, res.ok) == (0, True)
    assert res.stdout.splitlines()[0] == "out" and res.stderr == "err\n"
    assert res.stdout.splitlines()[1].endswith("/home")  # the guest's HOME
    assert res.duration_s >= 0
    assert ssh.ping() is True


def test_nonzero_exit(rig) -> None:
    ssh = rig.ssh
    res = ssh.run("echo partial; exit 3", timeout=10, check=False)
    assert (res.exit_status, res.ok, res.stdout) == (3, False, "partial\n")
    with pytest.raises(CommandError) as err:
        ssh.run("echo partial; echo bad >&2; exit 3", timeout=10, phase="stack")
    e = err.value
    assert (e.exit_status, e.phase, e.stdout, e.stderr) == (3, "stack", "partial\n", "bad\n")
    assert "exited 3" in e.message


def test_command_timeout(rig) -> None:
    started = time.monotonic()
    with pytest.raises(CommandError) as err:
        rig.ssh.run("echo begun; exec sleep 30", timeout=1, phase="build")
    assert time.monotonic() - started < 8
    assert err.value.phase == "build" and "did not finish within 1s" in err.value.message
    assert err.value.stdout == "begun\n"
    assert rig.ssh.ping()  # the connection survives a timed-out command


def test_log_command_is_shown_instead_of_the_command(rig) -> None:
    with pytest.raises(CommandError) as err:
        rig.ssh.run("SECRET_VALUE=abc123xyz; exit 5", timeout=10, log_command="<sources the creds>")
    assert err.value.command == "<sources the creds>"
    assert "abc123xyz" not in str(err.value) and "<sources the creds>" in err.value.message


def test_sftp_get_and_read_text(rig, tmp_path) -> None:
    ssh = rig.ssh
    payload = os.urandom(300_000)
    remote = f"{rig.workdir}/blob.bin"
    (rig.workdir / "blob.bin").write_bytes(payload)  # the simulated guest shares this machine's disk
    ssh.get(remote, tmp_path / "blob.bin")
    assert (tmp_path / "blob.bin").read_bytes() == payload
    ssh.run(f"printf 'h\\u00e9llo\\n' > {rig.workdir}/t.txt", timeout=10)
    assert ssh.read_text(f"{rig.workdir}/t.txt") == "héllo\n"
    with pytest.raises(SshError) as err:
        ssh.get(f"{rig.workdir}/missing", tmp_path / "x", phase="stream")
    assert err.value.phase == "stream" and "missing" in err.value.message
    with pytest.raises(SshError):
        ssh.read_text(f"{rig.workdir}/missing")


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


def _echo_through(port: int, payload: bytes) -> bytes:
    """Send ``payload`` through the tunnel while reading the echo back (no half-close: the tunnel
    ends a connection when either side closes, as the HTTP clients that use it expect)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        received = bytearray()
        sender = threading.Thread(target=s.sendall, args=(payload,))
        sender.start()
        while len(received) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
        sender.join(timeout=10)
        return bytes(received)


def test_port_forward_carries_bytes_both_ways_until_closed(rig) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    try:
        ssh = rig.ssh
        fwd = ssh.forward(server.server_address[1])
        assert fwd.url == f"http://127.0.0.1:{fwd.local_port}" and fwd in ssh.forwards
        big = os.urandom(1 << 20)
        assert _echo_through(fwd.local_port, big) == big
        results: list[bytes] = []
        clients = [threading.Thread(target=lambda i=i: results.append(_echo_through(fwd.local_port, bytes([i]) * 5000)))
                   for i in range(3)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=20)
        assert sorted(results) == [bytes([i]) * 5000 for i in range(3)]
        fwd.close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", fwd.local_port), timeout=2).close()
    finally:
        server.shutdown()
        server.server_close()
        serving.join(timeout=5)


def test_trust_on_first_use_records_the_key_then_checks_it(rig, tmp_path) -> None:
    rig.boot()
    known = tmp_path / "known_hosts"
    first = rig.ssh_driver(known_hosts=str(known), trust_on_first_use=True)
    first.connect(20)
    first.close()
    assert not first.connected
    [line] = known.read_text().splitlines()
    assert line.startswith(f"[127.0.0.1]:{rig.info['ssh_port']} ssh-")
    again = rig.ssh_driver(known_hosts=str(known), trust_on_first_use=False)
    again.connect(20)
    assert again.ping()


def test_unknown_host_key_without_trust_on_first_use(rig, tmp_path) -> None:
    rig.boot()
    (tmp_path / "known_hosts").write_text("")
    ssh = rig.ssh_driver(known_hosts=str(tmp_path / "known_hosts"), trust_on_first_use=False)
    with pytest.raises(HostKeyError) as err:
        ssh.connect(20)
    assert "not in" in err.value.message and err.value.phase == "ssh"


def test_bad_user_and_missing_key(rig, tmp_path) -> None:
    rig.boot()
    with pytest.raises(SshError) as err:
        rig.ssh_driver(user="nobody-here").connect(20)
    assert "authentication" in err.value.message and not isinstance(err.value, PhaseTimeout)
    with pytest.raises(SshError, match="does not exist"):
        rig.ssh_driver(key=str(tmp_path / "no-key")).connect(20)
    with pytest.raises(SshError, match="not connected"):
        rig.ssh_driver().run("true", timeout=5)


def test_changed_host_key_fails_at_once(make_rig) -> None:
    rig = make_rig(faults={"host_key_changed"}).boot()
    started = time.monotonic()
    with pytest.raises(HostKeyError) as err:
        rig.ssh_driver().connect(20)
    assert time.monotonic() - started < 10  # not retried until the deadline
    assert "does not match known_hosts" in err.value.message and "ssh-keygen -R" in (err.value.hint or "")


@pytest.mark.parametrize("fault, cause", [
    ("ssh_refused", paramiko.ssh_exception.NoValidConnectionsError),  # "Unable to connect to port …"
    # The TCP connect works, no banner comes: paramiko says "Error reading SSH protocol banner", or
    # "No existing session" when the last attempt's banner wait is cut short by the deadline.
    ("ssh_blackhole", paramiko.SSHException),
])
def test_refused_and_no_banner_time_out_saying_which(make_rig, fault, cause) -> None:
    rig = make_rig(faults={fault}).boot()
    waits: list[str] = []
    started = time.monotonic()
    with pytest.raises(PhaseTimeout) as err:
        rig.ssh_driver(connect_timeout=0.5).connect(FAULT_TIMEOUT, on_wait=waits.append)
    assert time.monotonic() - started < FAULT_TIMEOUT + 3
    assert err.value.phase == "ssh" and "not ready after" in err.value.message
    last = err.value.__cause__
    assert isinstance(last, cause), repr(last)
    assert isinstance(last, OSError) is (fault == "ssh_refused")  # refused is a socket error, no banner is not
    assert type(last).__name__ in err.value.message
    assert waits and waits[0].startswith("attempt 1: ")


def test_a_guest_sshd_that_stops_answering_never_hangs_a_command(rig) -> None:
    """A frozen VM after the connection (QEMU stopped, the deadlock): paramiko's exec and SFTP requests have no
    timeout of their own, so ``run``, ``ping``, ``get`` and ``read_text`` must each end at their own deadline."""
    driver = rig.ssh_driver()
    driver.connect(20)
    assert driver.ping()
    with rig.guest_frozen(driver):
        started = time.monotonic()
        with pytest.raises(CommandError) as err:
            driver.run("echo never", timeout=1.5, phase="ssh")
        assert time.monotonic() - started < 5 and err.value.phase == "ssh"
        started = time.monotonic()
        assert driver.ping(timeout=1.0) is False
        assert time.monotonic() - started < 4
        started = time.monotonic()
        with pytest.raises(SshError):
            driver.read_text("/etc/hostname", timeout=1.5)
        with pytest.raises(SshError):
            driver.get("/etc/hostname", str(rig.workdir / "never"), timeout=1.5)
        assert time.monotonic() - started < 8
