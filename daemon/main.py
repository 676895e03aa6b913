"""`browserd`: parse the command line, load the config, run the daemon.

Under systemd the daemon takes what the service manager passed before anything else runs:
the notify socket and watchdog interval (notify.py) and an activated listener (listen_fds.py).
Both sets of variables leave the environment there, so no browser inherits them.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

import attrs
import trio

from . import __version__, check_config, install_units
from .base.config import ConfigError, load
from .service import serve
from .store.state_lock import StateDirRefused
from .system import logs
from .system.listen_fds import SocketUnusable, activated_listener, socket_path
from .system.notify import Notifier

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="browserd", description="Local browser-runtime daemon (see docs/operations.md)."
    )
    parser.add_argument("--config", type=Path, help="config file (default: $BROWSERD_CONFIG, "
                        "$CONFIGURATION_DIRECTORY/config.toml under systemd, or "
                        "$XDG_CONFIG_HOME/browserd/config.toml)")
    parser.add_argument("--state-dir", type=Path, help="override state_dir")
    parser.add_argument("--socket", type=Path, help="override the RPC socket path")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config, print the effective config, and exit")
    parser.add_argument("--json", action="store_true",
                        help="with --check-config: print it as one JSON object")
    parser.add_argument("--version", action="version", version=f"browserd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    units = commands.add_parser(
        "install-units", help="write the systemd units for this installation and exit",
        description="Write browserd.service and browserd.socket with ExecStart= naming this "
                    "installation's browserd (user units in ~/.config/systemd/user, system "
                    "units in /etc/systemd/system). Enables nothing; prints what to run next.")
    scope = units.add_mutually_exclusive_group(required=True)
    scope.add_argument("--user", dest="scope", action="store_const", const="user",
                       help="units for `systemctl --user`")
    scope.add_argument("--system", dest="scope", action="store_const", const="system",
                       help="units for a system service run as the browserd user")
    units.add_argument("--dir", type=Path, help="write into DIR instead")
    units.add_argument("--force", action="store_true", help="replace units that differ")
    units.add_argument("--dry-run", action="store_true", help="say what would be written")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "install-units":
        return install_units.install(args.scope, args.dir, force=args.force,
                                     dry_run=args.dry_run)
    if args.json and not args.check_config:
        parser.error("--json goes with --check-config")
    notifier = Notifier.from_environ()
    try:
        config = load(args.config, {"state_dir": args.state_dir, "socket": args.socket,
                                    "log_level": args.log_level})
    except ConfigError as exc:
        print(f"browserd: {exc}", file=sys.stderr)
        notifier.status(f"refusing to start: {exc}")
        return 2
    if args.check_config:
        return check_config.run(config, config_file=args.config, as_json=args.json)
    logs.setup(config.log_level, attrs.asdict(config.log_levels))
    try:
        listener = activated_listener()
    except SocketUnusable as exc:
        log.error("%s", exc)
        notifier.status(f"refusing to start: {exc}")
        return 1
    if listener is not None:
        # Serve (and report) the path systemd listens on, whatever the config says.
        activated = socket_path(listener)
        assert activated is not None  # activated_listener refuses sockets without a path
        if activated != config.socket:
            log.info("socket activation: %s replaces the configured socket %s", activated,
                     config.socket)
            config = attrs.evolve(config, socket=activated)
    refused: Exception | None = None
    try:
        trio.run(functools.partial(serve, config, handle_signals=True, listener=listener,
                                   notifier=notifier))
    except* (SocketUnusable, StateDirRefused) as group:
        refused = _first_leaf(group)
    if refused is not None:
        log.error("%s", refused)
        notifier.status(f"refusing to start: {refused}")
        return 1
    return 0


def _first_leaf(group: BaseExceptionGroup[Exception]) -> Exception:
    """The first exception in a (possibly nested) group: what the user should read."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, Exception)
    return first


if __name__ == "__main__":
    sys.exit(main())
