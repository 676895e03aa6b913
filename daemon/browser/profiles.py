"""Named persistent profiles: where they live, who holds one, and their housekeeping.

A profile is `<state>/profiles/<name>/`: the Chromium user-data-dir in `user-data/` and the
daemon's own lock file `browserd.lock`. Ownership is decided by an flock on that file, held by
the runtime using the profile for as long as its run lasts, so two runtimes (or two daemons on
one state dir) never share a profile, and a crash of the daemon releases it by itself. The
lock file also records the holder, so `profile.in_use` can say who has it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from ..base.errors import ApiError
from ..base.names import NAME_HINT, is_name, name_problem
from ..store import lock_file, storage
from ..store.roots import OutsideRoot, inside, remove_tree, resolved_inside

LOCK_FILE = "browserd.lock"
USER_DATA = "user-data"
# Chromium's own single-instance guard, and the endpoint file it writes; both go stale after a
# SIGKILL and then make the next launch fail or read a dead port.
SINGLETON_FILES = ("SingletonLock", "SingletonSocket", "SingletonCookie")
# Not copied by clone: they belong to the running browser, not to the profile's state.
_CLONE_SKIP = {*SINGLETON_FILES, "DevToolsActivePort", LOCK_FILE}


@attrs.define
class HeldProfile:
    """A profile held for one run: the flock'ed fd and the user-data-dir to launch with."""

    name: str
    user_data_dir: Path
    fd: int


class ProfileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        """The profile's directory. A name the rule refuses (names.py) never gets one: the
        params check refuses it first, and this refuses it again for names from elsewhere
        (a state file)."""
        if (problem := name_problem(name)) is not None:
            raise ApiError("rpc.invalid_params", f"profile: not a valid name: {problem}",
                           hint=NAME_HINT, data={"field": "profile"})
        return inside(self.root / name, self.root)

    def user_data_dir(self, name: str) -> Path:
        """The Chromium user-data-dir of the profile (which may not exist yet)."""
        return self.path(name) / USER_DATA

    def exists(self, name: str) -> bool:
        return self.user_data_dir(name).is_dir()

    # ------------------------------------------------------------------ holding

    def acquire(self, name: str, holder: dict[str, Any]) -> HeldProfile:
        """Take the profile for a run (creating it if new); `profile.in_use` if it is held."""
        base = self.path(name)
        user_data_dir = self.user_data_dir(name)
        try:  # a symlink in the way would carry the profile (and our writes) elsewhere
            resolved_inside(user_data_dir, self.root)
        except OutsideRoot:
            raise ApiError(
                "state.unwritable", f"Profile {name!r} leads outside {self.root}: refused.",
                hint=f"Something replaced {base} (or a directory in it) with a symbolic "
                     "link; remove that link, or use another profile name.",
                data={"profile": name, "path": str(base)},
            ) from None
        user_data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = lock_file.take(base / LOCK_FILE)
        except lock_file.Held as held:
            raise in_use(name, held.holder) from None
        lock_file.write_record(fd, {**holder, "since": storage.now_rfc3339()})
        return HeldProfile(name, user_data_dir, fd)

    def release(self, held: HeldProfile) -> None:
        os.ftruncate(held.fd, 0)
        os.close(held.fd)  # closing the fd drops the flock

    def holder(self, name: str) -> dict[str, Any] | None:
        """Who holds the profile now, or None. Probes the flock, so it is never stale."""
        lock = self.path(name) / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock_file.read_record(fd) or {}
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ records and housekeeping

    def describe(self, name: str) -> dict[str, Any]:
        """The Profile record: {name, size_bytes, in_use_by, last_used_at}."""
        if not self.exists(name):
            raise not_found(name)
        base = self.path(name)
        lock = base / LOCK_FILE
        last_used = lock.stat().st_mtime if lock.exists() else base.stat().st_mtime
        return {
            "name": name,
            "size_bytes": _tree_size(base / USER_DATA),
            "in_use_by": self.holder(name),
            "last_used_at": storage.format_rfc3339(last_used),
        }

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if is_name(p.name) and (p / USER_DATA).is_dir())

    def delete(self, name: str) -> None:
        if not self.exists(name):
            raise not_found(name)
        # Held while deleting, so a launch racing with the delete gets profile.in_use.
        held = self.acquire(name, {"operation": "delete"})
        try:
            remove_tree(self.path(name), self.root)
        finally:
            os.close(held.fd)

    def clone(self, name: str, to: str) -> None:
        """Copy a profile that no runtime holds to a new name (a login reused by several)."""
        if not self.exists(name):
            raise not_found(name)
        if self.path(to).exists():
            raise ApiError(
                "profile.exists", f"A profile named {to!r} already exists.",
                hint="Pick another name, or delete that profile first.", data={"profile": to},
            )
        staging = self.root / f".clone-{to}-{os.getpid()}"
        # Held while copying: a browser writing to the source mid-copy would tear the clone.
        held = self.acquire(name, {"operation": "clone", "to": to})
        try:
            shutil.copytree(self.path(name) / USER_DATA, staging / USER_DATA, symlinks=True,
                            ignore=lambda _dir, names: [n for n in names if n in _CLONE_SKIP])
            staging.rename(self.path(to))  # appears whole or not at all
        finally:
            self.release(held)
            remove_tree(staging, self.root)

    def clear_stale_singleton(self, user_data_dir: Path) -> dict[str, Any] | None:
        """Remove Chromium's SingletonLock when it provably belongs to a dead process.

        The lock is a symlink to `<hostname>-<pid>`. It is removed only when the hostname is
        ours and that pid is gone; a live lock (or one from another host sharing the disk) is
        left alone, and the launch then fails with Chromium's own message.
        """
        lock = user_data_dir / "SingletonLock"
        try:
            target = os.readlink(lock)
        except (FileNotFoundError, OSError):
            return None
        host, _, pid_text = target.rpartition("-")
        if host != socket.gethostname() or not pid_text.isdigit():
            return None
        if _pid_alive(int(pid_text)):
            return None
        for leftover in SINGLETON_FILES:
            try:
                (user_data_dir / leftover).unlink()
            except FileNotFoundError:
                pass
        return {"lock": target, "pid": int(pid_text)}


def not_found(name: str) -> ApiError:
    return ApiError("profile.not_found", f"There is no profile named {name!r}.",
                    hint="List profiles with `browserctl profiles`.", data={"profile": name})


def in_use(name: str, holder: dict[str, Any] | None) -> ApiError:
    return ApiError(
        "profile.in_use",
        f"Profile {name!r} is in use by {describe_holder(holder)}.",
        hint="Stop that runtime first, or clone the profile to a new name.",
        data={"profile": name, "holder": holder},
    )


def describe_holder(holder: dict[str, Any] | None) -> str:
    """'runtime default/crm (run run_…, since …)', or what else holds the profile."""
    holder = holder or {}
    if holder.get("operation"):
        return f"a {holder['operation']} in progress"
    if holder.get("space") and holder.get("name"):
        text = f"runtime {holder['space']}/{holder['name']}"
        details = [f"run {holder['run_id']}"] if holder.get("run_id") else []
        if holder.get("since"):
            details.append(f"since {holder['since']}")
        return text + (f" ({', '.join(details)})" if details else "")
    return "another runtime"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    return True


def _tree_size(root: Path) -> int:
    total = 0
    for path in _walk_files(root):
        try:
            total += path.lstat().st_size
        except OSError:
            continue
    return total


def _walk_files(root: Path) -> Iterator[Path]:
    for directory, _dirs, files in os.walk(root):
        for name in files:
            yield Path(directory) / name
