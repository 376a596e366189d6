"""Helix.app's QEMU command line and environment (helix-app-vm.md §1, ``VMManager.runVM`` in for-mac/vm.go).

The harness runs the app's bundled QEMU itself (§5, Option B) with the app's own line, so what runs is
what users run. Defaults are filled in as the app fills them: CPUs and memory from ``settings.json``
(``vm_cpus``, ``vm_memory_mb``; else half the host, at least 2 CPUs / 6144 MB), the GPU's ``hostmem``
from the host's RAM (``getGPUHostMem``: at most 16 GB → 256M, more → 1024M). One deliberate change:
QMP listens on ``127.0.0.1`` (the app says ``localhost``), so our client and the stale-QEMU check look
at the same address.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from ...config import TargetConfig, expand

log = logging.getLogger(__name__)

#: The app's defaults when settings.json says nothing (StartVM: NumCPU/2 at least 2; half of RAM at least 6144 MB).
MIN_CPUS = 2
MIN_MEMORY_MB = 6144
#: getGPUHostMem(): hosts with at most this much RAM get 256M, larger ones 1024M (#1948, helix-app-vm.md §6).
HOSTMEM_SMALL_HOST_BYTES = 16 * (1 << 30)
SPICE_SOCKET = "helix-spice.sock"
FIRMWARE_CODE = "edk2-aarch64-code.fd"
FIRMWARE_VARS = "edk2-arm-vars.fd"


def read_settings(data_dir: str) -> dict[str, Any]:
    """The app's ``settings.json`` (empty when missing or unreadable: the defaults apply)."""
    path = Path(expand(data_dir)) / "settings.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _host_ram() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def vm_size(target: TargetConfig, *, settings: Mapping[str, Any] | None = None, cpus_on_host: int | None = None,
            ram: int | None = None) -> tuple[int, int, str]:
    """(CPUs, memory in MB, GPU hostmem) as the app computes them, ``[vm]`` values first."""
    vm = target.vm
    settings = read_settings(vm.data_dir) if settings is None else settings
    ram = _host_ram() if ram is None else ram
    cpus = vm.cpus or _positive_int(settings.get("vm_cpus")) or max(MIN_CPUS, (cpus_on_host or os.cpu_count() or 2) // 2)
    memory = vm.memory_mb or _positive_int(settings.get("vm_memory_mb")) or max(MIN_MEMORY_MB, ram // 2 // (1 << 20))
    hostmem = vm.hostmem or ("256M" if ram <= HOSTMEM_SMALL_HOST_BYTES else "1024M")
    return cpus, memory, hostmem


def _positive_int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def spice_socket() -> str:
    """``filepath.Join(os.TempDir(), "helix-spice.sock")``: $TMPDIR on macOS, not /tmp."""
    return os.path.join(tempfile.gettempdir(), SPICE_SOCKET)


def command_line(target: TargetConfig, *, size: tuple[int, int, str] | None = None) -> list[str]:
    """The QEMU argv of ``VMManager.runVM`` with this target's paths and ports."""
    vm = target.vm
    cpus, memory, hostmem = size or vm_size(target)
    fw, vm_dir = vm.firmware_path, vm.vm_dir_path
    argv = [
        vm.qemu_path,
        "-machine", "virt,gic-version=3,highmem=on", "-accel", "hvf,ipa-granule-size=0x1000", "-cpu", "host",
        "-smp", str(cpus), "-m", str(memory), "-nodefaults", "-vga", "none",
        "-drive", f"if=pflash,format=raw,readonly=on,file={fw}/{FIRMWARE_CODE}",
        "-drive", f"if=pflash,format=raw,snapshot=on,file={fw}/{FIRMWARE_VARS}",
        "-drive", f"file={vm_dir}/disk.qcow2,format=qcow2,if=virtio,cache=writeback",
    ]
    if os.path.exists(os.path.join(vm_dir, "zfs-data.qcow2")):
        argv += ["-drive", f"file={vm_dir}/zfs-data.qcow2,format=qcow2,if=virtio"]
    if os.path.exists(os.path.join(vm_dir, "seed.iso")):
        argv += ["-drive", f"file={vm_dir}/seed.iso,format=raw,if=virtio,readonly=on",
                 "-smbios", "type=1,serial=ds=nocloud"]
    argv += [
        "-device", "virtio-net-pci,netdev=net0,romfile=",
        "-netdev", f"user,id=net0,hostfwd=tcp::{vm.ssh_port}-:22,"
                   f"hostfwd=tcp:127.0.0.1:{vm.api_port}-:{target.guest.api_port}",
        "-device", f"virtio-gpu-gl-pci,id=gpu0,hostmem={hostmem},blob=true,venus=true,edid=on,xres=5120,yres=2880,"
                   f"helix-port={vm.frame_export_port}",
        "-global", "virtio-gpu-gl-pci.max_outputs=16",
        "-spice", f"unix=on,addr={spice_socket()},disable-ticketing=on,gl=es",
        "-device", "virtio-rng-pci", "-serial", "mon:stdio",
        "-qmp", f"tcp:127.0.0.1:{vm.qmp_port},server,nowait",
    ]
    return argv


def environment(target: TargetConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The app's environment plus what runVM adds: HOME (the data dir: no glib TCC dialog), ANGLE on Metal
    (else `No provider of eglCreateImageKHR found`), and the KosmicKrisp Vulkan ICD."""
    env = dict(os.environ if base is None else base)
    env.update({"HOME": expand(target.vm.data_dir), "ANGLE_DEFAULT_PLATFORM": "metal",
                "VK_DRIVER_FILES": target.vm.vulkan_icd_path})
    return env
