"""Helix.app as the VM provider (``[vm] provider = "helix-app"``): its bundled QEMU, its files, its ports.

Checks ``helix_app_bundle`` (the bundled ``qemu-system-aarch64`` is the ~75 KB Mach-O wrapper that loads
``libqemu-aarch64-softmmu.dylib`` through an ``@rpath`` that ``LC_RPATH @executable_path/../Frameworks``
resolves into the bundle, and that dylib is there: helix-app-vm.md §1), ``helix_app_files`` (the EDK2
firmware, the KosmicKrisp Vulkan ICD, the VM disk), ``helix_app_running`` (no Helix.app using this data
dir, no live QEMU in its ``qemu.pid``) and ``helix_app_ports`` (SSH 41222, API 41080, QMP 41444 and frame
export 41937 free, or held by the harness's own QEMU). The dylib itself goes through the UTM checks that
apply to any QEMU build: ``dylib_paths`` and ``qemu_version`` (:mod:`.qemu`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import TargetConfig, expand
from .report import FAIL, OK, WARN, Check, host_system, sim_unprovisioned, skipped_for_sim

__all__ = ["WRAPPER_IN_APP", "DYLIB_IN_APP", "DYLIB_NAME", "bundle_paths", "check_helix_app_bundle",
           "check_helix_app_files", "check_helix_app_running", "check_helix_app_ports"]

WRAPPER_IN_APP = "Contents/MacOS/qemu-system-aarch64"
DYLIB_NAME = "libqemu-aarch64-softmmu.dylib"
DYLIB_IN_APP = f"Contents/Frameworks/{DYLIB_NAME}"
#: The wrapper is about 75 KB; a binary this large is a whole QEMU (Homebrew's), not the app's wrapper.
WRAPPER_MAX_BYTES = 4 << 20
WRAPPER_USUAL_BYTES = (32 << 10, 256 << 10)
_REINSTALL = "reinstall Helix.app (or rebuild it: for-mac/scripts/build-helix-app.sh), or fix [vm] app"


def bundle_paths(target: TargetConfig) -> tuple[Path, Path]:
    """(the bundle's wrapper, its dylib)."""
    app = Path(expand(target.vm.app))
    return app / WRAPPER_IN_APP, app / DYLIB_IN_APP


def _skip(target: TargetConfig, name: str, what: str, system: str) -> Check | None:
    if sim_unprovisioned(target):
        return skipped_for_sim(name, what)
    return None


def _resolve(load: str, wrapper: Path, rpaths: list[str]) -> list[Path]:
    """Where dyld would look for ``load`` from ``wrapper`` (``@executable_path``, ``@loader_path``, ``@rpath``)."""
    exe_dir = str(wrapper.parent)

    def expand_at(path: str) -> str:
        return path.replace("@executable_path", exe_dir).replace("@loader_path", exe_dir)

    if load.startswith("@rpath/"):
        rest = load[len("@rpath/"):]
        return [Path(os.path.normpath(os.path.join(expand_at(r), rest))) for r in rpaths]
    return [Path(os.path.normpath(expand_at(load)))]


def check_helix_app_bundle(target: TargetConfig, *, system: str | None = None) -> Check:
    """The bundled QEMU: the Mach-O wrapper, the dylib it loads, and the rpath that joins them."""
    name = "helix_app_bundle"
    system = host_system(system)
    skipped = _skip(target, name, "its Helix.app bundle", system)
    if skipped is not None:
        return skipped
    wrapper, dylib = bundle_paths(target)
    data = {"cause": "helix_app_bundle", "wrapper": str(wrapper), "dylib": str(dylib)}
    qemu = target.vm.qemu_path
    override = f"; [vm] qemu runs {qemu} instead (like the app's HELIX_QEMU_PATH)" if target.vm.qemu else ""
    if target.vm.qemu and not (os.path.isfile(qemu) and os.access(qemu, os.X_OK)):
        return Check(name, FAIL, f"[vm] qemu {qemu} is missing or not executable", "fix [vm] qemu or remove it", data)
    if not wrapper.is_file():
        if system != "Darwin" and not target.is_sim:
            return Check(name, WARN, f"skipped: not macOS ({system or 'unknown OS'}) and {wrapper} is not here",
                         "run the doctor on the Mac that runs Helix.app", data)
        return Check(name, FAIL, f"Helix.app's QEMU not found at {wrapper}", _REINSTALL, data)
    from ..protocols.macho import MachOError, read_macho

    try:
        slices = read_macho(wrapper)
    except MachOError as exc:
        return Check(name, FAIL, f"{wrapper} is not a Mach-O binary: {exc.message}", _REINSTALL, data)
    size = wrapper.stat().st_size
    if size > WRAPPER_MAX_BYTES:
        return Check(name, FAIL, f"{wrapper} is {size >> 20} MB: a whole QEMU, not Helix.app's ~75 KB wrapper "
                     f"around {DYLIB_NAME} (a Homebrew QEMU cannot run the app's command line: no helix-port)",
                     _REINSTALL, data)
    loads = [lc.path for sl in slices for lc in sl.dylibs if lc.path.rsplit("/", 1)[-1] == DYLIB_NAME]
    rpaths = [lc.path for sl in slices for lc in sl.rpaths]
    if not loads:
        return Check(name, FAIL, f"{wrapper} does not load {DYLIB_NAME}: not Helix.app's QEMU wrapper", _REINSTALL,
                     data)
    candidates = [p for load in dict.fromkeys(loads) for p in _resolve(load, wrapper, rpaths)]
    if not candidates:
        return Check(name, FAIL, f"{wrapper} loads {loads[0]} but has no LC_RPATH to resolve it (expected "
                     "@executable_path/../Frameworks)", _REINSTALL, data)
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        return Check(name, FAIL, f"{wrapper} loads {loads[0]} (rpath {', '.join(rpaths) or 'none'}), but no "
                     f"{DYLIB_NAME} is at {', '.join(str(c) for c in candidates)}", _REINSTALL, data)
    try:
        dylib_slices = read_macho(found)
    except MachOError as exc:
        return Check(name, FAIL, f"{found} is not a Mach-O library: {exc.message}", _REINSTALL, data)
    if not all(sl.filetype == "dylib" for sl in dylib_slices):
        return Check(name, FAIL, f"{found} is a Mach-O {dylib_slices[0].filetype}, not a dylib", _REINSTALL, data)
    note = "" if WRAPPER_USUAL_BYTES[0] <= size <= WRAPPER_USUAL_BYTES[1] else " (unusual size for the wrapper)"
    return Check(name, OK, f"{wrapper} ({size // 1024} KB{note}, {'/'.join(s.arch for s in slices)}) loads "
                 f"{loads[0]} from {found} via LC_RPATH {', '.join(rpaths) or '(none needed)'}{override}", "", data)


def check_helix_app_files(target: TargetConfig, *, system: str | None = None) -> Check:
    """What the app's command line opens besides QEMU: the EDK2 firmware, the Vulkan ICD, the VM disk."""
    name = "helix_app_files"
    system = host_system(system)
    skipped = _skip(target, name, "its Helix.app files", system)
    if skipped is not None:
        return skipped
    from ..drivers.helix_app.command import FIRMWARE_CODE, FIRMWARE_VARS

    vm = target.vm
    files = [("EDK2 firmware", os.path.join(vm.firmware_path, FIRMWARE_CODE)),
             ("EDK2 vars template", os.path.join(vm.firmware_path, FIRMWARE_VARS)),
             ("Vulkan ICD (VK_DRIVER_FILES)", vm.vulkan_icd_path),
             ("VM disk", os.path.join(vm.vm_dir_path, "disk.qcow2"))]
    missing = [f"{what} {path}" for what, path in files if not os.path.isfile(path)]
    data = {"cause": "helix_app_files", "missing": missing}
    if missing and system != "Darwin" and not target.is_sim and not os.path.isdir(expand(vm.app)):
        return Check(name, WARN, f"skipped: not macOS and no Helix.app here ({len(missing)} files absent)",
                     "run the doctor on the Mac that runs Helix.app", data)
    if missing:
        disk = any(m.startswith("VM disk") for m in missing)
        fix = "start Helix.app once so it downloads and unpacks the VM image (disk.qcow2), then quit it" if disk \
            else "reinstall Helix.app, or set [vm] firmware_dir / vulkan_icd"
        return Check(name, FAIL, f"missing: {'; '.join(missing)}", fix, data)
    return Check(name, OK, f"firmware, Vulkan ICD and VM disk present ({vm.vm_dir_path})", "", data)


def _conflict_check(name: str, target: TargetConfig, sources: tuple[str, ...], ok_text: str) -> Check:
    if sim_unprovisioned(target):
        return skipped_for_sim(name, "its own ports and app")
    from ..drivers.helix_app.conflicts import OWN_PID_FILE, find_conflicts, read_pid_file

    own = read_pid_file(Path(expand(target.vm.data_dir)) / OWN_PID_FILE)
    own_pid = own[0] if own and own[1][:1] == [str(target.vm.qmp_port)] else None
    found = [c for c in find_conflicts(target, own_pid=own_pid) if c.source in sources]
    if not found:
        return Check(name, OK, ok_text, "", {})
    first = found[0]
    return Check(name, FAIL, "; ".join(c.finding for c in found), "\n".join(dict.fromkeys(c.fix for c in found)),
                 {"cause": first.cause, "pids": [c.pid for c in found]})


def check_helix_app_running(target: TargetConfig) -> Check:
    """No Helix.app uses this data dir, and the app's ``qemu.pid`` names no live QEMU (its killStaleQEMU would
    kill ours; its QEMU would hold our ports)."""
    return _conflict_check("helix_app_running", target, ("app", "pid_file"),
                           f"no Helix.app runs with {target.vm.data_dir} and its qemu.pid names no live QEMU")


def check_helix_app_ports(target: TargetConfig) -> Check:
    """Helix.app's four ports are free (or held by the harness's own QEMU)."""
    vm = target.vm
    return _conflict_check("helix_app_ports", target, ("port",),
                           f"ports free (or the harness's own QEMU): SSH {vm.ssh_port}, API {vm.api_port}, "
                           f"QMP {vm.qmp_port}, frame export {vm.frame_export_port}")
