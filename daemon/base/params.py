"""Reading RPC params: typed getters that name the bad field in `rpc.invalid_params`.

Every method reads its params through one `Params`, then calls `finish()`, which refuses keys
the method does not know (a misspelt option is an error, not a silent default).
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ApiError
from .model import DEFAULT_SPACE
from .names import NAME_HINT, label_problem, name_problem

_MISSING: Any = object()
MAX_DEPTH = 32


def invalid(field: str, message: str, hint: str = "") -> ApiError:
    return ApiError(
        "rpc.invalid_params",
        f"{field}: {message}",
        hint=hint or "Check the method's params in docs/api.md.",
        data={"field": field},
    )


class Params:
    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw = raw
        self._read: set[str] = set()

    def _take(self, key: str, default: Any) -> Any:
        self._read.add(key)
        value = self._raw.get(key, _MISSING)
        if value is _MISSING or (value is None and default is not _MISSING):
            if default is _MISSING:
                raise invalid(key, "is required")
            return default
        return value

    def text(self, key: str, default: Any = _MISSING, *, max_len: int = 4096) -> Any:
        value = self._take(key, default)
        if value is default:
            return value
        if not isinstance(value, str):
            raise invalid(key, f"expected a string, got {_type_name(value)}")
        if len(value) > max_len:
            raise invalid(key, f"longer than {max_len} characters")
        return value

    def binary(self, key: str, default: Any = _MISSING, *, max_len: int | None = None) -> Any:
        """Bytes (a msgpack bin), not text."""
        value = self._take(key, default)
        if value is default:
            return value
        if not isinstance(value, bytes):
            raise invalid(key, f"expected binary, got {_type_name(value)}",
                          "Send the bytes as msgpack bin (bytes in Python), not as text.")
        if max_len is not None and len(value) > max_len:
            raise invalid(key, f"larger than {max_len} bytes")
        return value

    def name(self, key: str, default: Any = _MISSING) -> Any:
        """A name that becomes a path or a key (names.py has the rule)."""
        value = self.text(key, default, max_len=4096)
        if value is not default and (problem := name_problem(value)) is not None:
            raise invalid(key, f"not a valid name: {problem}", NAME_HINT)
        return value

    def label(self, key: str, default: Any = _MISSING) -> Any:
        """Free text kept in records, events and the log (names.label_problem)."""
        value = self.text(key, default, max_len=4096)
        if value is not default and (problem := label_problem(value)) is not None:
            raise invalid(key, problem, "Give a short one-line text without control characters.")
        return value

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        value = self._take(key, default)
        if value is not default and not isinstance(value, bool):
            raise invalid(key, f"expected true or false, got {_type_name(value)}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, low: float | None = None,
               high: float | None = None) -> Any:
        value = self._take(key, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):
            raise invalid(key, f"expected a number, got {_type_name(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise invalid(key, f"must be between {low} and {high}, got {value}")
        return value

    def integer(self, key: str, default: Any = _MISSING, *, low: int | None = None,
            high: int | None = None) -> Any:
        value = self.number(key, default, low=low, high=high)
        if value is not default and not isinstance(value, int):
            raise invalid(key, f"expected an integer, got {value!r}")
        return value

    def mapping(self, key: str, default: Any = _MISSING) -> Any:
        value = self._take(key, default)
        if value is not default and not (
            isinstance(value, dict) and all(isinstance(k, str) for k in value)
        ):
            raise invalid(key, f"expected a map with string keys, got {_type_name(value)}")
        if value is not default and _depth(value) > MAX_DEPTH:
            # State files and event lines are JSON: keep what is stored well inside what the
            # JSON encoder (and any reader) can recurse through.
            raise invalid(key, f"nested deeper than {MAX_DEPTH} levels")
        return value

    def strings(self, key: str, default: Any = _MISSING) -> Any:
        value = self._take(key, default)
        if value is not default and not (
            isinstance(value, list) and all(isinstance(item, str) for item in value)
        ):
            raise invalid(key, "expected a list of strings")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> Any:
        value = self.text(key, default)
        if value is not default and value not in choices:
            raise invalid(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def runtime_address(self, id_key: str = "runtime_id") -> tuple[str, str | None, str | None]:
        """(space, name, id): a runtime is named by {space?, name} or by its id."""
        runtime_id = self.text(id_key, None, max_len=64)
        space = self.name("space", DEFAULT_SPACE)
        name = self.name("name", None)
        if runtime_id is None and name is None:
            raise invalid("name", "is required (or give the runtime's id)")
        return space, name, runtime_id

    def has(self, key: str) -> bool:
        return self._raw.get(key) is not None

    def finish(self) -> None:
        unknown = sorted(set(self._raw) - self._read)
        if unknown:
            raise invalid(unknown[0], "is not a param of this method")


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(item, level + 1) for item in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(item, level + 1) for item in value), default=level)
    return level


def _type_name(value: Any) -> str:
    return {
        "NoneType": "nil",
        "dict": "a map",
        "list": "an array",
        "str": "a string",
        "bytes": "binary",
        "int": "an integer",
        "float": "a number",
        "bool": "a boolean",
    }.get(type(value).__name__, type(value).__name__)
