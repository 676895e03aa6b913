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

from .errors import ApiError
from .flags import reserved_switch
from .runtime_config import ParsedConfig, parse_runtime_config


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


# The ranges a runtime's own options share with their config defaults: one place, read by the
# rules below and by the launch and update params.
IDLE_TIMEOUT_S = (1, 7 * 86400)
MAX_LIFETIME_S = (1, 30 * 86400)
MEMORY_LIMIT_MB = (64, 1_000_000)
_LOG_LEVELS = ("debug", "info", "warning", "error")

Rule = tuple[type | tuple[type, ...], Any]  # (TOML type, allowed values or (low, high))
_NUMBER = (int, float)


def _key(default: Any, kind: type | tuple[type, ...], allowed: Any = None) -> Any:
    """A config key: its default, and the rule a value from the file must pass. Each key is
    written once, here; `parse` reads the rules, docs/configuration.md's table documents the
    keys (tests/test_config.py checks it names every key with its default)."""
    return attrs.field(default=default, metadata={"rule": (kind, allowed)})


@attrs.frozen
class BrowserConfig:
    executable: str | None = _key(None, str)
    args: tuple[str, ...] = _key((), list)
    startup_timeout_s: float = _key(30.0, _NUMBER, (1, 600))
    stop_grace_s: float = _key(5.0, _NUMBER, (0, 120))


@attrs.frozen
class CdpConfig:
    host: str = _key("127.0.0.1", str, ("127.0.0.1", "localhost"))
    port: int = _key(0, int, (0, 65535))
    allowed_origins: tuple[str, ...] = _key((), list)
    # what a client's Browser.close does: detach it, or allow it
    close_policy: str = _key("detach", str, ("detach", "allow"))


@attrs.frozen
class LimitsConfig:
    max_runtimes: int = _key(16, int, (1, 10_000))
    # per RPC connection; past it the daemon stops reading
    requests_in_flight: int = _key(64, int, (1, 10_000))
    # default per-runtime cap on the browser tree's PSS
    memory_limit_mb: int | None = _key(None, int, MEMORY_LIMIT_MB)
    # Caps on clients, each holding file descriptors (fd_budget.py); unset: computed from
    # RLIMIT_NOFILE at start.
    rpc_connections: int | None = _key(None, int, (1, 1_000_000))
    cdp_sockets: int | None = _key(None, int, (1, 1_000_000))
    # CDP requests in their HTTP phase (not yet upgraded)
    cdp_pending: int | None = _key(None, int, (1, 1_000_000))
    # live leases holding a browser_url listener
    lease_ports: int | None = _key(None, int, (1, 1_000_000))
    # browser connections through the runtimes' proxy relays, all runtimes together
    relay_connections: int | None = _key(None, int, (1, 1_000_000))
    # an RPC connection without hello is closed after this
    hello_timeout_s: float = _key(10.0, _NUMBER, (0.1, 3600))
    # a CDP request head must arrive whole within this
    cdp_header_timeout_s: float = _key(5.0, _NUMBER, (0.1, 600))


@attrs.frozen
class RuntimesConfig:
    """Defaults for launch options a client leaves out."""

    idle_timeout_s: float | None = _key(None, _NUMBER, IDLE_TIMEOUT_S)
    max_lifetime_s: float | None = _key(None, _NUMBER, MAX_LIFETIME_S)


@attrs.frozen
class ResourcesConfig:
    # resource.sample events and memory-limit checks
    sample_interval_s: float = _key(5.0, _NUMBER, (0.2, 3600))


@attrs.frozen
class PoolConfig:
    size: int = _key(0, int, (0, 64))  # pre-started ephemeral browsers kept warm


@attrs.frozen
class EventsConfig:
    fsync: str = _key("batch", str, ("always", "batch", "never"))
    # the lowest console message level recorded ("off": none)
    console_level: str = _key("error", str, ("debug", "info", "warning", "error", "off"))
    # CDP commands in the run log: off, commands, all
    record_commands: str = _key("commands", str, ("off", "commands", "all"))


@attrs.frozen
class RecordConfig:
    """Run recordings (screencast frames kept as an artifact of kind `recording`)."""

    default: bool = _key(False, bool)  # record runs launched without `record`
    max_fps: float = _key(5.0, _NUMBER, (0.1, 30))  # frames kept per second, at most
    quality: int = _key(60, int, (10, 100))  # JPEG quality of the frames
    max_side: int = _key(1280, int, (160, 3840))  # the frames' longer side, in pixels, at most
    budget_mb: int = _key(100, int, (1, 100_000))  # a run's recording stops at this size


