"""`browserctl context`: named daemon hosts, and which one is current, as `docker context`.

    browserctl context [ls]
    browserctl context create NAME --host ssh://[user@]host[:port] [--remote-browserctl PATH]
    browserctl context use NAME        (``default``: the local socket)
    browserctl context rm NAME
    browserctl context show            (the daemon the next command would talk to)

Nothing here talks to a daemon: ``cli.py`` runs it before connecting.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .cli_format import table
from .contexts import CONTEXT_ENV, DEFAULT, HOST_ENV, ContextStore, destination
from .errors import ContextError

__all__ = ["add_command", "run"]


def add_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add `context` to the command parsers ``sub``."""
    help = "named daemon hosts (ssh://...) and the current one: ls, create, use, rm, show"
    p = sub.add_parser("context", help=help, description=help, parents=[common])
    p.set_defaults(action="ls")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("ls", help="list contexts, the current one marked (the default)",
                       parents=[common])
    text = "name a daemon host: context create NAME --host ssh://[user@]host[:port]"
    create = actions.add_parser("create", help=text, parents=[common], description=text)
    create.add_argument("context", metavar="NAME", help="the context's name")
    create.add_argument("--description", default="", help="a note shown by `context ls`")
    create.add_argument("--remote-browserctl", metavar="PATH",
                        help="browserctl on that machine, when not on its ssh PATH")
    for name, text in (("use", "make a context current (default: the local socket)"),
                       ("rm", "delete a context")):
        a = actions.add_parser(name, help=text, description=text, parents=[common])
        a.add_argument("context", metavar="NAME", help="the context's name")
    actions.add_parser("show", help="the daemon the next command would talk to",
                       parents=[common])


def run(args: argparse.Namespace) -> tuple[Any, str]:
    """Do the action; what --json prints and the text a human sees."""
    store = ContextStore.from_env()
    if args.action == "create":
        if not args.host:  # the common --host option names the context's host here
            raise ContextError.make("a context needs a host",
                                    f"browserctl context create {args.context} --host "
                                    "ssh://[user@]host[:port]")
        entry = store.create(args.context, args.host, description=args.description,
                             remote_browserctl=args.remote_browserctl)
        return {"name": args.context, **entry}, f"created context {args.context}"
    if args.action == "use":
        store.use(args.context)
        note = ""
        if os.environ.get(HOST_ENV) or os.environ.get(CONTEXT_ENV):
            note = f" (but ${HOST_ENV} or ${CONTEXT_ENV} is set, and wins)"
        return {"current": args.context}, f"current context: {args.context}{note}"
    if args.action == "rm":
        store.remove(args.context)
        return {"deleted": True, "name": args.context}, f"deleted context {args.context}"
    if args.action == "show":
        where = str(destination(args.host, args.socket))
        return {"host": where}, where
    current = store.current() or DEFAULT
    contexts = store.list()
    rows = [(f"{name} *" if name == current else name, entry.get("host") or "(local socket)",
             entry.get("description", "")) for name, entry in contexts.items()]
    doc = [{"name": name, "current": name == current, **entry}
           for name, entry in contexts.items()]
    return doc, table(("NAME", "HOST", "DESCRIPTION"), rows)
