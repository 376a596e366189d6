"""The Helix.app provider without a VM: its config, the app's command line, what must not run beside it, the
doctor's bundle checks, the QMP greeting that never comes, and how a failed phase is explained."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.causes import CAUSES
from harness.config import TargetConfig, parse_target
from harness.doctor import HELIX_APP_CHECK_NAMES, run_doctor
from harness.doctor.helix_app import bundle_paths, check_helix_app_bundle, check_helix_app_files
from harness.drivers.helix_app import command
from harness.drivers.helix_app.conflicts import APP_PID_FILE, find_conflicts
from harness.drivers.helix_app.provider import HelixAppError, http_probe, ssh_banner
from harness.drivers.qmp import QmpError, QmpMonitor
from harness.errors import ConfigError, HarnessError
from harness.strategy import Strategy, StrategyBroken
from harness.verdict.checks import from_error
from helix_sim.config import SimConfig
from helix_sim.host.helix_app import write_bundle

from .fakes import Calls, FakeVm, fake_drivers, fake_target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def helix_app_target(tmp_path: Path, **vm) -> TargetConfig:
    ports = {"ssh_port": free_port(), "api_port": free_port(), "qmp_port": free_port(),
             "frame_export_port": free_port()}
    return parse_target({"kind": "helix-app", "vm": {"app": str(tmp_path / "Helix.app"),
                                                     "data_dir": str(tmp_path / "data"), **ports, **vm}})


# -- config ---------------------------------------------------------------------------------------------
def test_helix_app_config_defaults_follow_the_app():
    t = parse_target({"vm": {"provider": "helix-app"}})
    assert (t.vm.ssh_port, t.vm.api_port, t.vm.qmp_port, t.vm.frame_export_port) == (41222, 41080, 41444, 41937)
    assert (t.ssh.port, t.ssh.user, t.frame_export.port) == (41222, "ubuntu", 41937)
    assert t.ssh.key.endswith("Library/Application Support/Helix/ssh/helix_ed25519")
    assert t.vm.qemu_path == "/Applications/Helix.app/Contents/MacOS/qemu-system-aarch64"
    assert t.vm.firmware_path == "/Applications/Helix.app/Contents/Resources/firmware"
    assert parse_target({"kind": "helix-app"}).vm.provider == "helix-app"
    assert TargetConfig().vm.provider == "utm" and TargetConfig().ssh.port == 2222  # UTM unchanged


@pytest.mark.parametrize("data, key", [
    ({"vm": {"provider": "vbox"}}, "[vm] provider"),
    ({"kind": "helix-app", "vm": {"provider": "utm"}}, "kind"),
    ({"kind": "helix-app", "ssh": {"port": 2222}}, "[ssh] port"),
    ({"kind": "helix-app", "vm": {"qmp_port": 41222}}, "must differ"),
    ({"kind": "helix-app", "vm": {"qmp_port": 0}}, "[vm] qmp_port"),
    ({"kind": "helix-app", "vm": {"hostmem": "512"}}, "[vm] hostmem"),
    ({"kind": "helix-app", "vm": {"qemu": "/x;rm -rf /"}}, "[vm] qemu"),
    ({"kind": "helix-app", "vm": {"powerdown_wait": -1}}, "[vm] powerdown_wait"),
])
def test_bad_helix_app_config_names_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        parse_target(data)
    assert key in err.value.message


def test_overriding_the_vm_ports_moves_ssh_and_frame_export():
    t = parse_target({"kind": "helix-app"}).with_overrides({"vm.ssh_port": 5022, "vm.frame_export_port": 5937})
    assert (t.ssh.port, t.frame_export.port) == (5022, 5937)


# -- the app's command line -------------------------------------------------------------------------------
def test_command_line_is_the_apps(tmp_path):
    t = helix_app_target(tmp_path, cpus=4, memory_mb=8192)
    argv = command.command_line(t, size=command.vm_size(t, ram=16 << 30))
    line = " ".join(argv)
    vm = t.vm
    assert argv[0] == vm.qemu_path
    assert "-accel hvf,ipa-granule-size=0x1000 -cpu host -smp 4 -m 8192 -nodefaults -vga none" in line
    assert f"hostfwd=tcp::{vm.ssh_port}-:22,hostfwd=tcp:127.0.0.1:{vm.api_port}-:8080" in line
    assert "hostmem=256M" in line and f"helix-port={vm.frame_export_port}" in line
    assert f"-qmp tcp:127.0.0.1:{vm.qmp_port},server,nowait" in line
    assert "zfs-data.qcow2" not in line and "seed.iso" not in line  # only when the files exist
    assert f"addr={command.spice_socket()},disable-ticketing=on,gl=es" in line
    vm_dir = Path(vm.vm_dir_path)
    vm_dir.mkdir(parents=True)
    (vm_dir / "zfs-data.qcow2").touch()
    (vm_dir / "seed.iso").touch()
    line = " ".join(command.command_line(t))
    assert "zfs-data.qcow2,format=qcow2,if=virtio" in line and "-smbios type=1,serial=ds=nocloud" in line


def test_vm_size_as_the_app_computes_it(tmp_path):
    t = helix_app_target(tmp_path)
    assert command.vm_size(t, settings={}, cpus_on_host=10, ram=32 << 30) == (5, 16384, "1024M")
    assert command.vm_size(t, settings={}, cpus_on_host=2, ram=8 << 30) == (2, 6144, "256M")
    assert command.vm_size(t, settings={"vm_cpus": 6, "vm_memory_mb": 12000}, ram=64 << 30)[:2] == (6, 12000)
    env = command.environment(t, base={"PATH": "/bin"})
    assert env["HOME"] == t.vm.data_dir and env["ANGLE_DEFAULT_PLATFORM"] == "metal"
    assert env["VK_DRIVER_FILES"].endswith("kosmickrisp_mesa_icd.json") and env["PATH"] == "/bin"


# -- what must not run beside the harness's QEMU ---------------------------------------------------------------
def test_a_live_pid_in_qemu_pid_and_a_held_port_are_conflicts(tmp_path):
    t = helix_app_target(tmp_path)
    data = Path(t.vm.data_dir)
    data.mkdir(parents=True)
    assert find_conflicts(t) == []
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    listener = socket.create_server(("127.0.0.1", t.vm.api_port))
    try:
        (data / APP_PID_FILE).write_text(f"{sleeper.pid}\n")
        found = {(c.cause, c.source) for c in find_conflicts(t)}
        assert ("stale_qemu_pid", "pid_file") in found  # the app's qemu.pid names a live process
        assert ("helix_app_port_busy", "port") in found  # something that is not QEMU holds the API port
    finally:
        listener.close()
        sleeper.kill()
        sleeper.wait()
    assert find_conflicts(t) == []  # a dead pid in qemu.pid is only a stale file


# -- the doctor ---------------------------------------------------------------------------------------------
def test_doctor_checks_the_bundle(tmp_path):
    t = helix_app_target(tmp_path)
    assert check_helix_app_bundle(t, system="Darwin").status == "fail"  # no bundle
    write_bundle(tmp_path, SimConfig(root=tmp_path))
    ok = check_helix_app_bundle(t, system="Darwin")
    assert ok.status == "ok", ok.finding
    assert "@executable_path/../Frameworks" in ok.finding and "75 KB" in ok.finding
    wrapper, dylib = bundle_paths(t)
    dylib.unlink()
    missing = check_helix_app_bundle(t, system="Darwin")
    assert missing.status == "fail" and "libqemu-aarch64-softmmu.dylib" in missing.finding
    assert missing.data["cause"] == "helix_app_bundle"
    wrapper.write_bytes(b"#!/bin/sh\n")
    assert "not a Mach-O" in check_helix_app_bundle(t, system="Darwin").finding
    files = check_helix_app_files(t, system="Darwin")
    assert files.status == "fail" and "VM disk" in files.finding and files.data["cause"] == "helix_app_files"


def test_doctor_runs_the_helix_app_checks(tmp_path):
    t = helix_app_target(tmp_path)
    report = run_doctor(t, reports_dir=tmp_path, system="Darwin")
    assert tuple(c.name for c in report.checks) == HELIX_APP_CHECK_NAMES


# -- QMP and the probes: a hang is seen, never waited out -------------------------------------------------------
def _silent_listener():
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(2)
        for s in held:
            s.close()
        server.close()

    return server.getsockname()[1], close


def test_a_greeting_that_never_comes_is_reported_in_time():
    port, close = _silent_listener()
    monitor = QmpMonitor("127.0.0.1", port)
    try:
        with pytest.raises(QmpError) as err:
            monitor.connect(timeout=0.5)
        assert err.value.kind == "no_greeting"
        assert ssh_banner("127.0.0.1", port, 0.3) == "silent"
        assert "no answer" in http_probe("127.0.0.1", port, 0.3)
    finally:
        monitor.close()
        close()
    with pytest.raises(QmpError) as err:
        QmpMonitor("127.0.0.1", port).connect(timeout=0.5)
    assert err.value.kind == "refused"
    assert ssh_banner("127.0.0.1", port, 0.3) == "refused"


# -- the strategy asks the provider what a failed phase means -----------------------------------------------------
class ExplainingVm(FakeVm):
    def explain(self, phase, error):
        return HelixAppError("QEMU's main loop is deadlocked", cause="qemu_deadlock",
                             evidence=[f"line {i}" for i in range(14)])


def test_a_failed_phase_is_explained_by_the_provider():
    calls = Calls({"ssh.connect": HarnessError("SSH banner timeout", cause="ssh_unresponsive")})
    drivers = fake_drivers(calls)
    drivers.vm = ExplainingVm(calls)
    s = Strategy(target=fake_target(), drivers=drivers)
    with pytest.raises(HelixAppError):
        s.transition("ssh_ready")
    phase, exc = s.broken
    assert phase == "ssh" and exc.cause == "qemu_deadlock" and exc.__cause__.cause == "ssh_unresponsive"
    finding = from_error("phase:ssh", exc)
    assert (finding.layer, finding.cause) == (CAUSES["qemu_deadlock"].layer, "qemu_deadlock")
    assert "line 13" in finding.evidence  # the error's own evidence lines are all kept
    with pytest.raises(StrategyBroken):
        s.ensure("stack_up")


def test_the_example_target_for_a_real_mac_loads():
    t = __import__("harness.config", fromlist=["load_target"]).load_target(
        Path(__file__).resolve().parents[2] / "fixtures/targets/helix-app.example.toml", env={})
    assert t.vm.provider == "helix-app" and not t.is_sim
    assert (t.ssh.port, t.ssh.user, t.frame_export.port, t.vm.qmp_port) == (41222, "ubuntu", 41937, 41444)
