"""`browserctl`: the command-line client of browserd.

Human output is aligned tables; ``--json`` prints the daemon's records as JSON. Errors
print ``error: <code>: <message>`` and ``hint: <hint>`` to stderr and exit 1; usage
errors exit 2. Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ._sync import Client, Run, Runtime
from .errors import BrowserdError, RunNotFound
from .records import Event, Record

# -- output ------------------------------------------------------------------------------


def table(headers: Sequence[str] | None, rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns, two spaces apart; None shows as "-"."""
    cells = [list(headers)] if headers else []
    cells += [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))] if cells else []
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def short_time(rfc3339: str | None) -> str | None:
    """``2026-11-28T09:44:51.123456Z`` -> ``2026-11-28 09:44:51.123``."""
    if not rfc3339:
        return None
    return rfc3339.replace("T", " ").rstrip("Z")[:23]


def short_data(data: dict[str, Any], width: int = 80) -> str:
    """``k=v`` pairs on one line, cut to ``width`` characters."""
    text = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in data.items())
    return text if len(text) <= width else text[: width - 3] + "..."


def runtime_table(runtimes: Sequence[Runtime]) -> str:
    rows = [
        (r.space, r.name, r.status, r.profile, r.active_run_id, short_time(r.last_activity_at))
        for r in runtimes
    ]
    return table(("SPACE", "NAME", "STATUS", "PROFILE", "ACTIVE RUN", "LAST ACTIVITY"), rows)


def event_table(events: Sequence[Event]) -> str:
    rows = [(short_time(e.time), e.seq, e.type, e.status, short_data(e.data)) for e in events]
    return table(("TIME", "SEQ", "TYPE", "STATUS", "DATA"), rows)


def to_json(value: Any) -> str:
    def plain(obj: Any) -> Any:
        if isinstance(obj, Record):
            return obj.to_dict()
        if isinstance(obj, Event):
            return obj.raw
        if isinstance(obj, bytes):
            return obj.hex()
        raise TypeError(f"cannot show {type(obj).__name__} as JSON")

    return json.dumps(value, indent=2, ensure_ascii=False, default=plain)


# -- commands ----------------------------------------------------------------------------
# Each returns what --json prints and the text a human sees.


