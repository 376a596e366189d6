"""The simulated VM guest: a real sshd with the ForceCommand wrapper, the guest files and shims."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import psutil
import pytest

from harness.deadline import poll_until
from helix_sim.config import SimConfig
from helix_sim.guest.docker.compose_project import interpolate
from helix_sim.guest.docker.formatting import parse_since, render_table
from helix_sim.guest.docker.yaml_lite import YamlError, parse_yaml
from helix_sim.guest.helix.timing import CliTiming
from helix_sim.vm.sshd import GuestVM

pytestmark = pytest.mark.timeout(60)


def _connect(vm: GuestVM, **kwargs) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(vm.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(vm.ssh_host, vm.ssh_port, username=vm.ssh_user, key_filename=str(vm.ssh_key),
                   look_for_keys=False, allow_agent=False, timeout=5, **kwargs)
    return client


def _run(client: paramiko.SSHClient, command: str, timeout: float = 30) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    status = stdout.channel.recv_exit_status()
    return status, stdout.read().decode(), stderr.read().decode()


def _make_vm(tmp_path: Path, *faults: str, docker_host: str = "unix:///nonexistent/docker.sock") -> GuestVM:
    config = SimConfig(root=tmp_path, faults=frozenset(faults), api_key="hl-test-secret-key")
    return GuestVM(tmp_path / "vm", config, api_url="http://localhost:18080", docker_host=docker_host)


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    guest = _make_vm(tmp_path_factory.mktemp("guest"))
    guest.boot()
    yield guest
    guest.shutdown()


@pytest.fixture(scope="module")
def ssh(vm):
    client = _connect(vm)
    yield client
    client.close()


# --- prepare ----------------------------------------------------------------------------------


def test_prepare_writes_keys_config_and_guest_files(tmp_path):
    vm = _make_vm(tmp_path)
    vm.prepare()
    host_pub = (vm.ssh_dir / "ssh_host_ed25519_key.pub").read_text().split()
    assert vm.known_hosts.read_text() == f"[127.0.0.1]:{vm.ssh_port} {host_pub[0]} {host_pub[1]}\n"
    assert (vm.ssh_dir / "authorized_keys").read_text() == Path(f"{vm.ssh_key}.pub").read_text()
    config = vm.sshd_config.read_text()
    for line in (f"ListenAddress 127.0.0.1:{vm.ssh_port}", "PermitRootLogin prohibit-password", "StrictModes no",
                 "AllowTcpForwarding yes", "UsePAM no", "PasswordAuthentication no",
                 f"ForceCommand {vm.root}/guest-shell", f"PidFile {vm.root}/sshd.pid", f"AllowUsers {vm.ssh_user}"):
        assert f"\n{line}\n" in config, line

    helix = vm.helix_dir
    assert vm.helix_dir == vm.home / "helix"
    assert (helix / ".env.usercreds").read_text() == (
        "HELIX_API_KEY=hl-test-secret-key\nHELIX_URL=http://localhost:18080\n"
        f"HELIX_UBUNTU_AGENT={vm.config.agent_id}\nHELIX_PROJECT={vm.config.project_id}\n"
    )
    assert stat.S_IMODE((helix / ".env.usercreds").stat().st_mode) == 0o600
    for exe in (helix / "stack", vm.bin_dir / "go", vm.bin_dir / "docker", vm.root / "guest-shell"):
        assert os.access(exe, os.X_OK), exe
    assert "module github.com/helixml/helix/api\n" in (helix / "api" / "go.mod").read_text()
    assert "package main" in (helix / "api" / "main.go").read_text()
    stack = (helix / "stack").read_text()
    assert stack.endswith('eval "$@"\n') and "function start()" in stack and "function stop()" in stack
    assert "⚠️ Warning: Postgres not ready after 60 seconds, continuing anyway" in stack

    compose = parse_yaml((helix / "docker-compose.dev.yaml").read_text())
    services = compose["services"]
    assert {"api", "postgres", "sandbox-macos"} <= set(services)
    assert services["sandbox-macos"]["profiles"] == ["code-macos"]
    assert any(e.startswith("HELIX_FRAME_EXPORT_PORT=") for e in services["sandbox-macos"]["environment"])
    assert services["api"]["ports"][0] == "${API_PORT:-8080}:8080"

    sha = subprocess.run(["git", "-C", str(helix), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert re.fullmatch(r"[0-9a-f]{40}\n", sha.stdout)
    tracked = subprocess.run(["git", "-C", str(helix), "ls-files"], capture_output=True, text=True, check=True).stdout
    assert ".env.usercreds" not in tracked and "stack" in tracked.split()

    key_before = Path(f"{vm.ssh_key}.pub").read_text()
    vm.prepare()  # idempotent: same keys, same commit
    assert Path(f"{vm.ssh_key}.pub").read_text() == key_before
    again = subprocess.run(["git", "-C", str(helix), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert again.stdout == sha.stdout


def test_the_helix_cli_timings_reach_the_guest_environment(tmp_path):
    config = SimConfig(root=tmp_path, delay_scale=0.5, cli_wait_poll_s=0.25, cli_wait_timeout_s=9.0,
                       cli_stats_interval_s=0.75)
    vm = GuestVM(tmp_path / "vm", config, api_url="http://localhost:18080", docker_host="unix:///nonexistent/docker.sock")
    vm.prepare()
    env = dict(re.findall(r"^export (HELIX_SIM_[A-Z_]+)=(\S+)$", (vm.root / "guest-env.sh").read_text(), re.M))
    assert vm.cli_env() == {"HELIX_SIM_CLI_WAIT_POLL_S": "0.25", "HELIX_SIM_CLI_WAIT_TIMEOUT_S": "9.0",
                            "HELIX_SIM_CLI_STATS_INTERVAL_S": "0.75", "HELIX_SIM_DELAY_SCALE": "0.5"}
    assert vm.cli_env().items() <= env.items()
    timing = CliTiming.from_env(env)
    assert (timing.wait_poll, timing.wait_timeout_s, timing.stats_interval_s) == (0.125, 9.0, 0.75)
    assert CliTiming.from_env({"HELIX_SIM_CLI_WAIT_POLL_S": "x", "HELIX_SIM_DELAY_SCALE": "0"}) == CliTiming()


def test_shutdown_before_boot_is_harmless(tmp_path):
    vm = _make_vm(tmp_path)
    vm.shutdown()
    vm.shutdown()
    assert not vm.running


# --- a booted guest ---------------------------------------------------------------------------


def test_exec_runs_in_the_guest_world(vm, ssh):
    status, out, err = _run(ssh, 'echo "$HOME"; pwd; echo "$PATH"; echo "$DOCKER_HOST"; command -v go docker')
    assert status == 0, err
    home, cwd, path, docker_host, go, docker = out.splitlines()
    assert home == cwd == str(vm.home)
    assert path == f"{vm.bin_dir}:/usr/bin:/bin"
    assert docker_host == vm.docker_host
    assert (go, docker) == (str(vm.bin_dir / "go"), str(vm.bin_dir / "docker"))
    assert _run(ssh, "echo to-stderr >&2; exit 7") == (7, "", "to-stderr\n")
    status, out, _ = _run(ssh, "cd ~/helix && git rev-parse HEAD && ./stack")
    assert status == 0
    assert re.match(r"[0-9a-f]{40}\nHelix Stack Management Tool\n", out)


def test_interactive_login_shell(vm, ssh):
    chan = ssh.get_transport().open_session()
    chan.get_pty()
    chan.invoke_shell()
    chan.sendall(b'echo "MARK:$HOME:$PWD:${PATH%%:*}"; exit\n')
    chunks = b""
    deadline = time.monotonic() + 10
    while not chan.exit_status_ready() or chan.recv_ready():
        if chan.recv_ready():
            chunks += chan.recv(4096)
        elif time.monotonic() > deadline:
            break
        else:
            chan.status_event.wait(0.05)
    chan.close()
    assert f"MARK:{vm.home}:{vm.home}:{vm.bin_dir}" in chunks.decode(errors="replace")  # ~/.profile restored PATH


def test_sftp_get_and_put(vm, ssh, tmp_path):
    local = tmp_path / "upload.bin"
    local.write_bytes(os.urandom(100_000))
    with ssh.open_sftp() as sftp:
        assert {"helix", ".profile"} <= set(sftp.listdir("."))
        sftp.put(str(local), "upload.bin")
        assert sftp.stat("upload.bin").st_size == 100_000
        sftp.get("helix/.env.usercreds", str(tmp_path / "creds"))
    assert (vm.home / "upload.bin").read_bytes() == local.read_bytes()  # relative paths land in the guest home
    assert (tmp_path / "creds").read_text().startswith("HELIX_API_KEY=")


def test_direct_tcpip_port_forward(vm, ssh):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo_once() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data.upper())

    thread = threading.Thread(target=echo_once, daemon=True)
    thread.start()
    try:
        chan = ssh.get_transport().open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=5)
        chan.settimeout(5)
        chan.sendall(b"hello guest api")
        received = b""
        while len(received) < 15:
            received += chan.recv(1024)
        assert received == b"HELLO GUEST API"
        chan.close()
        thread.join(5)
    finally:
        server.close()


def test_go_build_writes_a_runnable_helix_launcher(vm, ssh, tmp_path):
    out = tmp_path / "bin" / "helix"
    status, stdout, stderr = _run(ssh, f"cd ~/helix/api && CGO_ENABLED=0 go build -o {out} .")
    assert (status, stdout, stderr) == (0, "", "")
    assert os.access(out, os.X_OK) and out.read_text().startswith("#!/bin/sh\n")
    status, stdout, _ = _run(ssh, f"{out} spectask stream")
    assert status == 1
    assert stdout.startswith(
        f"Error: accepts 1 arg(s), received 0\nUsage:\n  {out} spectask stream <session-id> [flags]\n\nFlags:\n"
    )
    assert stdout.endswith("\naccepts 1 arg(s), received 0\n")

    # The checkout decides which CLI it builds (SimConfig.cli, default the newer one: --runtime, no --agent).
    assert "\nHELIX_CLI_GENERATION='2026-11'\n" in out.read_text()
    status, stdout, _ = _run(ssh, f"{out} spectask start --help")
    assert status == 0 and "      --runtime string " in stdout and "--agent" not in stdout

    status, stdout, _ = _run(ssh, "go version")
    assert status == 0 and re.fullmatch(r"go version go1\.\d+\.\d+ linux/\w+\n", stdout)
    assert _run(ssh, "go frob") == (2, "", "go frob: unknown command\nRun 'go help' for usage.\n")
    status, _, stderr = _run(ssh, f"cd /tmp && go build -o {tmp_path / 'x'} .")
    assert status == 1 and "go.mod file not found" in stderr
    status, _, stderr = _run(ssh, "cd ~/helix/api && go build -bogus .")
    assert status == 2 and stderr.startswith("flag provided but not defined: -bogus\nusage: go build")


def test_the_guest_tmp_is_the_vm_own(vm, ssh):
    """Nothing a guest command writes to /tmp reaches the host's /tmp: it lands in <vm>/tmp (also over SFTP)."""
    from helix_sim.vm.sshd import tmp_namespace_mode

    if not tmp_namespace_mode(vm.root):
        pytest.skip("no mount namespace on this host: the guest gets TMPDIR only")
    name = f"helix-e2e-ses_probe{os.getpid()}.h264"
    status, stdout, _ = _run(ssh, f"echo frames > /tmp/{name} && echo $TMPDIR && cat /tmp/{name}")
    assert (status, stdout) == (0, "/tmp\nframes\n")
    assert (vm.tmp_dir / name).read_text() == "frames\n"
    assert not Path("/tmp", name).exists()
    sftp = ssh.open_sftp()
    try:
        with sftp.open(f"/tmp/{name}") as fh:
            assert fh.read() == b"frames\n"
    finally:
        sftp.close()
    assert _run(ssh, f"rm -f /tmp/{name} && test ! -e /tmp/{name}")[0] == 0
    assert not (vm.tmp_dir / name).exists()
    status, stdout, _ = _run(ssh, f"test -d {vm.home} && test -x {vm.bin_dir}/go && echo ok")  # the root stays reachable
    assert (status, stdout) == (0, "ok\n")


