"""Daemon configuration: defaults, the TOML file, environment overrides, and validation.

Every key is checked at start: an unknown key or a bad value stops the daemon with the key named,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import grp
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from browserd.client.paths import default_socket_path

from .flags import reserved_switch


class ConfigError(Exception):
    """A configuration problem, reported at start with the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}: {message}")
        self.key = key


def _first_service_dir(variable: str) -> Path | None:
    """The first path of a systemd exec directory variable ($STATE_DIRECTORY, ...), if set.

    systemd sets these for StateDirectory=/RuntimeDirectory=/ConfigurationDirectory=, as a
    colon-separated list when the unit names several; the first is the daemon's own.
    """
    first = os.environ.get(variable, "").split(":")[0]
    return Path(first) if os.path.isabs(first) else None


def default_state_dir() -> Path:
    if os.environ.get("BROWSERD_STATE_DIR"):
        return Path(os.environ["BROWSERD_STATE_DIR"])
    if service_dir := _first_service_dir("STATE_DIRECTORY"):
        return service_dir
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "browserd"


def default_config_path() -> Path:
    if os.environ.get("BROWSERD_CONFIG"):
        return Path(os.environ["BROWSERD_CONFIG"])
    if service_dir := _first_service_dir("CONFIGURATION_DIRECTORY"):
        return service_dir / "config.toml"
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
    close_policy: str = "detach"  # what a client's Browser.close does: detach it, or allow it


@attrs.frozen
class LimitsConfig:
    max_runtimes: int = 16
    requests_in_flight: int = 64  # per RPC connection; past it the daemon stops reading
    memory_limit_mb: int | None = None  # default per-runtime cap on the browser tree's PSS
    # Caps on clients, each holding file descriptors (fd_budget.py); unset: computed from
    # RLIMIT_NOFILE at start.
    rpc_connections: int | None = None
    cdp_sockets: int | None = None
    cdp_pending: int | None = None  # CDP requests in their HTTP phase (not yet upgraded)
    lease_ports: int | None = None  # live leases holding a browser_url listener
    hello_timeout_s: float = 10.0  # an RPC connection without hello is closed after this
    cdp_header_timeout_s: float = 5.0  # a CDP request head must arrive whole within this


@attrs.frozen
class RuntimesConfig:
    """Defaults for launch options a client leaves out."""

    idle_timeout_s: float | None = None
    max_lifetime_s: float | None = None


@attrs.frozen
class ResourcesConfig:
    sample_interval_s: float = 5.0  # resource.sample events and memory-limit checks


@attrs.frozen
class PoolConfig:
    size: int = 0  # pre-started ephemeral browsers kept warm


@attrs.frozen
class EventsConfig:
    fsync: str = "batch"
    console_level: str = "error"  # the lowest console message level recorded ("off": none)
    record_commands: str = "commands"  # CDP commands in the run log: off, commands, all


@attrs.frozen
class RetentionConfig:
    max_runs: int = 100  # ended runs kept per runtime (0: no limit)
    max_age_days: float = 30.0  # ended runs older than this are removed (0: no limit)


@attrs.frozen
class LogLevelsConfig:
    """Per-area daemon log levels (`browserd.daemon.logs.AREAS`); unset follows log_level."""

    rpc: str | None = None
    registry: str | None = None
    supervisor: str | None = None
    cdp_proxy: str | None = None
    cdp_client: str | None = None
    eventlog: str | None = None
    systemd: str | None = None


@attrs.frozen
class Config:
    state_dir: Path
    socket: Path
    log_level: str = "info"
    allowed_group: str | None = None  # a group whose members may use the socket (system service)
    live_restore: bool = False  # adopt browsers left running by a daemon that died
    browser: BrowserConfig = BrowserConfig()
    cdp: CdpConfig = CdpConfig()
    limits: LimitsConfig = LimitsConfig()
    events: EventsConfig = EventsConfig()
    runtimes: RuntimesConfig = RuntimesConfig()
    resources: ResourcesConfig = ResourcesConfig()
    pool: PoolConfig = PoolConfig()
    retention: RetentionConfig = RetentionConfig()
    log_levels: LogLevelsConfig = LogLevelsConfig()


# The ranges a runtime's own options share with their config defaults: one place, read by the
# schema below and by the launch and update params.
IDLE_TIMEOUT_S = (1, 7 * 86400)
MAX_LIFETIME_S = (1, 30 * 86400)
MEMORY_LIMIT_MB = (64, 1_000_000)

