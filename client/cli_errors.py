"""How `browserctl` reports a failure: the daemon's words, in the command line's terms.

Hints from the daemon are written for every client (`force=true`, `connections.delete`); on
the command line a hint names the flag or command to type instead, filled in with what the
user typed. A launch that failed shows the browser's own last lines (a missing display, a
crash at start), which are otherwise only in the error's data. With `--json` the error is one
JSON object, `{"error": {code, message, hint, data}}`. The exit status is the caller's.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from .errors import BrowserdError

__all__ = ["cli_hint", "report_error"]

STDERR_LINES = 12  # of the browser's output, the last ones

# Error code -> the hint in command-line terms; {name}, {space}, {profile} are what was typed.
_CLI_HINTS = {
    "runtime.not_stopped": "Stop it first (browserctl stop {name}), or add --force to stop "
                           "and delete it.",
    "runtime.not_found": "List runtimes with `browserctl ls`, or start this one with "
                         "`browserctl launch {name}`.",
    "runtime.name_conflict": "Stop it first (browserctl stop {name}), or launch under another "
                             "name.",
    "profile.in_use": "Stop the runtime that holds it (browserctl stop NAME), or copy the "
                      "profile: browserctl profiles clone {profile} NEW.",
    "space.not_found": "Create it with `browserctl spaces create {space}`; `browserctl spaces` "
                       "lists them.",
    "space.not_empty": "Delete its runtimes first (browserctl ls --space {space}, then "
                       "browserctl rm NAME --space {space} --force).",
    "connection.not_found": "List the leases with `browserctl connections NAME`.",
    "runtime.controller_busy": "Wait for the exclusive lease to end, or revoke it: "
                               "browserctl connections {name} rm ID --force.",
    "browser.concurrent_quota_exceeded": "Stop a runtime (browserctl stop NAME), queue for a "
                                         "slot with --wait S, or raise limits.max_runtimes.",
    "invocation.timed_out": "Give it a longer --timeout.",
}


def cli_hint(err: BrowserdError, args: argparse.Namespace | None) -> str:
    """The hint to show: the command-line one when there is one for the code, else the
    daemon's."""
    template = _CLI_HINTS.get(err.code)
    if template is None or args is None:
        return err.hint
    typed = {"name": getattr(args, "name", None) or "NAME",
             "space": getattr(args, "space", None) or "default",
             "profile": (err.data or {}).get("profile") or getattr(args, "profile", None)
             or "PROFILE"}
    return template.format(**typed)


def report_error(err: BrowserdError, stream: TextIO, *, args: argparse.Namespace | None = None,
                 as_json: bool = False) -> None:
    hint = cli_hint(err, args)
    if as_json:
        error = {"code": err.code, "message": err.message, "hint": hint,
                 "data": _jsonable(err.data or {})}
        print(json.dumps({"error": error}), file=stream)
        return
    print(f"error: {err.code}: {err.message}", file=stream)
    if hint:
        print(f"hint: {hint}", file=stream)
    tail = (err.data or {}).get("stderr_tail")
    if isinstance(tail, list) and tail:
        print("browser output (last lines):", file=stream)
        for line in tail[-STDERR_LINES:]:
            print(f"  {line}", file=stream)


def _jsonable(value: Any) -> Any:
    """`value` with bytes shown as text (error data may hold binary)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
