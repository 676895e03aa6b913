"""release_free_memory: cyclic garbage is collected and freed heap pages go back to the system."""

from __future__ import annotations

import gc

import psutil
import trio

from browserd.daemon.memory import release_free_memory


class _Cycle:
    def __init__(self) -> None:
        self.me = self
        self.payload = bytes(200_000)


async def test_garbage_and_freed_pages_are_given_back() -> None:
    me = psutil.Process()
    gc.disable()  # as in an idle daemon: nothing allocates, so the collector does not run
    try:
        before = me.memory_info().rss
        # Big blocks with small live ones between them (freeing the big ones leaves holes glibc
        # does not give back by itself), and cycles only the collector frees.
        blocks = []
        pins = []
        for _ in range(300):
            blocks.append(bytes(100_000))
            pins.append(bytes(1000))
        for _ in range(100):
            _Cycle()
        blocks.clear()
        held = me.memory_info().rss
        assert held - before > 20 * 2**20
        async with trio.open_nursery() as nursery:
            await nursery.start(release_free_memory, 0.05)
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        after = me.memory_info().rss
    finally:
        gc.enable()
    assert held - after > (held - before) * 0.6, (before >> 20, held >> 20, after >> 20)
    assert len(pins) == 300
