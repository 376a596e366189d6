"""The sim's "UTM.app" and its utmctl: real launcher subprocesses against the control server."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import pytest

from harness.protocols import utmctl as fmt
from helix_sim.host import utmctl
from helix_sim.config import SimConfig
from helix_sim.stack.docker_engine import DockerEngine
from helix_sim.host.utm_app import HostError, UtmHost
from helix_sim.host.qemu import QemuFrameExport

VM_ID = "17DC4F96-F1A9-4B51-962B-03D85998E0E7"
OSSTATUS_1743 = "Error from event: The operation couldn\u2019t be completed. (OSStatus error -1743.)\n"


class RecordingGuest:
    """Stands in for GuestVM here (the orchestrator tests use the real one): records boot/shutdown."""

    def __init__(self) -> None:
        self.boots = 0
        self.shutdowns = 0
        self.thread_ids: set[int] = set()

    def boot(self) -> None:
        self.thread_ids.add(threading.get_ident())
        self.boots += 1

    def shutdown(self) -> None:
        self.shutdowns += 1


class Rig:
    def __init__(self, tmp_path, **cfg) -> None:
        cfg.setdefault("boot_delay_s", 0.1)
        self.config = SimConfig(root=tmp_path, **cfg)
        self.host_dir = tmp_path / "host"
        self.guest = RecordingGuest()
        self.engine = DockerEngine(self.config, tmp_path / "docker.sock")
        self.qemu = QemuFrameExport(self.config, self.host_dir / "helix-debug.log")
        self.power_offs = 0

        async def power_off() -> None:
            self.power_offs += 1

        self.host = UtmHost(
            self.config, self.host_dir, qemu=self.qemu, guest=self.guest, engine=self.engine, on_power_off=power_off
        )
        self.launcher = self.host_dir / "bin" / "utmctl"

    async def start(self) -> None:
        await self.engine.start()
        await self.host.start_control_server()
        utmctl.write_launcher(self.launcher, control_file=self.host.control_file)

    async def close(self) -> None:
        await self.host.close()
        await self.engine.stop()

    async def utmctl(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            str(self.launcher), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def make_rig(tmp_path):
    made: list[Rig] = []

    async def make(*faults: str, **cfg) -> Rig:
        r = Rig(tmp_path, faults=frozenset(faults), **cfg)
        await r.start()
        made.append(r)
        return r

    yield make
    for r in made:
        await r.close()


@pytest.fixture
async def rig(make_rig):
    return await make_rig()


async def test_launcher_list_status_start_stop(make_rig):
    # a boot slow enough to see `starting` from a subprocess even on a loaded machine
    rig = await make_rig(boot_delay_s=1.0)
    assert os.access(rig.launcher, os.X_OK)
    assert rig.launcher.read_text().startswith("#!/bin/sh\n")
    assert json.loads(rig.host.control_file.read_text())["url"] == rig.host.control_url

    rc, out, err = await rig.utmctl("list")
    assert (rc, err) == (0, "")
    assert out == "UUID                                 Status   Name\n" f"{VM_ID} stopped  Linux\n"
    assert fmt.parse_list(out)[0].uuid == VM_ID
    assert await rig.utmctl("status", VM_ID) == (0, "stopped\n", "")
    assert await rig.utmctl("status", "Linux") == (0, "stopped\n", "")
    assert (await rig.utmctl("version"))[:2] == (0, "4.6.4\n")

    container = rig.engine.create_container("helix-api-1", image="helix-api", service="api")
    assert await rig.utmctl("start", VM_ID) == (0, "", "")
    # start returned at once: the guest boots later
    assert rig.host.status == "starting" and rig.guest.boots == 0
    await rig.host.wait_status("started", 10)
    assert rig.guest.boots == 1 and rig.qemu.running
    assert threading.get_ident() not in rig.guest.thread_ids  # sync boot ran in a worker thread
    log = (rig.host_dir / "helix-debug.log").read_text()
    assert f"[HELIX] Frame export ready: TCP 127.0.0.1:{rig.qemu.port}" in log
    assert await rig.utmctl("status", VM_ID) == (0, "started\n", "")

    # start on a started VM: UTM.app refuses; utmctl prints the event error and still exits 0
    rc, out, err = await rig.utmctl("start", "Linux")
    assert (rc, out) == (0, "")
    assert err == "Error from event: The operation couldn\u2019t be completed. (OSStatus error -10000.)\n" "Operation not available.\n"

    assert await rig.utmctl("stop", VM_ID, "--request") == (0, "", "")
    assert rig.host.status == "stopping"
    await rig.host.wait_status("stopped", 10)
    assert rig.guest.shutdowns == 1 and rig.power_offs == 1 and not rig.qemu.running
    assert rig.engine.get(container.id) is None  # VM power-off: containers are gone
    assert await rig.utmctl("stop", VM_ID) == (0, "", "")  # stopping a stopped VM is a no-op


async def test_unknown_vm_and_usage_errors(rig):
    rc, out, err = await rig.utmctl("status", "Ubuntu")
    assert (rc, out, err) == (1, "", "Error: Virtual machine not found.\n")
    rc, _, err = await rig.utmctl("start")
    assert rc == 64 and err.startswith("Error: Missing expected argument '<identifier>'\n")
    rc, _, err = await rig.utmctl("frobnicate")
    assert rc == 64 and err.startswith("Error: Unexpected argument 'frobnicate'\n")
    rc, _, err = await rig.utmctl("list", "--verbose")  # the flag the Helix docs use does not exist
    assert rc == 64 and err.startswith("Error: Unknown option '--verbose'\n")
    rc, _, err = await rig.utmctl("stop", VM_ID, "--kill", "--force")
    assert rc == 64 and "You can only specify one of: --force, --kill, or --request" in err
    rc, out, _ = await rig.utmctl("--help")
    assert rc == 0 and out.startswith("OVERVIEW: CLI tool for controlling UTM virtual machines.")


async def test_unsupported_commands(rig):
    rc, out, err = await rig.utmctl("suspend", VM_ID)
    assert (rc, out) == (0, "") and err.endswith("Operation not supported by the backend.\n")
    rc, out, err = await rig.utmctl("ip-address", VM_ID)
    assert rc == 0 and "OSStatus error -10000" in err
    rc, out, err = await rig.utmctl("delete", "Linux")
    assert rc == 0 and err.endswith("Operation not supported by the backend.\n")
    assert rig.host.status == "stopped"


async def test_osstatus_is_transient_and_exits_zero(make_rig):
    rig = await make_rig("utmctl_osstatus")
    assert rig.host.osstatus_failures_left > 3  # outlasts the driver's 3 retries: the first run fails
    for _ in range(rig.host.osstatus_failures_left):
        rc, out, err = await rig.utmctl("start", VM_ID)
        assert (rc, out, err) == (0, "", OSSTATUS_1743)
        assert fmt.find_event_error(err).osstatus == -1743
        assert rig.host.status == "stopped"  # the action did not happen
    assert await rig.utmctl("status", VM_ID) == (0, "stopped\n", "")  # status is not affected
    assert await rig.utmctl("start", VM_ID) == (0, "", "")  # a retry succeeds
    await rig.host.wait_status("started", 10)


async def test_no_gui_fails_every_call(make_rig):
    rig = await make_rig("utmctl_no_gui")
    for args in (("list",), ("version",), ("status", VM_ID), ("start", VM_ID)):
        rc, out, err = await rig.utmctl(*args)
        assert (rc, out, err) == (1, "", "NOTE: utmctl does not work from SSH sessions or before logging in.\n")
    assert rig.host.status == "stopped"


async def test_crash_during_boot(make_rig):
    rig = await make_rig("vm_crash_boot", boot_delay_s=1.0)
    assert await rig.utmctl("start", VM_ID) == (0, "", "")
    assert rig.host.status == "starting"
    await rig.host.wait_status("stopped", 10)
    assert rig.guest.boots == 0 and not rig.qemu.running
    reports = sorted(rig.host.crash_dir.glob("QEMULauncher-*.ips"))
    assert len(reports) == 1
    assert reports[0].name[len("QEMULauncher-"):-len(".ips")].count("-") == 3  # YYYY-MM-DD-HHMMSS
    header_line, body_text = reports[0].read_text().split("\n", 1)
    header = json.loads(header_line)
    assert header["app_name"] == "QEMULauncher" and header["bug_type"] == "309"
    assert '"termination" : {"flags":0,"code":6,"namespace":"SIGNAL","indicator":"Abort trap: 6"}' in body_text
    assert '"procName" : "QEMULauncher"' in body_text
    body = json.loads(body_text)
    crashed = next(t for t in body["threads"] if t.get("triggered"))
    symbols = [f["symbol"] for f in crashed["frames"]]
    assert "__assert_rtn" in symbols and "qemu_spice_init" in symbols
    log_text = (rig.host_dir / "helix-debug.log").read_text() if (rig.host_dir / "helix-debug.log").exists() else ""
    assert "Frame export ready" not in log_text  # QEMU never got that far
    assert await rig.utmctl("status", VM_ID) == (0, "stopped\n", "")


async def test_crash_vm_while_streaming(rig):
    rig.host.start_vm()
    await rig.host.wait_status("started", 10)
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.qemu.port)
    await rig.host.crash_vm("vm_crash_stream")
    assert rig.host.status == "stopped"
    assert rig.guest.shutdowns == 1 and rig.power_offs == 1
    assert await asyncio.wait_for(reader.read(10), 5) == b""  # QEMU's sockets died with it
    writer.close()
    [report] = rig.host.crash_reports
    body = json.loads(report.read_text().split("\n", 1)[1])
    assert body["termination"]["indicator"] == "Abort trap: 6"
    # a crash of a stopped VM does nothing
    await rig.host.crash_vm("again")
    assert len(rig.host.crash_reports) == 1
    # and the VM boots again afterwards
    rig.host.start_vm()
    await rig.host.wait_status("started", 10)


async def test_crash_vm_from_a_worker_thread(rig):
    rig.host.start_vm()
    await rig.host.wait_status("started", 10)
    future = await asyncio.to_thread(rig.host.crash_vm, "from a thread")
    await asyncio.wrap_future(future)
    assert rig.host.status == "stopped" and len(rig.host.crash_reports) == 1


async def test_stop_while_starting_shuts_guest_down(rig):
    rig.host.start_vm()
    with pytest.raises(HostError):
        rig.host.start_vm()
    rig.host.stop_vm("kill")
    await rig.host.wait_status("stopped", 10)
    assert rig.guest.boots == rig.guest.shutdowns
    assert not rig.qemu.running


async def test_control_server_gone(tmp_path):
    r = Rig(tmp_path)
    await r.start()
    await r.close()
    rc, out, err = await r.utmctl("list")
    assert (rc, out, err) == (1, "", "Error: Application not found.\n")


async def test_qemu_binary_clean_and_version(rig):
    from macholib.MachO import MachO

    deps = [name for _, _, name in MachO(str(rig.host.qemu_binary)).headers[0].walkRelocatables()]
    assert deps and not any("sysroot" in d or d.startswith("/Users/") for d in deps)
    assert "@rpath/pixman-1.0.framework/Versions/A/pixman-1.0" in deps
    assert b"[HELIX] VERSION: 2026-02-05-reject-resource-id-zero\0" in rig.host.qemu_binary.read_bytes()


async def test_stale_qemu_binary_differs_from_logged_version(make_rig):
    rig = await make_rig("stale_qemu")
    rig.host.start_vm()
    await rig.host.wait_status("started", 10)
    logged = [line for line in (rig.host_dir / "helix-debug.log").read_text().splitlines() if "VERSION" in line]
    assert logged == ["[HELIX] VERSION: 2026-02-04-stale-build"]
    assert b"[HELIX] VERSION: 2026-02-05-reject-resource-id-zero" in rig.host.qemu_binary.read_bytes()


async def test_sysroot_paths_binary_and_dyld_crash(make_rig):
    from macholib.MachO import MachO

    rig = await make_rig("sysroot_paths")
    deps = [name for _, _, name in MachO(str(rig.host.qemu_binary)).headers[0].walkRelocatables()]
    assert "/Users/luke/pm/UTM/sysroot-macOS-arm64/lib/libpixman-1.0.dylib" in deps
    assert await rig.utmctl("start", VM_ID) == (0, "", "")
    await rig.host.wait_status("stopped", 10)
    [report] = rig.host.crash_reports
    body = json.loads(report.read_text().split("\n", 1)[1])
    assert body["termination"]["namespace"] == "DYLD" and body["termination"]["indicator"] == "Library missing"
    assert "libpixman-1.0.dylib" in body["termination"]["reasons"][0]
    assert rig.guest.boots == 0 and not rig.qemu.running