@attrs.frozen
class RetentionConfig:
    max_runs: int = _key(100, int, (0, 1_000_000))  # ended runs kept per runtime (0: no limit)
    # ended runs older than this are removed (0: no limit)
    max_age_days: float = _key(30.0, _NUMBER, (0, 36_500))


@attrs.frozen
class LogLevelsConfig:
    """Per-area daemon log levels (`browserd.daemon.system.logs.AREAS`); unset follows
    log_level."""

    rpc: str | None = _key(None, str, _LOG_LEVELS)
    registry: str | None = _key(None, str, _LOG_LEVELS)
    supervisor: str | None = _key(None, str, _LOG_LEVELS)
    cdp_proxy: str | None = _key(None, str, _LOG_LEVELS)
    cdp_client: str | None = _key(None, str, _LOG_LEVELS)
    eventlog: str | None = _key(None, str, _LOG_LEVELS)
    systemd: str | None = _key(None, str, _LOG_LEVELS)
    control: str | None = _key(None, str, _LOG_LEVELS)
    services: str | None = _key(None, str, _LOG_LEVELS)
    web: str | None = _key(None, str, _LOG_LEVELS)


@attrs.frozen
class Config:
    state_dir: Path = attrs.field(metadata={"rule": (str, None)})
    socket: Path = attrs.field(metadata={"rule": (str, None)})
    log_level: str = _key("info", str, _LOG_LEVELS)
    # a group whose members may use the socket (system service)
    allowed_group: str | None = _key(None, str)
    live_restore: bool = _key(False, bool)  # adopt browsers left running by a daemon that died
    browser: BrowserConfig = BrowserConfig()
    cdp: CdpConfig = CdpConfig()
    limits: LimitsConfig = LimitsConfig()
    events: EventsConfig = EventsConfig()
    runtimes: RuntimesConfig = RuntimesConfig()
    resources: ResourcesConfig = ResourcesConfig()
    pool: PoolConfig = PoolConfig()
    retention: RetentionConfig = RetentionConfig()
    record: RecordConfig = RecordConfig()
    log_levels: LogLevelsConfig = LogLevelsConfig()
    # [spaces.<name>]: the runtime config (docs/api.md, Runtime config) a new runtime of that
    # space gets when its launch gives none.
    spaces: Mapping[str, ParsedConfig] = attrs.field(factory=dict)


def _rules(cls: type) -> dict[str, Rule]:
    return {field.name: field.metadata["rule"] for field in attrs.fields(cls)
            if "rule" in field.metadata}


# section ("" for the top level) -> key -> rule, read off the classes above
_SCHEMA: dict[str, dict[str, Rule]] = {
    "": _rules(Config),
    **{field.name: _rules(type(field.default)) for field in attrs.fields(Config)
       if attrs.has(type(field.default))},
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
    table = dict(table)
    spaces = _space_defaults(table.pop("spaces", {}))
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
        spaces=spaces,
        record=RecordConfig(**sections["record"]),
    )


def _space_defaults(table: Any) -> dict[str, ParsedConfig]:
    if not isinstance(table, Mapping):
        raise ConfigError("spaces", "must be a table of [spaces.<name>] tables")
    found = {}
    for name, value in table.items():
        if not isinstance(value, Mapping):
            raise ConfigError(f"spaces.{name}", "must be a table")
        try:
            found[name] = parse_runtime_config(_plain(value), f"spaces.{name}")
        except ApiError as exc:
            raise ConfigError(exc.data.get("field", f"spaces.{name}"),
                              exc.message.partition(": ")[2] or exc.message) from None
    return found


def _plain(value: Any) -> Any:
    """TOML tables as plain dicts (the runtime config's checks take dicts and lists)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _quote_line(text: str, exc: tomllib.TOMLDecodeError) -> str:
    """The offending line of a TOML error, so the message shows which key is broken."""
    match = re.search(r"at line (\d+)", str(exc))
    lines = text.splitlines()
    if match is None or not 0 < int(match[1]) <= len(lines):
        return ""
    return f": {lines[int(match[1]) - 1].strip()[:80]!r}"
