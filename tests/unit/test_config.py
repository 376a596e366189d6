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


# ---------------------------------------------------------------- values are data, never shell (issue 12)


@pytest.mark.parametrize(("section", "key", "value", "words"), [
    ("guest", "usercreds", ".env.usercreds;touch${IFS}pwned", "[guest] usercreds must be a plain path"),
    ("guest", "usercreds", "$(id)", "[guest] usercreds"),
    ("guest", "cli_path", "/tmp/helix`id`", "[guest] cli_path"),
    ("guest", "cli_path", "/tmp/helix && reboot", "[guest] cli_path"),
    ("guest", "cli_path", "-rf", "[guest] cli_path"),
    ("guest", "helix_dir", "~/helix\nreboot", "[guest] helix_dir"),
    ("guest", "helix_dir", "~root/helix", "[guest] helix_dir"),
    ("guest", "helix_dir", "'~/helix'", "[guest] helix_dir"),
    ("guest", "helix_dir", "/srv/{a,b}", "[guest] helix_dir"),
    ("guest", "helix_dir", "/srv/*", "[guest] helix_dir"),
    ("guest", "helix_dir", "", "[guest] helix_dir"),
    ("guest", "compose_file", "a|b.yaml", "[guest] compose_file"),
    ("guest", "sandbox_service", "sandbox macos", "[guest] sandbox_service must be a plain name"),
    ("guest", "sandbox_service", "", "[guest] sandbox_service"),
    ("guest", "compose_profiles", "code-macos;id", "[guest] compose_profiles"),
    ("guest", "compose_profiles", "a,,b", "[guest] compose_profiles"),
    ("ssh", "user", "helix;id", "[ssh] user"),
    ("ssh", "host", "h" * 300, "[ssh] host"),
    ("ssh", "host", "127.0.0.1 -oProxyCommand=x", "[ssh] host"),
    ("ssh", "connect_timeout", -1, "[ssh] connect_timeout"),
    ("ssh", "connect_timeout", 0, "[ssh] connect_timeout"),
    ("frame_export", "host", "a b", "[frame_export] host"),
    ("vm", "id", "vm\nid", "[vm] id"),
    ("timeouts", "scale", 1e8, "[timeouts] scale must be in [0.01, 100]"),
    ("timeouts", "scale", 0.001, "[timeouts] scale"),
    ("timeouts", "boot", 1e9, "[timeouts] boot must be at most"),
    ("stream", "duration", 0, "[stream] duration"),
    ("stream", "duration", -3, "[stream] duration"),
    ("stream", "width", -1920, "[stream] width"),
    ("stream", "height", 70000, "[stream] height"),
    ("stream", "fps", 0, "[stream] fps"),
    ("stream", "fps", 300, "[stream] fps"),
    ("stream", "bitrate", -1, "[stream] bitrate"),
    ("stream", "cli_fps_tolerance", -0.1, "[stream] cli_fps_tolerance"),
    ("stream", "warmup", -1, "[stream] warmup"),
    ("stream", "fps_min", -30, "[stream] need 0 < fps_min"),
])
def test_bad_values_are_refused_at_load_naming_the_key(section, key, value, words):
    with pytest.raises(ConfigError) as err:
        parse_target({section: {key: value}}, source="t.toml")
    assert words in err.value.message, err.value.message
    assert err.value.phase == "config" and "\n" not in err.value.message


@pytest.mark.parametrize(("dotted", "value", "words"), [
    ("timeouts.scale", 1e8, "[timeouts] scale"),
    ("timeouts.scale", "inf", "timeouts.scale (override) must be a finite number"),
    ("stream.duration", 0, "[stream] duration must be > 0"),
    ("stream.duration", "-1", "[stream] duration"),
    ("guest.cli_path", "/tmp/x;id", "[guest] cli_path"),
])
def test_overrides_are_validated_the_same_way(dotted, value, words):
    with pytest.raises(ConfigError) as err:
        TargetConfig().with_overrides({dotted: value})
    assert words in err.value.message


@pytest.mark.parametrize(("section", "key", "value"), [
    ("guest", "helix_dir", "~/my helix"),
    ("guest", "helix_dir", "~"),
    ("guest", "helix_dir", "/Users/ana/src/helix-2026.08"),
    ("guest", "usercreds", ".env.usercreds"),
    ("guest", "usercreds", "~/secrets/helix=prod,v2@x"),
    ("guest", "cli_path", "/tmp/helix"),
    ("guest", "compose_profiles", ""),
    ("guest", "compose_profiles", "code-macos,gpu"),
    ("guest", "sandbox_service", "sandbox_macos.1"),
    ("ssh", "host", "::1"),
    ("ssh", "host", "mac-mini.local"),
    ("ssh", "user", "ana.b"),
    ("timeouts", "scale", 0.01),
    ("timeouts", "scale", 100),
    ("stream", "fps", 255),
])
def test_plain_values_are_accepted(section, key, value):
    cfg = parse_target({section: {key: value}}, source="t.toml")
    assert getattr(getattr(cfg, section), key) == value


def test_session_ids_are_validated():
    from harness.plugin.fixtures import validate_session_id

    assert validate_session_id("ses_01ke4rsx7jb62ms9zx8g68tnbe") == "ses_01ke4rsx7jb62ms9zx8g68tnbe"
    for bad in ("", "ses_x", "spt_01ke4rsx7jb62ms9zx8g68tnbe", "ses_01ke4rsx7jb62ms9zx8g68tnbe;id", None):
        with pytest.raises(ConfigError, match="--session must be a Helix session id"):
            validate_session_id(bad)
