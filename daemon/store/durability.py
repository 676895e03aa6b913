"""Runs and the disk: the timed fsync of live logs, and what a disk error does to a run.

- `events.fsync = "batch"` promises at most BATCH_FSYNC_INTERVAL_S of unsynced events. An
  append cannot keep that promise alone (a quiet run appends nothing that would sync its tail),
  and an fdatasync on the trio thread stalls every CDP socket for milliseconds. So the
  registry runs `sync_live_logs`: every interval, each live log with unsynced writes is
  fdatasync'ed in a worker thread, and its appends never sync on the trio thread.
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

__all__ = ["degrade", "describe_os_error", "note_log_state", "sync_live_logs"]

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


async def sync_live_logs(live: LiveLogs, interval_s: float = BATCH_FSYNC_INTERVAL_S) -> None:
    """Run until cancelled: fsync each live log's new events every interval, off-thread."""
    while True:
        await trio.sleep(interval_s)
        for run, event_log in list(live()):
            if event_log.fsync == "batch":
                event_log.sync_in_background = True
            if event_log.fsync != "never" and event_log.dirty:
                await event_log.aflush()
            note_log_state(run, event_log)
