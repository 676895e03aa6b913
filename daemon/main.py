"""`browserd`: parse the command line, load the config, run the daemon."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from . import __version__
from .config import ConfigError, load
from .rpc_server import SocketUnusable
from .service import serve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="browserd", description="Local browser-runtime daemon (see README.md)."
    )
    parser.add_argument("--config", type=Path, help="config file (default: $BROWSERD_CONFIG or "
                        "$XDG_CONFIG_HOME/browserd/config.toml)")
    parser.add_argument("--state-dir", type=Path, help="override state_dir")
    parser.add_argument("--socket", type=Path, help="override the RPC socket path")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config, print it, and exit")
    parser.add_argument("--version", action="version", version=f"browserd {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load(args.config, {"state_dir": args.state_dir, "socket": args.socket,
                                    "log_level": args.log_level})
    except ConfigError as exc:
        print(f"browserd: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"config ok: state_dir={config.state_dir} socket={config.socket}")
        return 0
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    refused: SocketUnusable | None = None
    try:
        trio.run(lambda: serve(config, handle_signals=True))
    except* SocketUnusable as group:
        refused = group.exceptions[0]  # type: ignore[assignment]
    if refused is not None:
        print(f"browserd: {refused}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
