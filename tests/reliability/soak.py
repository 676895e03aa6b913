"""The load driver: many RPC clients while runtimes launch and stop and CDP clients come and go.

`drive()` runs against a daemon's socket for a given time and returns what it did; every error
is unexpected (each worker owns its runtime names, so no two workers can get in each other's
way). It also remembers every operation the daemon acknowledged, so the run logs can be checked
for them afterwards (data lost).

The load tests call it; it also runs on its own against a running daemon:

    python -m tests.reliability.soak --socket PATH --duration 60
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_websocket import open_websocket_url

from browserd.client import AsyncClient

STEADY = "load-steady"
LAUNCHERS = 2  # each launches and stops its own runtime, load-<n>, in a loop


@attrs.define
class Load:
    """What one drive did; `errors` should stay empty."""

    duration_s: float = 0.0
    clients: int = 0
    requests: int = 0
    launches: int = 0
    attaches: int = 0
    follows: int = 0
    latencies: list[float] = attrs.Factory(list)
    errors: list[str] = attrs.Factory(list)
    leases: list[tuple[str, str]] = attrs.Factory(list)  # (run id, connection id), acknowledged
    attached: list[tuple[str, str]] = attrs.Factory(list)  # (run id, connection id) attached
    runs: list[str] = attrs.Factory(list)

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        p99 = ordered[int(len(ordered) * 0.99)] * 1000 if ordered else 0.0
        return {
            "duration_s": round(self.duration_s, 1), "clients": self.clients,
            "requests": self.requests,
            "requests_per_s": round(self.requests / self.duration_s, 1) if self.duration_s else 0,
            "p99_ms": round(p99, 2), "launches": self.launches, "attaches": self.attaches,
            "follows": self.follows, "errors": len(self.errors),
        }


async def _guard(load: Load, what: str, fn: Callable[[], Awaitable[None]]) -> None:
    try:
        await fn()
    except Exception as exc:  # every failure counts; the first few are kept for the report
        if len(load.errors) < 20:
            load.errors.append(f"{what}: {type(exc).__name__}: {exc}")
        else:
            load.errors.append(what)


async def _cdp_round_trip(url: str, method: str) -> None:
    with trio.fail_after(20):
        async with open_websocket_url(url) as ws:
            await ws.send_message(json.dumps({"id": 1, "method": method, "params": {}}))
            while True:
                answer = json.loads(await ws.get_message())
                if answer.get("id") == 1:
                    assert "result" in answer, answer
                    return


async def drive(socket_path: Path, duration_s: float, *, clients: int = 50,
                launchers: int = LAUNCHERS, attachers: int = 4, followers: int = 2,
                seed: int = 8) -> Load:
    """Load the daemon for `duration_s`; a runtime named load-steady must be active."""
    load = Load(clients=clients)
    deadline = trio.current_time() + duration_s
    rng = random.Random(seed)

    async with AsyncClient(socket_path) as bd:
        steady = await bd.runtimes.get(STEADY)
        steady_run = steady.active_run_id
        assert steady_run is not None, "launch load-steady first"

    def rpc_mix() -> list[tuple[str, dict[str, Any]]]:
        return [
            ("daemon.status", {}), ("runtimes.list", {}), ("spaces.get", {"name": "default"}),
            ("runtimes.get", {"name": STEADY}), ("runs.list", {"limit": 20}),
            ("runs.events.list", {"run_id": steady_run, "limit": 50}),
            ("connections.list", {"name": STEADY}), ("runs.get", {"run_id": steady_run}),
        ]

    async def rpc_client(index: int) -> None:
        mix = rpc_mix()
        local = random.Random(rng.random())
        async with AsyncClient(socket_path, client_name=f"load-{index}") as bd:
            while trio.current_time() < deadline:
                method, params = local.choice(mix)
                started = time.perf_counter()
                await bd.call(method, params)
                load.latencies.append(time.perf_counter() - started)
                load.requests += 1

    async def launcher(index: int) -> None:
        async with AsyncClient(socket_path) as bd:
            while trio.current_time() < deadline:
                runtime = await bd.runtimes.browser.launch(name=f"load-{index}")
                assert runtime.active_run_id is not None
                load.runs.append(runtime.active_run_id)
                load.launches += 1
                lease = await runtime.connections.create(ttl_s=5)
                load.leases.append((lease.run_id, lease.id))
                assert lease.endpoint is not None
                await _cdp_round_trip(lease.endpoint.url, "Target.getTargets")
                load.attached.append((lease.run_id, lease.id))
                load.attaches += 1
                await runtime.stop()

    async def attacher(index: int) -> None:
        async with AsyncClient(socket_path) as bd:
            runtime = await bd.runtimes.get(STEADY)
            count = 0
            while trio.current_time() < deadline:
                lease = await runtime.connections.create(ttl_s=5, label=f"attacher-{index}")
                load.leases.append((lease.run_id, lease.id))
                assert lease.endpoint is not None
                await _cdp_round_trip(lease.endpoint.url, "Browser.getVersion")
                load.attached.append((lease.run_id, lease.id))
                load.attaches += 1
                count += 1
                if count % 3 == 0:
                    await lease.delete()

    async def follower(index: int) -> None:
        async with AsyncClient(socket_path) as bd:
            run = await bd.runs.get(steady_run)
            while trio.current_time() < deadline:
                with trio.move_on_after(1.0):
                    async with contextlib.aclosing(run.events.follow()) as events:
                        async for _ in events:
                            pass
                load.follows += 1

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(_guard, load, f"rpc client {i}", lambda i=i: rpc_client(i))
        for i in range(launchers):
            nursery.start_soon(_guard, load, f"launcher {i}", lambda i=i: launcher(i))
        for i in range(attachers):
            nursery.start_soon(_guard, load, f"attacher {i}", lambda i=i: attacher(i))
        for i in range(followers):
            nursery.start_soon(_guard, load, f"follower {i}", lambda i=i: follower(i))
    load.duration_s = trio.current_time() - started
    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()

    async def run() -> Load:
        async with AsyncClient(args.socket) as bd:
            await bd.runtimes.browser.launch(name=STEADY)
        try:
            return await drive(args.socket, args.duration, clients=args.clients)
        finally:
            async with AsyncClient(args.socket) as bd:
                await (await bd.runtimes.get(STEADY)).stop()

    load = trio.run(run)
    print(json.dumps({**load.figures(), "first_errors": load.errors[:5]}, indent=2))


if __name__ == "__main__":
    main()
