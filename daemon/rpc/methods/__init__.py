"""The RPC methods, one module per resource; importing this package registers them all."""

from . import (
           artifacts,
           connections,
           daemon_status,
           files,
           invocations,
           profiles,
           runs,
           runtimes,
           spaces,
           subscriptions,
           targets,
)

__all__ = ["artifacts", "connections", "daemon_status", "files", "invocations", "profiles", "runs",
           "runtimes", "spaces", "subscriptions", "targets"]
