"""Warm pool (issue #7 part 3): `runtimes.launch` served from pre-started browsers.

Skipped, with a note, while the daemon's config has no `pool.size`. Once it has: a daemon with
`pool.size = 2` is given time to fill its pool (until `daemon.status` reports a `pool` map
whose `ready`/`idle`/`warm` count reaches the size, else a fixed settle time), then launches
are timed one by one, with the pool refilled before each, against cold launches on a daemon
with no pool. Chromium, headless, fresh profiles, as in the launch scenario.
"""

from __future__ import annotations

import time
from typing import Any

from browserd.client import Client

from .harness import CHROMIUM, DaemonUnderTest, config_key_known, median
from .report import Row, skipped

SCENARIO = "pool"
POOL_KEY = "pool.size"
POOL_SIZE = 2
SETTLE_S = 5.0


def pool_ready(status: dict[str, Any]) -> bool | None:
    """True/False when daemon.status says how many pooled browsers are ready, else None."""
    pool = status.get("pool")
    if not isinstance(pool, dict):
        return None
    for key in ("ready", "idle", "warm"):
        count = pool.get(key)
        if isinstance(count, int):
            return count >= POOL_SIZE
        if isinstance(count, list):
            return len(count) >= POOL_SIZE
    return None


def wait_warm(client: Client, settle_s: float, timeout_s: float = 60.0) -> bool:
    """Wait until the pool is full; False when daemon.status does not report it (then a
    fixed settle time is all there is)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = pool_ready(client.status())
        if ready is None:
            time.sleep(settle_s)
            return False
        if ready:
            return True
        time.sleep(0.05)
    raise RuntimeError(f"the pool did not fill within {timeout_s:g} s")


def launches(settings: dict[str, Any], repetitions: int, *, pooled: bool, settle_s: float
             ) -> tuple[list[float], bool, int]:
    """Launch times in ms (the first launch, which warms the page cache, left out), whether
    daemon.status reported the pool's readiness, and how many timed launches the run log says
    were served from the pool (its `starting` event's `from_pool`)."""
    times = []
    reported = True
    served = 0
    with DaemonUnderTest(settings, label="pool") as daemon, Client(daemon.socket) as client:
        for i in range(repetitions + 1):
            if pooled:
                reported = wait_warm(client, settle_s) and reported
            start = time.perf_counter()
            runtime = client.runtimes.browser.launch(name=f"pool-{i}")
            elapsed = time.perf_counter() - start
            starting = runtime.current_run().events.list(types=["runtime.lifecycle"], limit=1)
            runtime.stop()
            runtime.delete()
            if i > 0:
                times.append(elapsed * 1000)
                served += bool(starting and starting[0].data.get("from_pool"))
    return times, reported, served


def run(*, quick: bool) -> list[Row]:
    metric = f"runtimes.launch from a warm pool (size {POOL_SIZE}), chromium"
    if not config_key_known(POOL_KEY, POOL_SIZE):
        return [skipped(SCENARIO, metric, "ms",
                        f"config key {POOL_KEY} is unknown to this daemon: the warm pool "
                        "(issue #7 part 3) has not landed")]
    repetitions = 2 if quick else 9
    base = {"browser.executable": CHROMIUM}
    settle_s = 1.0 if quick else SETTLE_S
    cold, _, _ = launches(base, repetitions, pooled=False, settle_s=settle_s)
    warm, reported, served = launches({**base, POOL_KEY: POOL_SIZE}, repetitions, pooled=True,
                                      settle_s=settle_s)
    note = (f"baseline: cold runtimes.launch on a daemon without a pool; {served} of "
            f"{len(warm)} timed launches were served from the pool (run log: from_pool)")
    if not reported:
        note += (f"; daemon.status does not report the pool's readiness, so each launch waited "
                 f"a fixed {settle_s:g} s for it to refill")
    return [Row(SCENARIO, metric, median(warm), "ms", baseline=median(cold), note=note)]
