"""The files of the sim's Mac with Helix.app: the bundle the doctor inspects (:func:`write_bundle`), the host
helix CLI (:func:`write_cli_launcher`) and the target file pointing the harness at it (:func:`target_toml`).
See :mod:`helix_sim.host.helix_app` for the host itself."""

from __future__ import annotations

import json
import shlex
import stat
import sys
from pathlib import Path

from harness.protocols.macho import build_macho

from .._paths import IMPORT_ROOT
from ..config import SimConfig

APP_BUNDLE = "Helix.app"
WRAPPER = f"{APP_BUNDLE}/Contents/MacOS/qemu-system-aarch64"
DYLIB = f"{APP_BUNDLE}/Contents/Frameworks/libqemu-aarch64-softmmu.dylib"
APP_EXECUTABLE = f"{APP_BUNDLE}/Contents/MacOS/Helix for Mac"
FIRMWARE = (f"{APP_BUNDLE}/Contents/Resources/firmware/edk2-aarch64-code.fd",
            f"{APP_BUNDLE}/Contents/Resources/firmware/edk2-arm-vars.fd")
VULKAN_ICD = f"{APP_BUNDLE}/Contents/Resources/vulkan/icd.d/kosmickrisp_mesa_icd.json"
#: The data dir, under the simulated user's HOME (the app: ~/Library/Application Support/Helix).
HOME = "home"
DATA_DIR = f"{HOME}/Library/Application Support/Helix"
#: The real wrapper is about 75 KB: the Mach-O written here is padded to that size.
WRAPPER_SIZE = 75 * 1024

def write_bundle(host_dir: Path, config: SimConfig) -> Path:
    """``host_dir/Helix.app`` as the doctor inspects it: the ~75 KB Mach-O wrapper (LC_RPATH
    ``@executable_path/../Frameworks``, loading ``@rpath/libqemu-aarch64-softmmu.dylib``), that dylib (with the
    build's ``[HELIX] VERSION:``), the EDK2 firmware and the Vulkan ICD. Returns the bundle."""
    host_dir = Path(host_dir)
    for rel in (WRAPPER, DYLIB, *FIRMWARE, VULKAN_ICD):
        (host_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    loads = ["@rpath/libqemu-aarch64-softmmu.dylib", "/usr/lib/libSystem.B.dylib"]
    strings = ("QEMU emulator version 10.0.2 (qemu-utm helix)", "_main")
    wrapper = build_macho(loads, rpaths=["@executable_path/../Frameworks"], strings=strings)
    pad = WRAPPER_SIZE - len(wrapper)
    if pad > 0:  # the real wrapper's size: code and signature the stand-in does not have
        wrapper = build_macho(loads, rpaths=["@executable_path/../Frameworks"], strings=(*strings, "\x01" * (pad - 1)))
    (host_dir / WRAPPER).write_bytes(wrapper)
    (host_dir / WRAPPER).chmod(0o755)
    (host_dir / DYLIB).write_bytes(build_macho(
        ["@rpath/libglib-2.0.0.dylib", "@rpath/libvirglrenderer.1.dylib", "@rpath/libspice-server.1.dylib",
         "/System/Library/Frameworks/Metal.framework/Versions/A/Metal",
         "/System/Library/Frameworks/VideoToolbox.framework/Versions/A/VideoToolbox", "/usr/lib/libSystem.B.dylib"],
        id_dylib="@rpath/libqemu-aarch64-softmmu.dylib",
        strings=(f"[HELIX] VERSION: {config.qemu_version}", "_helix_frame_export_init", "_helix_scanout_frame_ready")))
    for rel in FIRMWARE:
        (host_dir / rel).write_bytes(b"\0" * 4096)
    (host_dir / VULKAN_ICD).write_text(json.dumps({"file_format_version": "1.0.1", "ICD": {
        "library_path": "../../../Frameworks/libvulkan_kosmickrisp.dylib", "api_version": "1.3.0"}}) + "\n")
    return host_dir / APP_BUNDLE


def write_cli_launcher(path: Path, config: SimConfig) -> Path:
    """The darwin helix CLI's stand-in on the host: the sim's CLI with the sim's timings."""
    from ..vm.sshd import cli_timing

    env = cli_timing(config).to_env()
    lines = ["#!/bin/sh", "# helix: the helix CLI on the host (the sim's; see helix_sim/guest/helix).",
             *[f"{k}={shlex.quote(v)}; export {k}" for k, v in env.items()],
             'HELIX_CLI_ARGV0="$0"; export HELIX_CLI_ARGV0',
             f'PYTHONPATH={shlex.quote(str(IMPORT_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}; export PYTHONPATH',
             f'exec {shlex.quote(sys.executable)} -s -m helix_sim.guest.helix "$@"', ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    path.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return path


def target_toml(host, *, api_port: int, frame_export_port: int, helix_debug_log: Path, width: int,
            height: int) -> str:
    """The target file of a helix-app simulator (``host``: its :class:`~helix_sim.host.helix_app.HelixAppHost`)."""
    def q(value: object) -> str:
        return json.dumps(str(value))

    g = host.guest
    return f"""\
# Target config of the helix-e2e simulator rooted at {host.host_dir.parent}: its Mac runs Helix.app, whose
# bundled QEMU is the launcher below (a real qemu-system-aarch64, see helix_sim/host/real_qemu.py).
name = "sim-helix-app"
kind = "helix-app"

[vm]
app = {q(host.app_dir)}
qemu = {q(host.launcher)}
data_dir = {q(host.data_dir)}
ssh_port = {host.ssh_port}
api_port = {host.api_port}
qmp_port = {host.qmp_port}
frame_export_port = {frame_export_port}
helix_cli = {q(host.helix_cli)}
powerdown_wait = 5

[ssh]
host = "127.0.0.1"
user = {q(g.ssh_user)}
known_hosts = {q(host.known_hosts)}

[guest]
helix_dir = "~/helix"
api_port = {api_port}
drm_env_file = "~/etc/helix-drm-manager.env"

[host]
helix_debug_log = {q(helix_debug_log)}
crash_dir = {q(host.crash_dir)}

[stream]
duration = 10
width = {width}
height = {height}

[timeouts]
boot = 30
ssh = 20
stack = 60
session = 60

# This target IS a running simulator (`sim up`): the harness drives it and does not start another.
[sim]
external = true
provider = "helix-app"
"""
