"""The control surface's parts, built once per daemon: targets, invocations, files, keys,
the per-lease discovery origins, and the live views' screencasts.

`Api.control` holds one `Control`; the service adds `control.targets` (the per-run control
link) to the registry's run services, loads the idempotency keys, and starts
`control.origins.serve` before serving.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from ..core.registry import Registry
from ..core.runtime import Runtime
from .files import FileArea
from .idempotency import IdempotencyStore
from .invocations import Invocations
from .lease_origins import LeaseOrigins
from .targets import Targets
from .view import Views

__all__ = ["Control"]


@attrs.frozen
class Control:
    registry: Registry
    targets: Targets
    invocations: Invocations
    idempotency: IdempotencyStore
    origins: LeaseOrigins
    views: Views

    @classmethod
    def build(cls, registry: Registry) -> Control:
        idempotency = IdempotencyStore(Path(registry.state_dir) / "idempotency.json")
        targets = Targets()
        return cls(registry, targets, Invocations(registry, targets, idempotency), idempotency,
                   LeaseOrigins(registry), Views(targets))

    def file_area(self, rt: Runtime) -> FileArea:
        """The runtime's file area, `<state>/runtimes/<runtime_id>/files/`."""
        return FileArea(Path(self.registry.state_dir) / "runtimes" / rt.id / "files")
