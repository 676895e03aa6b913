"""Scale: many headless runtimes under one daemon, and the daemon's idle cost.

For each level N (1, 8, 32 with chromium-headless-shell; limits.max_runtimes raised), on a fresh
daemon:
- launch N runtimes at once (N clients, one launch each): per-launch latency under that load;
- the daemon's RSS and CPU with N active runtimes (psutil on the daemon process only, not its
  browsers), CPU over a quiet window;
- one more launch while the N run: what the next user waits;
- stop all N + 1 at once: wall time until every stop returned;
- leftovers: live processes whose command line names the state dir (must be none).

Idle: one active runtime and no clients, daemon CPU over 10 s.
"""

from __future__ import annotations

import time

import trio

from browserd.client import AsyncClient

from .harness import HEADLESS_SHELL, DaemonUnderTest, median, processes_naming
from .report import Row, Target

SCENARIO = "scale"
RSS_TARGET = Target("<", 80.0, of="value")
IDLE_TARGET = Target("<", 1.0, of="value")
LEFTOVER_TARGET = Target("<=", 0.0, of="value")
QUIET_S = 5.0  # the window the idle CPU is read over
SETTLE_S = 5.0  # after the launches, before it is read


async def launch_many(daemon: DaemonUnderTest, names: list[str]) -> list[float]:
    """Launch every name at once, one client each; the seconds each launch took."""
    latencies: list[float] = []

    async def one(name: str) -> None:
        async with AsyncClient(daemon.socket) as client:
            start = time.perf_counter()
            runtime = await client.runtimes.browser.launch(name=name)
            latencies.append(time.perf_counter() - start)
            assert runtime.status == "active", runtime.status

    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
    return latencies


async def stop_all(daemon: DaemonUnderTest, names: list[str]) -> float:
    async def one(client: AsyncClient, name: str) -> None:
        await client.call("runtimes.stop", {"name": name})

    async with AsyncClient(daemon.socket) as client:
        start = time.perf_counter()
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(one, client, name)
        return time.perf_counter() - start


def cpu_percent(daemon: DaemonUnderTest, seconds: float) -> float:
    """The daemon's CPU use over a window, in percent of one core."""
    before, start = daemon.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (daemon.cpu_seconds() - before) / (time.perf_counter() - start) * 100


def level(n: int, *, quiet_s: float, settle_s: float) -> dict[str, float]:
    settings = {"browser.executable": HEADLESS_SHELL, "limits.max_runtimes": n + 8}
    names = [f"scale-{i}" for i in range(n)]
    with DaemonUnderTest(settings, label=f"scale-{n}") as daemon:
        burst = trio.run(launch_many, daemon, names)
        # Start-up work (first navigations, observers attaching, 32 browsers' first
        # targets) goes on for seconds after the launches reply: the idle figure is read after.
        time.sleep(settle_s)
        rss = daemon.rss_bytes() / 2**20
        cpu = cpu_percent(daemon, quiet_s)
        (one_more,) = trio.run(launch_many, daemon, ["scale-extra"])
        stop_s = trio.run(stop_all, daemon, [*names, "scale-extra"])
        leftovers = len(processes_naming(daemon.state_dir))
    return {"burst_p50_ms": median(burst) * 1000, "burst_max_ms": max(burst) * 1000,
            "rss_mb": rss, "cpu": cpu, "next_ms": one_more * 1000, "stop_s": stop_s,
            "leftovers": leftovers}


def idle_cpu(seconds: float, settle_s: float) -> float:
    with DaemonUnderTest({"browser.executable": HEADLESS_SHELL}, label="idle") as daemon:
        trio.run(launch_many, daemon, ["idle"])
        time.sleep(settle_s)
        return cpu_percent(daemon, seconds)


def run(*, quick: bool) -> list[Row]:
    levels = (1, 4) if quick else (1, 8, 32)
    settle_s = 1.0 if quick else SETTLE_S
    rows: list[Row] = []
    for n in levels:
        got = level(n, quiet_s=1.0 if quick else QUIET_S, settle_s=settle_s)
        top = n == levels[-1]
        rows += [
            Row(SCENARIO, f"N={n}: launch latency, {n} at once (p50)", got["burst_p50_ms"], "ms"),
            Row(SCENARIO, f"N={n}: launch latency, {n} at once (max)", got["burst_max_ms"], "ms"),
            Row(SCENARIO, f"N={n}: launch of one more while {n} run", got["next_ms"], "ms"),
            Row(SCENARIO, f"N={n}: daemon RSS", got["rss_mb"], "MB",
                target=RSS_TARGET if top else None,
                note="the target is for 32 runtimes" if top and n != 32 else ""),
            Row(SCENARIO, f"N={n}: daemon CPU with {n} idle runtimes", got["cpu"], "%"),
            Row(SCENARIO, f"N={n}: stop all {n + 1} at once (wall)", got["stop_s"], "s"),
            Row(SCENARIO, f"N={n}: leftover processes after stop", got["leftovers"], "procs",
                target=LEFTOVER_TARGET),
        ]
    seconds = 3.0 if quick else 10.0
    rows.append(Row("idle", f"daemon CPU, 1 idle runtime, {seconds:g} s",
                    idle_cpu(seconds, settle_s), "%", target=IDLE_TARGET))
    return rows
