"""Policy settings: options, weights and key source from flags, variables and a TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringlb.config import SettingsError, load_settings


def test_settings_parse_policy_options_weights_and_key_source() -> None:
    settings = load_settings(
        policy="ring",
        policy_options="hash=murmur3,vnodes=200,bounded=true,load_factor=1.5",
        weights="server_1=2, server_2=0.5",
        key_source="cookie:sid",
    )
    assert settings.policy_options == {
        "hash": "murmur3",
        "vnodes": 200,
        "bounded": True,
        "load_factor": 1.5,
    }
    assert settings.weights == {"server_1": 2.0, "server_2": 0.5}
    json_options = load_settings(policy="ring", policy_options='{"hash": "poly", "slots": 512}')
    assert json_options.policy_options == {"hash": "poly", "slots": 512}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"policy": "ring", "policy_options": "vnodes=0"},
            "invalid policy_options (RINGLB_POLICY_OPTIONS, --policy-options): "
            "ring: vnodes (0) must be >= 1; got 'vnodes=0'",
        ),
        (
            {"policy": "maglev", "policy_options": "vnodes"},
            "invalid policy_options (RINGLB_POLICY_OPTIONS, --policy-options): "
            "'vnodes' is not key=value",
        ),
        (
            {"weights": "server_1=heavy"},
            "invalid weights (RINGLB_WEIGHTS, --weights): weight of server_1 ('heavy') must be "
            "a number",
        ),
        ({"weights": "server_1=0"}, "weight of server_1 (0.0) must be a positive number"),
        ({"key_source": "ip"}, "invalid key_source (RINGLB_KEY_SOURCE, --key-source)"),
    ],
)
def test_bad_policy_settings_name_the_option(overrides: dict, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(**overrides)
    assert message in str(info.value)


CONFIG = """
policy = "ring"
key_source = "cookie:sid"

[policy_options]
vnodes = 64
bounded = true

[weights]
server_1 = 2
"""


def test_a_config_file_is_overridden_by_variables_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ringlb.toml"
    path.write_text(CONFIG)
    settings = load_settings(config=str(path))
    assert (settings.policy, settings.key_source) == ("ring", "cookie:sid")
    assert settings.policy_options == {"vnodes": 64, "bounded": True}
    assert settings.weights == {"server_1": 2.0}

    monkeypatch.setenv("RINGLB_CONFIG", str(path))
    monkeypatch.setenv("RINGLB_POLICY_OPTIONS", "vnodes=10")
    assert load_settings().policy_options == {"vnodes": 10}
    flagged = load_settings(policy="maglev", policy_options="table_size=13")
    assert (flagged.policy, flagged.policy_options) == ("maglev", {"table_size": 13})
    assert flagged.weights == {"server_1": 2.0}


def test_a_bad_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"invalid config \(RINGLB_CONFIG, --config\)"):
        load_settings(config=str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text('policy = "ring"\n[policy_options]\nvnodes = 0\n')
    with pytest.raises(SettingsError, match=r"ring: vnodes \(0\) must be >= 1"):
        load_settings(config=str(bad))