def test_the_older_cli_generation_is_built_from_its_checkout(tmp_path):
    from helix_sim.guest.go.build import build

    config = SimConfig(root=tmp_path, cli="2026-08", faults=frozenset({"no_agent"}))
    vm = GuestVM(tmp_path / "vm", config, api_url="http://localhost:18080", docker_host="unix:///nonexistent.sock")
    vm.prepare()
    marker = vm.helix_dir / "api" / "pkg" / "cli" / "spectask" / "cli_generation.go"
    assert 'const CLIGeneration = "2026-08"' in marker.read_text()
    out = tmp_path / "helix"
    assert build(["-o", str(out), "."], vm.helix_dir / "api") == 0
    assert "\nHELIX_CLI_GENERATION='2026-08'\n" in out.read_text()
    res = subprocess.run([str(out), "spectask", "start", "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "  -a, --agent string " in res.stdout and "--runtime" not in res.stdout
    # no_agent: the user's creds name no agent either (the harness then passes no --agent)
    creds = (vm.helix_dir / ".env.usercreds").read_text().splitlines()
    assert "HELIX_UBUNTU_AGENT=" in creds


# --- faults -----------------------------------------------------------------------------------


def test_fault_ssh_refused(tmp_path):
    vm = _make_vm(tmp_path, "ssh_refused")
    vm.boot()
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((vm.ssh_host, vm.ssh_port), timeout=2)
        with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError):
            _connect(vm)
    finally:
        vm.shutdown()


def test_fault_ssh_blackhole(tmp_path):
    vm = _make_vm(tmp_path, "ssh_blackhole")
    vm.boot()
    try:
        sock = socket.create_connection((vm.ssh_host, vm.ssh_port), timeout=2)  # TCP is accepted
        sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            sock.recv(1)  # and never a byte
        sock.close()
        started = time.monotonic()
        with pytest.raises(paramiko.SSHException, match="banner"):
            _connect(vm, banner_timeout=0.5)
        assert time.monotonic() - started < 5
    finally:
        vm.shutdown()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((vm.ssh_host, vm.ssh_port), timeout=2)


def test_fault_host_key_changed(tmp_path):
    vm = _make_vm(tmp_path, "host_key_changed")
    vm.boot()
    try:
        with pytest.raises(paramiko.BadHostKeyException) as info:
            _connect(vm)
        presented = Path(f"{vm.other_host_key}.pub").read_text().split()[1]
        assert info.value.key.get_base64() == presented
        assert info.value.expected_key.get_base64() == vm.known_hosts.read_text().split()[2]
    finally:
        vm.shutdown()


def test_shutdown_stops_sshd_and_its_sessions(tmp_path):
    vm = _make_vm(tmp_path)
    vm.boot()
    pid = vm.sshd_pid
    client = _connect(vm)
    client.exec_command("sleep 60")

    def session_procs():
        procs = psutil.Process(pid).children(recursive=True)
        return procs if any("sleep" in " ".join(p.cmdline()) for p in procs if p.is_running()) else None

    procs = poll_until(session_procs, timeout=10, what="the guest session", interval=0.02)
    tree = [psutil.Process(pid), *procs]
    vm.shutdown()
    client.close()
    vm.shutdown()  # idempotent
    for p in tree:
        assert not p.is_running(), p
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(vm.sshd_config) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((vm.ssh_host, vm.ssh_port), timeout=2)


# --- the stack against the simulator's Docker engine -------------------------------------------

class _Engine:
    """A DockerEngine on a background loop thread."""

    def __init__(self, config: SimConfig) -> None:
        docker_engine = pytest.importorskip("helix_sim.stack.docker_engine", reason="helix_sim.stack.docker_engine not available")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-engine", daemon=True)
        self.thread.start()
        self.engine = docker_engine.DockerEngine(config, config.root / "docker.sock")
        self.call(self.engine.start())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.call(self.engine.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def stack_vm(tmp_path, request):
    faults = getattr(request, "param", ())
    config = SimConfig(root=tmp_path, faults=frozenset(faults))
    eng = _Engine(config)
    vm = GuestVM(tmp_path / "vm", config, api_url="http://localhost:18080", docker_host=eng.engine.docker_host)
    vm.boot()
    client = _connect(vm)
    yield vm, client, eng.engine
    client.close()
    vm.shutdown()
    eng.close()


COMPOSE = "cd ~/helix && docker compose -f docker-compose.dev.yaml"


def test_stack_start_brings_up_the_compose_services(stack_vm):
    vm, ssh, engine = stack_vm
    status, out, err = _run(ssh, "cd ~/helix && COMPOSE_PROFILES=code-macos ./stack start")
    assert status == 0, out + err
    assert "🎮 Using COMPOSE_PROFILES from environment: 'code-macos'" in out
    assert "\n✅ Stack started\n" in out
    assert re.search(r"^NAME +STATUS\n", out, re.M) and re.search(r"^helix-sandbox-macos-1 +Up ", out, re.M)
    assert " Container helix-api-1  Started\n" in err
    names = {c.name: c for c in engine.containers()}
    assert set(names) == {"helix-api-1", "helix-postgres-1", "helix-sandbox-macos-1"}
    assert names["helix-sandbox-macos-1"].labels["com.docker.compose.service"] == "sandbox-macos"
    assert names["helix-api-1"].labels["com.docker.compose.project"] == "helix"
    assert all(c.running for c in names.values())

    assert _run(ssh, f"{COMPOSE} exec -T postgres pg_isready") == (
        0, "/var/run/postgresql:5432 - accepting connections\n", "")
    status, out, _ = _run(ssh, f"{COMPOSE} ps")
    assert status == 0 and out.startswith("NAME ") and "0.0.0.0:18080->8080/tcp" in out

    # a desktop container lives in the sandbox's dockerd: visible through the sandbox only
    desktop = engine.create_container("ubuntu-external-01abc", image="helix-ubuntu:dev",
                                      labels={"helix.sandbox": "helix-sandbox-macos-1"})
    desktop.log("bridge up")
    desktop.log("vsockenc: warning", stream="stderr")
    assert _run(ssh, f"{COMPOSE} exec -T sandbox-macos docker logs ubuntu-external-01abc") == (
        0, "bridge up\n", "vsockenc: warning\n")
    status, out, _ = _run(ssh, f"{COMPOSE} exec -T sandbox-macos docker inspect ubuntu-external-01abc")
    assert status == 0 and '"Name": "/ubuntu-external-01abc"' in out
    status, out, _ = _run(ssh, f"{COMPOSE} exec -T sandbox-macos docker ps --format '{{{{.Names}}}}'")
    assert (status, out) == (0, "ubuntu-external-01abc\n")
    assert _run(ssh, "docker logs ubuntu-external-01abc") == (
        1, "", "Error response from daemon: No such container: ubuntu-external-01abc\n")
    status, out, _ = _run(ssh, "docker inspect -f '{{.State.Status}} {{.RestartCount}}' helix-api-1")
    assert (status, out) == (0, "running 0\n")


@pytest.mark.parametrize("stack_vm", [("stack_fails",)], indirect=True)
def test_stack_start_fails_with_compose_output(stack_vm):
    _, ssh, _ = stack_vm
    status, out, err = _run(ssh, "cd ~/helix && COMPOSE_PROFILES=code-macos ./stack start")
    assert status != 0
    assert "Error response from daemon: " in err and "port is already allocated" in err
    assert "Stack started" not in out


def _read_until(chan, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = chan.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_docker_system_dial_stdio_is_a_byte_pipe(stack_vm):
    _, ssh, _ = stack_vm
    # The engine ends the pipe: `Connection: close`, the shim exits when the socket closes.
    chan = ssh.get_transport().open_session()
    chan.exec_command("docker system dial-stdio")
    chan.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
    response = _read_until(chan, b"\0never")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"\r\n\r\nOK")
    assert chan.recv_exit_status() == 0
    # The client ends it: two keep-alive requests on one pipe, then stdin EOF.
    chan = ssh.get_transport().open_session()
    chan.exec_command("docker system dial-stdio")
    for _ in range(2):
        chan.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        assert _read_until(chan, b"\r\n\r\nOK").startswith(b"HTTP/1.1 200 OK\r\n")
    chan.shutdown_write()
    assert chan.recv(1) == b""
    assert chan.recv_exit_status() == 0


# --- the docker shim's parsers ------------------------------------------------------------------


def test_compose_yaml_and_interpolation():
    doc = parse_yaml(
        "services:\n"
        "  web:  # comment\n"
        "    image: ${IMG:-nginx:latest}\n"
        "    profiles: [a, \"b\"]\n"
        "    environment:\n"
        "      - A=${UNSET-x}\n"
        "      - 'B=it''s'\n"
        "    command: [\"sh\", \"-c\", \"echo # not a comment\"]\n"
        "volumes:\n"
        "  data:\n"
    )
    assert doc == {
        "services": {"web": {"image": "${IMG:-nginx:latest}", "profiles": ["a", "b"],
                             "environment": ["A=${UNSET-x}", "B=it's"], "command": ["sh", "-c", "echo # not a comment"]}},
        "volumes": {"data": None},
    }
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${IMG:-nginx:latest}", env) == "nginx:latest"
    assert interpolate("${EMPTY-d}|${EMPTY:-d}|$SET|$$SET|${SET:+y}", env) == "|d|v|$SET|y"
    with pytest.raises(YamlError):
        parse_yaml("a:\n  - b: c\n")


def test_parse_since_and_table():
    assert parse_since("1700000000.5") == "1700000000.5"
    assert parse_since("10m", now=1000.0) == f"{400.0:.9f}"
    assert parse_since("1h30m", now=10_000.0) == f"{4600.0:.9f}"
    assert float(parse_since("2026-01-01T00:00:00Z")) == 1767225600.0
    table = render_table("table {{.Name}}\\t{{.Status}}",
                                    [{"Name": "helix-api-1", "Status": "Up 2 seconds"}], {"Name": "NAME"})
    assert table == "NAME          STATUS\nhelix-api-1   Up 2 seconds\n"
