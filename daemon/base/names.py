"""The one rule for names a caller chooses: spaces, runtimes, profiles, the components of a
file-area path, and lease labels.

Names become directory names and keys (`profiles/<name>/`, a runtime's `{space, name}`), so a
name must never be able to mean something else on a file system: no separators, nothing made
of dots (`.` and `..` are the directory itself and its parent), no leading dot (hidden files,
and the daemon's own `.removing-*`, `.clone-*` and `.tmp` names), no NUL or control
characters, nothing over-long. Each check returns why a value is refused (a phrase that
follows the field's name in an `rpc.invalid_params` message), or None when it is acceptable.
Pure functions: no I/O.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_LABEL",
    "MAX_NAME",
    "NAME_HINT",
    "component_problem",
    "is_name",
    "label_problem",
    "name_problem",
]

MAX_NAME = 64
MAX_COMPONENT_BYTES = 255  # what Linux file systems take for one path component
MAX_LABEL = 200
NAME_HINT = ("Names are 1-64 characters of letters, digits, '.', '_' and '-', and do not "
             "start with '.'.")

_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name_problem(value: str) -> str | None:
    """Why `value` is not a valid name (space, runtime, profile), or None."""
    if not value:
        return "is empty"
    if len(value) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    if value.startswith("."):
        return f"{_shown(value)} starts with '.'"
    if not _NAME_CHARS.fullmatch(value):
        return f"{_shown(value)} contains {_describe_bad(value, _NAME_CHARS)}"
    return None


def is_name(value: str) -> bool:
    return name_problem(value) is None


def component_problem(part: str) -> str | None:
    """Why `part` cannot be one component of a file-area path, or None. Any character but
    the separator is taken (uploads keep their real names), except NUL and control
    characters; `.`, `..` and other leading-dot names are refused."""
    if part.startswith("."):
        return f"the component {_shown(part)} starts with '.'"
    if "/" in part:
        return f"the component {_shown(part)} contains '/'"
    if _CONTROL.search(part):
        return f"the component {_shown(part)} contains a NUL or control character"
    if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
        return f"a component is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def label_problem(text: str) -> str | None:
    """Why `text` is not a valid free-text label (a lease's), or None: labels go into event
    lines and the daemon log, where a newline or control character could forge a line."""
    if not text:
        return "is empty"
    if len(text) > MAX_LABEL:
        return f"is longer than {MAX_LABEL} characters"
    if _CONTROL.search(text):
        return "contains a NUL or control character"
    return None


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _describe_bad(value: str, allowed: re.Pattern[str]) -> str:
    bad = next(ch for ch in value if not allowed.fullmatch(ch))
    if bad == "/":
        return "a path separator '/'"
    if bad == "\0":
        return "a NUL character"
    if _CONTROL.fullmatch(bad):
        return "a control character"
    return f"the character {bad!r}"
