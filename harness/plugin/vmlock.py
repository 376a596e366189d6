"""One driver per VM: a file lock per VM, so parallel workers (pytest-xdist) never share one.

Workers pick the first free VM of ``[vm] id`` + ``[vm] pool``; if all are taken they wait for
the first one, up to the boot timeout. The lock key includes the utmctl path, so simulators
(each with its own utmctl) never contend.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

from filelock import FileLock, Timeout

from ..config import TargetConfig
from ..errors import HarnessError

LOCK_DIR_ENV = "HELIX_E2E_LOCK_DIR"


def lock_dir() -> Path:
    d = Path(os.environ.get(LOCK_DIR_ENV) or Path.home() / ".cache" / "helix-e2e" / "locks")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _lock_for(target: TargetConfig, vm_id: str) -> FileLock:
    # A simulator's VM lives in the simulator's own root, which goes away with it: its lock lives there too,
    # so runs leave no lock file behind. A real Mac's VMs share the per-user cache.
    if target.vm.provider == "helix-app":  # one QEMU per data dir and QMP port
        where = os.path.realpath(os.path.expanduser(target.vm.data_dir))
        key = hashlib.sha256(f"helix-app\0{where}\0{target.vm.qmp_port}".encode()).hexdigest()[:24]
        home = Path(where) if target.is_sim and Path(where).is_dir() else lock_dir()
        return FileLock(str(home / f"vm-{key}.lock"))
    utmctl = os.path.realpath(os.path.expanduser(target.vm.utmctl))
    key = hashlib.sha256(f"{utmctl}\0{vm_id}".encode()).hexdigest()[:24]
    home = Path(utmctl).parent if target.is_sim and Path(utmctl).parent.is_dir() else lock_dir()
    return FileLock(str(home / f"vm-{key}.lock"))


def acquire_vm(target: TargetConfig, *, timeout: float) -> tuple[TargetConfig, FileLock | None]:
    """The target bound to a VM this process now owns, and the held lock (release at the end)."""
    if target.vm.provider == "helix-app":  # the VM is the data dir's (one per Mac user): no pool, no id
        lock = _lock_for(target, "")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise HarnessError(f"Helix.app's VM ({target.vm.data_dir}) is driven by another worker", phase="boot",
                               hint="run one worker per Mac user (-n 1)") from None
        return target, lock
    candidates = [v for v in (target.vm.id, *target.vm.pool) if v]
    if not candidates:
        return target, None
    for vm_id in candidates:
        lock = _lock_for(target, vm_id)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        return replace(target, vm=replace(target.vm, id=vm_id)), lock
    lock = _lock_for(target, candidates[0])
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise HarnessError(
            f"every VM of the target ({', '.join(candidates)}) is driven by another worker",
            phase="boot",
            hint="add VMs to [vm] pool or run fewer workers (-n)",
        ) from None
    return replace(target, vm=replace(target.vm, id=candidates[0])), lock
