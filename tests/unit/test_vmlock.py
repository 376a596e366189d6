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
