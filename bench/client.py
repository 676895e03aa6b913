"""Client overhead: calls/s of `spaces.list` through the blocking `Client` and the
`AsyncClient` (under asyncio, and under trio for information), each beside the minimal
socket client of its kind, against one daemon.

The minimal clients (`RawBlockingClient` below, and the same loop on asyncio with
`loop.sock_recv`: one socket, one Packer, one Unpacker, no checks) are the floor: what any
caller pays for the round trip on that kind of I/O. `Client` is measured against the
blocking one, `AsyncClient` on asyncio against the asyncio one (asyncio's own loop costs a
third of the blocking loop's rate here, whatever client runs on it; the ratio to the
blocking client is shown too). `Client` and `AsyncClient` go through their resource layer
(`bd.spaces.list()`, which builds `Space` records), as a user's code does.

How: many short rounds, every way once per round in a shuffled order, each round a fresh
connection (opened and warmed outside the timing) and a fixed number of calls back to back,
one in flight. A way's rate is its calls over its summed time. The rounds are short because
on a shared VM the machine's speed drifts within seconds, and a client a few microseconds
slower per call is also served more slowly by the daemon (it finds the next request less
often already waiting), so long rounds compared across a drift swung the ratio by 0.2. The
order is shuffled (the same shuffles each run), not rotated: rotated, each way always ran
right after the same other way, and the minimal loop building records, which always ran
right after the minimal loop, measured 1.05-1.10x of it in two runs.

The CPU rows are this process's user and system time per timed call (the daemon is another
process): what the client itself costs, which the calls/s ratios show only through how the
machine turns CPU into waiting (on this VM, a microsecond of client CPU has cost from 2 % to
7 % of the calls/s from one run to the next).
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import msgpack
import trio

from browserd.client import AsyncClient, Client
from browserd.client._sync.resources import Space
from browserd.client.records import from_wire

from .harness import DaemonUnderTest
from .report import Row, Target

SCENARIO = "client"
CLIENT_TARGET = Target(">=", 0.9)
ASYNC_TARGET = Target(">=", 0.8)
# What the minimal clients read at once: under glibc's 128 KiB mmap threshold, so a read
# costs no mmap/munmap (a 256 KiB recv() measured 1.6x slower per call here for that alone).
_READ_SIZE = 64 * 1024
_WARM_CALLS = 20
_BUSY_S = 3e-6  # the busy-wait of the calibration row: about what `Client` adds per call
_HELLO = {"client": {"name": "bench", "version": "0"}, "api": {"min": 1, "max": 1}}


class RawBlockingClient:
    """The cheapest correct caller: write a request, read until its response is decoded."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.packer = msgpack.Packer(use_bin_type=True)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.msgid = 0
        self.call("hello", _HELLO)

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.msgid += 1
        self.sock.sendall(self.packer.pack([0, self.msgid, method, [params]]))
        while True:
            for message in self.unpacker:
                if message[0] == 1 and message[1] == self.msgid:
                    return message[3]
            data = self.sock.recv(_READ_SIZE)
            if not data:
                raise RuntimeError("the daemon closed the connection")
            self.unpacker.feed(data)

    def close(self) -> None:
        self.sock.close()


class Spent(NamedTuple):
    """What a round's timed calls took: wall-clock seconds, and this process's CPU seconds
    (user and system: the client's own work, the daemon being another process)."""

    wall: float
    cpu: float


def _clock() -> Spent:
    return Spent(time.perf_counter(), time.process_time())


def _since(start: Spent) -> Spent:
    now = _clock()
    return Spent(now.wall - start.wall, now.cpu - start.cpu)


def _timed(call: Callable[[], Any], calls: int) -> Spent:
    for _ in range(_WARM_CALLS):
        call()
    start = _clock()
    for _ in range(calls):
        call()
    return _since(start)


def raw_round(path: Path, calls: int) -> Spent:
    raw = RawBlockingClient(path)
    try:
        return _timed(lambda: raw.call("spaces.list", {}), calls)
    finally:
        raw.close()


def raw_records_round(path: Path, calls: int) -> Spent:
    """The minimal loop building the same `Space` records as `Client` does (the client's own
    record code), for the share of the difference that is the records, not the transport."""
    raw = RawBlockingClient(path)

    def call() -> list[Space]:
        page = raw.call("spaces.list", {})
        return [from_wire(Space, wire, transport=None) for wire in page["data"]]

    try:
        return _timed(call, calls)
    finally:
        raw.close()


def raw_busy_round(path: Path, calls: int) -> Spent:
    """The minimal loop with a few microseconds of CPU added to each call (a busy-wait): what
    that much client work costs in calls/s on this machine in this run. How much it costs
    depends on how fast the VM wakes the daemon's idle core, which drifts from run to run;
    read `Client`'s ratio beside this one."""
    raw = RawBlockingClient(path)

    def call() -> None:
        raw.call("spaces.list", {})
        end = time.perf_counter() + _BUSY_S
        while time.perf_counter() < end:
            pass

    try:
        return _timed(call, calls)
    finally:
        raw.close()


