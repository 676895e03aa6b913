"""A runtime's browser configuration: proxy, viewport, user agent, locale, time zone,
extensions, network rules and which browser build (docs/api.md, Runtime config).

`parse_runtime_config` reads the wire map (`runtimes.launch(config=...)`, `runtimes.update`,
the `[spaces.<name>.runtime]` defaults of config.toml) and names the bad field in its
`rpc.invalid_params` error (`config.proxy.server`). The result splits in two: the
`RuntimeConfig` that is stored in the runtime's record and shown to clients, and the proxy's
`ProxyCredentials`, which never go there (the registry keeps them in a 0600 file of their own).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from .errors import ApiError

__all__ = [
    "BROWSER_BUILDS",
    "NO_CONFIG",
    "RESOURCE_TYPES",
    "BlockRules",
    "ParsedConfig",
    "ProxyConfig",
    "ProxyCredentials",
    "RuntimeConfig",
    "Viewport",
    "parse_runtime_config",
    "timezone_problem",
]

ZONEINFO = "/usr/share/zoneinfo"
BROWSER_BUILDS = ("chromium", "headless-shell")
PROXY_SCHEMES = ("http", "socks5")
# CDP Network.ResourceType, lower-cased as users write them ("image", not "Image").
RESOURCE_TYPES = {
    name.lower(): name for name in (
        "Document", "Stylesheet", "Image", "Media", "Font", "Script", "TextTrack", "XHR",
        "Fetch", "Prefetch", "EventSource", "WebSocket", "Manifest", "SignedExchange", "Ping",
        "CSPViolationReport", "Preflight", "Other",
    )
}
_LOCALE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")
_ZONE_PART = re.compile(r"[A-Za-z0-9_+\-]+")
MAX_VIEWPORT = 16384
MAX_LIST = 256


def _invalid(field: str, message: str, hint: str = "") -> ApiError:
    return ApiError("rpc.invalid_params", f"{field}: {message}",
                    hint=hint or "See Runtime config in docs/api.md.", data={"field": field})


@attrs.frozen
class ProxyConfig:
    server: str  # "http://host:port" or "socks5://host:port"
    bypass: tuple[str, ...] = ()
    auth: bool = False  # credentials are set (kept apart from the record)

    def to_json(self) -> dict[str, Any]:
        return {"server": self.server, "bypass": list(self.bypass), "auth": self.auth}


@attrs.frozen
class ProxyCredentials:
    username: str = attrs.field(repr=False)
    password: str = attrs.field(repr=False)


@attrs.frozen
class Viewport:
    width: int
    height: int
    device_scale_factor: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height,
                "device_scale_factor": self.device_scale_factor}


@attrs.frozen
class BlockRules:
    resource_types: tuple[str, ...] = ()  # lower-case names, as given
    url_patterns: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.resource_types or self.url_patterns)

    def to_json(self) -> dict[str, Any]:
        return {"resource_types": list(self.resource_types),
                "url_patterns": list(self.url_patterns)}


@attrs.frozen
class RuntimeConfig:
    """What the browser of a runtime looks like to the web. Empty means Chromium's own."""

    proxy: ProxyConfig | None = None
    viewport: Viewport | None = None
    user_agent: str | None = None
    locale: str | None = None
    timezone: str | None = None
    extensions: tuple[str, ...] = ()
    block: BlockRules = BlockRules()
    browser: str | None = None  # "chromium", "headless-shell" or an absolute path

    KEYS = ("proxy", "viewport", "user_agent", "locale", "timezone", "extensions", "block",
            "browser")

    def __bool__(self) -> bool:
        return self != RuntimeConfig()

    def to_json(self) -> dict[str, Any]:
        return {
            "proxy": self.proxy.to_json() if self.proxy else None,
            "viewport": self.viewport.to_json() if self.viewport else None,
            "user_agent": self.user_agent,
            "locale": self.locale,
            "timezone": self.timezone,
            "extensions": list(self.extensions),
            "block": self.block.to_json(),
            "browser": self.browser,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> RuntimeConfig:
        """From a state file (written by to_json; trusted, so not checked again)."""
        obj = obj or {}
        proxy = obj.get("proxy")
        viewport = obj.get("viewport")
        block = obj.get("block") or {}
        return cls(
            proxy=ProxyConfig(proxy["server"], tuple(proxy.get("bypass") or ()),
                              bool(proxy.get("auth"))) if proxy else None,
            viewport=Viewport(viewport["width"], viewport["height"],
                              viewport.get("device_scale_factor")) if viewport else None,
            user_agent=obj.get("user_agent"),
            locale=obj.get("locale"),
            timezone=obj.get("timezone"),
            extensions=tuple(obj.get("extensions") or ()),
            block=BlockRules(tuple(block.get("resource_types") or ()),
                             tuple(block.get("url_patterns") or ())),
            browser=obj.get("browser"),
        )


NO_CONFIG = RuntimeConfig()


@attrs.frozen
class ParsedConfig:
    config: RuntimeConfig
    credentials: ProxyCredentials | None  # None: no proxy auth


def parse_runtime_config(raw: Any, field: str = "config", *,
                         base: ParsedConfig | None = None) -> ParsedConfig:
    """Check a wire map and build the config. With `base`, the map is a change to it: a key
    given replaces the base's, a key given as nil clears it, others stay."""
    if not isinstance(raw, dict) or not all(isinstance(key, str) for key in raw):
        raise _invalid(field, "expected a map with string keys")
    for key in raw:
        if key not in RuntimeConfig.KEYS:
            raise _invalid(f"{field}.{key}", "is not a config key",
                           f"The keys are {', '.join(RuntimeConfig.KEYS)}.")
    start = base or ParsedConfig(RuntimeConfig(), None)
    values: dict[str, Any] = {}
    credentials = start.credentials
    for key, value in raw.items():
        where = f"{field}.{key}"
        if value is None:
            values[key] = attrs.fields_dict(RuntimeConfig)[key].default
            if key == "proxy":
                credentials = None
            continue
        if key == "proxy":
            values[key], credentials = _proxy(value, where)
        elif key == "viewport":
            values[key] = _viewport(value, where)
        elif key == "user_agent":
            values[key] = _text(value, where, 1024)
        elif key == "locale":
            values[key] = _locale(value, where)
        elif key == "timezone":
            values[key] = _timezone(value, where)
        elif key == "extensions":
            values[key] = tuple(_extension_dir(item, f"{where}[{i}]")
                                for i, item in enumerate(_list(value, where)))
        elif key == "block":
            values[key] = _block(value, where)
        elif key == "browser":
            values[key] = _browser(value, where)
    return ParsedConfig(attrs.evolve(start.config, **values), credentials)


def _text(value: Any, where: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise _invalid(where, "expected a string")
    if not value or len(value) > max_len:
        raise _invalid(where, f"must be 1 to {max_len} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise _invalid(where, "must not contain control characters")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(where, "expected a list")
    if len(value) > MAX_LIST:
        raise _invalid(where, f"more than {MAX_LIST} entries")
    return value


def _fields(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(where, "expected a map")
    for key in value:
        if key not in allowed:
            raise _invalid(f"{where}.{key}", "is not a key here",
                           f"The keys are {', '.join(allowed)}.")
    return value


def _proxy(value: Any, where: str) -> tuple[ProxyConfig, ProxyCredentials | None]:
    fields = _fields(value, where, ("server", "username", "password", "bypass"))
    if "server" not in fields:
        raise _invalid(f"{where}.server", "is required")
    server = _proxy_server(_text(fields["server"], f"{where}.server", 2048), f"{where}.server")
    username, password = fields.get("username"), fields.get("password")
    credentials = None
    if username is not None or password is not None:
        if username is None:
            raise _invalid(f"{where}.username", "is required with a password")
        username = _text(username, f"{where}.username", 255)
        password = "" if password is None else password
        if not isinstance(password, str) or len(password) > 255 or "\x00" in password:
            raise _invalid(f"{where}.password", "expected a string of at most 255 characters")
        if ":" in username:
            raise _invalid(f"{where}.username", "must not contain ':' (Basic authentication "
                           "cannot carry it)")
        credentials = ProxyCredentials(username, password)
    bypass = tuple(_bypass_entry(item, f"{where}.bypass[{i}]")
                   for i, item in enumerate(_list(fields.get("bypass") or [], f"{where}.bypass")))
    return ProxyConfig(server, bypass, credentials is not None), credentials


def _proxy_server(text: str, where: str) -> str:
    hint = "Give it as http://host:port or socks5://host:port, without credentials."
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise _invalid(where, f"not a valid URL: {exc}", hint) from None
    if parts.scheme not in PROXY_SCHEMES:
        raise _invalid(where, f"the scheme must be http or socks5, got {parts.scheme!r}", hint)
    if parts.username is not None or parts.password is not None:
        raise _invalid(where, "must not carry credentials",
                       "Give them as config.proxy.username and config.proxy.password.")
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query:
        raise _invalid(where, "must be scheme://host:port and nothing more", hint)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def _bypass_entry(value: Any, where: str) -> str:
    text = _text(value, where, 253)
    if any(ch in text for ch in " ,;"):
        raise _invalid(where, "one host pattern per entry (no spaces, commas or semicolons)")
    return text


def _viewport(value: Any, where: str) -> Viewport:
    fields = _fields(value, where, ("width", "height", "device_scale_factor"))
    sizes = []
    for key in ("width", "height"):
        size = fields.get(key)
        if isinstance(size, bool) or not isinstance(size, int):
            raise _invalid(f"{where}.{key}", "expected an integer")
        if not 1 <= size <= MAX_VIEWPORT:
            raise _invalid(f"{where}.{key}", f"must be between 1 and {MAX_VIEWPORT}, got {size}")
        sizes.append(size)
    scale = fields.get("device_scale_factor")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not (
                0.1 <= scale <= 10):
            raise _invalid(f"{where}.device_scale_factor", "expected a number from 0.1 to 10")
        scale = float(scale)
    return Viewport(sizes[0], sizes[1], scale)


def _locale(value: Any, where: str) -> str:
    text = _text(value, where, 64)
    if not _LOCALE.fullmatch(text):
        raise _invalid(where, f"not a language tag: {text!r}", "Give a BCP 47 tag like en-US.")
    return text


def timezone_problem(name: str, zoneinfo: str = ZONEINFO) -> str | None:
    """Why `name` is not an IANA zone of this machine, or None. The name is input: it is read
    as a path under `zoneinfo` only after each part has been checked, and never leaves it."""
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return "must be a zone name like Europe/Berlin, not a path"
    if not all(_ZONE_PART.fullmatch(part) for part in parts):
        return "has characters no zone name has"
    path = os.path.join(zoneinfo, *parts)
    root = os.path.realpath(zoneinfo)
    if not os.path.realpath(path).startswith(root + os.sep) or not os.path.isfile(path):
        return f"no such time zone in {zoneinfo}"
    with open(path, "rb") as f:
        if f.read(4) != b"TZif":
            return "not a time zone"
    return None


def _timezone(value: Any, where: str) -> str:
    text = _text(value, where, 128)
    if (problem := timezone_problem(text)) is not None:
        raise _invalid(where, f"{text!r}: {problem}", "Give an IANA name like Asia/Tokyo.")
    return text


def _extension_dir(value: Any, where: str) -> str:
    text = _text(value, where, 4096)
    if not os.path.isabs(text):
        raise _invalid(where, "must be an absolute path", "Give the unpacked extension's "
                       "directory as an absolute path on the daemon's machine.")
    if "," in text:
        raise _invalid(where, "must not contain a comma (Chromium separates paths with it)")
    problem = extension_problem(text)
    if problem is not None:
        raise _invalid(where, problem, "Point it at an unpacked extension's directory, the one "
                       "holding manifest.json.")
    return os.path.normpath(text)


def extension_problem(path: str) -> str | None:
    """Why `path` is not an unpacked extension directory, or None."""
    if not os.path.isdir(path):
        return f"{path} is not a directory"
    if not os.path.isfile(os.path.join(path, "manifest.json")):
        return f"{path} has no manifest.json"
    return None


def _block(value: Any, where: str) -> BlockRules:
    fields = _fields(value, where, ("resource_types", "url_patterns"))
    types = []
    for i, item in enumerate(_list(fields.get("resource_types") or [], f"{where}.resource_types")):
        name = _text(item, f"{where}.resource_types[{i}]", 64).lower()
        if name not in RESOURCE_TYPES:
            raise _invalid(f"{where}.resource_types[{i}]", f"unknown resource type {item!r}",
                           f"The types are {', '.join(sorted(RESOURCE_TYPES))}.")
        if name not in types:
            types.append(name)
    patterns = tuple(_text(item, f"{where}.url_patterns[{i}]", 2048) for i, item in
                     enumerate(_list(fields.get("url_patterns") or [], f"{where}.url_patterns")))
    return BlockRules(tuple(types), patterns)


def _browser(value: Any, where: str) -> str:
    text = _text(value, where, 4096)
    if text in BROWSER_BUILDS:
        return text
    if not os.path.isabs(text):
        raise _invalid(where, f"must be {' or '.join(BROWSER_BUILDS)} or an absolute path, "
                       f"got {text!r}")
    if not (os.path.isfile(text) and os.access(text, os.X_OK)):
        raise _invalid(where, f"{text} is not an executable file")
    return text
