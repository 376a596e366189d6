"""The sim's Helix.app host with a real qemu-system-aarch64: the launcher the harness runs as the bundled QEMU
execs a real QEMU (QMP, events, its process), and the guest follows QEMU's state: STOP freezes the guest's
processes and the SLIRP forwards, RESUME thaws them, powerdown / quit / a killed QEMU stop the guest.

Skips, saying why, where no qemu-system-aarch64 exists (Debian: qemu-system-arm, installed by `make debs`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness.config import load_target
from harness.deadline import poll_until
from harness.drivers.helix_app.command import command_line
from harness.drivers.helix_app.provider import ssh_banner
from harness.drivers.qmp import QmpMonitor
from helix_sim import Simulator, SimConfig
from helix_sim.host.real_qemu import find_qemu, parse_app_argv

pytestmark = pytest.mark.skipif(find_qemu() is None, reason="no qemu-system-aarch64 on this host: install Debian's "
                                "qemu-system-arm (`make debs`) to run the Helix.app simulator")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("helix-app") / "sim"
    with Simulator(SimConfig(root=root, provider="helix-app", delay_scale=0.3)) as sim:
        yield sim


def _sshd_state(sim) -> str | None:
    pid = sim.guest.sshd_pid
    if pid is None:
        return None
    try:
        return psutil.Process(pid).status()
    except psutil.Error:
        return None


def _boot(sim, tmp_path: Path):
    """Start "Helix.app's QEMU" as the harness does: the app's command line, its own process group, files."""
    target = load_target(sim.info()["target_file"])
    argv = command_line(target)
    err, out = open(tmp_path / "stderr.log", "ab"), open(tmp_path / "console.log", "ab")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, start_new_session=True)
    err.close()
    out.close()
    monitor = QmpMonitor("127.0.0.1", target.vm.qmp_port)
    poll_until(lambda: _try_connect(monitor), timeout=15, what="QMP")
    poll_until(lambda: sim.host.status == "running" and _sshd_state(sim) is not None, timeout=15, what="the guest")
    return target, proc, monitor


def _try_connect(monitor: QmpMonitor) -> bool:
    try:
        monitor.connect(timeout=1)
        return True
    except Exception:  # noqa: BLE001 - refused while QEMU starts
        return False


def test_parse_app_argv_reads_what_the_sim_needs():
    app = parse_app_argv(["-netdev", "user,id=net0,hostfwd=tcp::41222-:22,hostfwd=tcp:127.0.0.1:41080-:8080",
                          "-device", "virtio-gpu-gl-pci,id=gpu0,hostmem=256M,helix-port=41937",
                          "-spice", "unix=on,gl=es", "-qmp", "tcp:127.0.0.1:41444,server,nowait"])
    assert app.qmp == ("127.0.0.1", 41444) and app.helix_port == 41937 and app.spice == "unix=on,gl=es"
    assert app.forward_to(22) == 41222 and app.forward_to(8080) == 41080


def test_the_guest_follows_a_real_qemu(sim, tmp_path):
    target, proc, monitor = _boot(sim, tmp_path)
    try:
        pid = proc.pid
        assert sim.info()["qemu_pid"] == pid
        assert "qemu-system-aarch64" in psutil.Process(pid).cmdline()[0]  # the launcher exec'd a real QEMU
        assert monitor.greeting["QMP"]["version"]["qemu"]["major"] >= 7
        assert monitor.query_status(timeout=2) == "running"
        assert ssh_banner("127.0.0.1", target.vm.ssh_port, 2) == "banner"
        assert psutil.Process(pid).cpu_percent(interval=0.3) < 50  # -M none: no vCPU spins
        # STOP freezes the guest and the forwards; RESUME thaws them
        monitor.execute("stop", timeout=2)
        poll_until(lambda: _sshd_state(sim) == psutil.STATUS_STOPPED, timeout=5, what="sshd stopped")
        assert ssh_banner("127.0.0.1", target.vm.ssh_port, 0.5) == "silent"
        monitor.execute("cont", timeout=2)
        poll_until(lambda: _sshd_state(sim) not in (psutil.STATUS_STOPPED, None), timeout=5, what="sshd thawed")
        assert ssh_banner("127.0.0.1", target.vm.ssh_port, 2) == "banner"
        assert [e.name for e in monitor.seen("STOP", "RESUME")] == ["STOP", "RESUME"]
        # system_powerdown: the guest powers off, QEMU exits 0
        monitor.execute("system_powerdown", timeout=2)
        assert proc.wait(15) == 0
        poll_until(lambda: sim.host.status == "stopped" and _sshd_state(sim) is None, timeout=10, what="power-off")
        assert ssh_banner("127.0.0.1", target.vm.ssh_port, 0.5) == "refused"  # no QEMU, no forward
        assert "helix: [HELIX] Frame export ready" in (tmp_path / "stderr.log").read_text()
        assert "helix login:" in (tmp_path / "console.log").read_text()
    finally:
        monitor.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_killed_qemu_stops_the_guest(sim, tmp_path):
    target, proc, monitor = _boot(sim, tmp_path)
    monitor.close()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    poll_until(lambda: sim.host.status == "stopped" and _sshd_state(sim) is None, timeout=10, what="the guest gone")
    assert sim.info()["qemu_pid"] is None


def test_sim_up_prints_qmp_port_and_qemu_pid(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "helix_sim", "up", "--provider", "helix-app", "--json",
                             "--root", str(tmp_path / "sim")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        info = json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    from helix_sim.simulator import INFO_KEYS

    assert set(INFO_KEYS) | {"qmp_port", "qemu_pid"} <= set(info)
    assert isinstance(info["qmp_port"], int) and info["qemu_pid"] is None  # the harness starts QEMU
    assert load_target(info["target_file"]).vm.provider == "helix-app"
    assert proc.returncode == 0