def client_round(path: Path, calls: int) -> Spent:
    with Client(path) as bd:
        return _timed(lambda: bd.spaces.list(), calls)


async def _raw_asyncio_round(path: Path, calls: int) -> Spent:
    """The minimal client on asyncio (loop.sock_recv): what the event loop alone costs."""
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
            data = await loop.sock_recv(sock, _READ_SIZE)
            if not data:
                raise RuntimeError("the daemon closed the connection")
            unpacker.feed(data)

    try:
        await call("hello", _HELLO)
        for _ in range(_WARM_CALLS):
            await call("spaces.list", {})
        start = _clock()
        for _ in range(calls):
            await call("spaces.list", {})
        return _since(start)
    finally:
        sock.close()


async def _async_client_round(path: Path, calls: int) -> Spent:
    bd = AsyncClient(path)
    try:
        for _ in range(_WARM_CALLS):
            await bd.spaces.list()
        start = _clock()
        for _ in range(calls):
            await bd.spaces.list()
        return _since(start)
    finally:
        await bd.aclose()


def raw_asyncio_round(path: Path, calls: int) -> Spent:
    return asyncio.run(_raw_asyncio_round(path, calls))


def asyncio_round(path: Path, calls: int) -> Spent:
    return asyncio.run(_async_client_round(path, calls))


def trio_round(path: Path, calls: int) -> Spent:
    return trio.run(_async_client_round, path, calls)


WAYS: dict[str, Callable[[Path, int], Spent]] = {
    "raw": raw_round,
    "raw_records": raw_records_round,
    "raw_busy": raw_busy_round,
    "client": client_round,
    "raw_asyncio": raw_asyncio_round,
    "asyncio": asyncio_round,
    "trio": trio_round,
}


def run(*, quick: bool) -> list[Row]:
    rounds, calls = (12, 200) if quick else (150, 400)
    seconds: dict[str, float] = dict.fromkeys(WAYS, 0.0)
    cpu: dict[str, float] = dict.fromkeys(WAYS, 0.0)
    with DaemonUnderTest({}, label="client") as daemon:
        names = list(WAYS)
        order = random.Random(0)
        for _ in range(rounds):
            order.shuffle(names)
            for way in names:
                spent = WAYS[way](daemon.socket, calls)
                seconds[way] += spent.wall
                cpu[way] += spent.cpu
    rate = {way: rounds * calls / spent for way, spent in seconds.items()}
    cpu_us = {way: spent / (rounds * calls) * 1e6 for way, spent in cpu.items()}

    blocking_note = ("baseline: bench/client.py RawBlockingClient, a bare blocking msgpack "
                     "socket loop against the same daemon, in the same rounds")
    asyncio_note = ("baseline: the same bare loop on asyncio (loop.sock_recv), in the same "
                    "rounds: the client's own cost on the loop it runs on")
    return [
        Row(SCENARIO, "spaces.list, minimal blocking socket client (calls/s)", rate["raw"],
            "calls/s", note="the floor the blocking client is measured against"),
        Row(SCENARIO, "spaces.list, minimal blocking client building the records (calls/s)",
            rate["raw_records"], "calls/s", baseline=rate["raw"], note=blocking_note),
        Row(SCENARIO, "spaces.list, minimal blocking client + 3 us of CPU per call (calls/s)",
            rate["raw_busy"], "calls/s", baseline=rate["raw"],
            note="calibration: what 3 us of a client's CPU per call costs in this run (a "
                 "busy-wait after each call of the minimal loop)"),
        Row(SCENARIO, "spaces.list via Client (calls/s)", rate["client"], "calls/s",
            baseline=rate["raw"], target=CLIENT_TARGET, note=blocking_note),
        Row(SCENARIO, "spaces.list, CPU per call: minimal blocking client", cpu_us["raw"], "us",
            note="this process's user and system time over the timed calls (the daemon's "
                 "is its own): what the client itself costs, whatever the machine's wake-ups"),
        Row(SCENARIO, "spaces.list, CPU per call: Client", cpu_us["client"], "us",
            baseline=cpu_us["raw"], note=blocking_note),
        Row(SCENARIO, "spaces.list, minimal asyncio client (calls/s)", rate["raw_asyncio"],
            "calls/s", baseline=rate["raw"],
            note="against the blocking loop: what asyncio's event loop alone costs"),
        Row(SCENARIO, "spaces.list via AsyncClient on asyncio (calls/s)", rate["asyncio"],
            "calls/s", baseline=rate["raw_asyncio"], target=ASYNC_TARGET, note=asyncio_note),
        Row(SCENARIO, "spaces.list via AsyncClient on asyncio, to the blocking loop",
            rate["asyncio"], "calls/s", baseline=rate["raw"], note=blocking_note),
        Row(SCENARIO, "spaces.list via AsyncClient on trio (calls/s)", rate["trio"], "calls/s",
            baseline=rate["raw"], note=blocking_note),
    ]
