"""A warm pool: pre-started ephemeral browsers, so a launch without a profile is instant.

`pool.size` browsers wait, started with the daemon's default flags on fresh throwaway
profiles. A launch that asks for nothing special (no profile, headless, no extra args) takes
one; the pool refills in the background. Each pooled browser serves exactly one run and is
never reused, so a run never sees another run's state. Pooled browsers count against
`limits.max_runtimes`: the pool only grows into free slots, and gives a browser back (stops
it) when a launch needs the slot for something the pool cannot serve.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import trio

from ..base.errors import ApiError
from ..store.roots import remove_tree
from ..store.storage import make_id
from .process import BrowserProcess, LaunchSpec

log = logging.getLogger(__name__)

_RETRY_AFTER_FAILURE_S = 5.0


class WarmPool:
    def __init__(self, *, size: int, directory: Path, spec_for: Callable[[Path], LaunchSpec],
                 free_slots: Callable[[], int], stop_grace_s: float) -> None:
        self.size = size
        self.directory = directory
        self._spec_for = spec_for  # the launch spec of a pooled browser on a given profile dir
        self._free_slots = free_slots  # runtime slots left, not counting the pool
        self._stop_grace_s = stop_grace_s
        self._ready: list[BrowserProcess] = []
        self._starting = 0
        self._wakeup = trio.Event()
        self._nursery: trio.Nursery | None = None

    def __len__(self) -> int:
        return len(self._ready)

    def status(self) -> dict[str, int]:
        """For daemon.status: the configured size, browsers ready to serve, and starting."""
        return {"size": self.size, "ready": len(self._ready), "starting": self._starting}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Keep the pool filled until cancelled; then stop every pooled browser."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                while True:
                    self._fill()
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
        finally:
            with trio.CancelScope(shield=True):
                await self.drain()

    def poke(self) -> None:
        """Something changed (a run ended, a browser was taken): look at the pool again."""
        self._wakeup.set()

    def _fill(self) -> None:
        assert self._nursery is not None
        while (len(self._ready) + self._starting < self.size
               and self._free_slots() - len(self._ready) - self._starting > 0):
            self._starting += 1
            self._nursery.start_soon(self._start_one)

    async def _start_one(self) -> None:
        user_data_dir = self.directory / make_id("pool")
        try:
            process = await BrowserProcess.launch(self._spec_for(user_data_dir), self._nursery_())
        except ApiError as exc:
            log.warning("could not pre-start a pooled browser: %s", exc.message)
            await trio.to_thread.run_sync(remove_tree, user_data_dir, self.directory)
            await trio.sleep(_RETRY_AFTER_FAILURE_S)
            return
        finally:
            self._starting -= 1
            self.poke()
        self._ready.append(process)
        self._nursery_().start_soon(self._evict_when_dead, process)

    def _nursery_(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    async def _evict_when_dead(self, process: BrowserProcess) -> None:
        """A pooled browser that dies while waiting is removed, and replaced."""
        await process.wait_exited()
        if process in self._ready:
            self._ready.remove(process)
            await self._discard(process)
            self.poke()

    def take(self) -> BrowserProcess | None:
        """A ready, never-used browser, or None. Its pump tasks stay in the pool's nursery,
        which lives as long as the daemon; the new owner only waits on it and stops it."""
        while self._ready:
            process = self._ready.pop(0)
            if process.exit_status is None:
                self.poke()
                return process
        return None

    async def give_back_one(self) -> bool:
        """Stop one pooled browser to free its slot; False when the pool is empty."""
        if not self._ready:
            return False
        await self._discard(self._ready.pop())
        return True

    async def drain(self) -> None:
        while self._ready:
            await self._discard(self._ready.pop())

    async def _discard(self, process: BrowserProcess) -> None:
        await process.stop(self._stop_grace_s)
        await trio.to_thread.run_sync(remove_tree, process.user_data_dir, self.directory)
