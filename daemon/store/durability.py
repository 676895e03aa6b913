"""Runs and the disk: the timed fsync of live logs, and what a disk error does to a run.

- `events.fsync = "batch"` promises at most BATCH_FSYNC_INTERVAL_S of unsynced events. An
  append cannot keep that promise alone (a quiet run appends nothing that would sync its tail),
  and an fdatasync on the trio thread stalls every CDP socket for milliseconds. So the
  registry runs a `LiveLogSyncer`: an interval after a live log's first unsynced write, each
  live log with unsynced writes is fdatasync'ed in a worker thread, and its appends never sync
  on the trio thread. With nothing written it sleeps.
- A disk error (ENOSPC, EIO, EDQUOT, ...) while a run is live never reaches the browser or the
  daemon: the log keeps numbering and delivering events (eventlog.py), a run record that cannot
  be saved stays in memory, and the run is marked `degraded` with the first reason, in its
  record and in the daemon log. Only a launch refuses to start on a disk that cannot take its
  first record.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterable

import trio

from ..base.model import RunRecord
from .eventlog import BATCH_FSYNC_INTERVAL_S, EventLog

__all__ = ["LiveLogSyncer", "degrade", "describe_os_error", "note_log_state"]

log = logging.getLogger(__name__)

LiveLogs = Callable[[], Iterable[tuple[RunRecord, EventLog]]]


def describe_os_error(exc: OSError) -> str:
    """'ENOSPC: No space left on device' (the code first, as the event log writes it)."""
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{code}: {exc.strerror or exc}"


def degrade(run: RunRecord, reason: str) -> bool:
    """Mark the run degraded (the first reason wins); True if it was not degraded before."""
    if run.degraded:
        return False
    run.degraded, run.degraded_reason = True, reason
    log.error("run %s (runtime %s) is degraded: %s; the browser goes on, but the run's files "
              "may miss events or updates", run.id, run.runtime_id, reason)
    return True


def note_log_state(run: RunRecord, event_log: EventLog) -> bool:
    """Carry a degraded log over to its run; True if the run became degraded now."""
    if event_log.degraded_reason is None:
        return False
    return degrade(run, f"events.jsonl: {event_log.degraded_reason}")


class LiveLogSyncer:
    """Fsyncs the live logs' unsynced events in a worker thread, within an interval of the
    first of them, and sleeps while none is written. A log joins with `adopt` (the registry
    adopts every log it opens): its "batch" appends then never fsync on the trio thread, and
    its first write since an fsync wakes the syncer."""

    def __init__(self, live: LiveLogs, interval_s: float = BATCH_FSYNC_INTERVAL_S) -> None:
        self._live = live
        self._interval_s = interval_s
        self._written = trio.Event()  # replaced for each pass: set by a write after it began

    def adopt(self, event_log: EventLog) -> None:
        if event_log.fsync == "batch":
            event_log.sync_in_background = True
            event_log.on_unsynced = self._wake

    def _wake(self) -> None:
        self._written.set()

    async def run(self) -> None:
        """Run until cancelled."""
        unsynced = True  # the first pass looks at every live log
        while True:
            if not unsynced:
                await self._written.wait()
            await trio.sleep(self._interval_s)  # one fsync for an interval of writes
            self._written = trio.Event()
            unsynced = False
            for run, event_log in list(self._live()):
                if event_log.fsync != "never" and event_log.dirty:
                    await event_log.aflush()
                note_log_state(run, event_log)
                # Still unsynced: written during the pass, or no descriptor to spare for the
                # sync this time; the next pass comes without waiting for another write.
                unsynced = unsynced or (event_log.fsync != "never" and event_log.dirty)
