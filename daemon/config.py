"""Daemon configuration: defaults, the TOML file, environment overrides, and validation.

Every key is checked at start: an unknown key or a bad value stops the daemon with the key named,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from browserd.client.paths import default_socket_path


class ConfigError(Exception):
    """A configuration problem, reported at start with the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}: {message}")
        self.key = key


def default_state_dir() -> Path:
    if os.environ.get("BROWSERD_STATE_DIR"):
        return Path(os.environ["BROWSERD_STATE_DIR"])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "browserd"


def default_config_path() -> Path:
    if os.environ.get("BROWSERD_CONFIG"):
        return Path(os.environ["BROWSERD_CONFIG"])
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "browserd" / "config.toml"


@attrs.frozen
class BrowserConfig:
    executable: str | None = None
    args: tuple[str, ...] = ()
    startup_timeout_s: float = 30.0
    stop_grace_s: float = 5.0


@attrs.frozen
class CdpConfig:
    host: str = "127.0.0.1"
    port: int = 0
    allowed_origins: tuple[str, ...] = ()


@attrs.frozen
class LimitsConfig:
    max_runtimes: int = 16
    requests_in_flight: int = 64  # per RPC connection; past it the daemon stops reading


@attrs.frozen
class EventsConfig:
    fsync: str = "batch"


@attrs.frozen
class Config:
    state_dir: Path
    socket: Path
    log_level: str = "info"
    allowed_group: str | None = None  # a group whose members may use the socket (system service)
    browser: BrowserConfig = BrowserConfig()
    cdp: CdpConfig = CdpConfig()
    limits: LimitsConfig = LimitsConfig()
    events: EventsConfig = EventsConfig()


# One table of every key: (section, key) -> (type, check). The README's configuration section
# documents the same keys; tests load a file with all of them.
_LOG_LEVELS = ("debug", "info", "warning", "error")
_FSYNC = ("always", "batch", "never")
_SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], Any]]] = {
    "": {
        "state_dir": (str, None),
        "socket": (str, None),
        "log_level": (str, _LOG_LEVELS),
        "allowed_group": (str, None),
    },
    "browser": {
        "executable": (str, None),
        "args": (list, None),
        "startup_timeout_s": ((int, float), (1, 600)),
        "stop_grace_s": ((int, float), (0, 120)),
    },
    "cdp": {
        "host": (str, ("127.0.0.1", "localhost")),
        "port": (int, (0, 65535)),
        "allowed_origins": (list, None),
    },
    "limits": {
        "max_runtimes": (int, (1, 10_000)),
        "requests_in_flight": (int, (1, 10_000)),
    },
    "events": {"fsync": (str, _FSYNC)},
}


def _check(key: str, value: Any, spec: tuple[type | tuple[type, ...], Any]) -> Any:
    kind, allowed = spec
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(key, f"expected {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ConfigError(key, f"expected {_kind_name(kind)}, got {type(value).__name__}")
    if isinstance(allowed, tuple) and isinstance(value, str) and value not in allowed:
        raise ConfigError(key, f"must be one of {', '.join(allowed)}, got {value!r}")
    if isinstance(allowed, tuple) and isinstance(value, int | float) and not isinstance(value, str):
        low, high = allowed
        if not low <= value <= high:
            raise ConfigError(key, f"must be between {low} and {high}, got {value}")
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(key, "must be a list of strings")
        return tuple(value)
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    names = {"str": "a string", "int": "an integer", "list": "a list"}
    return names.get(kind.__name__, kind.__name__)


def parse(table: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate a TOML table against the schema; return {section: {key: value}}."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SCHEMA}
    for key, value in table.items():
        if key in _SCHEMA and key != "":
            if not isinstance(value, Mapping):
                raise ConfigError(key, "must be a table")
            for sub, subvalue in value.items():
                full = f"{key}.{sub}"
                if sub not in _SCHEMA[key]:
                    raise ConfigError(full, "unknown key")
                sections[key][sub] = _check(full, subvalue, _SCHEMA[key][sub])
        elif key in _SCHEMA[""]:
            sections[""][key] = _check(key, value, _SCHEMA[""][key])
        else:
            raise ConfigError(key, "unknown key")
    return sections


def load(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Build the Config from defaults, the file (if present), the environment and overrides.

    `overrides` are already-typed top-level values from the command line (state_dir, socket,
    log_level); they win over everything.
    """
    explicit = path is not None or "BROWSERD_CONFIG" in os.environ
    path = path or default_config_path()
    table: dict[str, Any] = {}
    if path.exists():
        try:
            table = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    elif explicit:
        raise ConfigError(str(path), "config file does not exist")
    sections = parse(table)
    top = sections[""]
    if os.environ.get("BROWSERD_SOCKET"):
        top["socket"] = os.environ["BROWSERD_SOCKET"]
    if os.environ.get("BROWSERD_STATE_DIR"):
        top["state_dir"] = os.environ["BROWSERD_STATE_DIR"]
    for key, value in (overrides or {}).items():
        if value is not None:
            top[key] = value
    return Config(
        state_dir=Path(top.get("state_dir") or default_state_dir()).expanduser(),
        socket=Path(top.get("socket") or default_socket_path()).expanduser(),
        log_level=top.get("log_level", "info"),
        allowed_group=top.get("allowed_group"),
        browser=BrowserConfig(**sections["browser"]),
        cdp=CdpConfig(**sections["cdp"]),
        limits=LimitsConfig(**sections["limits"]),
        events=EventsConfig(**sections["events"]),
    )
