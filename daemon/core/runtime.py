"""What the daemon holds for each runtime while it runs: the live holder, the launch options,
and the RunService protocol for workers that live beside a run's browser."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from ..base.errors import ApiError
from ..base.model import RunConfig, RunRecord, RuntimeRecord
from ..base.runtime_config import NO_CONFIG, ParsedConfig, RuntimeConfig
from ..browser.process import BrowserProcess
from ..browser.profiles import HeldProfile
from ..cdp.browser_link import BrowserLink, LinkSlot
from ..store import storage
from ..store.eventlog import EventLog
from .restart import RestartPolicy

Actor = dict[str, Any]


class RunService(Protocol):
    """Something that works alongside each run's browser (an observer, a sampler, ...)."""

    async def attend(self, rt: Runtime) -> None:
        """Run for the life of the run's browser; cancelled when the run ends.

        Called once the browser is active (`rt.process` and `rt.log` are set; `rt.wait_link()`
        gives the daemon's connection to the browser). It must not end
        the run itself; to stop the runtime it calls `Registry.stop` from a task of its own.
        """


class RunGate(Protocol):
    """Something that must be in force before a run is reported active (network rules)."""

    async def guard(self, rt: Runtime, *,
                    task_status: trio.TaskStatus[ApiError | None]) -> None:
        """Set up for the run's browser (through `rt.wait_link()`), call
        `task_status.started()` once in force, then run until cancelled with the run's end.
        When it cannot be put in force, `task_status.started(error)` (having logged why): the
        launch fails with that error, and the browser is stopped."""


@attrs.frozen
class LaunchOptions:
    profile: str | None = None
    metadata: dict[str, Any] = attrs.Factory(dict)
    headless: bool = True
    restart: str = "no"
    idle_timeout_s: float | None = None
    max_lifetime_s: float | None = None
    args: tuple[str, ...] = ()
    memory_limit_mb: int | None = None
    wait_s: float = 0.0  # how long to queue for a free slot when max_runtimes are running
    # The browser's config (proxy, viewport, ...) with the proxy's credentials; None keeps the
    # runtime's own (a new runtime: its space's default from the daemon's config).
    runtime: ParsedConfig | None = attrs.field(default=None, repr=False)
    record: bool | None = None  # keep a recording of each run (None: config record.default)

    def config(self, current: RuntimeConfig = NO_CONFIG) -> RunConfig:
        """The options that stay with the runtime (restarts reuse them)."""
        return RunConfig(headless=self.headless, restart=self.restart,
                         idle_timeout_s=self.idle_timeout_s, max_lifetime_s=self.max_lifetime_s,
                         memory_limit_mb=self.memory_limit_mb, args=self.args,
                         record=self.record,
                         runtime=self.runtime.config if self.runtime is not None else current)


@attrs.define
class Runtime:
    """A runtime's record plus what only exists while the daemon runs it."""

    record: RuntimeRecord
    lock: trio.Lock = attrs.Factory(trio.Lock)
    process: BrowserProcess | None = None
    # The daemon's one CDP connection to the run's browser (cdp/browser_link.py), shared by
    # the run gates and services: `wait_link`. A new slot for each run.
    link: LinkSlot | None = None
    run: RunRecord | None = None
    log: EventLog | None = None
    user_data_dir: Path | None = None
    ephemeral: bool = False
    held_profile: HeldProfile | None = None
    end_reason: str | None = None  # set by whoever asks the browser to go
    done: trio.Event = attrs.Factory(trio.Event)  # the supervising task has finished the run
    restart_policy: RestartPolicy = attrs.Factory(RestartPolicy)
    restart_scope: trio.CancelScope | None = None  # a pending restart after a crash
    open_sockets: int = 0
    # Whoever waits for the runtime's last client socket to close parks here (a stop that
    # closes them, the downloads service taking downloads back); unparked when it does.
    last_socket_closed: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    last_activity: float = attrs.Factory(trio.current_time)  # monotonic, for the idle clock

    @property
    def id(self) -> str:
        return self.record.id

    async def wait_link(self) -> BrowserLink | None:
        """The run's connection to its browser, once up (None: the browser is unreachable)."""
        return await self.link.wait() if self.link is not None else None

    def touch(self) -> None:
        """Something used the runtime (an RPC, a socket coming or going): restart idle clock."""
        self.record.last_activity_at = storage.now_rfc3339()
        self.last_activity = trio.current_time()

    def log_if_current(self, run_id: str, type: str, data: dict[str, Any],
                       actor: Actor | None = None, source: str = "daemon") -> None:
        """Append to the run's log if that run is still the live one (else it has ended)."""
        if self.run is not None and self.run.id == run_id and self.log is not None:
            self.log.append(type, data, actor=actor, source=source)
