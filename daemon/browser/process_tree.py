"""One browser's processes: finding them in /proc, signalling them, reaping them, and waiting
until none is left.

"The tree" is the main process, every process of its session or group, their descendants,
and, when sweeping, the processes carrying the browser's spawn tag in their environment
(crashpad leaves the group, but not the environment; spawn_tags.py says why nothing else is
ever signalled). /proc is read in a worker thread: with many browsers it holds hundreds of
processes, and reading them all takes milliseconds that would otherwise stall every client
of the daemon, several times per stop.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable

import trio

from . import procutil, spawn_tags

__all__ = ["ProcessTree"]

log = logging.getLogger(__name__)

KILL_WAIT_S = 10.0  # after SIGKILL: only uninterruptible sleep takes this long


class ProcessTree:
    def __init__(
        self, *, pid: int, create_time: float, tag: str,
        popen: subprocess.Popen[bytes] | procutil.AdoptedPopen,
        poll_main: Callable[[], bool],
    ) -> None:
        """`poll_main` reaps the main process if it has exited (its owner records how);
        `tag` is the spawn tag the browser was started with."""
        self.pid = pid
        self.create_time = create_time
        self.tag = tag
        self._popen = popen
        self._poll_main = poll_main
        self.gone = False  # set by a sweeping check that found nothing: final

    def pids(self, procs: list[procutil.ProcInfo] | None = None) -> list[int]:
        """The live (non-zombie) processes of the tree, main process first; found among
        `procs` when the caller has read /proc already, else in /proc. Blocks (reads the
        environments of processes new since the last call): call it in a worker thread."""
        if procs is None:
            procs = procutil.scan()
        tree = [p for p in self.members(procs, sweep=True) if not p.zombie]
        return sorted((p.pid for p in tree), key=lambda pid: (pid != self.pid, pid))

    def members(self, procs: list[procutil.ProcInfo], *, sweep: bool,
                escaped: list[procutil.ProcInfo] | None = None) -> list[procutil.ProcInfo]:
        """The tree's processes among `procs`: the group and their descendants, and with
        `sweep` also the processes carrying the tree's spawn tag (`escaped`, when the caller
        already found them)."""
        if self.gone:
            return []
        # The session id is the main pid; while the main process is unreaped nobody else can
        # have it. Afterwards the kernel keeps it while any member lives, and every member was
        # born after the main process: the create-time check keeps a reused pid out.
        born_after = self.create_time - 0.02
        members = spawn_tags.session_members(self.pid, born_after, procs)
        if self._popen.returncode is None:
            members.add(self.pid)
        if sweep:
            if escaped is None:
                escaped = self._escaped(procs)
            members |= {p.pid for p in escaped}
        members |= procutil.descendants(members, procs)
        tree = [p for p in procs if p.pid in members]
        procutil.remember_helpers(p for p in tree if p.pid != self.pid)
        return tree

    async def scan(self, *, sweep: bool) -> tuple[list[procutil.ProcInfo],
                                                  list[procutil.ProcInfo]]:
        """(every process, the tree's), read from /proc in a worker thread."""
        def read() -> tuple[list[procutil.ProcInfo], list[procutil.ProcInfo]]:
            procs = procutil.scan()
            spawn_tags.forget_gone(procs)  # a full scan: the tags of the gone can go
            return procs, self._escaped(procs) if sweep else []

        procs, escaped = await trio.to_thread.run_sync(read)
        return procs, self.members(procs, sweep=sweep, escaped=escaped)

    def _escaped(self, procs: list[procutil.ProcInfo]) -> list[procutil.ProcInfo]:
        """Processes with the tree's tag, wherever they went (reads /proc: blocks)."""
        return spawn_tags.tagged(procs, self.tag.__eq__, born_after=self.create_time - 0.02)

    async def signal(self, sig: int, *, sweep: bool) -> None:
        if self.gone:
            return
        if self._popen.returncode is None:  # unreaped, so the group id is still ours
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        _, tree = await self.scan(sweep=sweep)
        spawn_tags.send_signal((p for p in tree if not p.zombie and p.pid != self.pid), sig)

    async def check_gone(self, *, sweep: bool) -> bool:
        """Reap what can be reaped; True once the main process is reaped and no member lives.

        With sweep=False only the group and descendants count; with sweep=True also the
        processes naming the user-data-dir, and a True answer is final.
        """
        if self.gone:
            return True
        self._poll_main()
        procs, tree = await self.scan(sweep=sweep)
        procutil.reap_orphans(procs)
        gone = self._popen.returncode is not None and all(p.zombie for p in tree)
        if gone and sweep:
            self.gone = True
        return gone

    async def wait_gone(self, *, sweep: bool) -> None:
        delay = 0.005
        while not await self.check_gone(sweep=sweep):
            await trio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def kill(self, *, sweep: bool) -> None:
        """SIGKILL the tree, again and again, until it is gone (bounded by KILL_WAIT_S)."""
        with trio.move_on_after(KILL_WAIT_S) as scope:
            while not await self.check_gone(sweep=sweep):
                await self.signal(signal.SIGKILL, sweep=sweep)
                with trio.move_on_after(0.2):
                    await self.wait_gone(sweep=sweep)
        if scope.cancelled_caught:
            log.error("browser pid %d: processes survive SIGKILL: %s", self.pid, self.pids())
