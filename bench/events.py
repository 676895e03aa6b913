"""The event log: appends per second, and how long an event takes to reach a follower.

Appends go through `EventLog.append` directly (in this process, on a real file) with a
`connection.command`-shaped event, the most frequent kind once commands are recorded.

Follower latency: when the daemon serves `runs.events.follow`, a client follows a live run
and the latency is the event's own `time` to the moment the notification is decoded (one
clock, one machine). Until then the in-process path is measured instead: an
`EventLog.add_listener` callback that hands the event to a reader task over a trio memory
channel, which is the first hop any follow implementation takes.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from browserd.client import AsyncClient, errors
from browserd.daemon.store.eventlog import Event, EventLog, FsyncPolicy

from .harness import HEADLESS_SHELL, DaemonUnderTest, median, percentile, scratch_dir
from .report import Row, Target

SCENARIO = "eventlog"
APPEND_TARGET = Target(">=", 100_000.0, of="value")
LATENCY_TARGET = Target("<", 2.0, of="value")


def command_event(i: int) -> dict[str, Any]:
    return {"connection_id": "conn_01jdxq3m7z8k2c4v6b8n0p2r4t", "socket_id": "s1", "id": i,
            "method": "Runtime.callFunctionOn", "session_id": "8F3C2A0D9E1B4C7A",
            "duration_ms": 0.412, "outcome": "ok"}


def appends_per_second(directory: Path, fsync: FsyncPolicy, count: int) -> tuple[float, float]:
    """(appends per wall-clock second, appends per second of this process's CPU time)."""
    path = directory / f"events-{fsync}.jsonl"
    with EventLog.open(path, run_id="run_bench", runtime_id="rt_bench", space="default",
                       fsync=fsync) as log:
        payloads = [command_event(i) for i in range(count)]
        start, cpu_start = time.perf_counter(), time.process_time()
        for data in payloads:
            log.append("connection.command", data, source="client")
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return count / elapsed, count / max(cpu, 1e-9)


async def listener_latency(directory: Path, count: int) -> list[float]:
    """append() -> a reader task holding the event, in seconds, one event at a time."""
    send, receive = trio.open_memory_channel[Event](1024)
    latencies: list[float] = []
    starts: dict[int, float] = {}
    arrived = [trio.Event()]

    async def reader() -> None:
        async for event in receive:
            latencies.append(time.perf_counter() - starts[event["seq"]])
            arrived[0].set()

    with EventLog.open(directory / "events-follow.jsonl", run_id="run_bench",
                       runtime_id="rt_bench", space="default", fsync="batch") as log:
        log.add_listener(send.send_nowait)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            for i in range(count):
                arrived[0] = trio.Event()
                starts[log.last_seq + 1] = time.perf_counter()
                log.append("connection.command", command_event(i), source="client")
                await arrived[0].wait()  # one event in flight at a time
            send.close()
    return latencies


async def follow_latency(count: int) -> list[float] | None:
    """Through the daemon's runs.events.follow, or None when it is not served."""
    with DaemonUnderTest({"browser.executable": HEADLESS_SHELL}, label="follow") as daemon:
        async with AsyncClient(daemon.socket) as client:
            if not await follow_served(client):
                return None
            runtime = await client.runtimes.browser.launch(name="follow-bench")
            run = await runtime.current_run()
            latencies: list[float] = []
            with trio.fail_after(30):
                sub = await client.subscribe("runs.events.follow",
                                             {"run_id": run.id, "after_seq": 0})
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:

                    async def produce() -> None:
                        for _ in range(count):
                            # Each lease appends a connection.created event to the run.
                            await runtime.connections.create(ttl_s=60)
                            await trio.sleep(0.002)

                    nursery.start_soon(produce)
                    async for payload in sub.receive:
                        event = payload.get("event")
                        if not isinstance(event, dict):
                            continue
                        if event.get("type") == "connection.created":
                            sent = datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
                            arrived = datetime.now(UTC).replace(tzinfo=None)
                            latencies.append((arrived - sent).total_seconds())
                            if len(latencies) >= count:
                                break
            with contextlib.suppress(errors.BrowserdError):
                await client.call("subscriptions.cancel", {"subscription": sub.id})
            await runtime.stop()
            return latencies


async def follow_served(client: AsyncClient) -> bool:
    """Whether the daemon knows runs.events.follow (asked about a run that does not exist)."""
    try:
        await client.call("runs.events.follow", {"run_id": "run_00000000000000000000000000"})
    except errors.BrowserdError as exc:
        return bool(exc.code != "rpc.method_not_found")
    return True


def run(*, quick: bool) -> list[Row]:
    count = 50_000 if quick else 500_000
    with scratch_dir("bdb-log-") as directory:
        rates: dict[FsyncPolicy, list[tuple[float, float]]] = {"never": [], "batch": []}
        for _ in range(5):  # alternating, so load from elsewhere hits both alike
            for fsync in ("never", "batch"):
                rates[fsync].append(appends_per_second(directory, fsync, count // 5))
        never, batch = (median([wall for wall, _ in rates[f]]) for f in ("never", "batch"))
        never_cpu, batch_cpu = (median([cpu for _, cpu in rates[f]]) for f in ("never", "batch"))
        in_process = trio.run(listener_latency, directory, 2000 if quick else 20_000)
    followed = trio.run(follow_latency, 50 if quick else 500)
    rows = [
        Row(SCENARIO, "EventLog.append, fsync=never", never, "appends/s", target=APPEND_TARGET,
            note=f"per second of CPU time: {never_cpu:.0f} (wall-clock rates fall when "
            "other work shares the 2 cores)"),
        Row(SCENARIO, "EventLog.append, fsync=batch", batch, "appends/s", target=APPEND_TARGET,
            note=f"fdatasync at most every 200 ms (the default); per second of CPU time: "
            f"{batch_cpu:.0f}"),
    ]
    if followed is None:
        rows += [
            Row(SCENARIO, "append -> listener via trio channel, p50",
                median(in_process) * 1000, "ms", target=LATENCY_TARGET,
                note="runs.events.follow is not served yet: in-process listener latency "
                "(EventLog.add_listener -> memory channel -> reader task) stands in"),
            Row(SCENARIO, "append -> listener via trio channel, p99",
                percentile(in_process, 99) * 1000, "ms"),
        ]
    else:
        rows += [
            Row(SCENARIO, "append -> runs.events.follow delivery, p50",
                median(followed) * 1000, "ms", target=LATENCY_TARGET,
                note="event time -> notification decoded by AsyncClient, one lease per event"),
            Row(SCENARIO, "append -> runs.events.follow delivery, p99",
                percentile(followed, 99) * 1000, "ms"),
            Row(SCENARIO, "append -> in-process listener, p50", median(in_process) * 1000,
                "ms"),
        ]
    return rows
