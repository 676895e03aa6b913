"""Linux process plumbing for the supervisor: spawning with a parent-death signal, reading
/proc and reaping orphaned helpers. Which processes are ours to signal is spawn_tags.py's.

Plain functions here never wait: they read /proc, send signals or spawn, and return.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import attrs
import psutil
import trio

__all__ = [
    "ProcInfo",
    "descendants",
    "iter_group",
    "read_proc",
    "reap_orphans",
    "remember_helpers",
    "run_orphan_reaper",
    "scan",
    "set_child_subreaper",
    "spawn",
]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def set_child_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (PR_SET_CHILD_SUBREAPER).

    Browser helpers whose parent dies then become our children instead of init's, so the
    daemon sees them and must reap them: call `reap_orphans` periodically and after stops.
    """
    if _prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


# ------------------------------------------------------------------ spawning


# util-linux's setpriv arms the parent-death signal in the child and execs the browser. With
# it, Popen needs no preexec_fn, and CPython can vfork() instead of fork()ing the whole daemon:
# 0.5 ms instead of 3-14 ms per launch (bench/FINDINGS.md, 1). It is on every Debian system;
# without it, the preexec_fn does the same job the slow way (a fork of the whole daemon).
_SETPRIV = shutil.which("setpriv")


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec: no locks, no logging
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the daemon died before the signal was armed
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _check_executable(program: str) -> None:
    """Raise the OSError Popen would raise for a program that cannot be run: behind setpriv,
    a missing executable would otherwise show as setpriv exiting with 127."""
    found = program if os.sep in program else shutil.which(program)
    if found is None or not os.path.isfile(found):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    if not os.access(found, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], output_fd: int,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session, with SIGKILL as its parent-death signal unless
    `die_with_parent` is False (live restore: the browser outlives a daemon that dies).

    stdout and stderr go to `output_fd`, stdin is /dev/null, no other fd is inherited.
    Raises OSError when the executable cannot be started.

    Call it from the thread that runs the event loop: PR_SET_PDEATHSIG fires when the
    *thread* that spawned the child exits, and that one lives as long as the daemon (a trio
    worker thread exits after 10 s idle, and every browser it spawned would die with it). The
    signal is armed by setpriv, which then execs the browser (same pid); spawning takes 0.5
    ms then. A daemon that dies in the millisecond between the spawn and the arming leaves
    a browser behind: the next daemon's start-up sweep of the user-data-dirs removes it.
    """
    command = list(argv)
    preexec = None
    if die_with_parent and _SETPRIV is not None:
        _check_executable(command[0])
        command = [_SETPRIV, "--pdeathsig", "KILL", "--", *command]
    elif die_with_parent:
        preexec = _die_with_parent(os.getpid())
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=output_fd, stderr=output_fd,
        env=dict(env), start_new_session=True, close_fds=True, preexec_fn=preexec,
    )


class AdoptedPopen:
    """Stands in for the Popen of a browser an earlier daemon started (live restore).

    It is not our child, so it cannot be waited for: exit shows as its pidfd turning readable,
    and `returncode` then becomes 0 (meaning "gone"; the real status is unknowable).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd: int | None = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self._pidfd is not None:
            readable, _, _ = select.select([self._pidfd], [], [], 0)
            if readable:
                os.close(self._pidfd)
                self._pidfd = None
                self.returncode = 0
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired([str(self.pid)], timeout or 0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode


# ------------------------------------------------------------------ /proc


@attrs.frozen
class ProcInfo:
    """One process as /proc/<pid>/stat shows it. create_time matches psutil's."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    create_time: float

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def read_proc(pid: int, boot_time: float | None = None) -> ProcInfo | None:
    """The process `pid`, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself hold spaces and parentheses.
    fields = data[data.rindex(b")") + 2 :].split()
    return ProcInfo(
        pid=pid,
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        sid=int(fields[3]),
        state=fields[0].decode(),
        create_time=int(fields[19]) / _CLOCK_TICKS
        + (psutil.boot_time() if boot_time is None else boot_time),
    )


def scan() -> list[ProcInfo]:
    """Every process visible in /proc."""
    procs = []
    boot_time = psutil.boot_time()
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = read_proc(int(name), boot_time)
            if info is not None:
                procs.append(info)
    return procs


def own_children() -> list[ProcInfo] | None:
    """The daemon's own child processes: what `reap_orphans` looks at. Read from
    /proc/self/task/*/children (a few small files, whatever else runs on the machine); None
    on a kernel without CONFIG_PROC_CHILDREN, which does not have them."""
    if not os.path.exists(f"/proc/self/task/{os.getpid()}/children"):
        return None
    pids: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                pids.update(int(pid) for pid in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    boot_time = psutil.boot_time()
    return [info for pid in pids if (info := read_proc(pid, boot_time)) is not None]


def descendants(roots: Iterable[int], procs: Iterable[ProcInfo]) -> set[int]:
    """The pids of every descendant of `roots` (not the roots themselves)."""
    children: dict[int, list[int]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p.pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


# ------------------------------------------------------------------ reaping

# Browser helpers seen alive, as (pid, create_time). A helper that started its own session
# (crashpad does) looks, once orphaned to us, just like a child we spawned ourselves; this
# record is what lets `reap_orphans` tell them apart. Pruned as the pids disappear.
# Written from worker threads too (the memory monitor finds a tree's helpers in one), so it
# is only ever iterated over a snapshot, as spawn_tags does with its cache.
_helpers: dict[int, float] = {}


def remember_helpers(procs: Iterable[ProcInfo]) -> None:
    """Record browser helper processes, so `reap_orphans` may reap them once orphaned to us."""
    for p in procs:
        _helpers[p.pid] = p.create_time


def reap_orphans(procs: list[ProcInfo] | None = None) -> list[int]:
    """Reap zombie children that were orphaned to us (as child subreaper). Never blocks.

    It must not steal the exit status of a child someone waits for: a browser's main process
    (its BrowserProcess waits) or any process spawned through trio or subprocess. So it never
    calls waitpid(-1): it reaps specific zombies that we cannot have spawned ourselves. A child
    we spawn stays in our session or leads a new one (sid == pid); an orphan from a browser's
    session has another session id. Helpers that lead their own session (crashpad) are reaped
    only when recorded by `remember_helpers` with the same pid and create time. `procs` is a
    fresh `scan()` when the caller has one.
    """
    me, my_sid = os.getpid(), os.getsid(0)
    reaped = []
    for p in scan() if procs is None else procs:
        if p.ppid != me or not p.zombie:
            continue
        spawned_by_us_possible = p.sid in (p.pid, my_sid)
        if spawned_by_us_possible and _helpers.get(p.pid) != p.create_time:
            continue
        try:
            pid, _ = os.waitpid(p.pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if pid:
            reaped.append(pid)
    for pid in [pid for pid in list(_helpers) if not os.path.exists(f"/proc/{pid}")]:
        _helpers.pop(pid, None)
    return reaped


async def run_orphan_reaper(
    *, interval_s: float = 2.0, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Call `reap_orphans` every `interval_s` seconds, for the daemon's lifetime.

    For a child subreaper: helpers orphaned while their browser runs (not only during a
    stop, which reaps as it goes) would otherwise stay zombies until the daemon exits.
    """
    task_status.started()
    while True:
        try:
            # A few small reads (own_children): cheaper on the loop than a thread hop. A
            # scan of every process in /proc, where the kernel lists no children, is a
            # worker thread's job.
            children = own_children()
            if children is None:
                children = await trio.to_thread.run_sync(scan)
            reap_orphans(children)
        except OSError as exc:  # out of descriptors (EMFILE), say: the next round catches up
            log.warning("orphan reaper: reading /proc failed (%s); retrying in %g s",
                        errno.errorcode.get(exc.errno or 0, exc), interval_s)
        await trio.sleep(interval_s)


def iter_group(pgid: int, procs: Iterable[ProcInfo]) -> Iterator[ProcInfo]:
    """The processes of process group or session `pgid`."""
    return (p for p in procs if p.pgid == pgid or p.sid == pgid)
