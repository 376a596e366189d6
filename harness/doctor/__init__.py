"""`helix-e2e doctor`: the suite's preflight. It checks the Mac (or a fixture) without starting a VM.

Each check yields a :class:`Check`: a ``name``, a ``status`` (``ok`` | ``warn`` | ``fail``), a one-line
``finding`` and a ``fix`` (what to do; a fix may list several shell commands, one per line).
:func:`run_doctor` runs them all and returns a :class:`DoctorReport`; any ``fail`` makes the report
``failed``, and the pytest plugin skips the streaming tests with :meth:`DoctorReport.summary`.

Where a change goes:

- :mod:`.report`: the result types, the text and JSON rendering, the skip-reason summary;
- :mod:`.qemu`: the QEMU binary: ``dylib_paths``, ``qemu_version``, ``qemu_fresh`` (and
  ``qemu_runtime_version``, run after VM start);
- :mod:`.host`: the Mac: ``utmctl`` (GUI login), ``hvf``, ``frame_export_port``, ``disk``, ``memory``;
- :mod:`.credentials`: ``ssh_key``, ``known_hosts``, ``usercreds``;
- :mod:`.helix_app`: provider ``helix-app`` (Helix.app's bundled QEMU): ``helix_app_bundle``,
  ``helix_app_files``, ``helix_app_running``, ``helix_app_ports`` (:data:`HELIX_APP_CHECK_NAMES`);
- this module: which checks run, in which order (:data:`CHECK_NAMES`, :func:`run_doctor`), and the
  target to check (:func:`target_for_doctor`).

Importing the doctor is cheap: a check imports what it needs (psutil, paramiko, the UTM driver, the
Mach-O reader) only when it gets that far, so ``helix-e2e doctor`` starts fast. Tunables such as the
disk and memory thresholds are read in the module that defines them; patch them there, not here.

The library never prints and never shows a secret: usercreds values and key contents stay unread or unshown.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Mapping

from ..config import ENV_OVERRIDES, TARGET_ENV, TargetConfig, expand, load_target
from ..errors import HarnessError
from .credentials import check_known_hosts, check_ssh_key, check_usercreds
from .host import (
    check_disk,
    check_frame_export_port,
    check_hvf,
    check_memory,
    check_utmctl,
    port_listeners,
)
from .qemu import (
    HELIX_SOURCE_FILE,
    QEMU_ID,
    UTM_QEMU_BINARY,
    binary_versions,
    check_dylib_paths,
    check_qemu_fresh,
    check_qemu_version,
    check_runtime_version,
    classify_install_name,
    default_qemu_binary,
    framework_install_name,
    git_commit_time,
    runtime_version,
    source_version,
)
from .report import (
    FAIL,
    OK,
    STATUSES,
    WARN,
    Check,
    DoctorError,
    DoctorReport,
    host_system,
    sim_unprovisioned,
    skipped_for_sim,
)

# Module constants callers read from here since before the split (not in __all__). A check reads its own
# module's copy, so patch a threshold in .host, not here.
from .host import DISK_FAIL_BYTES, DISK_WARN_BYTES, GIB, MEMORY_FAIL_BYTES, MEMORY_WARN_BYTES  # noqa: F401
from .host import QEMU_PROCESS_MARKERS  # noqa: F401
from .qemu import ALLOWED_PREFIXES, HOMEBREW_PREFIX, QEMU_FRAMEWORK_IN_APP, VERSION_MARKER  # noqa: F401

__all__ = [
    "OK", "WARN", "FAIL", "STATUSES", "CHECK_NAMES", "HELIX_APP_CHECK_NAMES", "Check", "DoctorReport", "DoctorError",
    "run_doctor", "target_for_doctor", "default_qemu_binary",
    "check_dylib_paths", "check_qemu_version", "check_runtime_version", "check_qemu_fresh", "check_utmctl",
    "check_hvf", "check_frame_export_port", "check_ssh_key", "check_known_hosts", "check_usercreds",
    "check_disk", "check_memory",
    "classify_install_name", "framework_install_name", "binary_versions", "source_version", "runtime_version",
    "git_commit_time", "port_listeners",
    "UTM_QEMU_BINARY", "QEMU_ID", "HELIX_SOURCE_FILE",
]

log = logging.getLogger(__name__)

#: Every check run_doctor runs, in order (check_runtime_version runs later, after VM start).
CHECK_NAMES = (
    "dylib_paths", "qemu_version", "qemu_fresh", "utmctl", "hvf", "frame_export_port",
    "ssh_key", "known_hosts", "usercreds", "disk", "memory",
)
#: The same for a target with ``[vm] provider = "helix-app"`` (dylib_paths and qemu_version read the app's
#: libqemu-aarch64-softmmu.dylib; the four ports replace frame_export_port; there is no utmctl).
HELIX_APP_CHECK_NAMES = (
    "helix_app_bundle", "dylib_paths", "qemu_version", "helix_app_files", "helix_app_running", "helix_app_ports",
    "hvf", "ssh_key", "known_hosts", "usercreds", "disk", "memory",
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


# -- the doctor --------------------------------------------------------------------------------------------
def _finish(add, checks: list[Check], target: TargetConfig, *, usercreds, reports_dir) -> DoctorReport:
    """The checks every provider ends with (credentials and the host's room), then the report."""
    add("ssh_key", lambda: check_ssh_key(target))
    add("known_hosts", lambda: check_known_hosts(target))
    add("usercreds", lambda: check_usercreds(usercreds))
    add("disk", lambda: check_disk(reports_dir))
    add("memory", lambda: check_memory())
    where = f" ({target.source})" if target.source else ""
    return DoctorReport(checks=checks, target=f"{target.name}{where}")


def _adder(checks: list[Check]) -> Callable[[str, Callable[[], Check]], Check]:
    """``add(name, fn)``: run one check guarded, log it, append it to ``checks`` and return it."""
    def add(name: str, fn: Callable[[], Check]) -> Check:
        check = _guarded(name, fn)
        log.info("doctor %s: %s: %s", check.name, check.status, check.finding)
        checks.append(check)
        return check
    return add


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
    system = host_system(system)
    environ = os.environ if environ is None else environ
    if target.vm.provider == "helix-app":
        return _run_helix_app_doctor(target, qemu_binary=qemu_binary, qemu_source=qemu_source,
                                     expect_version=expect_version, usercreds=usercreds, reports_dir=reports_dir,
                                     system=system)
    explicit = qemu_binary is not None
    skip_qemu = sim_unprovisioned(target) and not explicit
    binary = Path(expand(str(qemu_binary))) if explicit else Path(default_qemu_binary(target))
    checks: list[Check] = []
    add = _adder(checks)

    if skip_qemu:
        for name in ("dylib_paths", "qemu_version", "qemu_fresh"):
            add(name, lambda name=name: skipped_for_sim(name, "its QEMU binary; pass --qemu-binary to check one"))
    else:
        add("dylib_paths", lambda: check_dylib_paths(binary, explicit=explicit, system=system))
        add("qemu_version", lambda: check_qemu_version(binary, qemu_source=qemu_source, expect_version=expect_version,
                                                       explicit=explicit, system=system))
        add("qemu_fresh", lambda: check_qemu_fresh(binary, qemu_source, explicit=explicit, system=system))
    utm = add("utmctl", lambda: check_utmctl(target, system=system, environ=environ))
    add("hvf", lambda: check_hvf(system=system, sim=target.is_sim))
    if sim_unprovisioned(target):
        add("frame_export_port", lambda: skipped_for_sim("frame_export_port", "its own port"))
    else:
        vm_status = utm.data.get("vm_status")
        fe = target.frame_export
        add("frame_export_port", lambda: check_frame_export_port(fe.host, fe.port, vm_status=vm_status,
                                                                 sim=target.is_sim))
    return _finish(add, checks, target, usercreds=usercreds, reports_dir=reports_dir)


def _run_helix_app_doctor(target: TargetConfig, *, qemu_binary, qemu_source, expect_version, usercreds, reports_dir,
                          system: str) -> DoctorReport:
    """:data:`HELIX_APP_CHECK_NAMES` in order: the bundle, its dylib, its files, what must not run, the ports."""
    from .helix_app import (bundle_paths, check_helix_app_bundle, check_helix_app_files, check_helix_app_ports,
                            check_helix_app_running)

    explicit = qemu_binary is not None
    dylib = Path(expand(str(qemu_binary))) if explicit else bundle_paths(target)[1]
    skip_qemu = sim_unprovisioned(target) and not explicit
    checks: list[Check] = []
    add = _adder(checks)

    add("helix_app_bundle", lambda: check_helix_app_bundle(target, system=system))
    if skip_qemu:
        for name in ("dylib_paths", "qemu_version"):
            add(name, lambda name=name: skipped_for_sim(name, "its Helix.app bundle"))
    else:
        add("dylib_paths", lambda: check_dylib_paths(dylib, explicit=explicit, system=system))
        add("qemu_version", lambda: check_qemu_version(dylib, qemu_source=qemu_source, expect_version=expect_version,
                                                       explicit=explicit, system=system))
    add("helix_app_files", lambda: check_helix_app_files(target, system=system))
    add("helix_app_running", lambda: check_helix_app_running(target))
    add("helix_app_ports", lambda: check_helix_app_ports(target))
    add("hvf", lambda: check_hvf(system=system, sim=target.is_sim))
    return _finish(add, checks, target, usercreds=usercreds, reports_dir=reports_dir)
