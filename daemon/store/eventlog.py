"""One run's event log: `events.jsonl`, append-only, one JSON event per line.

Invariants of the file (docs/operations.md, State on disk):
- `seq` starts at 1 and grows by one per event; reopening continues after the last valid line.
- Bytes once written are never rewritten or truncated. A torn tail left by a crash stays; the
  next append starts with a newline so it never glues onto the new event, and readers skip
  every line that is not a valid event.
- Each line is one write() on an O_APPEND descriptor, so lines never interleave.
- Disk errors never reach the caller of append(): the event is still numbered, returned and
  delivered to listeners; the log turns degraded and later appends try the disk again. The
  on-disk log of a degraded run may therefore miss some seqs; the live stream does not.

An EventLog is not thread-safe: the daemon appends from its trio thread only. Readers
(read_events, iter_events) may run anywhere, in any process, at any time.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal

import attrs
import trio

from ..base.errors import RESOURCE_ERRNOS
from .storage import fsync_dir, now_rfc3339

__all__ = [
    "BATCH_FSYNC_INTERVAL_S",
    "Event",
    "EventLog",
    "FsyncPolicy",
    "Listener",
    "iter_events",
    "read_events",
]

logger = logging.getLogger(__name__)

Event = dict[str, Any]
Listener = Callable[[Event], object]
FsyncPolicy = Literal["always", "batch", "never"]
_FSYNC_POLICIES = ("always", "batch", "never")

# "batch": fsync when an append comes this long after the previous fsync, and on flush()
# and close(). A crash (not just a daemon kill) can lose the events of the last interval.
BATCH_FSYNC_INTERVAL_S = 0.2

# For the rare event holding a lone surrogate (JavaScript strings can), which UTF-8 cannot carry.
_encode_ascii = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":"), check_circular=False
).encode


def _make_encoder() -> Callable[[Any], str]:
    """json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")), minus the
    per-call setup (most of the cost for small objects) and the circularity check (circular
    data ends in RecursionError instead of ValueError)."""
    fallback = json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False
    ).encode
    make_c_encoder = getattr(json.encoder, "c_make_encoder", None)  # CPython's _json
    if make_c_encoder is None:
        return fallback

    def default(obj: Any) -> Any:
        raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")

    try:
        c_encoder = make_c_encoder(
            None, default, json.encoder.encode_basestring, None, ":", ",", False, False, False
        )
        probe = {"a": [1, 2.5, "\u00e9", None, True, {}], "b": ""}
        if "".join(c_encoder(probe, 0)) != fallback(probe):
            return fallback
    except Exception:  # another Python's internals: take the public road
        return fallback
    return lambda obj: "".join(c_encoder(obj, 0))


_encode = _make_encoder()
_encode_str = json.encoder.encode_basestring
_SEQ_PREFIX = b'{"seq":'  # every line this module writes starts so: readers use it to skip fast
_SCAN_CHUNK = 64 * 1024
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


@attrs.define(eq=False)
class EventLog:
    """The writer of one run's events.jsonl. Create it with EventLog.open()."""

    path: Path
    run_id: str
    runtime_id: str
    space: str
    fsync: FsyncPolicy
    _ids_json: str  # '"run_id":...,"runtime_id":...,"space":...', the same in every line
    _fd: int | None  # None after the descriptor broke (EBADF): the next append reopens
    _last_seq: int
    _need_newline: bool  # the file may end mid-line: the next write starts with "\n"
    _listeners: tuple[Listener, ...] = ()
    _dirty: bool = False  # written since the last fsync
    _last_fsync: float = attrs.field(factory=time.monotonic)
    _degraded_reason: str | None = None
    _dropped_events: int = 0
    _failing: bool = False  # the last write failed
    _closed: bool = False
    # Set by a background syncer (durability.LiveLogSyncer): "batch" then never fsyncs on
    # the appending thread, the syncer does it in a worker thread, woken by `on_unsynced`
    # at the first write since the last fsync.
    sync_in_background: bool = False
    on_unsynced: Callable[[], None] | None = None

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        run_id: str,
        runtime_id: str,
        space: str,
        fsync: FsyncPolicy = "batch",
        sync_dir: bool = True,
    ) -> EventLog:
        """Open (or create) the log at `path` for appending; the parent directory must exist.

        An existing file is scanned backwards for its last valid event: the next seq follows
        it. A new file's directory entry is made durable unless `sync_dir` is False (the
        caller syncs the directory itself) or the policy is "never". Raises OSError if the
        file cannot be opened: only appends swallow disk errors.
        """
        if fsync not in _FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {_FSYNC_POLICIES}, got {fsync!r}")
        created = not os.path.lexists(path)
        fd = os.open(path, _OPEN_FLAGS, 0o600)
        try:
            last_seq, need_newline = _scan(fd)
            if created and sync_dir and fsync != "never":
                fsync_dir(path.parent)
        except BaseException:
            os.close(fd)
            raise
        return cls(
            path=path,
            run_id=run_id,
            runtime_id=runtime_id,
            space=space,
            fsync=fsync,
            ids_json=_encode({"run_id": run_id, "runtime_id": runtime_id, "space": space})[1:-1],
            fd=fd,
            last_seq=last_seq,
            need_newline=need_newline,
        )

    @property
    def last_seq(self) -> int:
        """The seq of the last event appended (0 for a new, empty log)."""
        return self._last_seq

    @property
    def degraded(self) -> bool:
        return self._degraded_reason is not None

    @property
    def degraded_reason(self) -> str | None:
        """Why the on-disk log may be incomplete (the first disk error), or None if it is whole.

        It stays set after writes succeed again: the events dropped meanwhile are gone.
        """
        return self._degraded_reason

    @property
    def dropped_events(self) -> int:
        """How many events were returned and delivered but could not be written."""
        return self._dropped_events

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dirty(self) -> bool:
        """Written since the last fsync."""
        return self._dirty

    @property
    def listener_count(self) -> int:
        """How many listeners are registered (followers, observers)."""
        return len(self._listeners)

    def add_listener(self, fn: Listener) -> None:
        """Call `fn(event)` after each append, in order of registration.

        Listeners run inside append(), after the write: keep them quick and non-blocking (a
        send_nowait into a bounded queue). An exception in one is logged and goes no further.
        The event dict is shared with the caller and the other listeners: do not mutate it.
        """
        self._listeners = (*self._listeners, fn)

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling `fn`; a listener that is not registered is ignored."""
        listeners = list(self._listeners)
        if fn in listeners:
            listeners.remove(fn)
            self._listeners = tuple(listeners)

    def append(
        self,
        type: str,
        data: dict[str, Any] | None = None,
        *,
        source: str = "daemon",
        status: str | None = None,
        actor: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
    ) -> Event:
        """Number, write and publish one event; return it (listeners get the same dict).

        Never raises for disk errors (see degraded_reason). Raises TypeError or ValueError,
        without using a seq, if `data`, `actor` or `target` is not JSON (NaN included), and
        trio.ClosedResourceError after close().
        """
        if self._closed:
            raise trio.ClosedResourceError("event log is closed")
        seq = self._last_seq + 1
        time_ = now_rfc3339()
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            raise TypeError(f"event data must be a dict, not {data.__class__.__name__}")
        event: Event = {
            "seq": seq,
            "time": time_,
            "run_id": self.run_id,
            "runtime_id": self.runtime_id,
            "space": self.space,
            "type": type,
        }
        if status is not None:
            event["status"] = status
        event["source"] = source
        if actor is not None:
            event["actor"] = actor
        if target is not None:
            event["target"] = target
        event["data"] = data
        try:
            line = _encode_line(
                self._ids_json, seq, time_, type, status, source, actor, target, data
            )
        except UnicodeEncodeError:
            line = (_encode_ascii(event) + "\n").encode("ascii")
        except RecursionError as exc:
            raise ValueError(f"{type} event is not JSON: circular or too deeply nested") from exc
        self._last_seq = seq
        self._write(line)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("event listener %r failed on %s #%d", listener, type, seq)
        return event

    def flush(self) -> None:
        """fsync what was written since the last fsync, whatever the policy."""
        if self._fd is not None and self._dirty:
            self._sync()

    async def aflush(self) -> None:
        """flush() without blocking the trio thread: the fdatasync runs in a worker thread,
        on a duplicate of the descriptor (so a close meanwhile cannot pull it away)."""
        if self._fd is None or not self._dirty or self._closed:
            return
        try:
            fd = os.dup(self._fd)
        except OSError as exc:
            if exc.errno in RESOURCE_ERRNOS:
                return  # no descriptor to spare this time: still dirty, the next round syncs
            self._mark_degraded(exc)
            return
        self._dirty = False
        self._last_fsync = time.monotonic()
        try:
            await trio.to_thread.run_sync(_fdatasync_and_close, fd)
        except OSError as exc:
            self._mark_degraded(exc)

    def close(self) -> None:
        """fsync (unless the policy is "never") and close; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._listeners = ()
        if self._fd is not None and self._dirty and self.fsync != "never":
            self._sync()
        if self._fd is None:  # never opened again after it broke, or the fsync found it broken
            return
        fd, self._fd = self._fd, None
        try:
            os.close(fd)
        except OSError as exc:
            self._mark_degraded(exc)

    def __enter__(self) -> EventLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _write(self, line: bytes) -> None:
        try:
            if self._fd is None:
                self._reopen()
            fd = self._fd
            assert fd is not None
            payload = b"\n" + line if self._need_newline else line
            written = os.write(fd, payload)
            if written != len(payload):
                # Short write (file size limit, disk filling up): the file now ends mid-line
                # until the rest is out.
                self._need_newline = True
                rest = memoryview(payload)[written:]
                while rest:
                    written = os.write(fd, rest)
                    if written == 0:
                        raise OSError(errno.EIO, "write() wrote nothing")
                    rest = rest[written:]
            self._need_newline = False
        except OSError as exc:
            self._dropped_events += 1
            self._failing = True
            self._mark_degraded(exc)
            return
        if not self._dirty and self.on_unsynced is not None:
            self.on_unsynced()
        self._dirty = True
        if self._failing:
            self._failing = False
            logger.info(
                "event log %s is writing again (%d events were not written)",
                self.path,
                self._dropped_events,
            )
        if self.fsync == "always" or (
            self.fsync == "batch"
            and not self.sync_in_background
            and time.monotonic() - self._last_fsync >= BATCH_FSYNC_INTERVAL_S
        ):
            self._sync()

    def _sync(self) -> None:
        assert self._fd is not None
        try:
            os.fdatasync(self._fd)  # the file size is data here: fdatasync flushes it too
        except OSError as exc:
            self._mark_degraded(exc)
        self._dirty = False
        self._last_fsync = time.monotonic()

    def _reopen(self) -> None:
        fd = os.open(self.path, _OPEN_FLAGS, 0o600)
        try:
            self._need_newline = not _ends_with_newline(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def _mark_degraded(self, exc: OSError) -> None:
        if exc.errno == errno.EBADF:
            # The descriptor is no longer ours (closed underneath us): never close or reuse it.
            self._fd = None
        if self._degraded_reason is not None:
            return
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        self._degraded_reason = f"{code}: {exc.strerror or exc}"
        logger.warning(
            "event log %s degraded (%s): events are still delivered but may be missing on disk",
            self.path,
            self._degraded_reason,
        )


def _fdatasync_and_close(fd: int) -> None:
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _encode_line(
    ids_json: str,
    seq: int,
    time_: str,
    type_: str,
    status: str | None,
    source: str,
    actor: dict[str, Any] | None,
    target: dict[str, Any] | None,
    data: dict[str, Any],
) -> bytes:
    """The event as one line: the bytes _encode(event) + "\n" would give, made twice as fast
    by formatting the fixed fields by hand (encode_basestring rejects a non-str)."""
    text = f'{{"seq":{seq},"time":"{time_}",{ids_json},"type":{_encode_str(type_)}'
    if status is not None:
        text += f',"status":{_encode_str(status)}'
    text += f',"source":{_encode_str(source)}'
    if actor is not None:
        text += ',"actor":' + _encode(actor)
    if target is not None:
        text += ',"target":' + _encode(target)
    text += ',"data":' + _encode(data) + "}\n"
    return text.encode("utf-8")


def read_events(
    path: Path,
    *,
    after_seq: int = 0,
    limit: int | None = None,
    types: Collection[str] | None = None,
) -> list[Event]:
    """Events of the log at `path` with seq > after_seq, in seq order, at most `limit`.

    `types` keeps events whose type is listed exactly or matches a listed family such as
    "connection.*"; None or empty keeps all. A missing file has no events. Torn or invalid
    lines are skipped.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return list(itertools.islice(iter_events(path, after_seq=after_seq, types=types), limit))


def iter_events(
    path: Path, *, after_seq: int = 0, types: Collection[str] | None = None
) -> Iterator[Event]:
    """Stream the events read_events() would return, reading the file line by line.

    With after_seq, a binary search over the file finds where to start, so paging through a
    long log costs a few reads per page. It relies on seqs growing along the file, which
    EventLog guarantees.
    """
    matches = _type_matcher(types)
    try:
        file = open(path, "rb")  # noqa: SIM115 -- the generator owns it
    except FileNotFoundError:
        return
    with file:
        if after_seq > 0:
            file.seek(_offset_after(file, after_seq))
        for line in file:
            seq = _quick_seq(line)
            if seq is not None and seq <= after_seq:
                continue  # skipped without parsing
            event = _parse_event(line)
            if event is None or event["seq"] <= after_seq:
                continue
            if matches is None or matches(event["type"]):
                yield event


def _offset_after(file: BinaryIO, after_seq: int) -> int:
    """A line start in `file` such that no line before it holds a seq above after_seq."""
    lo, hi = 0, os.fstat(file.fileno()).st_size
    while hi - lo > _SCAN_CHUNK:
        mid = (lo + hi) // 2
        file.seek(mid)
        file.readline()  # the rest of the line `mid` falls in
        seq = None
        while seq is None and file.tell() < hi:
            line = file.readline()
            if not line:
                break
            seq = _quick_seq(line)
            if seq is None and (event := _parse_event(line)) is not None:
                seq = event["seq"]
        if seq is not None and seq <= after_seq:
            lo = file.tell()  # after a line at or before the cursor: so is all before it
        else:
            hi = mid
    return lo


def _quick_seq(line: bytes) -> int | None:
    """The seq of a line this module wrote, read from its first bytes (the line may be torn)."""
    if not line.startswith(_SEQ_PREFIX):
        return None
    end = line.find(b",", len(_SEQ_PREFIX))
    if end < 0:
        return None
    digits = line[len(_SEQ_PREFIX) : end]
    return int(digits) if digits.isdigit() else None


def _type_matcher(types: Collection[str] | None) -> Callable[[str], bool] | None:
    if isinstance(types, str):
        raise TypeError("types must be a collection of strings, not a string")
    if not types or "*" in types:
        return None
    exact = frozenset(t for t in types if not t.endswith(".*"))
    prefixes = tuple(t[:-1] for t in types if t.endswith(".*"))  # "connection.*" -> "connection."
    return lambda type_: type_ in exact or type_.startswith(prefixes)


def _parse_event(line: bytes) -> Event | None:
    """The event on `line`, or None if the line is torn, blank or not an event."""
    try:
        event = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    if not isinstance(event, dict):
        return None
    seq = event.get("seq")
    if type(seq) is not int or seq < 1 or not isinstance(event.get("type"), str):
        return None
    return event


def _ends_with_newline(fd: int) -> bool:
    """Whether the next write on `fd` starts a fresh line (true for empty or special files)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return True
    return os.pread(fd, 1, st.st_size - 1) == b"\n"


def _scan(fd: int) -> tuple[int, bool]:
    """(seq of the last valid event, whether the file ends mid-line), reading backwards.

    Cost is proportional to the torn or invalid tail, not to the file.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # a device or a pipe: nothing to recover
        return 0, False
    need_newline = not _ends_with_newline(fd)
    pos = st.st_size
    pieces: list[bytes] = []  # the line being assembled, last piece first
    while pos > 0:
        start = max(0, pos - _SCAN_CHUNK)
        block = os.pread(fd, pos - start, start)
        pos = start
        hi = len(block)
        while (newline := block.rfind(b"\n", 0, hi)) >= 0:
            pieces.append(block[newline + 1 : hi])
            event = _parse_event(b"".join(reversed(pieces)))
            pieces.clear()
            if event is not None:
                return event["seq"], need_newline
            hi = newline
        pieces.append(block[:hi])
    event = _parse_event(b"".join(reversed(pieces)))
    return (event["seq"] if event is not None else 0), need_newline
