"""The composed simulator: start → info → utmctl start → SSH → stack API → stop, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request

import psutil
import pytest

from harness.deadline import poll_until
from helix_sim.config import SimConfig

pytest.importorskip("helix_sim.vm.sshd", reason="helix_sim.vm.sshd (GuestVM) is not there yet")
pytest.importorskip("helix_sim.stack.api", reason="helix_sim.stack.api (HelixApiServer) is not there yet")

from helix_sim.simulator import INFO_KEYS, Simulator  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _children() -> set[int]:
    """Every descendant, zombies included (an unreaped child is a leak too)."""
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _ssh_banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.settimeout(2)
        return s.recv(64)


def _utmctl(info: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([info["utmctl"], *args], capture_output=True, text=True, timeout=20)


def _http_status(url: str) -> int | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_simulator_lifecycle(tmp_path):
    import docker

    before = _children()
    config = SimConfig(root=tmp_path / "sim", boot_delay_s=0.2, sandbox_delay_s=0.1)
    with Simulator(config) as sim:
        info = sim.info()
        assert tuple(info) == INFO_KEYS
        assert info["api_key"] == config.api_key and info["vm_id"] == config.vm_id
        root = tmp_path / "sim"
        for path in ("host/DiagnosticReports", "host/helix-debug.log", "host/bin/utmctl", "host/control.json",
                     "vm", "docker.sock", "target.toml"):
            assert (root / path).exists(), path
        target = tomllib.loads((root / "target.toml").read_text())
        assert target["name"] == "sim" and target["kind"] == "utm"
        assert target["vm"] == {"id": config.vm_id, "utmctl": info["utmctl"]}
        assert target["ssh"]["port"] == info["ssh_port"] and target["ssh"]["key"] == info["ssh_key"]
        assert target["frame_export"] == {"host": "127.0.0.1", "port": info["frame_export_port"]}
        assert target["host"]["crash_dir"] == info["crash_dir"]
        assert target["guest"]["api_port"] == int(info["api_url"].rsplit(":", 1)[1])
        # the CLI the guest builds (and its .gitsha stamp) stay in this root, never the host's shared /tmp/helix
        assert target["guest"]["cli_path"] == str(root / "vm" / "tmp" / "helix")
        from harness.runs.provision import _cli_path_of

        assert _cli_path_of(info) == target["guest"]["cli_path"]
        assert json.loads((root / ".helix-sim-owner.json").read_text())["pid"] == os.getpid()
        assert (target["stream"]["width"], target["stream"]["height"]) == (1280, 720)
        assert "api_key" not in (root / "target.toml").read_text()

        # the VM starts stopped: nothing of it listens yet
        assert _utmctl(info, "status", info["vm_id"]).stdout == "stopped\n"
        app = dict(info, utmctl=str(root / "host/UTM.app/Contents/MacOS/utmctl"))  # the copy inside the fake UTM.app
        assert _utmctl(app, "status", "Linux").stdout == "stopped\n"
        assert (root / "host/UTM.app/Contents/Frameworks/qemu-aarch64-softmmu.framework/Versions/A/qemu-aarch64-softmmu").is_file()
        assert not _accepts(info["ssh_port"]) and not _accepts(info["frame_export_port"])

        started = _utmctl(info, "start", info["vm_id"])
        assert (started.returncode, started.stdout, started.stderr) == (0, "", "")
        poll_until(lambda: _utmctl(info, "status", info["vm_id"]).stdout == "started\n", timeout=15,
                   what="VM started", interval=0.05)
        assert _ssh_banner(info["ssh_port"]).startswith(b"SSH-2.0-")
        assert _accepts(info["frame_export_port"])
        assert "[HELIX] Frame export ready" in (root / "host" / "helix-debug.log").read_text()

        # the stack: starting the compose service `api` brings the Helix API up
        assert _http_status(info["api_url"] + "/api/v1/config") is None
        client = docker.DockerClient(base_url=sim.engine.docker_host, version="1.43")
        api = client.containers.create("helix-api:dev", name="helix-api-1", labels={"com.docker.compose.service": "api"})
        api.start()
        status = _http_status(info["api_url"] + "/api/v1/status")
        assert status is not None and status < 500
        client.close()

        # utmctl stop powers everything of the VM off
        assert _utmctl(info, "stop", info["vm_id"]).returncode == 0
        poll_until(lambda: _utmctl(info, "status", info["vm_id"]).stdout == "stopped\n", timeout=15,
                   what="VM stopped", interval=0.05)
        assert not _accepts(info["ssh_port"]) and not _accepts(info["frame_export_port"])
        assert _http_status(info["api_url"] + "/api/v1/config") is None
        assert sim.engine.containers() == []

        # boot again, and leave it running: stop() must clean up a live VM too
        assert _utmctl(info, "start", "Linux").returncode == 0
        poll_until(lambda: sim.host.status == "started", timeout=15, what="VM started again", interval=0.05)
        control = json.loads((root / "host" / "control.json").read_text())["url"]
    assert _children() - before == set()
    for port in (info["ssh_port"], info["frame_export_port"], int(control.rsplit(":", 1)[1])):
        assert not _accepts(port)
    assert not (root / "docker.sock").exists()
    failed = _utmctl(info, "status", info["vm_id"])
    assert (failed.returncode, failed.stderr) == (1, "Error: Application not found.\n")


def test_two_simulators_side_by_side(tmp_path):
    a = Simulator(SimConfig(root=tmp_path / "a", boot_delay_s=0.1))
    b = Simulator(SimConfig(root=tmp_path / "b", boot_delay_s=0.1))
    with a, b:
        ia, ib = a.info(), b.info()
        ports_a = {ia["ssh_port"], ia["frame_export_port"], int(ia["api_url"].rsplit(":", 1)[1])}
        ports_b = {ib["ssh_port"], ib["frame_export_port"], int(ib["api_url"].rsplit(":", 1)[1])}
        assert not ports_a & ports_b
        assert _utmctl(ia, "start", ia["vm_id"]).returncode == 0
        poll_until(lambda: a.host.status == "started", timeout=15, what="VM a started", interval=0.05)
        assert _utmctl(ib, "status", ib["vm_id"]).stdout == "stopped\n"  # b is untouched
    assert not a._thread and not b._thread


def test_sim_up_cli_json_and_sigterm(tmp_path):
    before = _children()
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "helix_sim", "up", "--json", "--qemu", "v7-fallback", "--fault", "stale_qemu",
         "--resolution", "640x480", "--boot-delay", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = proc.stdout.readline()
        info = json.loads(line)
        assert tuple(info) == INFO_KEYS
        root = os.path.dirname(info["target_file"])
        assert os.path.isdir(root)
        target = tomllib.loads(open(info["target_file"]).read())
        assert (target["stream"]["width"], target["stream"]["height"]) == (640, 480)
        assert _utmctl(info, "start", info["vm_id"]).returncode == 0
        poll_until(lambda: _utmctl(info, "status", info["vm_id"]).stdout == "started\n", timeout=15,
                   what="VM started", interval=0.05)
        log_text = open(info["helix_debug_log"]).read()
        assert "[HELIX] VERSION: 2026-02-04-stale-build" in log_text
        assert _ssh_banner(info["ssh_port"]).startswith(b"SSH-2.0-")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out == ""  # exactly one JSON line in all
        assert time.monotonic() - t0 < 10
        assert not os.path.exists(root)  # the temp root is removed at exit
        assert _children() - before == set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sim_up_bad_arguments():
    from helix_sim.__main__ import main

    assert main(["up", "--resolution", "huge"]) == 2
    assert main(["up", "--fault", "no_such_fault"]) == 2
    assert main(["up", "--qemu", "v99"]) == 2
    assert main(["down"]) == 2
    assert main(["up", "--cli", "2027-01"]) == 2
    assert main(["up", "--cli-wait-timeout", "nan"]) == 2
    assert main(["up", "--stale-client-timeout", "-1"]) == 2


def test_sim_up_cli_flags_and_sim_keys(tmp_path):
    from harness.runs.provision import sim_argv
    from helix_sim.__main__ import _config, main_parser

    argv = sim_argv({"cli": "2026-08", "cli_wait_timeout": 4, "stale_client_timeout": 2, "stale_sweep_interval": 0.5}, [])
    args = main_parser().parse_args(argv[argv.index("up"):])
    cfg = _config(args, tmp_path)
    assert (cfg.cli, cfg.cli_wait_timeout_s, cfg.stale_client_timeout_s, cfg.stale_sweep_interval_s) == (
        "2026-08", 4.0, 2.0, 0.5)
    assert _config(main_parser().parse_args(["up"]), tmp_path).cli == "2026-11"  # the newer CLI by default


# --- nothing left behind (issue 12) ---------------------------------------------------------------------


def _processes_of(root) -> list[psutil.Process]:
    """Live processes whose command line names ``root`` (its sshd, the watchdog) or that carry its VM marker."""
    needle, found = str(root), []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(needle in arg for arg in (p.info["cmdline"] or [])) or \
                    p.environ().get("HELIX_SIM_GUEST") == str(root / "vm"):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_sshd_dies_with_a_killed_simulator(tmp_path):
    """kill -9 of `python -m helix_sim up`: its sshd (a root daemon in CI) and the guest's commands go too."""
    import paramiko

    root = tmp_path / "sim"
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-m", "helix_sim", "up", "--json", "--root", str(root), "--boot-delay",
                             "0.05"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert _utmctl(info, "start", info["vm_id"]).returncode == 0
        poll_until(lambda: _utmctl(info, "status", info["vm_id"]).stdout == "started\n", timeout=15,
                   what="VM started", interval=0.05)
        client = paramiko.SSHClient()
        client.load_host_keys(str(root / "vm" / "client" / "known_hosts"))
        client.connect(info["ssh_host"], info["ssh_port"], username=info["ssh_user"], key_filename=info["ssh_key"],
                       look_for_keys=False, allow_agent=False, timeout=5)
        client.exec_command("sleep 300")  # a guest command still running when the simulator dies
        poll_until(lambda: any("sleep" in " ".join(p.cmdline()) for p in _processes_of(root)), timeout=10,
                   what="the guest's sleep", interval=0.05)
        names = {p.name() for p in _processes_of(root)}
        assert "sshd" in names, names
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        left = poll_until(lambda: not _processes_of(root) or None, timeout=15, what="no process of the dead sim",
                          interval=0.1)
        assert left
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in _processes_of(root):
            p.kill()


