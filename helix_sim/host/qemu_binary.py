"""The QEMU that UTM loads, as files on the host: a minimal arm64 Mach-O standing in for
``UTM.app/Contents/Frameworks/qemu-aarch64-softmmu.framework/…``, for ``otool -L``/macholib and
``strings`` checks (fault ``sysroot_paths``: build-machine load commands; ``stale_qemu``: its VERSION).
"""

from __future__ import annotations

from pathlib import Path

from harness.protocols.macho import build_macho

from ..config import SimConfig

#: The QEMU UTM loads (relative to host/): what `otool -L` and `strings` inspect on a real Mac.
QEMU_BINARY = "UTM.app/Contents/Frameworks/qemu-aarch64-softmmu.framework/Versions/A/qemu-aarch64-softmmu"
SYSROOT = "/Users/luke/pm/UTM/sysroot-macOS-arm64/lib"
_QEMU_FRAMEWORK_DEPS = ("pixman-1.0", "png16.16", "jpeg.62", "epoxy.0", "glib-2.0.0", "gobject-2.0.0", "gio-2.0.0",
                        "gmodule-2.0.0", "zstd.1", "slirp.0", "spice-server.1", "virglrenderer.1", "usbredirparser.1",
                        "usb-1.0.0")
_QEMU_SYSTEM_DEPS = (
    "/opt/homebrew/opt/capstone/lib/libcapstone.5.dylib",
    "/opt/homebrew/opt/gnutls/lib/libgnutls.30.dylib",
    "/System/Library/Frameworks/Metal.framework/Versions/A/Metal",
    "/System/Library/Frameworks/VideoToolbox.framework/Versions/A/VideoToolbox",
    "/System/Library/Frameworks/IOSurface.framework/Versions/A/IOSurface",
    "/System/Library/Frameworks/CoreFoundation.framework/Versions/A/CoreFoundation",
    "/usr/lib/libSystem.B.dylib",
)
#: With `sysroot_paths`, these still point into the build machine's sysroot (fix-qemu-paths.sh not run).
SYSROOT_LEFTOVERS = ("pixman-1.0", "glib-2.0.0", "virglrenderer.1")


def write_qemu_binary(host_dir: Path, config: SimConfig) -> Path:
    """A minimal arm64 Mach-O dylib standing in for UTM's QEMU framework binary.

    Its load commands are what ``otool -L``/macholib report: ``@rpath`` frameworks after
    fix-qemu-paths.sh, or build-machine sysroot paths under ``sysroot_paths``. Its strings carry
    the build's ``[HELIX] VERSION:`` (the binary's, which differs from the logged one under
    ``stale_qemu``) and the helix symbols, for ``strings | grep`` checks.
    """
    path = host_dir / QEMU_BINARY
    path.parent.mkdir(parents=True, exist_ok=True)
    sysroot = "sysroot_paths" in config.faults
    deps: list[str] = []
    for dep in _QEMU_FRAMEWORK_DEPS:
        if sysroot and dep in SYSROOT_LEFTOVERS:
            deps.append(f"{SYSROOT}/lib{dep}.dylib")
        else:
            deps.append(f"@rpath/{dep}.framework/Versions/A/{dep}")
    deps += _QEMU_SYSTEM_DEPS
    data = build_macho(
        deps,
        id_dylib="@rpath/qemu-aarch64-softmmu.framework/Versions/A/qemu-aarch64-softmmu",
        strings=(
            f"[HELIX] VERSION: {config.qemu_version}",
            "_helix_frame_export_init",
            "_helix_scanout_frame_ready",
            "_helix_get_frame_export",
            "QEMU emulator version 9.1.2 (UTM)",
        ),
    )
    path.write_bytes(data)
    return path
