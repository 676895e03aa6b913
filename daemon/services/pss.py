"""Proportional memory (PSS) of a browser's processes, read exactly now and then and estimated
in between.

Summed RSS counts a page shared by N processes N times. Chromium's processes share most of
their code and much of their data (the zygote forks every renderer), so 4 small tabs summed
to 1.4 GiB of RSS while their PSS, where each shared page counts 1/N in each sharer, was
330 MiB. Summed over a tree, PSS is what the tree really holds; the monitor reports it as
`memory_bytes` and enforces `memory_limit_mb` on it.

PSS comes from /proc/<pid>/smaps_rollup, and it is not cheap: the kernel walks the page tables
of every mapping, and a Chromium process maps 450-900 areas over 52 GiB to 1.4 TiB of address
space. Measured here: 0.6-4 ms per process (1.5 ms typical) against 20-30 us for RSS, so a
13-process tree costs 20 ms of CPU per reading; every tree every 5 s would add 0.4 % of a core
per runtime, more than the idle daemon's whole budget (BENCHMARKS.md: under 1 % with one
runtime). So a process's PSS is read when it is first seen, then again once its last reading
is PSS_MAX_AGE_S old or its RSS has moved more than PSS_DRIFT_BYTES since; in between it is
the last reading moved by the change in RSS (a page a process allocates or frees for itself
moves both figures alike). What an estimate misses is shared pages changing hands as sharers
come and go, and that lasts at most PSS_MAX_AGE_S. A limit is never enforced on an estimate:
`Estimator.total` reads every process exactly when the estimated sum is over it.

The readers are plain blocking functions: call them from a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import attrs

__all__ = ["PSS_DRIFT_BYTES", "PSS_MAX_AGE_S", "Estimator", "read_pss"]

PSS_MAX_AGE_S = 30.0
PSS_DRIFT_BYTES = 8 * 1024 * 1024


def read_pss(pid: int) -> int | None:
    """The process's PSS in bytes, from /proc/<pid>/smaps_rollup.

    None when this kernel cannot say (no smaps_rollup before Linux 4.14, or /proc hides the
    process's memory from us); raises ProcessLookupError when the process is gone.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as file:
            text = file.read()
    except FileNotFoundError:
        if _exists(pid):
            return None  # the process is there, the file is not: an old kernel
        raise ProcessLookupError(pid) from None
    except PermissionError:
        return None
    except ProcessLookupError:
        raise
    except OSError as exc:  # ESRCH while reading: the process exited under us
        raise ProcessLookupError(pid) from exc
    start = text.find(b"\nPss:")
    if start < 0:
        raise ProcessLookupError(pid)  # an empty read: it exited between open and read
    return int(text[start + 5:text.index(b"kB", start)]) * 1024


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb"):
            return True
    except OSError:
        return False


@attrs.frozen
class _Reading:
    pss: int
    rss: int  # the process's RSS at that reading
    at: float  # time.monotonic()


@attrs.define
class Estimator:
    """The PSS of one tree's processes, one sample at a time (see the module docstring)."""

    max_age_s: float = PSS_MAX_AGE_S
    drift_bytes: int = PSS_DRIFT_BYTES
    reads: int = 0  # exact readings so far, for tests and benchmarks
    _readings: dict[int, _Reading] = attrs.field(factory=dict)

    def total(self, rss_by_pid: dict[int, int], *, exact_above: int | None = None) -> int:
        """The tree's PSS: the sum over `rss_by_pid` (pid -> its RSS now), each process read
        exactly when due and estimated otherwise; read exactly throughout when the estimated
        sum is over `exact_above`. A process gone meanwhile counts nothing. Blocking."""
        now = time.monotonic()
        self._forget(set(rss_by_pid))
        total = sum(self._one(pid, rss, now, exact=False) for pid, rss in rss_by_pid.items())
        if exact_above is not None and total > exact_above:
            total = sum(self._one(pid, rss, now, exact=True) for pid, rss in rss_by_pid.items())
        return total

    def _one(self, pid: int, rss: int, now: float, *, exact: bool) -> int:
        last = self._readings.get(pid)
        if last is not None:
            if exact:
                usable = last.at == now  # read in this very pass
            else:
                usable = (now - last.at < self.max_age_s
                          and abs(rss - last.rss) <= self.drift_bytes)
            if usable:  # PSS never exceeds RSS
                return min(rss, max(0, last.pss + rss - last.rss))
        try:
            pss = read_pss(pid)
        except ProcessLookupError:
            self._readings.pop(pid, None)
            return 0
        self.reads += 1
        if pss is None:
            pss = rss  # the kernel cannot say: RSS is the figure we have
        self._readings[pid] = _Reading(pss, rss, now)
        return pss

    def _forget(self, alive: Iterable[int]) -> None:
        # pop, not del: a `runtimes.stats` may measure the same tree in another thread
        for gone in set(self._readings) - set(alive):
            self._readings.pop(gone, None)
