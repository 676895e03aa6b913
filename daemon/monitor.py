"""Resource use of each browser tree: samples, `resource.sample` events, and the memory limit.

A run service: every `resources.sample_interval_s` it measures the whole process tree of the
runtime (CPU %, RSS, process count, page targets), records a `resource.sample` event, and stops
a runtime whose tree's RSS exceeds its `memory_limit_mb` with end reason `memory_limit`.
`runtimes.stats` reads the same measurements, fresh.
"""

from __future__ import annotations

import logging
from typing import Any

import psutil
import trio

from .cdp_proxy import fetch_browser_json
from .config import Config
from .registry import Registry
from .runtime import Runtime
from .storage import now_rfc3339

log = logging.getLogger("browserd.monitor")
MIB = 1024 * 1024


class ResourceMonitor:
    def __init__(self, registry: Registry, config: Config) -> None:
        self.registry = registry
        self.config = config
        # psutil measures CPU between two readings of the same Process object, so each
        # runtime keeps its objects from one sample to the next.
        self._procs: dict[str, dict[int, psutil.Process]] = {}

    def memory_limit_mb(self, rt: Runtime) -> int | None:
        limit = rt.record.config.get("memory_limit_mb") or self.config.limits.memory_limit_mb
        return int(limit) if limit else None

    async def attend(self, rt: Runtime) -> None:
        interval = self.config.resources.sample_interval_s
        try:
            while True:
                await trio.sleep(interval)
                sample = await self.sample(rt)
                if sample is None or rt.log is None:
                    return
                rt.log.append("resource.sample", sample)
                limit = self.memory_limit_mb(rt)
                if limit is not None and sample["rss_bytes"] > limit * MIB:
                    rt.log.append("alert", {
                        "reason": "memory_limit",
                        "message": f"The browser uses {sample['rss_bytes'] // MIB} MiB, over "
                                   f"its limit of {limit} MiB: stopping it.",
                        "rss_bytes": sample["rss_bytes"], "limit_mb": limit,
                    })
                    self.registry.request_stop(rt, "memory_limit")
                    return
        finally:
            self._procs.pop(rt.id, None)

    async def sample(self, rt: Runtime) -> dict[str, Any] | None:
        """Measure the runtime's process tree now; None if it has no browser."""
        process = rt.process
        if process is None:
            return None
        known = self._procs.setdefault(rt.id, {})
        usage = await trio.to_thread.run_sync(_measure, process.tree_pids, known)
        usage["targets"] = await _count_pages(process.endpoint.host, process.endpoint.port)
        usage["sampled_at"] = now_rfc3339()
        return usage


def _measure(tree_pids: Any, known: dict[int, psutil.Process]) -> dict[str, Any]:
    pids = tree_pids()
    cpu = 0.0
    rss = 0
    for pid in pids:
        proc = known.get(pid)
        try:
            if proc is None:
                proc = known[pid] = psutil.Process(pid)
                proc.cpu_percent()  # primes the counter; counted from the next sample on
            with proc.oneshot():
                cpu += proc.cpu_percent()
                rss += proc.memory_info().rss
        except psutil.Error:
            known.pop(pid, None)
    for gone in set(known) - set(pids):
        del known[gone]
    return {"cpu_percent": round(cpu, 1), "rss_bytes": rss, "processes": len(pids)}


async def _count_pages(host: str, port: int) -> int | None:
    try:
        targets = await fetch_browser_json(host, port, "/json/list")
    except Exception:  # a browser busy shutting down: the count is simply unknown
        return None
    return sum(1 for target in targets if target.get("type") == "page")
