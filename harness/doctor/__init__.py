"""`helix-e2e doctor`: the suite's preflight. It checks the Mac (or a fixture) without starting a VM.

Each check yields a :class:`Check`: a ``name``, a ``status`` (``ok`` | ``warn`` | ``fail``), a one-line
``finding`` and a ``fix`` (what to do; a fix may list several shell commands, one per line).
:func:`run_doctor` runs them all and returns a :class:`DoctorReport`; any ``fail`` makes the report
``failed``, and the pytest plugin skips the streaming tests with :meth:`DoctorReport.summary`.

The facts behind the checks are in ``macos-frame-export.md`` §4 (fix-qemu-paths.sh, stale builds) and
§6 / prior-art §5 (utmctl needs a GUI login). Thresholds:

- ``disk``: fail below :data:`DISK_FAIL_BYTES` (2 GiB) free on the reports dir, warn below
  :data:`DISK_WARN_BYTES` (5 GiB): a run keeps recordings, thumbnails and logs.
- ``memory``: fail below :data:`MEMORY_FAIL_BYTES` (1 GiB) available, warn below
  :data:`MEMORY_WARN_BYTES` (4 GiB): the harness decodes the stream (PyAV) next to a running VM.

The library never prints and never shows a secret: usercreds values and key contents stay unread or unshown.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import platform
import re
import shlex
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import ENV_OVERRIDES, TARGET_ENV, TargetConfig, expand, load_target
from ..errors import HarnessError
from ..protocols.macho import LC_ID_DYLIB, LC_RPATH, MachOError, read_macho
from .report import CHECK_NAMES, FAIL, OK, STATUSES, WARN, Check, DoctorError, DoctorReport
from .report import host_system as _system
from .report import sim_unprovisioned as _sim_unprovisioned
from .report import skipped_for_sim as _skip_sim

__all__ = [
    "OK", "WARN", "FAIL", "STATUSES", "CHECK_NAMES", "Check", "DoctorReport", "DoctorError",
    "run_doctor", "target_for_doctor", "default_qemu_binary",
    "check_dylib_paths", "check_qemu_version", "check_runtime_version", "check_qemu_fresh", "check_utmctl",
    "check_hvf", "check_frame_export_port", "check_ssh_key", "check_known_hosts", "check_usercreds",
    "check_disk", "check_memory",
    "classify_install_name", "framework_install_name", "binary_versions", "source_version", "runtime_version",
    "git_commit_time", "port_listeners",
    "UTM_QEMU_BINARY", "QEMU_ID", "HELIX_SOURCE_FILE",
]

log = logging.getLogger(__name__)

#: The QEMU UTM loads (the framework binary; a loose libqemu-aarch64-softmmu.dylib is NOT what UTM loads).
QEMU_FRAMEWORK_IN_APP = "Contents/Frameworks/qemu-aarch64-softmmu.framework/Versions/A/qemu-aarch64-softmmu"
UTM_QEMU_BINARY = f"/Applications/UTM.app/{QEMU_FRAMEWORK_IN_APP}"
#: The install name (LC_ID_DYLIB) the framework binary should carry.
QEMU_ID = "@rpath/qemu-aarch64-softmmu.framework/Versions/A/qemu-aarch64-softmmu"
#: Where qemu-utm keeps the VERSION literal, relative to the checkout.
HELIX_SOURCE_FILE = "hw/display/helix/helix-frame-export.m"
VERSION_MARKER = "[HELIX] VERSION:"

GIB = 1 << 30
DISK_FAIL_BYTES = 2 * GIB
DISK_WARN_BYTES = 5 * GIB
MEMORY_FAIL_BYTES = 1 * GIB
MEMORY_WARN_BYTES = 4 * GIB

#: Install-name prefixes dyld resolves inside UTM's sandbox (macos-frame-export.md §4).
ALLOWED_PREFIXES = ("@rpath/", "@executable_path/", "@loader_path/", "/System/", "/usr/lib/")
HOMEBREW_PREFIX = "/opt/homebrew/"
#: A listening process whose name contains one of these is QEMU (UTM runs it as QEMULauncher).
QEMU_PROCESS_MARKERS = ("qemu",)

_FIX_STALE = (
    "rebuild QEMU (for-mac/qemu-helix/build-qemu-standalone.sh) and install it into UTM.app with "
    "scripts/fix-qemu-paths.sh, then restart the VM: a running VM keeps the old QEMU until it restarts"
)
_FIX_NO_GUI = (
    "run the harness inside the Mac's logged-in GUI session (an auto-login user; Terminal.app or a "
    "LaunchAgent, not SSH), and allow the terminal to control UTM (System Settings → Privacy & Security → Automation)"
)


# -- target --------------------------------------------------------------------------------------------
def target_for_doctor(path: str | None = None, *, env: Mapping[str, str] | None = None) -> TargetConfig:
    """The target file ``path``, else ``$HELIX_E2E_TARGET``, else the defaults (plus ``HELIX_E2E_*`` overrides)."""
    env = os.environ if env is None else env
    path = path or env.get(TARGET_ENV)
    if path:
        return load_target(path, env=env)
    values = {key: env[name] for name, key in ENV_OVERRIDES.items() if env.get(name)}
    cfg = TargetConfig(name="defaults (no --target)")
    return cfg.with_overrides(values) if values else cfg


def default_qemu_binary(target: TargetConfig) -> str:
    """The QEMU of the UTM.app the target's utmctl belongs to (``…/UTM.app/Contents/MacOS/utmctl``),
    else UTM's standard location."""
    utmctl = Path(expand(target.vm.utmctl))
    if utmctl.parent.name == "MacOS" and utmctl.parent.parent.name == "Contents":
        return str(utmctl.parent.parent.parent / QEMU_FRAMEWORK_IN_APP)
    return UTM_QEMU_BINARY


