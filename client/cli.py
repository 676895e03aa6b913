"""`browserctl`: the command-line client of browserd.

Human output is aligned tables; ``--json`` prints the daemon's records as JSON. Errors
print ``error: <code>: <message>`` and ``hint: <hint>`` to stderr and exit 1; usage
errors exit 2. Never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import urllib.parse
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from . import (
    cli_artifacts,
    cli_completion,
    cli_contexts,
    cli_control,
    cli_dial,
    cli_spaces,
    doctor,
)
from ._sync.client import Client
from ._sync.resources import Run
from ._version import __version__
from .cli_errors import report_error
from .cli_format import (
    StatsRow,
    event_table,
    profile_details,
    profile_table,
    runtime_table,
    stats_document,
    stats_table,
    table,
    to_json,
)
from .cli_timeline import print_timeline
from .contexts import destination
from .errors import (
    BrowserdError,
    LaunchWarning,
    RunNotFound,
    RuntimeNotActive,
    RuntimeNotFound,
)
from .paths import socket_path

__all__ = ["build_parser", "main", "parse_args"]

_LEASE_POLL_S = 1.0  # `connect` through ssh: how often it checks that the lease is still live

# -- commands ----------------------------------------------------------------------------
# Each returns what --json prints and the text a human sees.


def cmd_launch(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LaunchWarning)
        runtime = bd.space(args.space).runtimes.browser.launch(
            args.name,
            profile=args.profile,
            metadata=args.meta,
            headless=False if args.headful else None,
            restart=args.restart,
            idle_timeout_s=args.idle_timeout,
            max_lifetime_s=args.max_lifetime,
            args=args.arg,
            memory_limit_mb=args.memory_limit,
            wait_s=args.wait,
            config=launch_config(args),
            record=args.record,
        )
    for warning in caught:  # the running runtime kept its own options
        print(f"warning: {warning.message}", file=sys.stderr)
    text = f"{runtime.space}/{runtime.name} {runtime.status} (run {runtime.active_run_id or '-'})"
    return runtime, text


PROXY_PASSWORD_ENV = "BROWSERD_PROXY_PASSWORD"


def launch_config(args: argparse.Namespace) -> dict[str, Any] | None:
    """The runtime config the launch flags ask for; None when no flag sets any (the runtime
    keeps its own, a new one gets its space's defaults)."""
    config: dict[str, Any] = {}
    if args.proxy is not None:
        config["proxy"] = _proxy_flag(args.proxy, args.proxy_bypass)
    if args.viewport is not None:
        config["viewport"] = args.viewport
    for key in ("locale", "timezone", "user_agent", "browser"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.extension:
        config["extensions"] = [os.path.abspath(path) for path in args.extension]
    if args.block or args.block_url:
        config["block"] = {"resource_types": [kind for value in args.block or ()
                                              for kind in value.split(",") if kind],
                           "url_patterns": list(args.block_url or ())}
    return config or None


def _proxy_flag(value: str, bypass: list[str] | None) -> dict[str, Any]:
    parts = urllib.parse.urlsplit(value)
    proxy: dict[str, Any] = {"server": value}
    if parts.username is not None:
        host = parts.netloc.rpartition("@")[2]
        proxy["server"] = urllib.parse.urlunsplit(parts._replace(netloc=host))
        proxy["username"] = urllib.parse.unquote(parts.username)
        proxy["password"] = os.environ.get(PROXY_PASSWORD_ENV, "")
    if bypass:
        proxy["bypass"] = list(bypass)
    return proxy


def _proxy_url(text: str) -> str:
    if urllib.parse.urlsplit(text).password is not None:
        raise argparse.ArgumentTypeError(
            f"a password on the command line shows in ps; give the user in the URL "
            f"(http://USER@host:port) and the password in ${PROXY_PASSWORD_ENV}")
    return text


def _viewport(text: str) -> dict[str, Any]:
    """WxH or WxH@SCALE, e.g. 1280x720 or 390x844@3."""
    size, _, scale = text.partition("@")
    width, sep, height = size.lower().partition("x")
    try:
        viewport: dict[str, Any] = {"width": int(width), "height": int(height)}
        if scale:
            viewport["device_scale_factor"] = float(scale)
    except ValueError:
        sep = ""
    if not sep:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT[@SCALE], got {text!r}")
    return viewport


def cmd_inspect(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    runtime = bd.space(args.space).runtimes.get(args.name)
    lines = [f"{runtime.space}/{runtime.name} ({runtime.id})", f"status: {runtime.status}",
             f"active run: {runtime.active_run_id or '-'}", f"profile: {runtime.profile or '-'}",
             f"created: {runtime.created_at}"]
    if runtime.metadata:
        lines.append(f"metadata: {json.dumps(runtime.metadata, sort_keys=True)}")
    lines.append("config:")
    for key, value in runtime.config.items():
        if value in (None, [], {}) or value == {"resource_types": [], "url_patterns": []}:
            continue
        shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        lines.append(f"  {key}: {shown}")
    return runtime, "\n".join(lines)


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
    if args.browser_url:
        url = endpoint.browser_url
    else:
        url = endpoint.http_url if args.http else endpoint.url
    if bd.host.startswith("ssh://"):
        # The URL is a local forward on this command's SSH connection: it lives while the
        # command does, so the command stays, as `kubectl port-forward` does.
        print(to_json(conn) if args.json else url, flush=True)
        print(f"forwarding through {bd.host} until the lease ends or Ctrl-C", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            while runtime.connections.get(conn.id).status == "active":
                time.sleep(_LEASE_POLL_S)
        return None, ""
    return conn, url


def cmd_view(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    runtime = bd.space(args.space).runtimes.get(args.name)
    conn = runtime.connections.create(protocol="view", ttl_s=args.ttl, control=args.control,
                                      label=args.label)
    return conn, conn.endpoint.url if conn.endpoint is not None else "-"


def cmd_replay(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    run = _run_of(bd, args)
    url = run.replay_url()
    return {"run_id": run.id, "url": url}, url


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
    header = f"run {run.id} ({run.status}{', ' + run.end_reason if run.end_reason else ''})"
    if args.follow:
        # Until the run ends or Ctrl-C (the normal way out: exit 0), printing as it goes.
        if not args.json:
            print(header, flush=True)
        try:
            print_timeline(run.events.follow(after_seq=args.after, types=args.type),
                           sys.stdout, as_json=args.json)
        except KeyboardInterrupt:
            pass
        return None, ""
    events = run.events.list(after_seq=args.after, types=args.type)
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


def cmd_ui(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    url = bd.ui_url()
    return {"url": url}, url


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
    pool = status.get("pool") or {}
    if pool.get("size"):
        rows.append(("warm pool", f"{pool.get('ready', 0)} ready / {pool['size']}"
                                  f" ({pool.get('starting', 0)} starting)"))
    return status, table(None, rows)


def cmd_profiles(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    profiles = bd.profiles.list()
    return profiles, profile_table(profiles) if profiles else "no profiles"


def cmd_profile_show(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    profile = bd.profiles.get(args.profile)
    return profile, profile_details(profile)


def cmd_profile_rm(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    bd.profiles.delete(args.profile)
    return {"deleted": True, "name": args.profile}, f"deleted profile {args.profile}"


def cmd_profile_clone(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    clone = bd.profiles.clone(args.profile, args.to)
    return clone, f"cloned profile {args.profile} to {clone.name}"


def collect_stats(bd: Client, names: Sequence[str], space: str | None) -> list[StatsRow]:
    """Measure the named runtimes, or every active one (in ``space``, if given)."""
    if names:
        runtimes = [bd.space(space or "default").runtimes.get(name) for name in names]
    else:
        scope = bd.space(space).runtimes if space else bd.runtimes
        runtimes = scope.list(status="active")
    rows: list[StatsRow] = []
    for runtime in runtimes:
        try:
            rows.append((runtime, runtime.stats()))
        except RuntimeNotActive:
            if names:  # asked for by name: show it, with no figures
                rows.append((runtime, None))
        except RuntimeNotFound:
            pass  # deleted since the listing
    return rows


def cmd_stats(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    if args.json or args.no_stream:
        rows = collect_stats(bd, args.names, args.space)
        return stats_document(rows), stats_table(rows)
    # Like `docker stats`: redraw until Ctrl-C, which is the normal way out (exit 0).
    redraw = sys.stdout.isatty()
    try:
        while True:
            text = stats_table(collect_stats(bd, args.names, args.space))
            # On a terminal, home the cursor and clear; in a pipe, one table after another.
            sys.stdout.write(f"\x1b[H\x1b[2J{text}\n" if redraw else f"{text}\n\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return None, ""


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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected zero or more seconds, got {text!r}")
    return value


def _megabytes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole megabytes, got {text!r}") from None
    if value < 64:  # the daemon's floor: less cannot even start a browser
        raise argparse.ArgumentTypeError(f"expected at least 64 MB, got {text!r}")
    return value


Command = Callable[[Client, argparse.Namespace], tuple[Any, str]]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; global options are accepted before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", default=argparse.SUPPRESS, help="daemon socket path")
    common.add_argument("-H", "--host", default=argparse.SUPPRESS, metavar="URL",
                        help="daemon on another machine: ssh://[user@]host[:port]")
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine output"
    )
    parser = argparse.ArgumentParser(
        prog="browserctl", description="Control the browserd daemon.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"browserctl {__version__}")
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
    p.add_argument("--restart", choices=("no", "on-failure"),
                   help="restart it after a crash (default: no)")
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
    p.add_argument(
        "--memory-limit", type=_megabytes, metavar="MB",
        help="stop it past MB of memory (PSS, >= 64)",
    )
    p.add_argument(
        "--wait", type=_seconds, metavar="S", help="queue up to S seconds for a free slot"
    )
    p.add_argument("--proxy", type=_proxy_url, metavar="URL",
                   help="upstream proxy, http:// or socks5://, optionally with USER@ (the "
                   f"password from ${PROXY_PASSWORD_ENV})")
    p.add_argument("--proxy-bypass", action="append", metavar="HOST",
                   help="a host pattern the proxy is not used for, repeatable")
    p.add_argument("--viewport", type=_viewport, metavar="WxH[@S]",
                   help="page size in CSS px (and device scale factor), e.g. 1280x720")
    p.add_argument("--locale", metavar="TAG", help="navigator.language and Accept-Language")
    p.add_argument("--timezone", metavar="ZONE", help="IANA time zone, e.g. Europe/Berlin")
    p.add_argument("--user-agent", metavar="UA", help="the User-Agent")
    p.add_argument("--extension", action="append", metavar="DIR",
                   help="an unpacked extension to load, repeatable (full chromium only)")
    p.add_argument("--block", action="append", metavar="TYPES",
                   help="resource types whose requests fail, e.g. image,font,media")
    p.add_argument("--block-url", action="append", metavar="PATTERN",
                   help="a URL pattern whose requests fail, e.g. '*://ads.*/*', repeatable")
    p.add_argument("--browser", metavar="BUILD",
                   help="chromium, headless-shell, or an executable's absolute path")
    p.add_argument("--record", action=argparse.BooleanOptionalAction, default=None,
                   help="keep a recording of each run (default: config record.default)")

    named("inspect", cmd_inspect, "show a runtime's record and config")

    p = command("ls", cmd_ls, "list runtimes")
    p.add_argument("--space", help="only this space (default: every space)")
    p.add_argument("--status", choices=("starting", "active", "stopping", "stopped", "failed"))

    p = named("connect", cmd_connect, "open a CDP connection lease and print its URL")
    p.add_argument("--ttl", type=_positive, default=600.0, metavar="S", help="lease lifetime")
    p.add_argument("--exclusive", action="store_true", help="refuse other controllers")
    p.add_argument("--label", help="a note shown in connection listings")
    p.add_argument("--http", action="store_true", help="print the http:// discovery URL")
    p.add_argument("--browser-url", action="store_true",
                   help="print the lease's own origin (for Puppeteer's browserURL)")

    p = named("view", cmd_view, "open a live view of the runtime's page and print its URL")
    p.add_argument("--control", action="store_true",
                   help="let the page drive the browser (mouse, keys, tabs)")
    p.add_argument("--ttl", type=_positive, default=600.0, metavar="S", help="lease lifetime")
    p.add_argument("--label", help="a note shown in connection listings")

    p = named("replay", cmd_replay, "print the URL of a run's replay page (frames and events)")
    p.add_argument("--run", metavar="RUN_ID", help="this run (default: active or latest)")

    p = named("events", cmd_events, "show a run's event timeline")
    p.add_argument("--run", metavar="RUN_ID", help="this run (default: active or latest)")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="events after SEQ")
    p.add_argument("--type", action="append", metavar="T", help="only this type, repeatable")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new events until the run ends (Ctrl-C to stop)")

    p = named("stop", cmd_stop, "stop a runtime (returns when the browser is gone)")
    p.add_argument("--timeout", type=_positive, metavar="S", help="grace period in seconds")

    p = named("rm", cmd_rm, "delete a stopped runtime")
    p.add_argument("--force", action="store_true", help="stop it first if needed")

    cli_control.add_commands(named)  # invoke, tabs, files
    cli_spaces.add_commands(command, named, common)  # spaces, connections
    cli_artifacts.add_commands(named, _run_of)

    command("status", cmd_status, "show the daemon's status")
    command("ui", cmd_ui, "print the URL of the local dashboard (web page)")
    # doctor works without a daemon (finding out why there is none is its job): main() runs
    # it before connecting, so it has no Command.
    help = "check the browser, socket, daemon, state dir and profiles; say how to fix problems"
    sub.add_parser("doctor", help=help, description=help, parents=[common])
    cli_contexts.add_command(sub, common)
    help = ("bridge stdin and stdout to the local daemon's socket (what a client with "
            "BROWSERD_HOST=ssh://... runs on this machine through ssh)")
    sub.add_parser("dial-stdio", help=help, description=help, parents=[common])
    help = "print a shell completion script (bash, zsh or fish)"
    sub.add_parser("completion", help=help, description=help).add_argument(
        "shell", choices=cli_completion.SHELLS)

    p = command("profiles", cmd_profiles, "list persistent profiles (or show, rm, clone one)")
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    def action(name: str, fn: Command, help: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help, description=help, parents=[common])
        a.set_defaults(fn=fn)
        a.add_argument("profile", metavar="NAME", help="profile name")
        return a

    actions.add_parser("ls", help="list profiles (the default)", parents=[common])
    action("show", cmd_profile_show, "show one profile and who holds it")
    action("rm", cmd_profile_rm, "delete a profile no runtime holds")
    action("clone", cmd_profile_clone, "copy a profile no runtime holds").add_argument(
        "to", metavar="TO", help="the new profile's name"
    )

    p = command("stats", cmd_stats,
                "live CPU, memory (PSS: shared pages counted once) and process counts of "
                "running browsers")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these runtimes")
    p.add_argument("--space", help="the runtimes' space (default: every space, or default)")
    p.add_argument("--no-stream", action="store_true", help="print one table and exit")
    p.add_argument(
        "--interval", type=_positive, default=2.0, metavar="S", help="refresh period (2 s)"
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (exits 2 on usage errors)."""
    args = build_parser().parse_args(argv)
    args.socket = getattr(args, "socket", None)
    args.host = getattr(args, "host", None)
    args.json = getattr(args, "json", False)
    if getattr(args, "meta", None) is not None:
        args.meta = dict(args.meta)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``browserctl``; returns the exit status."""
    args = parse_args(argv)
    if args.command == "doctor":
        # About the machine of the daemon this browserctl talks to: through ssh, that one.
        try:
            where = destination(args.host, args.socket)
            if where.ssh is not None:
                return doctor.run_far(where, as_json=args.json)
        except BrowserdError as err:
            report_error(err, sys.stderr, args=args, as_json=args.json)
            return 1
        return doctor.run(args.socket, as_json=args.json)
    if args.command == "dial-stdio":
        try:
            return cli_dial.run(socket_path(args.socket))
        except BrowserdError as err:
            report_error(err, sys.stderr, args=args, as_json=args.json)
            return 1
    if args.command == "completion":
        print(cli_completion.script(build_parser(), args.shell), end="")
        return 0
    try:
        if args.command == "context":
            result, text = cli_contexts.run(args)
            print(to_json(result) if args.json else text)
            return 0
        with Client(args.socket, host=args.host, client_name="browserctl") as bd:
            result, text = args.fn(bd, args)
        # A command that printed as it went (stats, events -f) returns (None, "").
        output = to_json(result) if args.json and result is not None else text
        if output:  # empty when the command printed as it went (stats)
            print(output)
    except BrowserdError as err:
        report_error(err, sys.stderr, args=args, as_json=args.json)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `browserctl ls | head`: as the Python docs advise,
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
