"""`runs.events.follow`: a run's events pushed to a client, from the log and then live.

One `Follow` per subscription, run as a task of the client's RPC session (so it ends when the
connection closes). It speaks the stream protocol of docs/api.md (Transport and framing):

    ["runs.event", [{subscription, event}]]             each event, in seq order
    ["subscription.heartbeat", [{subscription, last_seq}]]   after HEARTBEAT_S without one
    ["subscription.ended", [{subscription, reason}]]    last: cancelled | run_ended | overflow

No gap and no duplicate between replay and live: the listener is registered on the live log
first (no await between looking the log up and registering), so every event after the log's
last seq at that moment reaches the listener's queue; the replay reads the file up to that seq
only. A run that has already ended has no live log: its file is complete, and the stream ends
with `run_ended` after the replay. `connection_closed` is never sent (there is nobody to send it
to); the client reports it itself.

A subscriber that falls behind by more than QUEUE_SIZE live events gets what was queued, then
`overflow`, and resubscribes from its last seq (the client does this by itself).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Collection
from typing import Any

import trio

from ..base.lifecycle import FINISHED_RUN
from ..base.model import RunRecord
from ..core.registry import Registry
from ..store.eventlog import Event, EventLog
from ..store.storage import make_id
from .api import CallerSession

__all__ = ["HEARTBEAT_S", "QUEUE_SIZE", "Follow", "live_log"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
QUEUE_SIZE = 4096  # live events a subscriber may be behind before it gets `overflow`
REPLAY_PAGE = 500  # events read from the file per thread hop
MAX_PER_SESSION = 64  # subscriptions one connection may hold at once


def live_log(registry: Registry, run: RunRecord) -> EventLog | None:
    """The open log of `run` if it is its runtime's live run, else None (the run is over)."""
    rt = registry.runtimes.get(run.runtime_id)
    if rt is None or rt.run is None or rt.run.id != run.id or rt.log is None:
        return None
    return rt.log


def is_final(event: Event) -> bool:
    """The run's last event: its lifecycle reaching `ended` or `failed`."""
    return event.get("type") == "runtime.lifecycle" and event.get("status") in FINISHED_RUN


class Follow:
    """One subscription: replay, then live events, then `subscription.ended`."""

    def __init__(self, registry: Registry, session: CallerSession, run: RunRecord,
                 after_seq: int, types: Collection[str] | None) -> None:
        self.id = make_id("sub")
        self._registry = registry
        self._session = session
        self._run = run
        self._cursor = after_seq  # the last seq this stream has dealt with
        self._types = list(types) if types else None
        self._matches = _matcher(self._types)
        self._heartbeat_s = HEARTBEAT_S
        self._queue: collections.deque[Event] = collections.deque()
        self._queue_size = QUEUE_SIZE
        self._overflowed = False
        self._cancelled = False
        self._wake = trio.Event()
        self._log: EventLog | None = None
        self._live_from: int | None = None  # the first seq the listener delivers
        self._latest = after_seq  # the last seq the listener saw, wanted or not
        self._last_sent = trio.current_time()  # heartbeats come after this much silence

    def start(self) -> None:
        """Register with the live log now, and stream from a task of the session.

        Called by the method handler just before it returns `{subscription}`: the session
        sends that reply before any notification of this task (its send lock is FIFO, and the
        task first runs after the reply is queued).
        """
        self._log = live_log(self._registry, self._run)
        if self._log is not None:
            # From here on every append reaches the listener; the file has the rest.
            self._live_from = self._log.last_seq + 1
            self._log.add_listener(self._on_event)
        self._session.subscriptions[self.id] = self
        self._session.start_soon(self._stream)

    def cancel(self) -> None:
        """End the stream with `cancelled` (after the notification being sent, if any)."""
        self._cancelled = True
        self._wake.set()

    # -- the listener: runs inside EventLog.append, so it only queues ----------------------

    def _on_event(self, event: Event) -> None:
        self._latest = event["seq"]
        if self._overflowed or not (self._matches(event["type"]) or is_final(event)):
            return  # filtered out here, so a narrow filter on a busy run never overflows
        if len(self._queue) >= self._queue_size:
            self._overflowed = True
            self._detach()
        else:
            self._queue.append(event)
        self._wake.set()

    def _detach(self) -> None:
        if self._log is not None:
            self._log.remove_listener(self._on_event)

    # -- the task ----------------------------------------------------------------------------

    async def _stream(self) -> None:
        reason = "cancelled"
        try:
            reason = await self._replay_then_live()
        except Exception:  # a bug here ends this stream, not the client's connection
            log.exception("subscription %s of run %s failed", self.id, self._run.id)
        finally:
            self._detach()
            self._session.subscriptions.pop(self.id, None)
        # Not reached when the connection closed (the task was cancelled): nobody to tell.
        await self._session.notify("subscription.ended",
                                   {"subscription": self.id, "reason": reason})

    async def _replay_then_live(self) -> str:
        live_from = self._live_from
        reason = await self._replay(live_from)
        if reason is not None:
            return reason
        if live_from is None:
            return "run_ended"  # the run was over before we came: its file is complete
        self._cursor = max(self._cursor, live_from - 1)
        while True:
            while self._queue:
                if (reason := await self._deliver(self._queue.popleft())) is not None:
                    return reason
            if self._overflowed:
                return "overflow"
            if self._cancelled:
                return "cancelled"
            self._wake = trio.Event()
            with trio.move_on_at(self._last_sent + self._heartbeat_s) as idle:
                await self._wake.wait()
            if idle.cancelled_caught:
                last_seq = max(self._cursor, self._latest)
                await self._notify("subscription.heartbeat",
                                   {"subscription": self.id, "last_seq": last_seq})

    async def _replay(self, live_from: int | None) -> str | None:
        """Send the logged events after the cursor and before `live_from` (all if None)."""
        while True:
            page = await self._registry.list_events(self._run, self._cursor, REPLAY_PAGE,
                                                    self._types)
            for event in page:
                if live_from is not None and event["seq"] >= live_from:
                    return None
                if (reason := await self._deliver(event)) is not None:
                    return reason
            if len(page) < REPLAY_PAGE:
                return None

    async def _notify(self, method: str, payload: dict[str, Any]) -> None:
        await self._session.notify(method, payload)
        self._last_sent = trio.current_time()

    async def _deliver(self, event: Event) -> str | None:
        """Send one event if it is new and wanted; a reason if the stream ends with it."""
        if self._cancelled:
            return "cancelled"
        if event["seq"] <= self._cursor:
            return None  # already sent (a guard: replay and live do not overlap)
        self._cursor = event["seq"]
        if self._matches(event["type"]):
            await self._notify("runs.event", {"subscription": self.id, "event": event})
        return "run_ended" if is_final(event) else None


def _matcher(types: list[str] | None) -> Callable[[str], bool]:
    """The same filter as runs.events.list: exact types, or families such as "connection.*"."""
    if not types or "*" in types:
        return lambda _: True
    exact = frozenset(t for t in types if not t.endswith(".*"))
    prefixes = tuple(t[:-1] for t in types if t.endswith(".*"))
    return lambda type_: type_ in exact or type_.startswith(prefixes)