# One table of every key: (section, key) -> (type, check). docs/configuration.md's table
# documents the same keys; tests load a file with all of them.
_LOG_LEVELS = ("debug", "info", "warning", "error")
_FSYNC = ("always", "batch", "never")
_SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], Any]]] = {
    "": {
        "state_dir": (str, None),
        "socket": (str, None),
        "log_level": (str, _LOG_LEVELS),
        "allowed_group": (str, None),
        "live_restore": (bool, None),
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
        "close_policy": (str, ("detach", "allow")),
    },
    "limits": {
        "max_runtimes": (int, (1, 10_000)),
        "requests_in_flight": (int, (1, 10_000)),
        "memory_limit_mb": (int, MEMORY_LIMIT_MB),
        "rpc_connections": (int, (1, 1_000_000)),
        "cdp_sockets": (int, (1, 1_000_000)),
        "cdp_pending": (int, (1, 1_000_000)),
        "lease_ports": (int, (1, 1_000_000)),
        "hello_timeout_s": ((int, float), (0.1, 3600)),
        "cdp_header_timeout_s": ((int, float), (0.1, 600)),
    },
    "runtimes": {
        "idle_timeout_s": ((int, float), IDLE_TIMEOUT_S),
        "max_lifetime_s": ((int, float), MAX_LIFETIME_S),
    },
    "resources": {"sample_interval_s": ((int, float), (0.2, 3600))},
    "pool": {"size": (int, (0, 64))},
    "events": {
        "fsync": (str, _FSYNC),
        "console_level": (str, ("debug", "info", "warning", "error", "off")),
        "record_commands": (str, ("off", "commands", "all")),
    },
    "retention": {
        "max_runs": (int, (0, 1_000_000)),
        "max_age_days": ((int, float), (0, 36_500)),
    },
    "log_levels": {area: (str, _LOG_LEVELS) for area in attrs.fields_dict(LogLevelsConfig)},
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
    names = {"str": "a string", "int": "an integer", "list": "a list", "bool": "a boolean"}
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
            text = path.read_text()
            table = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}{_quote_line(text, exc)}"
                              ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), f"cannot read the config file: {exc}") from None
    elif explicit:
        raise ConfigError(str(path), "config file does not exist")
    sections = parse(table)
    for arg in sections["browser"].get("args", ()):
        if (switch := reserved_switch(arg)) is not None:
            raise ConfigError("browser.args", f"{arg!r} sets {switch}, which the daemon sets "
                              "for every browser and the config cannot override")
    top = sections[""]
    if os.environ.get("BROWSERD_SOCKET"):
        top["socket"] = os.environ["BROWSERD_SOCKET"]
    if os.environ.get("BROWSERD_STATE_DIR"):
        top["state_dir"] = os.environ["BROWSERD_STATE_DIR"]
    for key, variable in (("log_level", "BROWSERD_LOG_LEVEL"),
                          ("allowed_group", "BROWSERD_ALLOWED_GROUP")):
        if os.environ.get(variable):
            top[key] = _check(f"{key} (from ${variable})", os.environ[variable],
                              _SCHEMA[""][key])
    for key, value in (overrides or {}).items():
        if value is not None:
            top[key] = value
    if top.get("allowed_group"):
        try:
            grp.getgrnam(top["allowed_group"])
        except KeyError:
            raise ConfigError("allowed_group", f"there is no group named "
                              f"{top['allowed_group']!r} on this system") from None
    # Under systemd, RuntimeDirectory= is where the socket belongs (the socket unit listens
    # there too); elsewhere the rule every client shares.
    runtime_dir = _first_service_dir("RUNTIME_DIRECTORY")
    default_socket = runtime_dir / "browserd.sock" if runtime_dir else default_socket_path()
    return Config(
        state_dir=Path(top.get("state_dir") or default_state_dir()).expanduser(),
        socket=Path(top.get("socket") or default_socket).expanduser(),
        log_level=top.get("log_level", "info"),
        allowed_group=top.get("allowed_group"),
        live_restore=top.get("live_restore", False),
        browser=BrowserConfig(**sections["browser"]),
        cdp=CdpConfig(**sections["cdp"]),
        limits=LimitsConfig(**sections["limits"]),
        events=EventsConfig(**sections["events"]),
        runtimes=RuntimesConfig(**sections["runtimes"]),
        resources=ResourcesConfig(**sections["resources"]),
        pool=PoolConfig(**sections["pool"]),
        retention=RetentionConfig(**sections["retention"]),
        log_levels=LogLevelsConfig(**sections["log_levels"]),
    )


def _quote_line(text: str, exc: tomllib.TOMLDecodeError) -> str:
    """The offending line of a TOML error, so the message shows which key is broken."""
    match = re.search(r"at line (\d+)", str(exc))
    lines = text.splitlines()
    if match is None or not 0 < int(match[1]) <= len(lines):
        return ""
    return f": {lines[int(match[1]) - 1].strip()[:80]!r}"
