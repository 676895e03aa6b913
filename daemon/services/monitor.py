"""Resource use of each browser tree: samples, `resource.sample` events, and the memory limit.

A run service: every `resources.sample_interval_s` it measures the whole process tree of the
runtime (CPU %, memory, process count, page targets), records a `resource.sample` event, and
stops a runtime whose tree's memory exceeds its `memory_limit_mb` with end reason
`memory_limit`. `runtimes.stats` reads the same measurements, fresh.

Memory is the tree's PSS (`memory_bytes`, see pss.py), not its summed RSS: Chromium's
processes share most of their pages, and summed RSS counts each shared page once per process
(`rss_bytes` stays in the samples, for compatibility).

Finding a tree means reading every process in /proc (and the environment of each new one:
helpers that leave the group are found by their spawn tag): about 30 us per process, so with
32 runtimes, one read per runtime per sample cost the daemon a quarter of a core. Samples
fall on a clock shared by all runtimes, and the samples of one tick share one read of /proc.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import psutil
import trio

from ..base.config import Config
from ..base.errors import RESOURCE_ERRNOS
from ..browser import procutil, spawn_tags
from ..cdp.http_front import fetch_browser_json
from ..core.runtime import Runtime
from ..store.storage import now_rfc3339
from ..system.logs import Throttled
from .pss import Estimator

log = logging.getLogger(__name__)
MIB = 1024 * 1024
# A read of /proc serves every sample taken within this long (or half the sample interval,
# if shorter): the samples of one tick start within milliseconds of each other.
SNAPSHOT_REUSE_S = 0.5

_Snapshot = list[procutil.ProcInfo]


class MonitorHost(Protocol):
    """What the monitor uses of the registry: a way to stop a runtime over its limit."""

    def request_stop(self, rt: Runtime, reason: str) -> None: ...


class ResourceMonitor:
    def __init__(self, registry: MonitorHost, config: Config) -> None:
        self.registry = registry
        self.config = config
        # psutil measures CPU between two readings of the same Process object, so each
        # runtime keeps its objects from one sample to the next.
        self._procs: dict[str, dict[int, psutil.Process]] = {}
        self._pss: dict[str, Estimator] = {}  # each runtime's PSS readings, likewise
        # Those belong to one measurement at a time (in a worker thread): the periodic
        # sample and a `runtimes.stats` call take turns.
        self._measuring: dict[str, trio.Lock] = {}
        self._snapshot: _Snapshot | None = None
        self._snapshot_at = 0.0
        self._reading: trio.Event | None = None  # set when the read in flight is done
        self.reads = 0  # reads of /proc so far, for tests
        self._skipped = Throttled(log, 10.0)
        self._reuse_s = min(SNAPSHOT_REUSE_S, config.resources.sample_interval_s / 2)

    def memory_limit_mb(self, rt: Runtime) -> int | None:
        limit = rt.record.config.memory_limit_mb or self.config.limits.memory_limit_mb
        return int(limit) if limit else None

    async def attend(self, rt: Runtime) -> None:
        interval = self.config.resources.sample_interval_s
        try:
            while True:
                # On the shared clock: every runtime samples at the same instants.
                await trio.sleep_until((trio.current_time() // interval + 1) * interval)
                try:
                    sample = await self.sample(rt)
                except OSError as exc:
                    if exc.errno not in RESOURCE_ERRNOS:
                        raise
                    # Out of descriptors for the /proc read: skip this sample, not all the
                    # later ones (and the memory limit with them).
                    self._skipped.log(logging.WARNING, "resource sample of %s skipped: %s",
                                      rt.id, exc)
                    continue
                if sample is None or rt.log is None:
                    return
                rt.log.append("resource.sample", sample)
                limit = self.memory_limit_mb(rt)
                # Over the limit, memory_bytes was read exactly (never an estimate): see sample.
                if limit is not None and sample["memory_bytes"] > limit * MIB:
                    rt.log.append("alert", {
                        "reason": "memory_limit",
                        "message": f"The browser uses {sample['memory_bytes'] // MIB} MiB "
                                   f"(PSS), over its limit of {limit} MiB: stopping it.",
                        "memory_bytes": sample["memory_bytes"],
                        "rss_bytes": sample["rss_bytes"], "limit_mb": limit,
                    })
                    self.registry.request_stop(rt, "memory_limit")
                    return
        finally:
            self._procs.pop(rt.id, None)
            self._pss.pop(rt.id, None)
            self._measuring.pop(rt.id, None)

    async def sample(self, rt: Runtime) -> dict[str, Any] | None:
        """Measure the runtime's process tree now; None if it has no browser."""
        process = rt.process
        if process is None:
            return None
        limit = self.memory_limit_mb(rt)
        exact_above = None if limit is None else limit * MIB
        async with self._measuring.setdefault(rt.id, trio.Lock()):
            procs = await self._processes()  # read when its turn comes: never older than the last
            known = self._procs.setdefault(rt.id, {})
            pss = self._pss.setdefault(rt.id, Estimator())
            # Finding the tree among hundreds of processes is Python work: in the thread too.
            usage = await trio.to_thread.run_sync(
                lambda: _measure(process.tree_pids(procs), known, pss, exact_above))
        usage["targets"] = await _count_pages(process.endpoint.host, process.endpoint.port)
        usage["sampled_at"] = now_rfc3339()
        return usage

    async def _processes(self) -> _Snapshot:
        """Every process, read at most once per tick: samples due at the same tick wait for
        the read in flight rather than start their own."""
        for _ in range(2):  # a read that failed under a waiter: that waiter reads itself
            fresh = trio.current_time() - self._snapshot_at < self._reuse_s
            if self._snapshot is not None and fresh:
                return self._snapshot
            if self._reading is None:
                break
            await self._reading.wait()
        self._reading = reading = trio.Event()
        try:
            # Shielded: the read takes milliseconds, and the samples waiting for it must not
            # be left without one because the run that started it ended.
            with trio.CancelScope(shield=True):
                snapshot = await trio.to_thread.run_sync(_read_processes)
            self.reads += 1
            self._snapshot, self._snapshot_at = snapshot, trio.current_time()
        finally:
            self._reading = None
            reading.set()
        return snapshot


def _read_processes() -> _Snapshot:
    procs = procutil.scan()
    spawn_tags.forget_gone(procs)  # the tags of processes that are gone
    return procs


def _measure(pids: list[int], known: dict[int, psutil.Process], pss: Estimator,
             exact_above: int | None) -> dict[str, Any]:
    """CPU, summed RSS and PSS of `pids`; the PSS read exactly when over `exact_above`."""
    cpu = 0.0
    rss_of: dict[int, int] = {}
    for pid in pids:
        proc = known.get(pid)
        try:
            if proc is None:
                proc = known[pid] = psutil.Process(pid)
                proc.cpu_percent()  # primes the counter; counted from the next sample on
            with proc.oneshot():
                cpu += proc.cpu_percent()
                rss_of[pid] = proc.memory_info().rss
        except psutil.Error:
            known.pop(pid, None)
    for gone in set(known) - set(pids):
        del known[gone]
    memory = pss.total(rss_of, exact_above=exact_above)
    return {"cpu_percent": round(cpu, 1), "memory_bytes": memory,
            "rss_bytes": sum(rss_of.values()), "processes": len(pids)}


async def _count_pages(host: str, port: int) -> int | None:
    try:
        targets = await fetch_browser_json(host, port, "/json/list")
    except Exception:  # a browser busy shutting down: the count is simply unknown
        return None
    return sum(1 for target in targets if target.get("type") == "page")