# -- dylib_paths -----------------------------------------------------------------------------------------
def classify_install_name(path: str) -> str:
    """``fail`` for a build-machine path (``sysroot`` anywhere, or ``/Users/…``) the UTM sandbox blocks;
    ``ok`` for ``@rpath``/``@executable_path``/``@loader_path``/``/System``/``/usr/lib``; ``warn`` otherwise
    (``/opt/homebrew/…`` is tolerated, as fix-qemu-paths.sh leaves capstone/gnutls there)."""
    if "sysroot" in path or path.startswith("/Users/"):
        return FAIL
    if path.startswith(ALLOWED_PREFIXES):
        return OK
    return WARN


def framework_install_name(old: str) -> str:
    """fix-qemu-paths.sh's mapping: basename minus ``lib``/``.dylib`` → ``@rpath/<n>.framework/Versions/A/<n>``."""
    name = old.rsplit("/", 1)[-1]
    if name.startswith("lib"):
        name = name[3:]
    if name.endswith(".dylib"):
        name = name[: -len(".dylib")]
    return f"@rpath/{name}.framework/Versions/A/{name}"


def _binary_state(binary: Path, *, explicit: bool, system: str) -> Check | None:
    """None when the binary exists; otherwise the check result for a missing binary (name filled in later)."""
    if binary.is_file():
        return None
    if binary.exists():
        return Check("dylib_paths", FAIL, f"QEMU binary {binary} is not a regular file",
                     "pass --qemu-binary PATH pointing at the framework binary itself")
    if not explicit and system != "Darwin":
        return Check("dylib_paths", WARN,
                     f"skipped: not macOS ({system or 'unknown OS'}) and no --qemu-binary given; UTM's QEMU "
                     f"({binary}) is not on this machine",
                     "pass --qemu-binary PATH to check a QEMU build (a copy of the framework binary) from here")
    return Check("dylib_paths", FAIL, f"QEMU binary not found at {binary}",
                 "install UTM, then build and install Helix's QEMU (for-mac/qemu-helix/build-qemu-standalone.sh, "
                 "which runs fix-qemu-paths.sh), or pass --qemu-binary PATH")


def check_dylib_paths(binary: str | os.PathLike[str], *, explicit: bool = True, system: str | None = None) -> Check:
    """The QEMU binary's install names (every slice): no sysroot or ``/Users/`` path may remain."""
    name = "dylib_paths"
    system = _system(system)
    binary = Path(binary)
    missing = _binary_state(binary, explicit=explicit, system=system)
    if missing is not None:
        return replace(missing, name=name)
    try:
        slices = read_macho(binary)
    except MachOError as exc:
        return Check(name, FAIL, exc.message,
                     "reinstall QEMU into UTM.app (build-qemu-standalone.sh) or pass the right --qemu-binary")
    quoted = shlex.quote(str(binary))
    arches = [s.arch for s in slices]
    fat = len(slices) > 1
    offending: list[str] = []  # "KIND PATH [arch]"
    commands: list[str] = []
    warnings: list[str] = []
    missing_brew: list[str] = []
    rpath_fixes: list[str] = []
    total = 0
    for sl in slices:
        where = f" [{sl.arch}]" if fat else ""
        for lc in sl.commands:
            if lc.cmd == LC_RPATH:
                if classify_install_name(lc.path) == FAIL:
                    warnings.append(f"LC_RPATH {lc.path}{where}")
                    cmd = f"install_name_tool -delete_rpath {shlex.quote(lc.path)} {quoted}"
                    if cmd not in rpath_fixes:
                        rpath_fixes.append(cmd)
                continue
            total += 1
            verdict = classify_install_name(lc.path)
            if verdict == FAIL:
                offending.append(f"{lc.kind} {lc.path}{where}")
                if lc.cmd == LC_ID_DYLIB:
                    cmd = f"install_name_tool -id {QEMU_ID} {quoted}"
                else:
                    new = framework_install_name(lc.path)
                    cmd = f"install_name_tool -change {shlex.quote(lc.path)} {shlex.quote(new)} {quoted}"
                if cmd not in commands:
                    commands.append(cmd)
            elif verdict == WARN:
                if lc.path.startswith(HOMEBREW_PREFIX) and system == "Darwin" and not os.path.exists(lc.path):
                    missing_brew.append(lc.path)
                warnings.append(f"{lc.kind} {lc.path}{where}")
    data = {"binary": str(binary), "arches": arches, "offending": offending, "commands": commands,
            "warnings": warnings}
    resign = f"re-sign it afterwards (`codesign -vvv {quoted}` must pass)"
    if offending:
        return Check(
            name, FAIL,
            f"{len(offending)} install name(s) in {binary} point at the build machine (sysroot or /Users/), "
            f"which UTM's sandbox blocks, so the VM won't start: {', '.join(offending)}",
            "\n".join([f"run scripts/fix-qemu-paths.sh, or rewrite them with these commands and {resign}:",
                       *commands]),
            data,
        )
    if missing_brew:
        return Check(
            name, FAIL,
            f"Homebrew libraries QEMU loads are not installed on this Mac: {', '.join(missing_brew)}",
            "install them with Homebrew (e.g. `brew install gnutls capstone`), or rebuild QEMU against UTM's frameworks",
            data,
        )
    if warnings:
        kinds = [w.split(" ", 2) for w in warnings]  # [kind, path, ...]
        fixes = []
        if any(k != "LC_RPATH" and p.startswith(HOMEBREW_PREFIX) for k, p, *_ in kinds):
            fixes.append("Homebrew paths are allowed (fix-qemu-paths.sh leaves capstone/gnutls there), but every Mac "
                         "that runs this QEMU needs those Homebrew packages installed")
        if any(k != "LC_RPATH" and not p.startswith(HOMEBREW_PREFIX) for k, p, *_ in kinds):
            fixes.append("make sure the other absolute paths exist on every Mac that runs this QEMU, or point them at "
                         f"@rpath/<name>.framework/Versions/A/<name> with install_name_tool and {resign}")
        if rpath_fixes:
            fixes.append(f"drop the build-machine rpaths and {resign}:")
            fixes += rpath_fixes
        return Check(name, WARN,
                     f"{len(warnings)} path(s) outside @rpath, /System and /usr/lib in {binary}: {', '.join(warnings)}",
                     "\n".join(fixes), data)
    return Check(name, OK,
                 f"{total} install names in {binary} ({'/'.join(arches)}) are all @rpath, @executable_path, "
                 f"@loader_path, /System or /usr/lib",
                 "", data)


