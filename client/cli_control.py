"""`browserctl invoke`, `tabs` and `files`: the control surface on the command line.

    browserctl invoke NAME ACTION [--param K=V ...] [--target ID] [--timeout S] [--no-wait]
                                  [-o FILE]
    browserctl tabs NAME [--new URL | --close ID | --activate ID]
    browserctl files NAME [--put LOCAL [--as PATH]] [--collect PATH]

``cli.py`` adds these commands to its parser with :func:`add_commands`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._sync.client import Client
from .cli_format import human_bytes, short_time, table
from .errors import InvalidParams

__all__ = ["add_commands", "cmd_files", "cmd_invoke", "cmd_tabs"]

ACTIONS = ("navigate", "screenshot", "pdf", "evaluate", "content")
_READ_CHUNK = 4 * 1024 * 1024
_INLINE_LIMIT = 8 * 1024 * 1024  # --put sends files up to this size as bytes


# Params whose values are always text, however they look (`expression=1` is JavaScript).
_TEXT_PARAMS = frozenset({"url", "expression", "format", "wait_until"})


def _param(text: str) -> tuple[str, Any]:
    """``K=V``; V is JSON when it parses as JSON (numbers, true/false, objects), else text,
    except for the params that are always text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if key in _TEXT_PARAMS:
        return key, value
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _save_artifact(bd: Client, artifact: dict[str, Any], out: Path) -> int:
    """Write an artifact's bytes to ``out`` (read in chunks over RPC); returns the size."""
    offset = 0
    with open(out, "wb") as sink:
        while True:
            chunk = bd.call("runs.artifacts.read", {
                "run_id": artifact["run_id"], "artifact_id": artifact["id"],
                "offset": offset, "length": _READ_CHUNK,
            })
            data = chunk.get("data") or b""
            sink.write(data)
            offset += len(data)
            if chunk.get("eof") or not data:
                return offset


def cmd_invoke(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    runtime = bd.space(args.space).runtimes.get(args.name)
    inv = runtime.invocations.create(
        args.action,
        dict(args.param or []),
        target_id=args.target,
        timeout_s=args.timeout,
        wait=not args.no_wait,
    )
    # Only the result goes to stdout (`T=$(browserctl invoke crm evaluate ...)` holds the
    # value); what happened goes to stderr.
    if not args.json:
        print(f"{inv.id} {inv.action} {inv.status}", file=sys.stderr)
    output = inv.output
    artifact = output.get("artifact") if isinstance(output, dict) else None
    if args.no_wait:
        return inv, inv.id
    if args.output and inv.status == "succeeded":
        if isinstance(artifact, dict):
            size = _save_artifact(bd, artifact, Path(args.output))
        else:
            text = output if isinstance(output, str) else json.dumps(output, indent=2)
            Path(args.output).write_text(text + ("" if text.endswith("\n") else "\n"))
            size = Path(args.output).stat().st_size
        if not args.json:
            print(f"saved {human_bytes(size)} to {args.output}", file=sys.stderr)
        return inv, ""
    if isinstance(artifact, dict):
        return inv, (f"artifact {artifact.get('id')} {artifact.get('name')} "
                     f"({human_bytes(artifact.get('size_bytes'))}) in run "
                     f"{artifact.get('run_id')}")
    if inv.status == "succeeded":
        return inv, output if isinstance(output, str) else json.dumps(output, indent=2)
    return inv, ""


def cmd_tabs(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    runtime = bd.space(args.space).runtimes.get(args.name)
    if args.new is not None:
        target = runtime.targets.create(args.new)
        return target.raw, f"opened {target.id} {target.url}"
    if args.close is not None:
        target = runtime.targets.close(args.close)
        return target.raw, f"closed {target.id}"
    if args.activate is not None:
        target = runtime.targets.activate(args.activate)
        return target.raw, f"activated {target.id} {target.url}"
    targets = runtime.targets.list()
    rows = [("*" if t.active else "", t.id, t.type, t.title[:40], t.url) for t in targets]
    text = table(("", "ID", "TYPE", "TITLE", "URL"), rows) if targets else "no pages"
    return [t.raw for t in targets], text


def cmd_files(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    runtime = bd.space(args.space).runtimes.get(args.name)
    if args.put is not None:
        local = Path(args.put)
        if not local.is_file():
            raise InvalidParams.make(f"--put: {args.put!r} is not a readable file",
                                     "Give the path of a local file.")
        path = args.as_path or local.name
        if local.stat().st_size <= _INLINE_LIMIT:
            staged = runtime.files.stage(path, local.read_bytes())
        else:  # too big for one message: the daemon reads it (same user only), and never
            # through a symbolic link: name the file the user meant
            staged = runtime.files.stage(path, source_path=os.path.realpath(local))
        return staged.raw, f"staged {staged.path} ({human_bytes(staged.size_bytes)})"
    if args.collect is not None:
        collected = runtime.files.collect(args.collect)
        artifact = collected.artifact
        return ({"file": collected.file.raw, "artifact": artifact},
                f"collected {collected.file.path} as artifact {artifact.get('id')} "
                f"in run {artifact.get('run_id')}")
    files = runtime.files.list()
    rows = [(f.path, human_bytes(f.size_bytes), short_time(f.modified_at)) for f in files]
    text = table(("PATH", "SIZE", "MODIFIED"), rows) if files else "no files"
    return [f.raw for f in files], text


def add_commands(named: Callable[..., argparse.ArgumentParser]) -> None:
    """Add invoke, tabs and files; ``named(name, fn, help)`` makes a command taking NAME."""
    p = named("invoke", cmd_invoke, "run a browser action on a runtime's page")
    p.add_argument("action", choices=ACTIONS, metavar="ACTION",
                   help=f"one of {', '.join(ACTIONS)}")
    p.add_argument("--param", action="append", type=_param, metavar="K=V",
                   help="action param, repeatable (V as JSON when it parses, except url, "
                        "expression, format, wait_until)")
    p.add_argument("--target", metavar="ID", help="page id (default: the active page)")
    p.add_argument("--timeout", type=float, metavar="S", help="deadline in seconds (30)")
    p.add_argument("--no-wait", action="store_true", help="return at once, queued")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="save the result (a screenshot's or PDF's bytes) to FILE")

    p = named("tabs", cmd_tabs, "list a runtime's pages (or open, close, activate one)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--new", metavar="URL", help="open a page on URL")
    group.add_argument("--close", metavar="ID", help="close page ID")
    group.add_argument("--activate", metavar="ID", help="make page ID the active page")

    p = named("files", cmd_files, "list a runtime's file area (or stage or collect a file)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--put", metavar="LOCAL", help="stage the local file LOCAL")
    group.add_argument("--collect", metavar="PATH", help="make file PATH an artifact of the run")
    p.add_argument("--as", dest="as_path", metavar="PATH",
                   help="where --put stages it (default: LOCAL's name)")
