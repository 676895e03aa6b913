"""Idempotency keys: a retried request with the same key gets the first request's result.

    result = await store.run("runtimes.launch", key, params, do_launch)

A key lives for 24 h per method. The same key with the same params (compared by a fingerprint:
SHA-256 of the params as canonical JSON) replays the stored result; with other params it fails
with `request.idempotency_conflict`. Requests that arrive while the first is still running
wait for it. A first request that fails (or whose caller goes away before it finishes) stores
nothing, so a retry runs anew: only results are replayed, never errors.

Entries are kept in memory and persisted to `<state>/idempotency.json` (atomic replace) after
every change, so a daemon restart keeps them. Both are bounded: at most MAX_ENTRIES finished
entries whose results come to at most MAX_BYTES of JSON; past either, the oldest go first (a
retry of a forgotten key runs anew). Results are what the methods return, and they keep them
small: an invocation's record is stored without its params (a replay has the same ones) and
with a large output kept as an artifact (outputs.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from ..base.errors import ApiError
from ..store import storage

__all__ = ["DEFAULT_TTL_S", "IdempotencyStore", "fingerprint"]

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 24 * 3600.0
MAX_ENTRIES = 10_000  # past this the oldest entries go first; a key is a courtesy, not storage
MAX_BYTES = 16 * 1024 * 1024  # the stored results' JSON, all together (memory and the file)


def fingerprint(params: dict[str, Any]) -> str:
    """SHA-256 of the params as canonical JSON (sorted keys; bytes by their hex)."""

    def default(value: Any) -> Any:
        if isinstance(value, bytes | bytearray | memoryview):
            return {"$bytes": hashlib.sha256(bytes(value)).hexdigest()}
        raise TypeError(f"cannot fingerprint {type(value).__name__}")

    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=default)
    return hashlib.sha256(text.encode()).hexdigest()


@attrs.define
class _Entry:
    fingerprint: str
    expires_at: float  # wall clock (time.time()), so it means the same after a restart
    result: Any = None
    done: bool = False
    finished: trio.Event = attrs.Factory(trio.Event)
    size: int = 0  # the result's JSON size, for MAX_BYTES

    def keep(self, result: Any) -> None:
        self.result, self.done, self.size = result, True, _json_size(result)


def _json_size(value: Any) -> int:
    try:
        return len(storage.encode_record(value))
    except (TypeError, ValueError):
        return 0  # it cannot be persisted either: the save logs that


class IdempotencyStore:
    """Key -> (params fingerprint, result, expiry), per method; see the module docstring."""

    def __init__(self, path: Path, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._save_lock = trio.Lock()  # one write at a time, each of the state at its turn

    def load(self) -> None:
        """Read the persisted keys, dropping expired ones; a damaged file is logged and reset."""
        try:
            doc = storage.read_json(self.path) or {}
            rows = doc.get("entries", [])
            now = time.time()
            for row in rows:
                if float(row["expires_at"]) > now:
                    entry = _Entry(str(row["fingerprint"]), float(row["expires_at"]))
                    entry.keep(row.get("result"))
                    entry.finished.set()
                    self._entries[(str(row["method"]), str(row["key"]))] = entry
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("ignoring unreadable %s: %s", self.path, exc)
        self._trim()  # a file written by an older daemon may hold more

    def __len__(self) -> int:
        return len(self._entries)

    async def run(self, method: str, key: str, params: dict[str, Any],
                  fn: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        """`fn()`'s result, or the stored result of an earlier call with this key.

        Returns (result, replayed). `params` are the request's params without the key.
        """
        slot = (method, key)
        digest = fingerprint(params)
        while True:
            entry = self._live(slot)
            if entry is None:
                break
            if entry.fingerprint != digest:
                raise ApiError(
                    "request.idempotency_conflict",
                    f"Idempotency key {key!r} was used for {method} with other params.",
                    hint="Use a new key for a different request, or resend the first "
                         "request's params unchanged.",
                    data={"method": method, "idempotency_key": key},
                )
            await entry.finished.wait()
            if entry.done:
                return entry.result, True
            # The first request failed and freed the key: loop, and this one may run it.
        entry = self._entries[slot] = _Entry(digest, time.time() + self.ttl_s)
        try:
            result = await fn()
        except BaseException:
            # Only results are replayed: a failure (or a cancelled caller) frees the key.
            if self._entries.get(slot) is entry:
                del self._entries[slot]
            raise
        finally:
            entry.finished.set()
        entry.keep(result)
        await self._save()
        return result, False

    async def update(self, method: str, key: str, result: Any) -> None:
        """Replace a finished entry's stored result (an invocation that has since finished)."""
        entry = self._entries.get((method, key))
        if entry is not None and entry.done:
            entry.keep(result)
            await self._save()

    def lookup(self, method: str, key: str) -> Any:
        """The stored result for a live finished key, else None."""
        entry = self._live((method, key))
        return entry.result if entry is not None and entry.done else None

    def _live(self, slot: tuple[str, str]) -> _Entry | None:
        entry = self._entries.get(slot)
        if entry is not None and entry.expires_at <= time.time():
            del self._entries[slot]
            return None
        return entry

    async def _save(self) -> None:
        async with self._save_lock:
            doc = self._snapshot()
            try:
                # fsync and rename off the event loop: the file is small, the disk may be slow.
                await trio.to_thread.run_sync(storage.write_json_atomic, self.path, doc)
            except (OSError, TypeError, ValueError) as exc:
                # The key still works in memory; only a restart would forget it.
                log.error("could not persist idempotency keys to %s: %s", self.path, exc)

    def _trim(self) -> list[tuple[tuple[str, str], _Entry]]:
        """Drop expired entries, then the oldest finished ones past MAX_ENTRIES or MAX_BYTES;
        returns the finished entries left, oldest first."""
        now = time.time()
        for slot in [s for s, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[slot]
        finished = sorted(((slot, e) for slot, e in self._entries.items() if e.done),
                          key=lambda item: item[1].expires_at)
        total = sum(e.size for _, e in finished)
        dropped = 0
        while dropped < len(finished) and (len(finished) - dropped > MAX_ENTRIES
                                           or total > MAX_BYTES):
            slot, entry = finished[dropped]
            del self._entries[slot]
            total -= entry.size
            dropped += 1
        return finished[dropped:]

    @property
    def stored_bytes(self) -> int:
        """The JSON size of every stored result together."""
        return sum(e.size for e in self._entries.values() if e.done)

    def _snapshot(self) -> dict[str, Any]:
        finished = self._trim()
        return {"entries": [
            {"method": method, "key": key, "fingerprint": e.fingerprint,
             "expires_at": e.expires_at, "result": e.result}
            for (method, key), e in finished
        ]}
