"""Client overhead: calls/s of `spaces.list` through the blocking `Client`, the `AsyncClient`
(under asyncio, and under trio for information) and a minimal blocking socket client, side by
side against one daemon.

The minimal client (`RawBlockingClient` below: one socket, one Packer, one Unpacker, no
checks) is the floor: what any Python caller pays for the round trip. The same loop on
asyncio (`loop.sock_recv`) is shown beside it, as the ceiling of any asyncio client. Each
client calls `spaces.list` back to back, one call in flight, in the bench process; the
daemon is a `browserd` subprocess. Short rounds rotate the order of the clients so load from
elsewhere on the machine hits all alike; the ratio is the median of each round's ratio to
the raw client. `Client` and `AsyncClient` go through their resource layer
(`bd.spaces.list()`, which builds `Space` records), as a user's code does.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import trio

from browserd.client import AsyncClient, Client

from .harness import DaemonUnderTest
from .report import Row, Target

SCENARIO = "client"
CLIENT_TARGET = Target(">=", 0.9)
ASYNC_TARGET = Target(">=", 0.8)


class RawBlockingClient:
    """The cheapest correct caller: write a request, read until its response is decoded."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.packer = msgpack.Packer(use_bin_type=True)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.msgid = 0
        self.call("hello", {"client": {"name": "bench", "version": "0"},
                            "api": {"min": 1, "max": 1}})

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.msgid += 1
        self.sock.sendall(self.packer.pack([0, self.msgid, method, [params]]))
        while True:
            for message in self.unpacker:
                if message[0] == 1 and message[1] == self.msgid:
                    return message[3]
            data = self.sock.recv(256 * 1024)
            if not data:
                raise RuntimeError("the daemon closed the connection")
            self.unpacker.feed(data)

    def close(self) -> None:
        self.sock.close()


async def _raw_asyncio_rate(path: Path, duration_s: float) -> float:
    """The same minimal client on asyncio (loop.sock_recv): the floor of any asyncio client,
    to tell the event loop's own cost from the AsyncClient's."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.setblocking(False)
    packer, unpacker = msgpack.Packer(use_bin_type=True), msgpack.Unpacker(raw=False)
    msgid = 0

    async def call(method: str, params: dict[str, Any]) -> Any:
        nonlocal msgid
        msgid += 1
        await loop.sock_sendall(sock, packer.pack([0, msgid, method, [params]]))
        while True:
            for message in unpacker:
                if message[0] == 1 and message[1] == msgid:
                    return message[3]
            data = await loop.sock_recv(sock, 256 * 1024)
            if not data:
                raise RuntimeError("the daemon closed the connection")
            unpacker.feed(data)

    try:
        await call("hello", {"client": {"name": "bench", "version": "0"},
                             "api": {"min": 1, "max": 1}})
        for _ in range(100):
            await call("spaces.list", {})
        count = 0
        start = time.perf_counter()
        deadline = start + duration_s
        while time.perf_counter() < deadline:
            await call("spaces.list", {})
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        sock.close()


def _rate(call: Callable[[], Any], duration_s: float) -> float:
    for _ in range(100):  # warm-up
        call()
    count = 0
    start = time.perf_counter()
    deadline = start + duration_s
    while time.perf_counter() < deadline:
        call()
        count += 1
    return count / (time.perf_counter() - start)


async def _async_rate(path: Path, duration_s: float) -> float:
    bd = AsyncClient(path)
    try:
        for _ in range(100):
            await bd.spaces.list()
        count = 0
        start = time.perf_counter()
        deadline = start + duration_s
        while time.perf_counter() < deadline:
            await bd.spaces.list()
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        await bd.aclose()


def raw_rate(path: Path, duration_s: float) -> float:
    raw = RawBlockingClient(path)
    try:
        return _rate(lambda: raw.call("spaces.list", {}), duration_s)
    finally:
        raw.close()


def raw_asyncio_rate(path: Path, duration_s: float) -> float:
    return asyncio.run(_raw_asyncio_rate(path, duration_s))


def client_rate(path: Path, duration_s: float) -> float:
    with Client(path) as bd:
        return _rate(bd.spaces.list, duration_s)


def asyncio_rate(path: Path, duration_s: float) -> float:
    return asyncio.run(_async_rate(path, duration_s))


def trio_rate(path: Path, duration_s: float) -> float:
    return trio.run(_async_rate, path, duration_s)


WAYS: dict[str, Callable[[Path, float], float]] = {
    "raw": raw_rate,
    "raw_asyncio": raw_asyncio_rate,
    "client": client_rate,
    "asyncio": asyncio_rate,
    "trio": trio_rate,
}


def run(*, quick: bool) -> list[Row]:
    rounds, duration = (2, 0.4) if quick else (8, 1.5)
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    with DaemonUnderTest({}, label="client") as daemon:
        names = list(WAYS)
        for i in range(rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            for way in order:
                rates[way].append(WAYS[way](daemon.socket, duration))
    raw = statistics.median(rates["raw"])

    def paired(way: str) -> float:
        return statistics.median(a / b for a, b in zip(rates[way], rates["raw"], strict=True))

    note = ("baseline: bench/client.py RawBlockingClient, a bare blocking msgpack socket loop "
            "against the same daemon, in the same run")
    return [
        Row(SCENARIO, "spaces.list, minimal blocking socket client (calls/s)", raw, "calls/s",
            note="the floor the client rows are measured against"),
        Row(SCENARIO, "spaces.list via Client (calls/s)", statistics.median(rates["client"]),
            "calls/s", baseline=raw, target=CLIENT_TARGET, paired_ratio=paired("client"),
            note=note),
        Row(SCENARIO, "spaces.list, minimal asyncio client (calls/s)",
            statistics.median(rates["raw_asyncio"]), "calls/s", baseline=raw,
            paired_ratio=paired("raw_asyncio"),
            note="the same minimal client on asyncio (loop.sock_recv): what the event loop "
            "alone costs, the ceiling for any asyncio client"),
        Row(SCENARIO, "spaces.list via AsyncClient on asyncio (calls/s)",
            statistics.median(rates["asyncio"]), "calls/s", baseline=raw, target=ASYNC_TARGET,
            paired_ratio=paired("asyncio"), note=note),
        Row(SCENARIO, "spaces.list via AsyncClient on trio (calls/s)",
            statistics.median(rates["trio"]), "calls/s", baseline=raw,
            paired_ratio=paired("trio")),
    ]
