import pytest

from harness.config import TargetConfig, VmConfig
from harness.errors import HarnessError
from harness.plugin.vmlock import acquire_vm


def test_workers_never_share_a_vm(tmp_path, monkeypatch):
    monkeypatch.setenv("HELIX_E2E_LOCK_DIR", str(tmp_path))
    target = TargetConfig(vm=VmConfig(id="VM-A", pool=("VM-B",)))
    first, lock1 = acquire_vm(target, timeout=1)
    second, lock2 = acquire_vm(target, timeout=1)
    assert (first.vm.id, second.vm.id) == ("VM-A", "VM-B")
    with pytest.raises(HarnessError, match="driven by another worker"):
        acquire_vm(target, timeout=0.2)
    lock1.release()
    third, lock3 = acquire_vm(target, timeout=1)
    assert third.vm.id == "VM-A"
    lock2.release()
    lock3.release()


def test_pool_from_config_text():
    from harness.config import parse_target

    cfg = parse_target({"vm": {"id": "A", "pool": ["B", "C"]}})
    assert cfg.vm.pool == ("B", "C")
    with pytest.raises(Exception, match="list of strings"):
        parse_target({"vm": {"pool": [1]}})


def test_a_simulators_lock_lives_and_goes_with_the_simulator(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HELIX_E2E_LOCK_DIR", str(cache))
    sim_root = tmp_path / "sim" / "host" / "bin"
    sim_root.mkdir(parents=True)
    utmctl = sim_root / "utmctl"
    utmctl.write_text("#!/bin/sh\n")
    target = TargetConfig(vm=VmConfig(id="VM-A", utmctl=str(utmctl)), sim={})
    _, lock = acquire_vm(target, timeout=1)
    lock.release()
    assert list(sim_root.glob("vm-*.lock")) and not list(cache.glob("vm-*.lock"))  # nothing piles up in the cache
