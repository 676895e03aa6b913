"""PSS from /proc/<pid>/smaps_rollup, and the estimate between exact readings (daemon/pss.py).

Real processes: a child Python that allocates (and touches) memory on command, so its RSS and
PSS move by known amounts.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from browserd.daemon.services.pss import PSS_DRIFT_BYTES, Estimator, read_pss

MIB = 1024 * 1024

GROWER = r"""
import sys
held = []
for line in sys.stdin:
    held.append(bytearray(int(line)) if int(line) else b"")
    for block in held[-1:]:
        for i in range(0, len(block), 4096):
            block[i] = 1  # touched: resident
    print("ok", flush=True)
"""


class Grower:
    """A child process that grows its private memory when told to."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", GROWER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.grow(0)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def grow(self, nbytes: int) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{nbytes}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "ok\n"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def grower() -> Iterator[Grower]:
    child = Grower()
    yield child
    child.close()


def test_read_pss_of_a_live_and_a_gone_process(grower: Grower) -> None:
    pss = read_pss(grower.pid)
    assert pss is not None and 0 < pss <= grower.rss()
    # Its private pages count whole in PSS: 32 MiB more resident is 32 MiB more PSS.
    grower.grow(32 * MIB)
    grown = read_pss(grower.pid)
    assert grown is not None and abs(grown - pss - 32 * MIB) < 2 * MIB
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=10)
    with pytest.raises(ProcessLookupError):
        read_pss(gone.pid)


def test_shared_pages_count_once_across_processes(grower: Grower) -> None:
    """Two processes of the same program: their summed RSS counts the shared library pages
    twice, their summed PSS once."""
    other = Grower()
    try:
        pids = [grower.pid, other.pid]
        rss = sum(psutil.Process(pid).memory_info().rss for pid in pids)
        pss = sum(read_pss(pid) or 0 for pid in pids)
        assert 0 < pss < rss
    finally:
        other.close()


def test_estimate_between_readings_follows_rss(grower: Grower) -> None:
    estimator = Estimator()
    first = estimator.total({grower.pid: grower.rss()})
    assert estimator.reads == 1 and first > 0
    assert estimator.total({grower.pid: grower.rss()}) == first  # not due: no reading
    assert estimator.reads == 1

    grower.grow(PSS_DRIFT_BYTES // 2)  # within the drift: estimated from the RSS change
    estimate = estimator.total({grower.pid: grower.rss()})
    assert estimator.reads == 1
    exact = read_pss(grower.pid)
    assert exact is not None and abs(estimate - exact) < MIB, (estimate, exact)

    grower.grow(PSS_DRIFT_BYTES * 2)  # past the drift: read again
    estimator.total({grower.pid: grower.rss()})
    assert estimator.reads == 2

    aged = Estimator(max_age_s=0.0)  # every reading is too old by the next sample
    aged.total({grower.pid: grower.rss()})
    aged.total({grower.pid: grower.rss()})
    assert aged.reads == 2


def test_a_sum_over_the_limit_is_read_exactly(grower: Grower) -> None:
    other = Grower()
    try:
        estimator = Estimator()
        rss = {grower.pid: grower.rss(), other.pid: other.rss()}
        total = estimator.total(rss)
        assert estimator.reads == 2
        assert estimator.total(rss, exact_above=total * 2) == total
        assert estimator.reads == 2  # under the limit: estimates will do
        estimator.total(rss, exact_above=total // 2)
        assert estimator.reads == 4  # over it: every process read again
    finally:
        other.close()


def test_a_process_gone_meanwhile_counts_nothing(grower: Grower) -> None:
    estimator = Estimator()
    other = Grower()
    both = {grower.pid: grower.rss(), other.pid: other.rss()}
    estimator.total(both)
    other.close()
    # Listed still (the tree was found a moment before it exited): exactly, it counts nothing.
    total = estimator.total(both, exact_above=0)
    exact = read_pss(grower.pid)
    assert exact is not None and abs(total - exact) < MIB, (total, exact)
