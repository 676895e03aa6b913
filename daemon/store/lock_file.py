"""A lock file that says who holds it: an flock on the file, and a small JSON record in it.

Profiles (`profiles/<name>/browserd.lock`) and the state dir (`daemon.lock`) are held this way:
the flock decides (it goes with the holder however it dies, and is never stale), and the record
lets a refusal name the holder. Plain functions on descriptors; they never wait.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["Held", "read_record", "take", "write_record"]

_RECORD_MAX = 4096


class Held(Exception):
    """Someone else holds the lock; `holder` is what its record says (None if unreadable)."""

    def __init__(self, holder: dict[str, Any] | None) -> None:
        super().__init__(holder)
        self.holder = holder


def take(path: Path) -> int:
    """An fd of `path` (created 0600, never through a symlink) holding its exclusive flock;
    Held if another process has it. OSError when the file cannot be opened."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = read_record(fd)
        os.close(fd)
        raise Held(holder) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_record(fd: int) -> dict[str, Any] | None:
    """The record in the lock file, or None (empty, unreadable, not a JSON object)."""
    try:
        value = json.loads(os.pread(fd, _RECORD_MAX, 0) or b"null")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_record(fd: int, record: dict[str, Any]) -> None:
    """Replace the record (the holder writes it once it has the lock)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