def test_leftovers_of_dead_simulators_are_removed_only_when_provably_ours(tmp_path):
    from helix_sim.leftovers import MARKER, clean_leftovers, write_marker

    def dead_pid() -> tuple[int, float]:
        p = subprocess.Popen([sys.executable, "-c", "pass"])
        start = psutil.Process(p.pid).create_time()
        p.wait()
        return p.pid, start

    def marked(root, *, pid, start, launcher, launcher_start):
        root.mkdir(parents=True)
        (root / "vm" / "client").mkdir(parents=True)
        (root / "vm" / "client" / "id_ed25519").write_text("secret key")
        (root / MARKER).write_text(json.dumps({"format": 1, "pid": pid, "start": start, "launcher_pid": launcher,
                                               "launcher_start": launcher_start, "root": str(root)}))
        return root

    (pid, start), (lpid, lstart) = dead_pid(), dead_pid()
    me = psutil.Process()
    dead = marked(tmp_path / "helix-sim-dead", pid=pid, start=start, launcher=lpid, launcher_start=lstart)
    launch = tmp_path / "helix-e2e-sim-dead"
    in_launch = marked(launch / "sim", pid=pid, start=start, launcher=lpid, launcher_start=lstart)
    (launch / "sim.stderr.log").write_text("")
    reused = marked(tmp_path / "helix-sim-reused", pid=me.pid, start=me.create_time() - 100, launcher=lpid,
                    launcher_start=lstart)  # a pid that exists again, started at another time: gone
    launcher_alive = marked(tmp_path / "helix-sim-launcher-alive", pid=pid, start=start, launcher=me.pid,
                            launcher_start=me.create_time())
    live = tmp_path / "helix-sim-live"
    live.mkdir()
    write_marker(live)  # this very process: alive
    unmarked = tmp_path / "helix-sim-unmarked"
    unmarked.mkdir()
    other = marked(tmp_path / "someone-else", pid=pid, start=start, launcher=lpid, launcher_start=lstart)
    (tmp_path / "helix-sim-link").symlink_to(dead)
    (tmp_path / "helix-e2e-sim-keep").mkdir()
    kept_launch = marked(tmp_path / "helix-e2e-sim-keep" / "sim", pid=pid, start=start, launcher=lpid,
                         launcher_start=lstart)
    (tmp_path / "helix-e2e-sim-keep" / "report.html").write_text("not the simulator's")
    # a process of the dead root that is still running (its command line names the root) is stopped first
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(dead / "vm" / "ssh" / "x")])
    try:
        removed = clean_leftovers(tmp_path)
        assert sorted(removed) == sorted([dead, in_launch, reused, kept_launch])
        assert stray.wait(timeout=10) is not None
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()
    assert not dead.exists() and not launch.exists() and not reused.exists() and not kept_launch.exists()
    assert (tmp_path / "helix-e2e-sim-keep" / "report.html").exists()  # what is not the simulator's stays
    for path in (launcher_alive, live, unmarked, other):
        assert path.is_dir(), path
    assert (tmp_path / "helix-sim-link").is_symlink()
    assert clean_leftovers(tmp_path) == []
