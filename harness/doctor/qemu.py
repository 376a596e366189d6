"""The QEMU binary UTM loads: where it is, its Mach-O install names, and whether it is the build you expect.

Checks ``dylib_paths`` (every install name must resolve inside UTM's sandbox), ``qemu_version`` (the
binary's ``[HELIX] VERSION:`` string against the source checkout and/or ``--expect-version``) and
``qemu_fresh`` (the binary is newer than the checkout's last commit), plus ``qemu_runtime_version``, which
the strategy runs after VM start on what QEMU logged. Facts: ``macos-frame-export.md`` §4
(fix-qemu-paths.sh, stale builds). The Mach-O parsing itself lives in :mod:`harness.protocols.macho`.
"""

from __future__ import annotations

import mmap
import os
import re
import shlex
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..config import TargetConfig, expand
from .report import FAIL, OK, WARN, Check, DoctorError, host_system

__all__ = [
    "QEMU_FRAMEWORK_IN_APP", "UTM_QEMU_BINARY", "QEMU_ID", "HELIX_SOURCE_FILE", "VERSION_MARKER",
    "ALLOWED_PREFIXES", "HOMEBREW_PREFIX",
    "default_qemu_binary", "classify_install_name", "framework_install_name", "check_dylib_paths",
    "binary_versions", "source_version", "runtime_version", "check_qemu_version", "check_runtime_version",
    "git_commit_time", "check_qemu_fresh",
]

#: The QEMU UTM loads (the framework binary; a loose libqemu-aarch64-softmmu.dylib is NOT what UTM loads).
QEMU_FRAMEWORK_IN_APP = "Contents/Frameworks/qemu-aarch64-softmmu.framework/Versions/A/qemu-aarch64-softmmu"
UTM_QEMU_BINARY = f"/Applications/UTM.app/{QEMU_FRAMEWORK_IN_APP}"
#: The install name (LC_ID_DYLIB) the framework binary should carry.
QEMU_ID = "@rpath/qemu-aarch64-softmmu.framework/Versions/A/qemu-aarch64-softmmu"
#: Where qemu-utm keeps the VERSION literal, relative to the checkout.
HELIX_SOURCE_FILE = "hw/display/helix/helix-frame-export.m"
VERSION_MARKER = "[HELIX] VERSION:"

#: Install-name prefixes dyld resolves inside UTM's sandbox (macos-frame-export.md §4).
ALLOWED_PREFIXES = ("@rpath/", "@executable_path/", "@loader_path/", "/System/", "/usr/lib/")
HOMEBREW_PREFIX = "/opt/homebrew/"

_FIX_STALE = (
    "rebuild QEMU (for-mac/qemu-helix/build-qemu-standalone.sh) and install it into UTM.app with "
    "scripts/fix-qemu-paths.sh, then restart the VM: a running VM keeps the old QEMU until it restarts"
)


# -- where the binary is -----------------------------------------------------------------------------
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
    system = host_system(system)
    binary = Path(binary)
    missing = _binary_state(binary, explicit=explicit, system=system)
    if missing is not None:
        return replace(missing, name=name)
    from ..protocols.macho import LC_ID_DYLIB, LC_RPATH, MachOError, read_macho

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
    system = host_system(system)
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
    missing = _missing_binary_for(name, binary, explicit=explicit, system=host_system(system))
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
