"""The RPC methods, one module per resource; importing this package registers them all."""

from . import connections, daemon_status, profiles, runs, runtimes, spaces

__all__ = ["connections", "daemon_status", "profiles", "runs", "runtimes", "spaces"]
