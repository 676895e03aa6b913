"""An invocation's output as the daemon keeps it: inline while small, else an artifact.

Invocation records live in the daemon's memory and go out whole in every get, list and
waited-for reply. Kept inline, thirty `evaluate` results of 4-8 MiB took the daemon from 36 to
229 MiB of RSS for good, and `invocations.list` built a 186 MB reply before refusing it. So an
output whose wire encoding (msgpack, as the reply sends it) is over MAX_INLINE_BYTES becomes an
artifact of the run (kind `output`), and the record keeps

    {"artifact": {...the Artifact record...}, "truncated": true}

with the record's `output_truncated` true (so an `evaluate` value that happens to look like
that map is never mistaken for one). `content` is stored as the HTML or text itself, any other
output as its JSON. Clients read the value back with `runs.artifacts.read`.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack

from .actions import Step

__all__ = ["MAX_INLINE_BYTES", "OUTPUT_KIND", "keep", "wire_size"]

MAX_INLINE_BYTES = 64 * 1024
OUTPUT_KIND = "output"


def wire_size(value: Any) -> int:
    """Bytes `value` takes in a reply (msgpack, as the RPC wire encodes it)."""
    try:
        return len(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        # Not expected (outputs come from the browser's JSON): an estimate will do.
        return len(json.dumps(value, default=repr).encode())


async def keep(step: Step, action: str, output: Any) -> tuple[Any, bool]:
    """The output as the record keeps it, and whether it went to an artifact."""
    if wire_size(output) <= MAX_INLINE_BYTES:
        return output, False
    if action == "content" and isinstance(output, str):
        html = step.params.get("format") == "html"
        name = f"content-{step.invocation_id}.{'html' if html else 'txt'}"
        content_type = f"text/{'html' if html else 'plain'}; charset=utf-8"
        data = output.encode("utf-8", "replace")  # a lone surrogate (JS allows it) is "?"
    else:
        name = f"{action}-{step.invocation_id}.json"
        content_type = "application/json"
        # A lone surrogate can only be inside a JSON string, where backslashreplace writes
        # the very escape (\ud800) that reads back as it.
        data = json.dumps(output, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "backslashreplace")
    artifact = await step.store(OUTPUT_KIND, name, data, content_type)
    return {"artifact": artifact, "truncated": True}, True
