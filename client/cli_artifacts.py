"""`browserctl artifacts`: a run's artifacts on the command line.

    browserctl artifacts NAME [--run RUN] [--kind K]          list, newest first
    browserctl artifacts NAME [--run RUN] --get ID [-o FILE]  save one to FILE (or a directory)

``cli.py`` adds the command to its parser with :func:`add_commands`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ._sync.client import Client
from ._sync.resources import Run
from .cli_format import human_bytes, short_time, table

__all__ = ["add_commands", "cmd_artifacts"]

RunOf = Callable[[Client, argparse.Namespace], Run]


def cmd_artifacts(bd: Client, args: argparse.Namespace, run_of: RunOf) -> tuple[Any, str]:
    run = run_of(bd, args)
    if args.get is not None:
        artifact = run.artifacts.get(args.get)
        saved = run.artifacts.download(artifact.id, args.output or ".")
        record = {**artifact.raw, "saved_to": str(saved)}
        return record, (f"saved {artifact.name} ({human_bytes(artifact.size_bytes)}, "
                        f"sha256 {artifact.sha256[:12]}) to {saved}")
    artifacts = run.artifacts.list(kind=args.kind)
    rows = [(a.id, a.kind, human_bytes(a.size_bytes), short_time(a.created_at), a.name)
            for a in artifacts]
    header = f"run {run.id} ({run.status})"
    text = table(("ID", "KIND", "SIZE", "CREATED", "NAME"), rows) if rows else "no artifacts"
    return [a.raw for a in artifacts], f"{header}\n{text}"


def add_commands(named: Callable[..., argparse.ArgumentParser], run_of: RunOf) -> None:
    """Add `artifacts`; ``named(name, fn, help)`` makes a command taking NAME and ``run_of``
    finds the run it means (--run, else the active or latest)."""

    def command(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
        return cmd_artifacts(bd, args, run_of)

    p = named("artifacts", command, "list a run's artifacts, or save one (--get ID -o FILE)")
    p.add_argument("--run", metavar="RUN_ID", help="this run (default: active or latest)")
    p.add_argument("--kind", metavar="K", help="only this kind: download, screenshot, pdf, file")
    p.add_argument("--get", metavar="ID", help="save this artifact")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where --get saves it: a file, or a directory to keep its name in "
                        "(default: the current directory)")
