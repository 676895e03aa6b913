"""One daemon per state directory: an exclusive flock on `<state>/daemon.lock`, taken before
the daemon reads or changes anything there.

Two daemons on one state dir would each reconcile the other's live browsers as "lost" (and
kill them) and append to the same run logs. The lock is an flock, so it goes with the process
however it dies; the file also says who holds it (pid, socket, since when), for the refusal
message and for `browserctl doctor`. It also keeps the state dir's spawn key: a random value
that every browser started on this state dir carries in its environment (spawn_tags.py), by
which a later daemon finds what an earlier one left behind.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import attrs

from . import lock_file, storage

__all__ = ["LOCK_FILE", "StateDirBusy", "StateDirRefused", "StateLock"]

LOCK_FILE = "daemon.lock"


class StateDirRefused(Exception):
    """The daemon cannot take the state directory: it must not start."""


class StateDirBusy(StateDirRefused):
    """Another daemon holds the state directory."""

    def __init__(self, state_dir: Path, holder: dict[str, Any] | None) -> None:
        who = "another browserd"
        if holder and isinstance(holder.get("pid"), int):
            who += f" (pid {holder['pid']}"
            if holder.get("socket"):
                who += f", socket {holder['socket']}"
            who += ")"
        super().__init__(
            f"the state directory {state_dir} is in use by {who}; refusing to start. "
            "Stop that daemon first, or give this one its own --state-dir."
        )
        self.holder = holder


@attrs.define
class StateLock:
    """The held lock. `spawn_key` names this state dir in browsers' environments."""

    path: Path
    spawn_key: str
    _fd: int | None = attrs.field(alias="_fd")

    @classmethod
    def acquire(cls, state_dir: Path, *, socket: str) -> StateLock:
        """Take the state dir (creating it, mode 0700, if missing). Raises StateDirBusy when
        another daemon holds it, StateDirRefused when it cannot hold the lock file."""
        try:
            return cls._acquire(state_dir, socket)
        except OSError as exc:
            raise StateDirRefused(
                f"cannot take the state directory {state_dir}: {exc.strerror or exc}; "
                "check its permissions and free space, or choose another --state-dir"
            ) from None

    @classmethod
    def _acquire(cls, state_dir: Path, socket: str) -> StateLock:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / LOCK_FILE
        try:
            fd = lock_file.take(path)
        except lock_file.Held as held:
            raise StateDirBusy(state_dir, held.holder) from None
        previous = lock_file.read_record(fd) or {}
        key = previous.get("spawn_key")
        if not (isinstance(key, str) and key.isalnum() and 16 <= len(key) <= 64):
            key = secrets.token_hex(12)
        record = {"pid": os.getpid(), "socket": socket, "since": storage.now_rfc3339(),
                  "spawn_key": key}
        try:
            lock_file.write_record(fd, record)
        except OSError:
            os.close(fd)
            raise
        return cls(path, key, fd)

    def release(self) -> None:
        """Drop the lock (closing the fd drops the flock). The file stays: it keeps the key."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

