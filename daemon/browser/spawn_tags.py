"""Which processes the daemon started, and signalling only those.

A command line proves nothing: any process, of any user, may name a path under a profile in
its argv, and a daemon that swept "whatever names the user-data-dir" once SIGKILLed such a
bystander. What the daemon knows instead:

- the browser's main process is its own child, started in a new session: every process in
  that session or group, born after it, is part of the browser (the kernel never hands out a
  pid that a live process still uses as its session or group id);
- every browser is spawned with `BROWSERD_SPAWN_TAG=<spawn key>.<spawn id>` in its
  environment, which its helpers inherit, including those that leave the session (Chromium's
  crashpad handler does). The spawn key is random and belongs to the state dir
  (state_lock.py); /proc/<pid>/environ is readable only by the process's own user and root.
  So a tag is found only on what a daemon of this state dir started, and a sweep of what an
  earlier daemon left behind looks for the key;
- a recorded `(pid, start time)` pair names one process for ever: a reused pid has a later
  start time.

Signals go through a pidfd opened after checking the start time again, so a pid that was
reused between the read of /proc and the signal is never hit; this process and its ancestors
are never signalled.
"""

from __future__ import annotations

import logging
import os
import signal as signals
from collections.abc import Callable, Iterable

from . import procutil
from .procutil import ProcInfo

__all__ = [
    "ENV_VAR",
    "forget_gone",
    "make_tag",
    "send_signal",
    "session_members",
    "sweep_leftovers",
    "tag_of",
]

log = logging.getLogger(__name__)

ENV_VAR = "BROWSERD_SPAWN_TAG"
_NEEDLE = ENV_VAR.encode() + b"="
# A process's create time as /proc shows it is rounded to clock ticks (10 ms).
_SAME_START_S = 0.05

# (pid, create time) -> the process's tag (None: it has none). The environment a process was
# started with does not change, so each process is read once; `forget_gone` prunes.
_tags: dict[tuple[int, float], str | None] = {}


def make_tag(spawn_key: str, spawn_id: str) -> str:
    return f"{spawn_key}.{spawn_id}"


def tag_of(proc: ProcInfo) -> str | None:
    """The spawn tag in the process's environment, or None (none, not ours to read, gone)."""
    key = (proc.pid, proc.create_time)
    try:
        return _tags[key]
    except KeyError:
        pass
    tag = _read_tag(proc.pid)
    _tags[key] = tag
    return tag


def forget_gone(procs: Iterable[ProcInfo]) -> None:
    """Drop cached tags of processes not among `procs` (a fresh scan)."""
    live = {(p.pid, p.create_time) for p in procs}
    for key in list(_tags):  # a snapshot: other worker threads may add tags meanwhile
        if key not in live:
            _tags.pop(key, None)


def _read_tag(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(_NEEDLE):
            return entry[len(_NEEDLE):].decode(errors="replace")
    return None


def session_members(leader: int, born_after: float, procs: Iterable[ProcInfo]) -> set[int]:
    """The pids in `procs` of the session or group led by `leader`, born after it (the
    leader itself included while it lives)."""
    return {p.pid for p in procutil.iter_group(leader, procs) if p.create_time >= born_after}


def tagged(procs: Iterable[ProcInfo], match: Callable[[str], bool], *,
           born_after: float = 0.0) -> list[ProcInfo]:
    """The live processes among `procs` whose tag `match`es (only processes born after
    `born_after` are read)."""
    found = []
    for p in procs:
        if p.zombie or p.create_time < born_after:
            continue
        tag = tag_of(p)
        if tag is not None and match(tag):
            found.append(p)
    return found


def send_signal(procs: Iterable[ProcInfo], sig: int = signals.SIGKILL) -> list[int]:
    """Signal each process that is still the one `procs` describes; returns the pids hit."""
    protected = _protected_pids()
    sent = []
    for p in procs:
        if p.pid in protected:
            continue
        try:
            pidfd = os.pidfd_open(p.pid)
        except (ProcessLookupError, OSError):
            continue  # gone (or out of fds: the next round tries again)
        try:
            now = procutil.read_proc(p.pid)
            if now is None or abs(now.create_time - p.create_time) > _SAME_START_S:
                continue  # the pid was reused: not the process we found
            signals.pidfd_send_signal(pidfd, sig)
            sent.append(p.pid)
        except ProcessLookupError:
            continue
        except PermissionError:
            log.warning("not allowed to signal pid %d", p.pid)
        finally:
            os.close(pidfd)
    return sent


def sweep_leftovers(spawn_key: str, *, keep: Iterable[str] = (),
                    recorded: Iterable[tuple[int, float]] = ()) -> dict[str, list[int]]:
    """SIGKILL what earlier daemons of this state dir left running: every process tagged
    with `spawn_key` (except the tags in `keep`: adopted browsers), the sessions they lead,
    and the descendants of all of them; also each `recorded` (pid, start time) browser that
    still runs, with its session. Returns the pids killed by tag ("" for the recorded ones
    that carry no tag of ours)."""
    procs = procutil.scan()
    keep = set(keep)
    prefix = spawn_key + "."
    groups: dict[str, set[int]] = {}
    by_pid = {p.pid: p for p in procs}
    for p in tagged(procs, lambda tag: tag.startswith(prefix) and tag not in keep):
        tag = tag_of(p) or ""
        groups.setdefault(tag, set()).update(
            {p.pid} | session_members(p.pid, p.create_time - _SAME_START_S, procs))
    for pid, create_time in recorded:
        found = by_pid.get(pid)
        if found is None or found.zombie or abs(found.create_time - create_time) > _SAME_START_S:
            continue
        recorded_tag = tag_of(found)
        if recorded_tag is not None and recorded_tag in keep:
            continue
        members = {pid} | session_members(pid, create_time - _SAME_START_S, procs)
        groups.setdefault(recorded_tag or "", set()).update(members)
    killed: dict[str, list[int]] = {}
    for tag, pids in groups.items():
        pids |= procutil.descendants(pids, procs)
        procutil.remember_helpers(by_pid[pid] for pid in pids if pid in by_pid)
        hit = send_signal(by_pid[pid] for pid in sorted(pids) if pid in by_pid)
        if hit:
            killed[tag] = hit
    return killed


def _protected_pids() -> set[int]:
    """This process and its ancestors, and init: never signalled."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        info = procutil.read_proc(pid)
        if info is None:
            break
        pid = info.ppid
    return pids | {1}
