"""The host's crash reports: what macOS writes to ``~/Library/Logs/DiagnosticReports`` when QEMU dies, a
``QEMULauncher-YYYY-MM-DD-HHMMSS.ips`` (macOS 12+: one JSON header line, then the JSON body in Apple's
``"key" : value`` layout). The stack says how it died: ``stream`` (hvf assertion mid-stream), ``boot``
(an abort in QEMU's init) or ``dyld`` (``Library missing``: the ``sysroot_paths`` fault).
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from .qemu_binary import QEMU_BINARY, SYSROOT, SYSROOT_LEFTOVERS

UTM_VERSION = "4.6.4"
UTM_BUILD = "104"
MACOS_VERSION = ("macOS 15.3", "24D60")
QEMU_LAUNCHER_PATH = (
    "/Applications/UTM.app/Contents/XPCServices/QEMUHelper.xpc/Contents/MacOS/"
    "QEMULauncher.app/Contents/MacOS/QEMULauncher"
)


def write_crash_report(crash_dir: Path, rng: random.Random, *, stack: str = "stream") -> Path:
    """Write one ``.ips`` into ``crash_dir`` (a new name if one of this second exists); returns its path."""
    now = datetime.now().astimezone()
    base = f"QEMULauncher-{now:%Y-%m-%d-%H%M%S}"
    path = crash_dir / f"{base}.ips"
    n = 1
    while path.exists():
        path = crash_dir / f"{base}-{n}.ips"
        n += 1
    incident = str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()
    pid = rng.randint(20000, 90000)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 100:04d}" + now.strftime(" %z")
    header = {
        "app_name": "QEMULauncher",
        "timestamp": now.strftime("%Y-%m-%d %H:%M:%S.00 %z"),
        "app_version": UTM_VERSION,
        "slice_uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "build_version": UTM_BUILD,
        "platform": 1,
        "bundleID": "com.utmapp.QEMULauncher",
        "share_with_app_devs": 0,
        "is_first_party": 0,
        "bug_type": "309",
        "os_version": f"{MACOS_VERSION[0]} ({MACOS_VERSION[1]})",
        "roots_installed": 0,
        "name": "QEMULauncher",
        "incident_id": incident,
    }
    termination: dict[str, Any] = {"flags": 0, "code": 6, "namespace": "SIGNAL", "indicator": "Abort trap: 6"}
    if stack == "dyld":
        lib = f"{SYSROOT}/lib{SYSROOT_LEFTOVERS[0]}.dylib"
        termination = {
            "flags": 518, "code": 1, "namespace": "DYLD", "indicator": "Library missing",
            "details": ["(terminated at launch; ignore backtrace)"],
            "reasons": [
                f"Library not loaded: {lib}",
                f"Referenced from: <{incident}> /Applications/{QEMU_BINARY}",
                f"Reason: tried: '{lib}' (file system sandbox blocked open()), '{lib}' (no such file)",
            ],
        }
        crashed = ["dyld4::halt", "dyld4::prepare", "start"]
        line = f"Library not loaded: {lib}"
    elif stack == "boot":
        crashed = ["qemu_opt_get_bool_helper", "qemu_spice_init", "qemu_init", "qemu_main", "main"]
        line = "qemu_opt_get_bool_helper: Assertion `opt != NULL' failed."
    else:
        crashed = ["hvf_vcpu_exec", "qemu_default_main", "qemu_thread_start", "_pthread_start", "thread_start"]
        line = "hvf_vcpu_exec: Assertion `isv' failed."
    if stack == "dyld":
        head = [
            {"imageOffset": 38412, "symbol": "__abort_with_payload", "symbolLocation": 8, "imageIndex": 2},
            {"imageOffset": 240116, "symbol": "abort_with_payload_wrapper_internal", "symbolLocation": 104, "imageIndex": 2},
            {"imageOffset": 240168, "symbol": "abort_with_payload", "symbolLocation": 16, "imageIndex": 2},
        ]
    else:
        head = [
            {"imageOffset": 37788, "symbol": "__pthread_kill", "symbolLocation": 8, "imageIndex": 2},
            {"imageOffset": 27316, "symbol": "pthread_kill", "symbolLocation": 296, "imageIndex": 3},
            {"imageOffset": 479560, "symbol": "abort", "symbolLocation": 124, "imageIndex": 4},
            {"imageOffset": 475680, "symbol": "__assert_rtn", "symbolLocation": 284, "imageIndex": 4},
        ]
    frames = head + [
        {"imageOffset": 1_048_576 + 4096 * i, "symbol": sym, "symbolLocation": 64 + 8 * i, "imageIndex": 1}
        for i, sym in enumerate(crashed)
    ]
    body: dict[str, Any] = {
        "uptime": 1000 + rng.randint(0, 90000),
        "procRole": "Background",
        "version": 2,
        "userID": 501,
        "deployVersion": 210,
        "modelCode": "Mac14,2",
        "coalitionID": 1234,
        "osVersion": {"train": MACOS_VERSION[0], "build": MACOS_VERSION[1], "releaseType": "User"},
        "captureTime": stamp,
        "codeSigningMonitor": 1,
        "incident": incident,
        "pid": pid,
        "translated": False,
        "cpuType": "ARM-64",
        "roots_installed": 0,
        "bug_type": "309",
        "procLaunch": stamp,
        "procStartAbsTime": 1_000_000_000,
        "procExitAbsTime": 1_000_000_000 + 10**9,
        "procName": "QEMULauncher",
        "procPath": QEMU_LAUNCHER_PATH,
        "bundleInfo": {"CFBundleShortVersionString": UTM_VERSION, "CFBundleVersion": UTM_BUILD, "CFBundleIdentifier": "com.utmapp.QEMULauncher"},
        "parentProc": "launchd",
        "parentPid": 1,
        "coalitionName": "com.utmapp.UTM",
        "crashReporterKey": "00000000-0000-0000-0000-000000000000",
        "exception": {"codes": "0x0000000000000000, 0x0000000000000000", "rawCodes": [0, 0], "type": "EXC_CRASH", "signal": "SIGABRT"},
        "termination": termination,
        "asi": {"libsystem_c.dylib": [line]},
        "extMods": {"caller": {"thread_create": 0, "thread_set_state": 0, "task_for_pid": 0, "mach_vm_read": 0}},
        "faultingThread": 0,
        "threads": [
            {"triggered": True, "id": 1_000_000 + pid, "queue": "com.apple.main-thread" if stack != "stream" else None, "frames": frames},
            {"id": 1_000_001 + pid, "frames": [{"imageOffset": 6000, "symbol": "start_wqthread", "symbolLocation": 8, "imageIndex": 3}]},
        ],
        "usedImages": [
            {"source": "P", "arch": "arm64", "name": "QEMULauncher", "path": QEMU_LAUNCHER_PATH},
            {"source": "P", "arch": "arm64", "name": "qemu-aarch64-softmmu",
             "path": "/Applications/UTM.app/Contents/Frameworks/qemu-aarch64-softmmu.framework/Versions/A/qemu-aarch64-softmmu"},
            {"source": "P", "arch": "arm64e", "name": "libsystem_kernel.dylib", "path": "/usr/lib/system/libsystem_kernel.dylib"},
            {"source": "P", "arch": "arm64e", "name": "libsystem_pthread.dylib", "path": "/usr/lib/system/libsystem_pthread.dylib"},
            {"source": "P", "arch": "arm64e", "name": "libsystem_c.dylib", "path": "/usr/lib/system/libsystem_c.dylib"},
        ],
    }
    if body["threads"][0]["queue"] is None:
        del body["threads"][0]["queue"]
    lines = [json.dumps(header, separators=(",", ":")), "{"]
    items = list(body.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"  {json.dumps(key)} : {json.dumps(value, separators=(',', ':'))}{comma}")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
