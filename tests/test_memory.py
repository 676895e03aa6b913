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
from browserd.daemon.system.memory import release_free_memory

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


RECEIVE_PATTERN = r"""
import socket, sys
from browserd.daemon.system.memory import fix_mmap_threshold, _libc_function

def heap_rss_kib():
    rss, in_heap = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            in_heap = line.rstrip().endswith("[heap]")
        elif in_heap and line.startswith("Rss:"):
            rss += int(fields[1])
    return rss

if sys.argv[1] == "fixed":
    fix_mmap_threshold()
big = bytes(300_000)  # a large block freed: glibc raises its mmap threshold, unless fixed
del big
a, b = socket.socketpair()
before = heap_rss_kib()
kept = []
for i in range(20_000):  # the daemon's read loop: 256 KiB asked for, a small message received
    a.send(b"x" * 100)
    data = b.recv(256 * 1024)
    if i % 50 == 0:
        kept.append(data)  # a few outlive the read (queued, logged)
    scratch = [bytes(600) for _ in range(3)]  # other work between reads
_libc_function("malloc_trim")(0)
print(heap_rss_kib() - before)
"""


def test_a_fixed_mmap_threshold_keeps_receive_buffers_out_of_the_heap() -> None:
    """The daemon's read pattern grows glibc's main heap once the threshold has moved up, and
    does not with fix_mmap_threshold (memory.py explains the mechanism)."""
    growth = {}
    for mode in ("dynamic", "fixed"):
        result = subprocess.run([sys.executable, "-c", RECEIVE_PATTERN, mode],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        growth[mode] = int(result.stdout)
    assert growth["dynamic"] > 600, f"the pattern no longer grows the heap: {growth} KiB"
    assert growth["fixed"] < 200, f"the heap grew with the threshold fixed: {growth} KiB"