def cmd_launch(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    runtime = bd.space(args.space).runtimes.browser.launch(
        args.name,
        profile=args.profile,
        metadata=args.meta,
        headless=not args.headful,
        restart=args.restart,
        idle_timeout_s=args.idle_timeout,
        max_lifetime_s=args.max_lifetime,
        args=args.arg,
    )
    text = f"{runtime.space}/{runtime.name} {runtime.status} (run {runtime.active_run_id or '-'})"
    return runtime, text


def cmd_ls(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    scope = bd.space(args.space).runtimes if args.space else bd.runtimes
    runtimes = scope.list(status=args.status)
    return runtimes, runtime_table(runtimes) if runtimes else "no runtimes"


def cmd_connect(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    runtime = bd.space(args.space).runtimes.get(args.name)
    conn = runtime.connections.create(ttl_s=args.ttl, exclusive=args.exclusive, label=args.label)
    endpoint = conn.endpoint
    if endpoint is None:
        return conn, "-"
    return conn, endpoint.http_url if args.http else endpoint.url


def _run_of(bd: Client, args: argparse.Namespace) -> Run:
    if args.run:
        return bd.runs.get(args.run)
    runtime = bd.space(args.space).runtimes.get(args.name)
    if runtime.active_run_id is not None:
        return bd.runs.get(runtime.active_run_id)
    latest = runtime.runs.list(limit=1)
    if not latest:
        raise RunNotFound.make(
            f"runtime {runtime.space}/{runtime.name} has no runs yet",
            f"Launch it first: browserctl launch {runtime.name}",
        )
    return latest[0]


def cmd_events(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    run = _run_of(bd, args)
    events = run.events.list(after_seq=args.after, types=args.type)
    header = f"run {run.id} ({run.status}{', ' + run.end_reason if run.end_reason else ''})"
    return events, f"{header}\n{event_table(events)}" if events else f"{header}\nno events"


def cmd_stop(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    runtime = bd.space(args.space).runtimes.get(args.name)
    run = runtime.stop(timeout_s=args.timeout)
    where = f"{runtime.space}/{runtime.name}"
    if run is None:
        return {"runtime": runtime, "run": None, "stopped": False}, f"{where} was not running"
    text = f"{where} {runtime.status} (run {run.id}: {run.end_reason or run.status})"
    return {"runtime": runtime, "run": run, "stopped": True}, text


def cmd_rm(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    runtime = bd.space(args.space).runtimes.get(args.name)
    runtime.delete(force=args.force)
    return {"deleted": True, "runtime": runtime}, f"deleted {runtime.space}/{runtime.name}"


def cmd_status(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    status = bd.status()
    counts = status.get("counts", {})
    rows = [
        ("version", status.get("version")),
        ("pid", status.get("pid")),
        ("uptime", f"{status.get('uptime_s', 0):.0f} s"),
        ("socket", status.get("socket")),
        ("state dir", status.get("state_dir")),
        ("cdp base url", status.get("cdp_base_url")),
        ("runtimes", f"{counts.get('active_runtimes', 0)} active / {counts.get('runtimes', 0)}"),
        ("spaces", counts.get("spaces")),
        ("connections", counts.get("connections")),
        ("clients", counts.get("clients")),
        ("rss", f"{status.get('rss_bytes', 0) / 2**20:.1f} MiB"),
    ]
    return status, table(None, rows)


# -- arguments ---------------------------------------------------------------------------


def _meta(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


Command = Callable[[Client, argparse.Namespace], tuple[Any, str]]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; global options are accepted before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", default=argparse.SUPPRESS, help="daemon socket path")
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine output"
    )
    parser = argparse.ArgumentParser(
        prog="browserctl", description="Control the browserd daemon.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(fn=fn)
        return p

    def named(name: str, fn: Command, help: str) -> argparse.ArgumentParser:
        p = command(name, fn, help)
        p.add_argument("name", metavar="NAME", help="runtime name")
        p.add_argument("--space", default="default", help="space (default: %(default)s)")
        return p

    p = named("launch", cmd_launch, "start a browser runtime (created if new)")
    p.add_argument("--profile", help="persistent profile name (default: ephemeral)")
    p.add_argument("--headful", action="store_true", help="show the browser window")
    p.add_argument("--restart", choices=("no", "on-failure"), default="no")
    p.add_argument("--idle-timeout", type=_positive, metavar="S", help="stop after S idle seconds")
    p.add_argument("--max-lifetime", type=_positive, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--arg",
        action="append",
        metavar="A",
        help="extra browser argument, repeatable; write --arg=--flag for dashed flags",
    )
    p.add_argument(
        "--meta", action="append", type=_meta, metavar="K=V", help="metadata, repeatable"
    )

    p = command("ls", cmd_ls, "list runtimes")
    p.add_argument("--space", help="only this space (default: every space)")
    p.add_argument("--status", choices=("starting", "active", "stopping", "stopped", "failed"))

    p = named("connect", cmd_connect, "open a CDP connection lease and print its URL")
    p.add_argument("--ttl", type=_positive, default=600.0, metavar="S", help="lease lifetime")
    p.add_argument("--exclusive", action="store_true", help="refuse other controllers")
    p.add_argument("--label", help="a note shown in connection listings")
    p.add_argument("--http", action="store_true", help="print the http:// discovery URL")

    p = named("events", cmd_events, "show a run's event timeline")
    p.add_argument("--run", metavar="RUN_ID", help="this run (default: active or latest)")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="events after SEQ")
    p.add_argument("--type", action="append", metavar="T", help="only this type, repeatable")

    p = named("stop", cmd_stop, "stop a runtime (returns when the browser is gone)")
    p.add_argument("--timeout", type=_positive, metavar="S", help="grace period in seconds")

    p = named("rm", cmd_rm, "delete a stopped runtime")
    p.add_argument("--force", action="store_true", help="stop it first if needed")

    command("status", cmd_status, "show the daemon's status")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (exits 2 on usage errors)."""
    args = build_parser().parse_args(argv)
    args.socket = getattr(args, "socket", None)
    args.json = getattr(args, "json", False)
    if getattr(args, "meta", None) is not None:
        args.meta = dict(args.meta)
    return args


def report_error(err: BrowserdError, stream: TextIO) -> None:
    print(f"error: {err.code}: {err.message}", file=stream)
    if err.hint:
        print(f"hint: {err.hint}", file=stream)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``browserctl``; returns the exit status."""
    args = parse_args(argv)
    try:
        with Client(args.socket, client_name="browserctl") as bd:
            result, text = args.fn(bd, args)
    except BrowserdError as err:
        report_error(err, sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        print(to_json(result) if args.json else text)
    except BrokenPipeError:  # `browserctl ls | head`: as the Python docs advise,
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
