"""release_free_memory: cyclic garbage is collected and freed heap pages go back to the system.

The measurement runs in a fresh interpreter: inside the test process the heap already holds
free space left by earlier tests, which would absorb the allocations this test makes.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import gc, json
import psutil, trio
from browserd.daemon.memory import release_free_memory

class Cycle:
    def __init__(self):
        self.me = self
        self.payload = bytes(200_000)

async def main():
    me = psutil.Process()
    gc.disable()  # as in an idle daemon: nothing allocates, so the collector does not run
    async with trio.open_nursery() as nursery:
        # Started first, as in the daemon: what exists at start is frozen, garbage made later
        # is not.
        await nursery.start(release_free_memory, 0.3)
        before = me.memory_info().rss
        # Big blocks with small live ones between them (freeing the big ones leaves holes
        # glibc does not give back by itself), and cycles only the collector frees.
        blocks, pins = [], []
        for _ in range(300):
            blocks.append(bytes(100_000))
            pins.append(bytes(1000))
        for _ in range(100):
            Cycle()
        blocks.clear()
        held = me.memory_info().rss
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    after = me.memory_info().rss
    print(json.dumps({"before": before, "held": held, "after": after, "pins": len(pins)}))

trio.run(main)
"""


def test_garbage_and_freed_pages_are_given_back() -> None:
    import json

    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    rss = json.loads(result.stdout)
    before, held, after = rss["before"], rss["held"], rss["after"]
    assert held - before > 20 * 2**20, rss
    assert held - after > (held - before) * 0.6, rss
