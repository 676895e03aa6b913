"""release_free_memory: freed heap pages go back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import psutil
import trio

from browserd.daemon.memory import release_free_memory


async def test_freed_fragmented_memory_is_returned() -> None:
    me = psutil.Process()
    # Fragment the heap the way shrunk receive buffers do: big blocks with small live ones
    # between them, so freeing the big ones leaves holes glibc does not give back by itself.
    blocks: list[bytes] | None = []
    pins = []
    for _ in range(300):
        blocks.append(bytes(100_000))
        pins.append(bytes(1000))
    blocks = None
    held = me.memory_info().rss
    async with trio.open_nursery() as nursery:
        await nursery.start(release_free_memory, 0.05)
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    after = me.memory_info().rss
    assert after < held - 10 * 2**20, f"RSS {held >> 20} MiB -> {after >> 20} MiB"
    assert len(pins) == 300
