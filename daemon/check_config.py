"""`browserd --check-config`: the effective configuration, as the daemon would run with it.

Every key is printed as a TOML line with a dotted key (``browser.stop_grace_s = 5.0``), so the
output can be read by people and parsed by `tomllib`; keys that are unset are printed as
comments. The browser the daemon would run is found the way a launch finds it, and its version
asked, so a missing browser shows here rather than at the first launch. ``--json`` prints the
same as one JSON object (``browserctl doctor`` reads it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import trio

from .base.config import Config, default_config_path
from .base.errors import ApiError
from .browser.discovery import browser_version, find_browser

__all__ = ["browser_report", "flatten", "render", "run"]


def flatten(config: Config) -> dict[str, Any]:
    """Every key of the config as ``{"section.key": value}``, top-level keys undotted."""
    flat: dict[str, Any] = {}
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        if field.name == "spaces":
            flat["spaces"] = {name: _shown_runtime_config(parsed.config.to_json())
                              for name, parsed in value.items()}
        elif attrs.has(type(value)):
            for sub in attrs.fields(type(value)):
                flat[f"{field.name}.{sub.name}"] = _plain(getattr(value, sub.name))
        else:
            flat[field.name] = _plain(value)
    return flat


def _shown_runtime_config(obj: dict[str, Any]) -> dict[str, Any]:
    """A space's runtime defaults as config.toml writes them: unset keys left out, and the
    proxy's credentials never (only `auth`, which is no key of the file, says they are set)."""
    shown = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "auth" and v not in (None, [])}
        if value not in (None, [], {}):
            shown[key] = value
    return shown


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def toml_value(value: Any) -> str:
    """A TOML literal for a config value (strings use the escapes JSON and TOML share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "nan"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(key)} = {toml_value(item)}"
                               for key, item in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def render(flat: dict[str, Any]) -> list[str]:
    """``key = value`` lines; unset keys as ``# key = (unset)``."""
    return [f"# {key} = (unset)" if value is None else f"{key} = {toml_value(value)}"
            for key, value in flat.items()]


def browser_report(config: Config) -> dict[str, Any]:
    """The browser a launch would run and its version, or why there is none."""
    try:
        executable = find_browser(config.browser.executable)
        version = trio.run(browser_version, executable)
    except ApiError as exc:
        return {"executable": None, "version": None, "error": exc.to_wire()}
    return {"executable": executable, "version": version, "error": None}


def run(config: Config, *, config_file: Path | None, as_json: bool) -> int:
    """Print the effective config (and the browser); returns the exit status (0: valid)."""
    path = config_file or default_config_path()
    source = str(path) if path.exists() else None
    flat = flatten(config)
    browser = browser_report(config)
    if as_json:
        print(json.dumps({"config_file": source, "config": flat, "browser": browser}, indent=2))
        return 0
    print(f"# browserd effective configuration; file: {source or 'none (defaults)'}")
    print("\n".join(render(flat)))
    if browser["error"] is None:
        print(f"# browser found: {browser['executable']} ({browser['version']})")
    else:
        print(f"# browser: {browser['error']['message']} {browser['error']['hint']}")
    return 0
