"""Writing the state records (runtime.json, run.json) off the event loop.

Every record is still replaced the durable way (storage.write_bytes_atomic: write, fsync,
rename, fsync the directory), but each fsync takes 0.1 ms on an idle disk and several ms on a
busy one, and on the event loop nothing else in the daemon moves meanwhile: a launch wrote
five records, two of them between the browser being ready and the reply (bench/FINDINGS.md,
1). Here the loop only encodes a snapshot of the record; one worker
thread at a time does the writing.

- `save` queues a snapshot and returns at once. Per path only the newest queued snapshot is
  written: a record saved three times while a write is in flight is written once more, not
  three times. A failure goes to the saver's `on_error`, called on the event loop.
- `write` queues a snapshot and waits until it (or a newer one) is on disk; it raises the
  OSError. For a client's own change, whose reply promises the record.
- `flush` waits until everything saved before it is on disk, for at most FLUSH_LIMIT_S: a
  hung disk (a stalled NFS mount) must not hang a stop, which waits for it shielded.
- A saved record that a disk error refused (a full disk) is tried again every RETRY_S while
  the writer runs, until it is written or a newer snapshot of the path replaces it: the run's
  final record lands once there is room, instead of the file keeping an older state for good.

Only this writer replaces these files while it runs, so two writes of one path never race.
Before `run` starts and after it ends, saves are written at once on the caller's thread: start-
up reconciles before the loop hosts the writer, and a daemon going down still records how its
runs ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from . import storage

__all__ = ["StateWriter"]

log = logging.getLogger(__name__)

OnError = Callable[[OSError], None]

FLUSH_LIMIT_S = 10.0
RETRY_S = 2.0


@attrs.define
class _Waiter:
    done: trio.Event = attrs.field(factory=trio.Event)
    error: OSError | None = None


@attrs.define
class _Queued:
    payload: bytes
    on_error: OnError | None
    waiters: list[_Waiter]


class StateWriter:
    def __init__(self) -> None:
        self._queued: dict[Path, _Queued] = {}
        self._retry: dict[Path, _Queued] = {}  # refused by the disk: tried again later
        self._running = False
        self._wake = trio.Event()
        self._saved = 0  # saves so far; `flush` waits until `_written` reaches its count
        self._written = 0
        self._progress = trio.Event()  # set (and replaced) after every batch
        self.batches = 0  # written batches, for tests

    def save(self, path: Path, obj: Any, on_error: OnError | None = None) -> None:
        """Queue `obj` to replace `path` (whose directory must exist); never waits.

        A write that fails calls `on_error` (on the event loop; without one it is logged). A
        directory removed before the write came (a deleted runtime, a run retention took) is
        not an error: the record went with it.
        """
        self._queue(path, storage.encode_record(obj), on_error, None)

    async def write(self, path: Path, obj: Any) -> None:
        """Replace `path` with `obj` and return once it is on disk; raises the OSError."""
        waiter = _Waiter()
        self._queue(path, storage.encode_record(obj), None, waiter)
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error

    async def flush(self, limit_s: float = FLUSH_LIMIT_S) -> bool:
        """Return once every record saved before this call is on disk (or failed): True; or
        after `limit_s` with writes still pending (logged): False."""
        target = self._saved
        with trio.move_on_after(limit_s):
            while self._written < target:
                await self._progress.wait()
            return True
        log.warning("state records are still being written after %g s (a slow or hung disk); "
                    "going on", limit_s)
        return False

    def _queue(self, path: Path, payload: bytes, on_error: OnError | None,
               waiter: _Waiter | None) -> None:
        earlier = self._queued.get(path)
        waiters = earlier.waiters if earlier is not None else []
        if waiter is not None:
            waiters.append(waiter)
        entry = _Queued(payload, on_error, waiters)
        self._retry.pop(path, None)  # a newer snapshot replaces one waiting to be retried
        self._saved += 1
        if not self._running:
            self._settle({path: entry}, _write_all({path: entry.payload}))
            self._written = self._saved
            return
        self._queued[path] = entry
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Write queued records until cancelled; then write what is left, on the way out."""
        self._running = True
        task_status.started()
        try:
            while True:
                with trio.move_on_after(RETRY_S if self._retry else float("inf")):
                    await self._wake.wait()
                self._wake = trio.Event()
                for path, entry in self._retry.items():  # quietly: they failed once already
                    self._queued.setdefault(path, attrs.evolve(entry, on_error=_quiet))
                self._retry = {}
                while self._queued:
                    batch, self._queued = self._queued, {}
                    upto = self._saved
                    payloads = {path: entry.payload for path, entry in batch.items()}
                    # Shielded: a batch in a thread cannot be called back, and its waiters
                    # must learn how it went.
                    with trio.CancelScope(shield=True):
                        failures = await trio.to_thread.run_sync(_write_all, payloads)
                    self._settle(batch, failures)
                    for path, error in failures.items():
                        entry = batch[path]
                        if not entry.waiters and path not in self._queued and (
                                path.parent.exists() and not isinstance(error, FileNotFoundError)):
                            self._retry[path] = entry
                    self._advance(upto)
        finally:
            self._running = False
            batch, self._queued = self._queued, {}
            if batch:
                self._settle(batch, _write_all({p: e.payload for p, e in batch.items()}))
                self._advance(self._saved)

    def _advance(self, upto: int) -> None:
        self.batches += 1
        self._written = upto
        self._progress.set()
        self._progress = trio.Event()

    @staticmethod
    def _settle(batch: dict[Path, _Queued], failures: dict[Path, OSError]) -> None:
        for path, entry in batch.items():
            error = failures.get(path)
            for waiter in entry.waiters:
                waiter.error = error
                waiter.done.set()
            if error is None or entry.waiters:
                continue
            if isinstance(error, FileNotFoundError) and not path.parent.exists():
                continue  # its directory was removed after the save; so was the record
            if entry.on_error is not None:
                entry.on_error(error)
            else:
                log.error("could not write %s: %s", path, error)


def _quiet(error: OSError) -> None:
    """A retried write that fails again: the first failure was reported already."""


def _write_all(payloads: dict[Path, bytes]) -> dict[Path, OSError]:
    """Write each record; returns the failures. Runs in a worker thread while the loop runs."""
    failures: dict[Path, OSError] = {}
    for path, payload in payloads.items():
        try:
            storage.write_bytes_atomic(path, payload)
        except OSError as exc:
            failures[path] = exc
    return failures
