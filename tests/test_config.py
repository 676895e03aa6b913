"""Configuration: every key documented with its default, errors that name the key (at start,
from the real `browserd`), environment overrides, systemd's directories as defaults, and
`--check-config` printing the effective config as parseable TOML."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from browserd.daemon.base.config import Config, ConfigError, load
from browserd.daemon.check_config import flatten, render

from .conftest import BIN, REPO

ENV_VARS = ("BROWSERD_CONFIG", "BROWSERD_SOCKET", "BROWSERD_STATE_DIR", "BROWSERD_LOG_LEVEL",
            "BROWSERD_ALLOWED_GROUP", "STATE_DIRECTORY", "RUNTIME_DIRECTORY",
            "CONFIGURATION_DIRECTORY", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-run"))
    return tmp_path


def readme_config_table() -> dict[str, str]:
    """`key` -> default cell, from the table in docs/configuration.md."""
    text = (REPO / "docs" / "configuration.md").read_text()
    section = text[text.index("| key |"):]
    rows = re.findall(r"^\| `([a-z_.]+)` \| ([^|]+) \|", section, re.MULTILINE)
    return {key: default.strip() for key, default in rows}


def test_every_key_is_documented_with_its_default(clean_env: Path) -> None:
    documented = readme_config_table()
    defaults = flatten(load())
    assert sorted(documented) == sorted(defaults)
    for key, cell in documented.items():
        literal = re.fullmatch(r"`([^`]+)`", cell)
        if literal is None:  # "see above", "unset", "discovered": described in words
            assert defaults[key] is None or key in ("state_dir", "socket"), (key, cell)
            continue
        value = tomllib.loads(f"v = {literal[1]}")["v"]
        assert value == defaults[key], f"docs say {key} = {cell}, the code {defaults[key]!r}"


def test_check_config_output_is_the_effective_config_as_toml(clean_env: Path) -> None:
    config_file = clean_env / "config.toml"
    config_file.write_text('log_level = "debug"\n[cdp]\nclose_policy = "allow"\n'
                           '[retention]\nmax_runs = 7\n[log_levels]\nrpc = "warning"\n')
    env = {**os.environ, "BROWSERD_CONFIG": str(config_file),
           "BROWSERD_STATE_DIR": str(clean_env / "state")}
    done = subprocess.run([str(BIN / "browserd"), "--check-config"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = tomllib.loads(done.stdout)  # key = value lines are TOML; unset keys are comments
    expected = {k: v for k, v in flatten(load(config_file)).items() if v is not None}
    expected["state_dir"] = str(clean_env / "state")
    flat = {}
    for key, value in printed.items():
        if isinstance(value, dict) and key != "spaces":
            flat.update({f"{key}.{sub}": subvalue for sub, subvalue in value.items()})
        else:
            flat[key] = value
    assert flat == expected
    assert printed["log_level"] == "debug"
    assert printed["cdp"]["close_policy"] == "allow"
    assert printed["retention"]["max_runs"] == 7
    assert printed["log_levels"]["rpc"] == "warning"
    assert "# allowed_group = (unset)" in done.stdout.splitlines()
    assert re.search(r"^# browser found: /\S+ \(.+\)$", done.stdout, re.MULTILINE)
    as_json = subprocess.run([str(BIN / "browserd"), "--check-config", "--json"], env=env,
                             capture_output=True, text=True, timeout=60)
    report = json.loads(as_json.stdout)
    assert report["config_file"] == str(config_file)
    assert report["config"]["retention.max_runs"] == 7
    assert report["browser"]["error"] is None and report["browser"]["version"]


def test_rendered_defaults_load_back_unchanged(clean_env: Path) -> None:
    config = load()
    path = clean_env / "all.toml"
    path.write_text("\n".join(render(flatten(config))) + "\n")
    assert load(path) == config


@pytest.mark.parametrize(("text", "key", "words"), [
    ('log_levell = "info"\n', "log_levell", "unknown key"),
    ('[browser]\nexecutabel = "/usr/bin/chromium"\n', "browser.executabel", "unknown key"),
    ('[cdp]\nport = "9222"\n', "cdp.port", "expected an integer, got str"),
    ("live_restore = 1\n", "live_restore", "expected a boolean"),
    ('[events]\nrecord_commands = "some"\n', "events.record_commands", "must be one of off"),
    ('[cdp]\nclose_policy = "kill"\n', "cdp.close_policy", "must be one of detach, allow"),
    ("[retention]\nmax_runs = -1\n", "retention.max_runs", "between 0 and"),
    ('[log_levels]\nrpc = "chatty"\n', "log_levels.rpc", "must be one of debug"),
    ("browser = 3\n", "browser", "must be a table"),
    ('allowed_group = "no-such-group-here"\n', "allowed_group", "no group named"),
])
def test_bad_keys_are_refused_with_the_key_named(clean_env: Path, text: str, key: str,
                                                 words: str) -> None:
    path = clean_env / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == key
    assert words in str(info.value)


@pytest.mark.parametrize(("text", "named"), [
    ("[limits]\nmax_runtime = 3\n", "'limits.max_runtime': unknown key"),
    ('[browser]\nstop_grace_s = "5"\n', "'browser.stop_grace_s': expected int or float, got str"),
    ('[events]\nfsync = "sometimes"\n', "'events.fsync': must be one of always, batch, never"),
    ('[browser]\nstop_grace_s = \n', "not valid TOML: Invalid value (at line 2, column 16): "
                                     "'stop_grace_s ='"),
])
def test_the_daemon_refuses_to_start_on_a_bad_config(short_dir: Path, text: str,
                                                     named: str) -> None:
    (short_dir / "config.toml").write_text(text)
    env = {**os.environ, "BROWSERD_CONFIG": str(short_dir / "config.toml"),
           "BROWSERD_SOCKET": str(short_dir / "run" / "browserd.sock"),
           "BROWSERD_STATE_DIR": str(short_dir / "state")}
    done = subprocess.run([str(BIN / "browserd")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert named in done.stderr
    assert "Traceback" not in done.stderr
    assert not (short_dir / "run").exists()  # refused before binding anything


def test_environment_overrides_the_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    path = clean_env / "c.toml"
    path.write_text(f'log_level = "error"\nstate_dir = "{clean_env / "file-state"}"\n'
                    f'socket = "{clean_env / "file.sock"}"\n')
    assert load(path).log_level == "error"
    monkeypatch.setenv("BROWSERD_LOG_LEVEL", "debug")
    monkeypatch.setenv("BROWSERD_STATE_DIR", str(clean_env / "env-state"))
    monkeypatch.setenv("BROWSERD_SOCKET", str(clean_env / "env.sock"))
    monkeypatch.setenv("BROWSERD_ALLOWED_GROUP", "root")
    config = load(path)
    assert (config.log_level, config.allowed_group) == ("debug", "root")
    assert (config.state_dir, config.socket) == (clean_env / "env-state", clean_env / "env.sock")
    # The command line beats the environment.
    assert load(path, {"log_level": "warning"}).log_level == "warning"
    monkeypatch.setenv("BROWSERD_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError, match=r"'log_level \(from \$BROWSERD_LOG_LEVEL\)'"):
        load(path)


def test_systemd_directories_are_the_defaults(clean_env: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    plain = load()
    assert plain.state_dir == clean_env / "xdg-state" / "browserd"
    assert plain.socket == clean_env / "xdg-run" / "browserd" / "browserd.sock"
    monkeypatch.setenv("STATE_DIRECTORY", f"{clean_env / 'var-lib'}:{clean_env / 'second'}")
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(clean_env / "run-browserd"))
    config_dir = clean_env / "etc-browserd"
    config_dir.mkdir()
    (config_dir / "config.toml").write_text('log_level = "warning"\n')
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", str(config_dir))
    config = load()
    assert config.state_dir == clean_env / "var-lib"  # the first of several
    assert config.socket == clean_env / "run-browserd" / "browserd.sock"
    assert config.log_level == "warning"  # read from $CONFIGURATION_DIRECTORY/config.toml
    # Explicit settings still win over systemd's defaults.
    monkeypatch.setenv("BROWSERD_STATE_DIR", str(clean_env / "mine"))
    assert load().state_dir == clean_env / "mine"


def test_defaults_need_no_file(clean_env: Path) -> None:
    config = load()
    assert isinstance(config, Config)
    assert (config.live_restore, config.cdp.close_policy, config.events.record_commands,
            config.events.console_level, config.retention.max_runs, config.pool.size) == (
        False, "detach", "commands", "error", 100, 0)
