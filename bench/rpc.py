"""RPC throughput and latency: the daemon against a bare msgpack echo server (the Python floor).

The load comes from a minimal client (a trio socket, one Packer, one Unpacker, one request in
flight per connection), so the server side is what is measured; both servers get the same
client, request bytes and process layout (a subprocess each). The method is `spaces.get
{name: default}`: it does little work, unlike `daemon.status` (psutil). A last row shows the
real `AsyncClient`'s latency against the daemon, which is what users get.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import trio

from browserd.client import AsyncClient

from .harness import DaemonUnderTest, median, percentile, scratch_dir, socket_accepts
from .report import Row, Target

SCENARIO = "rpc"
REPO = Path(__file__).resolve().parent.parent
METHOD = "spaces.get"
PARAMS = {"name": "default"}
CLIENTS = 50
THROUGHPUT_TARGET = Target(">=", 0.6)
P99_TARGET = Target("<", 500.0, of="value")


class RawClient:
    """One connection, one call at a time, no abstractions: the cheapest possible caller."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.packer = msgpack.Packer(use_bin_type=True)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.msgid = 0

    @classmethod
    async def connect(cls, path: Path) -> RawClient:
        client = cls(await trio.open_unix_socket(str(path)))
        await client.call("hello", {"client": {"name": "bench", "version": "0"},
                                    "api": {"min": 1, "max": 1}})
        return client

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        self.msgid += 1
        await self.stream.send_all(self.packer.pack([0, self.msgid, method, [params]]))
        while True:
            for message in self.unpacker:
                if message[0] == 1 and message[1] == self.msgid:
                    if message[2] is not None:
                        raise RuntimeError(f"{method} failed: {message[2]}")
                    return message[3]
            data = await self.stream.receive_some(256 * 1024)
            if not data:
                raise RuntimeError("server closed the connection")
            self.unpacker.feed(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def sequential(call: Callable[[], Awaitable[Any]], duration_s: float) -> list[float]:
    """Call back to back for `duration_s`; the latency of each call in seconds."""
    for _ in range(200):  # warm-up
        await call()
    latencies = []
    deadline = time.perf_counter() + duration_s
    while (start := time.perf_counter()) < deadline:
        await call()
        latencies.append(time.perf_counter() - start)
    return latencies


async def concurrent(path: Path, clients: int, duration_s: float) -> float:
    """Calls per second from `clients` connections calling back to back at once."""
    conns = [await RawClient.connect(path) for _ in range(clients)]
    counts = [0] * clients
    go = trio.Event()

    async def worker(i: int, conn: RawClient, deadline: list[float]) -> None:
        await go.wait()
        while time.perf_counter() < deadline[0]:
            await conn.call(METHOD, PARAMS)
            counts[i] += 1

    deadline = [0.0]
    async with trio.open_nursery() as nursery:
        for i, conn in enumerate(conns):
            nursery.start_soon(worker, i, conn, deadline)
        await trio.sleep(0.1)
        start = time.perf_counter()
        deadline[0] = start + duration_s
        go.set()
    elapsed = time.perf_counter() - start
    for conn in conns:
        await conn.aclose()
    return sum(counts) / elapsed


async def measure(path: Path, duration_s: float) -> tuple[list[float], float]:
    """(sequential latencies in seconds, aggregate calls/s of CLIENTS at once)."""
    conn = await RawClient.connect(path)
    latencies = await sequential(lambda: conn.call(METHOD, PARAMS), duration_s)
    await conn.aclose()
    return latencies, await concurrent(path, CLIENTS, duration_s)


async def client_latency(path: Path, duration_s: float) -> float:
    async with AsyncClient(path) as client:
        latencies = await sequential(lambda: client.call(METHOD, PARAMS), duration_s)
    return median(latencies) * 1e6


def echo_server(path: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.echo_server", str(path)], cwd=REPO)
    deadline = time.monotonic() + 10
    while not socket_accepts(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the echo server did not start")
        time.sleep(0.02)
    return proc


def run(*, quick: bool) -> list[Row]:
    # Short rounds, alternating echo and daemon, so load from elsewhere on the machine hits
    # both alike; latencies are pooled over the rounds, aggregates are the median round.
    rounds, duration = (2, 0.5) if quick else (6, 2.0)
    latencies: dict[str, list[float]] = {"echo": [], "daemon": []}
    aggregates: dict[str, list[float]] = {"echo": [], "daemon": []}
    with scratch_dir("bdb-echo-") as base, DaemonUnderTest({}, label="rpc") as daemon:
        server = echo_server(base / "echo.sock")
        paths = {"echo": base / "echo.sock", "daemon": daemon.socket}
        try:
            for i in range(rounds):
                for way in ("echo", "daemon") if i % 2 == 0 else ("daemon", "echo"):
                    sequential_s, aggregate = trio.run(measure, paths[way], duration)
                    latencies[way] += sequential_s
                    aggregates[way].append(aggregate)
        finally:
            server.kill()
            server.wait()
        user_p50 = trio.run(client_latency, daemon.socket, duration * 2)
    got, echo = ({"rate": len(latencies[way]) / sum(latencies[way]),
                  "p50_us": median(latencies[way]) * 1e6,
                  "p99_us": percentile(latencies[way], 99) * 1e6,
                  "aggregate": median(aggregates[way])} for way in ("daemon", "echo"))
    return [
        Row(SCENARIO, f"sequential {METHOD}, one connection (calls/s)", got["rate"], "calls/s",
            baseline=echo["rate"], target=THROUGHPUT_TARGET,
            note="baseline: bench/echo_server.py, a bare trio msgpack echo on a Unix socket; "
            "the same minimal client drives both"),
        Row(SCENARIO, "sequential latency p50", got["p50_us"], "us", baseline=echo["p50_us"]),
        Row(SCENARIO, "sequential latency p99", got["p99_us"], "us", baseline=echo["p99_us"],
            target=P99_TARGET),
        Row(SCENARIO, f"{CLIENTS} concurrent clients, aggregate (calls/s)", got["aggregate"],
            "calls/s", baseline=echo["aggregate"], target=THROUGHPUT_TARGET),
        Row(SCENARIO, "AsyncClient sequential latency p50", user_p50, "us",
            baseline=got["p50_us"],
            note="the real client (anyio on trio) against the daemon; baseline: the minimal "
            "client against the daemon, so the ratio is the client's own cost"),
    ]