# -- qemu_version ----------------------------------------------------------------------------------------
_MARKER_BYTES = VERSION_MARKER.encode()
_SOURCE_LITERAL = re.compile(
    r'(?:helix_log|error_report)\s*\(\s*"\[HELIX\] VERSION:[ \t]*((?:[^"\\\n]|\\.)*)"'
)
_ANY_LITERAL = re.compile(r'"\[HELIX\] VERSION:[ \t]*((?:[^"\\\n]|\\.)*)"')
_LOG_LINE = re.compile(r"\[HELIX\] VERSION:[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def binary_versions(path: str | os.PathLike[str], *, limit: int = 256) -> list[str]:
    """Every distinct ``[HELIX] VERSION: …`` C string in a binary (one per slice, usually the same), in order."""
    found: list[str] = []
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return found
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            pos = data.find(_MARKER_BYTES)
            while pos >= 0:
                start = pos + len(_MARKER_BYTES)
                chunk = data[start : start + limit]
                end = chunk.find(b"\x00")
                raw = chunk if end < 0 else chunk[:end]
                text = raw.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
                if text and text not in found:
                    found.append(text)
                pos = data.find(_MARKER_BYTES, start)
    return found


def _unescape_c(literal: str) -> str:
    text = re.sub(r"(\\n|\\r|\\t)+$", "", literal)
    return text.replace('\\"', '"').replace("\\\\", "\\").strip()


def source_version(source_dir: str | os.PathLike[str]) -> str:
    """The ``helix_log("[HELIX] VERSION: …")`` literal in ``<source_dir>/hw/display/helix/helix-frame-export.m``."""
    path = Path(expand(str(source_dir))) / HELIX_SOURCE_FILE
    try:
        text = path.read_text("utf-8", "replace")
    except FileNotFoundError:
        raise DoctorError(f"{path} does not exist", hint="pass --qemu-source the qemu-utm checkout (e.g. ~/pm/qemu-utm)") from None
    except OSError as exc:
        raise DoctorError(f"cannot read {path}: {exc.strerror}") from None
    match = _SOURCE_LITERAL.search(text) or _ANY_LITERAL.search(text)
    if match is None:
        raise DoctorError(f'{path} has no helix_log("{VERSION_MARKER} …") line',
                          hint="the frame export's init function should log its version")
    return _unescape_c(match.group(1))


def runtime_version(log_text: str) -> str | None:
    """The version in the first ``[HELIX] VERSION:`` line of log text (helix-debug.log or ``helix: `` stderr)."""
    match = _LOG_LINE.search(log_text or "")
    return match.group(1) if match else None


def _missing_binary_for(name: str, binary: Path, *, explicit: bool, system: str) -> Check | None:
    state = _binary_state(binary, explicit=explicit, system=system)
    if state is None:
        return None
    return Check(name, state.status, f"skipped: no QEMU binary at {binary} (see dylib_paths)", state.fix)


def check_qemu_version(
    binary: str | os.PathLike[str],
    *,
    qemu_source: str | os.PathLike[str] | None = None,
    expect_version: str | None = None,
    explicit: bool = True,
    system: str | None = None,
) -> Check:
    """The binary's ``[HELIX] VERSION:`` string against the source literal and/or ``expect_version``."""
    name = "qemu_version"
    system = _system(system)
    binary = Path(binary)
    missing = _missing_binary_for(name, binary, explicit=explicit, system=system)
    if missing is not None:
        return missing
    try:
        versions = binary_versions(binary)
    except OSError as exc:
        return Check(name, FAIL, f"cannot read {binary}: {exc.strerror or exc}", "check the file's permissions")
    if not versions:
        return Check(name, FAIL,
                     f"{binary} has no `{VERSION_MARKER}` string: it is not a Helix QEMU build (stock UTM QEMU?), "
                     "so there is no helix-frame-export",
                     "build Helix's QEMU (helixml/qemu-utm, for-mac/qemu-helix/build-qemu-standalone.sh) and install "
                     "it with scripts/fix-qemu-paths.sh",
                     {"binary_version": None})
    shown = versions[0] if len(versions) == 1 else " | ".join(versions)
    data: dict[str, Any] = {"binary_version": versions[0], "binary_versions": versions}
    expected: list[tuple[str, str]] = []  # (where, version)
    if qemu_source is not None:
        try:
            src = source_version(qemu_source)
        except DoctorError as exc:
            return Check(name, FAIL, f"binary has `{shown}`, but the source version is unknown: {exc.message}",
                         exc.hint or "", data)
        expected.append((f"{Path(str(qemu_source)) / HELIX_SOURCE_FILE}", src))
        data["source_version"] = src
    if expect_version is not None:
        expected.append(("--expect-version", expect_version.strip()))
        data["expected_version"] = expect_version.strip()
    if not expected:
        if len(versions) > 1:
            return Check(name, WARN, f"{binary} carries {len(versions)} different version strings: {shown}",
                         "rebuild (every slice) from one checkout", data)
        return Check(name, OK,
                     f"binary has `{VERSION_MARKER} {shown}` (nothing to compare with: pass --qemu-source DIR "
                     "or --expect-version STR)", "", data)
    for where, version in [*expected, *((str(binary), v) for v in versions)]:
        if "%" in version:
            return Check(name, WARN, f"the version in {where} is a format string ({version!r}); cannot compare",
                         "compare by hand: `strings BIN | grep 'HELIX.*VERSION'` and the first "
                         f"`{VERSION_MARKER}` line QEMU logs at VM start", data)
    mismatched = [(where, version) for where, version in expected for got in versions if got != version]
    if mismatched:
        wanted = ", ".join(f"{where} has `{version}`" for where, version in dict.fromkeys(mismatched))
        return Check(name, FAIL, f"installed QEMU is stale: {binary} has `{shown}`, but {wanted}", _FIX_STALE, data)
    return Check(name, OK, f"binary has `{VERSION_MARKER} {shown}`, matching "
                 f"{' and '.join(where for where, _ in expected)}", "", data)


def check_runtime_version(binary_version: str | None, appended_log_text: str | bytes) -> Check:
    """After VM start: the first ``[HELIX] VERSION:`` line QEMU appended (helix-debug.log or its stderr)
    must equal the installed binary's version; otherwise the running QEMU is not the installed one.

    ``appended_log_text`` is only what was appended since VM start (e.g. ``HostArtifacts.new_log_bytes``)."""
    name = "qemu_runtime_version"
    if isinstance(appended_log_text, (bytes, bytearray)):
        appended_log_text = bytes(appended_log_text).decode("utf-8", "replace")
    running = runtime_version(appended_log_text)
    if running is None:
        return Check(name, WARN,
                     f"no `{VERSION_MARKER}` line was appended to the host log since VM start",
                     "helix_log() writes to a log path hard-coded for user luke; on other Macs read QEMU's stderr "
                     "(UTM's console / Console.app) for the version line")
    data = {"runtime_version": running, "binary_version": binary_version}
    if binary_version is None:
        return Check(name, OK, f"QEMU logged `{VERSION_MARKER} {running}` (installed binary version unknown)", "", data)
    if running.strip() != binary_version.strip():
        return Check(name, FAIL,
                     f"the running QEMU is stale: it logged `{VERSION_MARKER} {running}` at VM start, but the "
                     f"installed binary has `{binary_version}` (the VM started before the install, or UTM loads "
                     "another binary)",
                     "restart the VM (a running VM keeps the old QEMU); if it persists, rebuild and run "
                     "scripts/fix-qemu-paths.sh so UTM's framework binary is the new build",
                     data)
    return Check(name, OK, f"the running QEMU logged `{VERSION_MARKER} {running}`, the installed binary's version",
                 "", data)


# -- qemu_fresh ------------------------------------------------------------------------------------------
def git_commit_time(source_dir: str | os.PathLike[str], *, timeout: float = 10.0) -> float:
    """``git -C DIR log -1 --format=%ct``: the checkout's last commit time (epoch seconds). Read-only."""
    argv = ["git", "-C", expand(str(source_dir)), "log", "-1", "--format=%ct"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise DoctorError("git is not installed", hint="install git (xcode-select --install)") from None
    except subprocess.TimeoutExpired:
        raise DoctorError(f"`{' '.join(argv)}` did not return within {timeout:.0f}s") from None
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out.isdigit():
        first = (proc.stderr.strip().splitlines() or ["no commits"])[0]
        raise DoctorError(f"cannot read the last commit of {source_dir}: {first}",
                          hint="pass --qemu-source a git checkout of qemu-utm")
    return float(out)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def check_qemu_fresh(
    binary: str | os.PathLike[str],
    qemu_source: str | os.PathLike[str] | None,
    *,
    explicit: bool = True,
    system: str | None = None,
    commit_time: Callable[[str | os.PathLike[str]], float] = git_commit_time,
) -> Check:
    """The binary's mtime against the source checkout's last commit: ``warn`` when the binary is older."""
    name = "qemu_fresh"
    if qemu_source is None:
        return Check(name, OK, "skipped: no --qemu-source given (pass the qemu-utm checkout to compare times)")
    binary = Path(binary)
    missing = _missing_binary_for(name, binary, explicit=explicit, system=_system(system))
    if missing is not None:
        return missing
    try:
        committed = commit_time(qemu_source)
    except DoctorError as exc:
        return Check(name, WARN, f"cannot compare: {exc.message}", exc.hint or "")
    built = binary.stat().st_mtime
    data = {"binary_mtime": built, "commit_time": committed}
    if built < committed:
        return Check(name, WARN,
                     f"{binary} ({_when(built)}) is {_span(committed - built)} older than the last commit of "
                     f"{qemu_source} ({_when(committed)}): it was built before that commit",
                     _FIX_STALE, data)
    return Check(name, OK, f"{binary} ({_when(built)}) is newer than the last commit of {qemu_source} "
                 f"({_when(committed)})", "", data)


# -- utmctl ----------------------------------------------------------------------------------------------
def _over_ssh(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("SSH_CONNECTION") or environ.get("SSH_TTY"))


def check_utmctl(
    target: TargetConfig,
    *,
    system: str | None = None,
    environ: Mapping[str, str] | None = None,
    command_timeout: float = 15.0,
) -> Check:
    """utmctl is there and executable, reaches UTM.app (GUI login), and lists the configured VM."""
    from ..drivers.utm import UtmDriver, UtmNoGuiError

    name = "utmctl"
    if _sim_unprovisioned(target):
        return _skip_sim(name, "its utmctl emulator")
    system = _system(system)
    environ = os.environ if environ is None else environ
    path = Path(expand(target.vm.utmctl))
    if not path.exists():
        if system != "Darwin":
            return Check(name, WARN, f"skipped: not macOS ({system or 'unknown OS'}); no utmctl at {path}",
                         "run the doctor on the Mac that runs UTM")
        return Check(name, FAIL, f"utmctl not found at {path}",
                     "install UTM (https://mac.getutm.app) or set [vm] utmctl in the target config")
    if not path.is_file() or not os.access(path, os.X_OK):
        return Check(name, FAIL, f"{path} is not an executable file", f"chmod +x {shlex.quote(str(path))} or fix [vm] utmctl")
    ssh = system == "Darwin" and _over_ssh(environ)
    ssh_note = " (this shell is an SSH session: SSH_CONNECTION/SSH_TTY are set)" if ssh else ""
    # The driver wants a VM id; `list` needs none, so a placeholder lets the doctor list VMs without one.
    vm = target.vm if target.vm.id else replace(target.vm, id="-")
    driver = UtmDriver(vm, command_timeout=command_timeout)
    try:
        entries = driver.list()
    except UtmNoGuiError:
        return Check(name, FAIL,
                     "utmctl cannot reach UTM.app: it does not work from SSH sessions or before a GUI login "
                     f"(Apple Events fail with OSStatus -1743 errAEEventNotPermitted / -600 procNotFound){ssh_note}",
                     _FIX_NO_GUI)
    except HarnessError as exc:
        return Check(name, FAIL, f"`utmctl list` failed: {exc.message}{ssh_note}",
                     exc.hint or "open UTM.app once in the GUI session and retry")
    listing = ", ".join(f"{e.name} ({e.uuid}, {e.status})" for e in entries) or "no VMs"
    if not target.vm.id:
        return Check(name, FAIL, f"no [vm] id configured; `utmctl list` shows: {listing}",
                     "set [vm] id in the target config to the VM's UUID (column 1 of `utmctl list`)")
    wanted = target.vm.id
    entry = next((e for e in entries if e.uuid.lower() == wanted.lower()), None) or next(
        (e for e in entries if e.name == wanted), None)
    if entry is None:
        return Check(name, FAIL, f"VM {wanted} is not in `utmctl list` (it shows: {listing})",
                     "set [vm] id to a UUID from `utmctl list` (a re-created VM gets a new UUID)")
    data = {"vm_status": entry.status, "vm_name": entry.name, "vm_uuid": entry.uuid}
    finding = f"VM {entry.name} ({entry.uuid}) is {entry.status}"
    if ssh:
        return Check(name, WARN,
                     f"{finding}, but this shell is an SSH session: utmctl calls from SSH often fail with "
                     "OSStatus -1743/-600 (Apple Events need the GUI login session)", _FIX_NO_GUI, data)
    return Check(name, OK, finding, "", data)


# -- hvf -------------------------------------------------------------------------------------------------
def _sysctl_hv_support() -> str:
    proc = subprocess.run(["sysctl", "-n", "kern.hv_support"], capture_output=True, text=True, timeout=10,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DoctorError(f"sysctl kern.hv_support: {(proc.stderr.strip() or 'unknown oid')}")
    return proc.stdout.strip()


def check_hvf(*, system: str | None = None, sysctl: Callable[[], str] | None = None, sim: bool = False) -> Check:
    """``sysctl -n kern.hv_support`` is 1: Hypervisor.framework is there, so QEMU's hvf accelerator works."""
    name = "hvf"
    if sim:
        return Check(name, OK, "skipped: simulator target (no VM)")
    system = _system(system)
    if system != "Darwin":
        return Check(name, OK, "skipped: not macOS")
    fix = ("run on Apple Silicon hardware with a logged-in GUI user, not inside a VM: GitHub's arm64 macOS "
           "runners cannot nest VMs")
    try:
        value = (sysctl or _sysctl_hv_support)()
    except FileNotFoundError:
        return Check(name, WARN, "cannot run sysctl", "check PATH (sysctl lives in /usr/sbin)")
    except (DoctorError, subprocess.SubprocessError, OSError) as exc:
        return Check(name, FAIL, f"kern.hv_support is missing: no Hypervisor.framework here ({exc})", fix)
    if value == "1":
        return Check(name, OK, "kern.hv_support = 1 (Hypervisor.framework available)")
    return Check(name, FAIL, f"kern.hv_support = {value or '(empty)'}: no Hypervisor.framework, QEMU cannot use hvf", fix)


# -- frame_export_port -----------------------------------------------------------------------------------
def _port_bindable(host: str, port: int) -> tuple[bool | None, str]:
    """Can QEMU bind ``host:port`` now? (True, "") / (False, reason) / (None, reason) when we cannot tell."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return None, f"cannot resolve {host}: {exc.strerror}"
    family, socktype, proto, _, addr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server does: ignore TIME_WAIT leftovers
        sock.bind(addr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return False, "address in use"
        return None, exc.strerror or str(exc)
    finally:
        sock.close()
    # BSD lets a specific-address bind succeed next to a wildcard listener: make sure nobody answers.
    try:
        with socket.create_connection(addr[:2], timeout=0.5):
            return False, "something accepts connections"
    except OSError:
        return True, ""


def port_listeners(port: int) -> list[tuple[int | None, str, str]]:
    """``(pid, name, cmdline)`` of processes listening on TCP ``port``; pid None when hidden (another user)."""
    import psutil

    def proc_info(pid: int | None) -> tuple[int | None, str, str]:
        if pid is None:
            return None, "unknown (another user's process?)", ""
        try:
            proc = psutil.Process(pid)
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return pid, "unknown", ""
        try:
            cmdline = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            cmdline = ""
        return pid, name, cmdline

    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # macOS needs root for the system-wide table: scan our own processes
        found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                getter = getattr(proc, "net_connections", None) or proc.connections
                if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in getter(kind="tcp")):
                    found.append(proc_info(proc.pid))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found
    pids = []
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid not in pids:
            pids.append(c.pid)
    return [proc_info(pid) for pid in pids]


def _is_qemu(name: str, cmdline: str, *, sim: bool) -> bool:
    if any(marker in name.lower() for marker in QEMU_PROCESS_MARKERS):
        return True
    # The simulator's QEMU stand-in runs inside `python -m helix_sim up` or `helix-e2e sim up`.
    return sim and ("helix_sim" in cmdline or "helix-e2e sim up" in cmdline)


def check_frame_export_port(
    host: str,
    port: int,
    *,
    vm_status: str | None = None,
    sim: bool = False,
    listeners: Callable[[int], list[tuple[int | None, str, str]]] = port_listeners,
) -> Check:
    """The frame-export port is free (VM not running) or held by the running QEMU; anything else holding it
    makes QEMU log ``Failed to bind TCP socket on port N`` and the frame export never starts."""
    name = "frame_export_port"
    where = f"{host}:{port}"
    free, reason = _port_bindable(host, port)
    if free is None:
        return Check(name, WARN, f"cannot test {where}: {reason}", "check [frame_export] host (QEMU listens on 127.0.0.1)")
    owners = [] if free else listeners(port)
    data = {"port": port, "listeners": [{"pid": pid, "name": pname} for pid, pname, _ in owners]}
    if free:
        if vm_status == "started":
            return Check(name, WARN,
                         f"the VM is started but nothing listens on {where}: QEMU's frame export is not running",
                         "check QEMU's log for `Failed to bind TCP socket on port` and that helix-port / "
                         "HELIX_FRAME_EXPORT_PORT match [frame_export] port", data)
        return Check(name, OK, f"{where} is free (QEMU binds it when the VM starts)", "", data)
    if not owners:
        return Check(name, FAIL,
                     f"{where} is in use by a process this user cannot see: QEMU would log "
                     f"`Failed to bind TCP socket on port {port}`",
                     f"find it with `lsof -nP -iTCP:{port} -sTCP:LISTEN` (perhaps with sudo) and stop it", data)
    others = [(pid, pname) for pid, pname, cmd in owners if not _is_qemu(pname, cmd, sim=sim)]
    if others:
        who = ", ".join(f"pid {pid} ({pname})" if pid is not None else pname for pid, pname in others)
        kill = " ".join(str(pid) for pid, _ in others if pid is not None)
        return Check(name, FAIL,
                     f"{where} is held by {who}, not QEMU: QEMU will log `Failed to bind TCP socket on port {port}` "
                     "and the frame export won't start",
                     f"stop it{f' (kill {kill})' if kill else ''}, or move the frame export to a free port "
                     "([frame_export] port and QEMU's helix-port / HELIX_FRAME_EXPORT_PORT)", data)
    who = ", ".join(f"pid {pid} ({pname})" for pid, pname, _ in owners)
    if vm_status == "stopped":
        return Check(name, FAIL,
                     f"{where} is held by {who} while the VM is stopped: a stale QEMU; the next start will log "
                     f"`Failed to bind TCP socket on port {port}`",
                     f"quit the stale QEMU (kill {' '.join(str(p) for p, _, _ in owners if p is not None)}) "
                     "or stop the other VM that uses this port", data)
    qemu = "the simulator's QEMU" if sim and not any(_is_qemu(n, "", sim=False) for _, n, _ in owners) else "the running QEMU"
    return Check(name, OK, f"{where} is held by {qemu}: {who}", "", data)


# -- ssh_key / known_hosts / usercreds -------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_ssh_key(target: TargetConfig) -> Check:
    """The private key exists, is readable, looks like a private key, and is not group/world accessible."""
    name = "ssh_key"
    if _sim_unprovisioned(target):
        return _skip_sim(name, "its own key")
    path = Path(expand(target.ssh.key))
    q = shlex.quote(str(path))
    if not path.exists():
        return Check(name, FAIL, f"SSH key {path} does not exist",
                     f"create it (ssh-keygen -t ed25519 -f {q}) and add {q}.pub to the guest's "
                     "~/.ssh/authorized_keys, or set [ssh] key")
    if not path.is_file():
        return Check(name, FAIL, f"SSH key {path} is not a file", "set [ssh] key to the private key file")
    mode = _mode(path)
    try:
        with path.open("rb") as fh:
            first = fh.readline(200)
    except PermissionError:
        return Check(name, FAIL, f"SSH key {path} is not readable by this user (mode {mode:04o})",
                     f"chown it to this user and chmod 600 {q}")
    if mode & 0o077:
        return Check(name, FAIL,
                     f"SSH key {path} is accessible by group/others (mode {mode:04o}); ssh refuses such keys "
                     "(UNPROTECTED PRIVATE KEY FILE)", f"chmod 600 {q}", {"mode": mode})
    if b"PRIVATE KEY" not in first:
        return Check(name, WARN, f"{path} does not start like a private key (no PRIVATE KEY header)",
                     "[ssh] key names the private key, not the .pub", {"mode": mode})
    return Check(name, OK, f"{path} is a private key, mode {mode:04o}", "", {"mode": mode})


def check_known_hosts(target: TargetConfig) -> Check:
    """known_hosts has a key for ``[host]:port`` (``host`` on port 22), as the SSH driver (paramiko) looks it up."""
    import paramiko
    from paramiko.hostkeys import InvalidHostKey

    name = "known_hosts"
    if _sim_unprovisioned(target):
        return _skip_sim(name, "its own known_hosts")
    cfg = target.ssh
    entry = cfg.host if cfg.port == 22 else f"[{cfg.host}]:{cfg.port}"
    path = Path(expand(cfg.known_hosts))
    q = shlex.quote(str(path))
    add = (f"connect once with `ssh -p {cfg.port} {cfg.user}@{cfg.host}` and verify the fingerprint, or "
           f"`ssh-keyscan -p {cfg.port} {cfg.host} >> {q}` on a trusted machine, or set [ssh] trust_on_first_use = true")
    tofu = cfg.trust_on_first_use
    if not path.exists():
        if tofu:
            return Check(name, WARN, f"{path} does not exist; trust_on_first_use will create it on first connect",
                         add)
        return Check(name, FAIL, f"{path} does not exist, so the guest's host key ({entry}) is unknown", add)
    keys = paramiko.HostKeys()
    try:
        keys.load(str(path))
    except InvalidHostKey as exc:  # bad base64: paramiko (and so the SSH driver) cannot load the file at all
        line = str(getattr(exc, "line", "")).strip()[:80]
        return Check(name, FAIL, f"{path} has a malformed line paramiko cannot load: {line!r}",
                     f"fix or remove that line in {q}")
    except (OSError, UnicodeDecodeError, paramiko.SSHException) as exc:
        return Check(name, FAIL, f"cannot read {path}: {exc}", f"fix or remove the broken line in {q}")
    found = keys.lookup(entry)
    if found:
        return Check(name, OK, f"{path} has a {', '.join(sorted(found.keys()))} key for {entry}")
    if tofu:
        return Check(name, WARN, f"{path} has no entry for {entry}; trust_on_first_use will record it on first connect",
                     add)
    return Check(name, FAIL, f"{path} has no entry for {entry}; the SSH driver rejects unknown host keys", add)


def check_usercreds(usercreds: str | os.PathLike[str] | None) -> Check:
    """A local copy of ``.env.usercreds`` has the four keys (values are never shown). The real file lives
    in the guest; without ``--usercreds`` it is checked there at session start."""
    from ..usercreds import KNOWN, UsercredsError, parse_usercreds

    name = "usercreds"
    if usercreds is None:
        return Check(name, OK, "checked in the guest at session start (pass --usercreds FILE to check a local copy)")
    path = Path(expand(str(usercreds)))
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return Check(name, FAIL, f"{path} does not exist", "pass the path of a copy of the guest's ~/helix/.env.usercreds")
    except (OSError, UnicodeDecodeError) as exc:
        return Check(name, FAIL, f"cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}",
                     "check the file")
    try:
        creds = parse_usercreds(text, source=str(path))  # registers the API key for redaction
    except UsercredsError as exc:
        return Check(name, FAIL, exc.message, exc.hint or "")
    q = shlex.quote(str(path))
    if not creds.agent:
        return Check(name, WARN, f"{path} has HELIX_API_KEY, HELIX_URL, HELIX_PROJECT but no HELIX_UBUNTU_AGENT",
                     "add HELIX_UBUNTU_AGENT=app_… (spectask start runs without --agent otherwise)")
    if _mode(path) & 0o077:
        return Check(name, WARN, f"{path} has {', '.join(KNOWN)} but is readable by group/others (it holds an API key)",
                     f"chmod 600 {q}")
    return Check(name, OK, f"{path} has {', '.join(KNOWN)} (values not shown)")


# -- disk / memory ---------------------------------------------------------------------------------------
def check_disk(reports_dir: str | os.PathLike[str] = "reports") -> Check:
    """Free space where the run writes artifacts (the nearest existing parent of ``reports_dir``)."""
    name = "disk"
    path = Path(expand(str(reports_dir))).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    finding = f"{free / GIB:.1f} GiB free for {path}"
    fix = "free disk space (a run keeps recordings, thumbnails and logs) or pass --report-dir on another disk"
    data = {"free_bytes": free, "path": str(path)}
    if free < DISK_FAIL_BYTES:
        return Check(name, FAIL, f"{finding} (need at least {DISK_FAIL_BYTES / GIB:.0f} GiB)", fix, data)
    if free < DISK_WARN_BYTES:
        return Check(name, WARN, f"{finding} (below {DISK_WARN_BYTES / GIB:.0f} GiB)", fix, data)
    return Check(name, OK, finding, "", data)


def check_memory(*, available: int | None = None) -> Check:
    """Available memory (psutil): the harness decodes video next to a VM that holds its own RAM."""
    import psutil

    name = "memory"
    vm = psutil.virtual_memory()
    avail = vm.available if available is None else available
    finding = f"{avail / GIB:.1f} GiB available of {vm.total / GIB:.1f} GiB"
    fix = "close other applications or give the VM less memory in UTM"
    data = {"available_bytes": avail, "total_bytes": vm.total}
    if avail < MEMORY_FAIL_BYTES:
        return Check(name, FAIL, f"{finding} (need at least {MEMORY_FAIL_BYTES / GIB:.0f} GiB)", fix, data)
    if avail < MEMORY_WARN_BYTES:
        return Check(name, WARN, f"{finding} (below {MEMORY_WARN_BYTES / GIB:.0f} GiB)", fix, data)
    return Check(name, OK, finding, "", data)


# -- the doctor --------------------------------------------------------------------------------------------
def _guarded(name: str, fn: Callable[[], Check]) -> Check:
    """Run one check; a typed harness error becomes a ``fail``, and so does a bug (logged with its traceback),
    so one broken check never hides the others."""
    try:
        return fn()
    except HarnessError as exc:
        return Check(name, FAIL, exc.message, exc.hint or "")
    except Exception as exc:  # noqa: BLE001 - report, don't crash the preflight
        log.exception("doctor check %s crashed", name)
        return Check(name, FAIL, f"internal error in the check: {type(exc).__name__}: {exc}",
                     "a harness bug: report it with the log")


def run_doctor(
    target: TargetConfig,
    *,
    qemu_binary: str | os.PathLike[str] | None = None,
    qemu_source: str | os.PathLike[str] | None = None,
    expect_version: str | None = None,
    usercreds: str | os.PathLike[str] | None = None,
    reports_dir: str | os.PathLike[str] = "reports",
    system: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> DoctorReport:
    """Run every check in :data:`CHECK_NAMES` order; needs no running VM.

    ``system`` (``platform.system()``) and ``environ`` (``os.environ``) can be given for tests.
    """
    system = _system(system)
    environ = os.environ if environ is None else environ
    explicit = qemu_binary is not None
    skip_qemu = _sim_unprovisioned(target) and not explicit
    binary = Path(expand(str(qemu_binary))) if explicit else Path(default_qemu_binary(target))
    checks: list[Check] = []

    def add(name: str, fn: Callable[[], Check]) -> Check:
        check = _guarded(name, fn)
        log.info("doctor %s: %s: %s", check.name, check.status, check.finding)
        checks.append(check)
        return check

    if skip_qemu:
        for name in ("dylib_paths", "qemu_version", "qemu_fresh"):
            add(name, lambda name=name: _skip_sim(name, "its QEMU binary; pass --qemu-binary to check one"))
    else:
        add("dylib_paths", lambda: check_dylib_paths(binary, explicit=explicit, system=system))
        add("qemu_version", lambda: check_qemu_version(binary, qemu_source=qemu_source, expect_version=expect_version,
                                                       explicit=explicit, system=system))
        add("qemu_fresh", lambda: check_qemu_fresh(binary, qemu_source, explicit=explicit, system=system))
    utm = add("utmctl", lambda: check_utmctl(target, system=system, environ=environ))
    add("hvf", lambda: check_hvf(system=system, sim=target.is_sim))
    if _sim_unprovisioned(target):
        add("frame_export_port", lambda: _skip_sim("frame_export_port", "its own port"))
    else:
        vm_status = utm.data.get("vm_status")
        fe = target.frame_export
        add("frame_export_port", lambda: check_frame_export_port(fe.host, fe.port, vm_status=vm_status,
                                                                 sim=target.is_sim))
    add("ssh_key", lambda: check_ssh_key(target))
    add("known_hosts", lambda: check_known_hosts(target))
    add("usercreds", lambda: check_usercreds(usercreds))
    add("disk", lambda: check_disk(reports_dir))
    add("memory", lambda: check_memory())
    where = f" ({target.source})" if target.source else ""
    return DoctorReport(checks=checks, target=f"{target.name}{where}")
