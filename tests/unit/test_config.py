from pathlib import Path

import pytest

from harness.config import TargetConfig, load_target, parse_target
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_example_and_sim_targets_load():
    utm = load_target(ROOT / "fixtures/targets/utm.example.toml", env={})
    assert utm.vm.id == "17DC4F96-F1A9-4B51-962B-03D85998E0E7"
    assert utm.ssh.port == 2222 and utm.frame_export.port == 15937
    assert utm.stream.duration == 30 and (utm.stream.fps_min, utm.stream.fps_max) == (30, 60)
    assert utm.host.helix_debug_log.endswith("WDNLXAD4W8.com.utmapp.UTM/helix-debug.log")
    assert not utm.is_sim
    sim = load_target(ROOT / "fixtures/targets/sim.toml", env={})
    assert sim.is_sim and sim.stream.duration == 10


def test_env_and_overrides_layer_over_the_file():
    cfg = load_target(ROOT / "fixtures/targets/utm.example.toml",
                      env={"HELIX_E2E_SSH_PORT": "2022", "HELIX_E2E_TIMEOUT_SCALE": "2"})
    assert cfg.ssh.port == 2022
    assert cfg.timeouts["boot"] == 360
    cfg2 = cfg.with_overrides({"stream.duration": "5", "ssh.trust_on_first_use": "yes"})
    assert cfg2.stream.duration == 5.0 and cfg2.ssh.trust_on_first_use is True


@pytest.mark.parametrize(
    "data, match",
    [
        ({"ssh": {"port": 0}}, "port must be"),
        ({"ssh": {"prot": 22}}, "unknown key"),
        ({"bogus": {}}, "unknown top-level"),
        ({"ssh": "x"}, "must be a table"),
        ({"stream": {"fps_min": 70, "fps_max": 60}}, "fps_min"),
        ({"stream": {"duration": "long"}}, "must be a number"),
        ({"timeouts": {"boot": -1}}, "positive"),
        ({"kind": "vmware"}, "not supported"),
    ],
)
def test_broken_configs_give_typed_errors(data, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_target(data, source="t.toml")
    assert err.value.phase == "config"


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_target(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[ssh\nport=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_target(bad)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_target(bad)


def test_unknown_timeout_phase():
    with pytest.raises(ConfigError):
        TargetConfig().timeouts["nap"]
