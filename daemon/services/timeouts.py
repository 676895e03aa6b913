"""Idle timeout and maximum lifetime: a run service that ends runs nobody is using.

Idle means no open CDP socket, no live lease and no RPC on the runtime; the idle clock starts
when the last of those goes away (the registry's `Runtime.last_activity` moves on every
touch). A browser mid-work over an open socket is never idle, however long the work takes —
activity-blind timeouts are what users of other tools complain about most.
"""

from __future__ import annotations

from typing import Protocol

import trio

from ..base.config import Config
from ..core.runtime import Runtime

# The longest sleep between looks at a runtime's limits: a changed limit
# (runtimes.update) takes effect within it.
_RECHECK_S = 1.0
_MIN_WAIT_S = 0.01


class TimeoutHost(Protocol):
    """What the timeouts use of the registry."""

    def idle_for(self, rt: Runtime) -> float: ...
    def request_stop(self, rt: Runtime, reason: str) -> None: ...


class Timeouts:
    """Stops a runtime with end reason `idle_timeout` or `max_lifetime`."""

    def __init__(self, registry: TimeoutHost, config: Config) -> None:
        self.registry = registry
        self.config = config

    def limits(self, rt: Runtime) -> tuple[float | None, float | None]:
        options = rt.record.config
        idle = options.idle_timeout_s or self.config.runtimes.idle_timeout_s
        lifetime = options.max_lifetime_s or self.config.runtimes.max_lifetime_s
        return idle, lifetime

    async def attend(self, rt: Runtime) -> None:
        """Sleep until the next deadline, check, again: a runtime nobody uses costs a wake-up
        a second at most, and each limit still ends the run when it is due."""
        started = trio.current_time()
        while True:
            # Re-read every time: runtimes.update may change idle_timeout_s on a live runtime.
            idle_limit, lifetime = self.limits(rt)
            wait = _RECHECK_S
            if lifetime is not None:
                left = lifetime - (trio.current_time() - started)
                if left <= 0:
                    self.registry.request_stop(rt, "max_lifetime")
                    return
                wait = min(wait, left)
            if idle_limit is not None:
                idle = self.registry.idle_for(rt)
                if idle >= idle_limit:
                    self.registry.request_stop(rt, "idle_timeout")
                    return
                # In use (idle 0): look again within one limit, so the idle clock, once it
                # starts, is seen in time to end the run when due. Idle: until it is due.
                wait = min(wait, idle_limit - idle)
            await trio.sleep(max(wait, _MIN_WAIT_S))
