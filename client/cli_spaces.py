"""`browserctl spaces` and `browserctl connections`: the namespaces and the CDP leases.

    browserctl spaces [ls | create NAME | rm NAME]
    browserctl connections NAME [ls | rm ID [--force]]

``cli.py`` adds these commands to its parser with :func:`add_commands`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ._sync.client import Client
from .cli_format import short_time, table

__all__ = ["add_commands", "cmd_connections", "cmd_spaces"]

Command = Callable[[Client, argparse.Namespace], tuple[Any, str]]


def cmd_spaces(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    if args.action == "create":
        space = bd.spaces.create(args.space_name)
        return space, f"space {space.name} ({space.id})"
    if args.action == "rm":
        bd.spaces.delete(args.space_name)
        return {"deleted": True, "name": args.space_name}, f"deleted space {args.space_name}"
    spaces = bd.spaces.list()
    rows = [(s.name, s.id, short_time(s.created_at)) for s in spaces]
    return spaces, table(("NAME", "ID", "CREATED"), rows)


def cmd_connections(bd: Client, args: argparse.Namespace) -> tuple[Any, str]:
    runtime = bd.space(args.space).runtimes.get(args.name)
    if args.action == "rm":
        conn = runtime.connections.get(args.connection_id).delete(force=args.force)
        closed = " and closed its sockets" if args.force else ""
        return conn, f"revoked {conn.id}{closed}"
    conns = runtime.connections.list()
    rows = [(c.id, _kind(c.protocol, c.control), c.status, "yes" if c.exclusive else "",
             str(c.open_sockets), short_time(c.expires_at), c.label or "") for c in conns]
    text = (table(("ID", "KIND", "STATUS", "EXCLUSIVE", "SOCKETS", "EXPIRES", "LABEL"), rows)
            if rows else "no connections")
    return conns, text


def _kind(protocol: str, control: bool) -> str:
    """cdp, view (watching) or control (a view that drives the page)."""
    return "control" if protocol == "view" and control else protocol


def add_commands(command: Callable[[str, Command, str], argparse.ArgumentParser],
                 named: Callable[[str, Command, str], argparse.ArgumentParser],
                 common: argparse.ArgumentParser) -> None:
    """Add `spaces` and `connections` (``command`` and ``named`` make a command, without and
    with a runtime NAME; ``common`` holds the options every command takes)."""
    p = command("spaces", cmd_spaces, "list spaces (or create, rm one)")
    p.set_defaults(action="ls")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("ls", help="list spaces (the default)", parents=[common])
    for name, help in (("create", "create a space (nothing happens if it exists)"),
                       ("rm", "delete a space that holds no runtimes")):
        actions.add_parser(name, help=help, description=help, parents=[common]).add_argument(
            "space_name", metavar="NAME", help="space name")

    p = named("connections", cmd_connections, "list a runtime's CDP leases (or rm one)")
    p.set_defaults(action="ls")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    ls = actions.add_parser("ls", help="list the leases (the default)", parents=[common])
    rm = actions.add_parser("rm", help="revoke a lease: no new attaches",
                            description="revoke a lease: no new attaches", parents=[common])
    rm.add_argument("connection_id", metavar="ID", help="the lease (conn_...)")
    rm.add_argument("--force", action="store_true", help="also close its open sockets")
    for action in (ls, rm):  # --space after the action too (only set when given)
        action.add_argument("--space", default=argparse.SUPPRESS, help="the runtime's space")
