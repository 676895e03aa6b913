"""State files on disk: atomic JSON records, RFC 3339 timestamps and resource ids.

Records (`runtime.json`, `run.json`) are replaced atomically: a reader sees either the old
file or the new one, never a mix, and after a crash the file is one of the two. Files are
created mode 0600 (mkstemp's default): the state dir is private to the daemon's user.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = [
    "CorruptFileError",
    "encode_record",
    "format_rfc3339",
    "fsync_dir",
    "make_id",
    "now_rfc3339",
    "read_json",
    "write_bytes_atomic",
    "write_json_atomic",
]

# NaN and Infinity are not JSON: refuse them rather than write a file other readers reject.
_record_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=2)


class CorruptFileError(ValueError):
    """A state file exists but does not hold valid UTF-8 JSON."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def encode_record(obj: Any) -> bytes:
    """`obj` as the JSON bytes of a state file. Raises ValueError (NaN) or TypeError."""
    return (_record_encoder.encode(obj) + "\n").encode("utf-8")


def write_json_atomic(path: Path, obj: Any, *, durable: bool = True) -> None:
    """Replace `path` with `obj` as JSON, atomically, and durably unless `durable` is False
    (then without fsyncs: the caller has the record made durable later).

    The parent directory must exist. The object is encoded before any file is touched, so an
    unencodable object (or NaN) raises without side effects. On any failure the temporary
    file is removed and the previous content of `path` is left as it was.
    """
    write_bytes_atomic(path, encode_record(obj), durable=durable)


def write_bytes_atomic(path: Path, payload: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `payload`: write a temporary file, fsync, rename, fsync the dir."""
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    if durable:  # the rename is durable only once the directory entry is on disk
        fsync_dir(directory)


def read_json(path: Path) -> Any | None:
    """Return the JSON content of `path`, or None if it does not exist.

    Raises CorruptFileError (a ValueError) if the file is not valid UTF-8 JSON.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(path, str(exc)) from exc


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries (creations, renames) to disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- time ------------------------------------------------------------------------------------

# Formatting the date part is most of the cost; cache it per second (event logs call this
# once per event). A tuple is replaced whole, so threads never see half an update.
_second_cache: tuple[int, str] = (-1, "")


def _format_us(epoch_us: int) -> str:
    global _second_cache
    second, micros = divmod(epoch_us, 1_000_000)
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, prefix)
    return f"{prefix}.{micros:06d}Z"


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with microseconds: "2026-11-28T09:44:51.123456Z"."""
    return _format_us(time.time_ns() // 1000)


def format_rfc3339(epoch_s: float) -> str:
    """A Unix timestamp (seconds) in the same format as now_rfc3339()."""
    return _format_us(round(epoch_s * 1_000_000))


# -- ids -------------------------------------------------------------------------------------

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"  # ascending in ASCII, so text order = number order
_TIME_CHARS = 10  # 50 bits of milliseconds: good until the year 37000
_RANDOM_CHARS = 16  # 80 bits
_RANDOM_LIMIT = 1 << (5 * _RANDOM_CHARS)

_id_lock = threading.Lock()
_last_ms = 0
_last_random = 0


def _crockford(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


def make_id(prefix: str) -> str:
    """A new id like "run_01jdxq3m7z8k2c4v6b8n0p2r4t6w": prefix, millisecond time, randomness.

    Ids from one process sort (as text) in creation order, even within one millisecond or
    when the clock steps back: the time part never decreases, and within one millisecond the
    random part grows by a random step (so the next id still cannot be guessed).
    """
    if not prefix.isidentifier() or not prefix.isascii():
        raise ValueError(f"id prefix must be a short ASCII word, got {prefix!r}")
    global _last_ms, _last_random
    with _id_lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms = now_ms
            _last_random = secrets.randbelow(_RANDOM_LIMIT)
        else:
            _last_random += 1 + secrets.randbelow(1 << 40)
            if _last_random >= _RANDOM_LIMIT:  # ~2**40 ids in one millisecond: borrow the next
                _last_ms += 1
                _last_random = secrets.randbelow(_RANDOM_LIMIT)
        ms, rand = _last_ms, _last_random
    return f"{prefix}_{_crockford(ms, _TIME_CHARS)}{_crockford(rand, _RANDOM_CHARS)}"
