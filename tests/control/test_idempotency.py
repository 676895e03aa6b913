"""Idempotency keys: the store on its own, then runtimes.launch through a daemon that restarts."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from browserd.client import AsyncClient, errors
from browserd.daemon.base.errors import ApiError
from browserd.daemon.control import idempotency
from browserd.daemon.control.idempotency import IdempotencyStore, fingerprint
from browserd.daemon.service import Daemon, serve

from ..conftest import make_config
from .conftest import HEADLESS_SHELL


def test_fingerprints_ignore_key_order_and_see_values() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert fingerprint({"data": b"x"}) != fingerprint({"data": b"y"})


async def test_replay_conflict_and_failure(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path / "idempotency.json")
    calls = 0

    async def work() -> dict[str, int]:
        nonlocal calls
        calls += 1
        return {"n": calls}

    assert await store.run("m", "k", {"p": 1}, work) == ({"n": 1}, False)
    assert await store.run("m", "k", {"p": 1}, work) == ({"n": 1}, True)
    assert calls == 1
    assert await store.run("other.method", "k", {"p": 1}, work) == ({"n": 2}, False), \
        "keys are per method"
    with pytest.raises(ApiError) as conflict:
        await store.run("m", "k", {"p": 2}, work)
    assert conflict.value.code == "request.idempotency_conflict"

    async def broken() -> None:
        raise ApiError("browser.launch_failed", "no")

    with pytest.raises(ApiError):
        await store.run("m", "fails", {}, broken)
    assert await store.run("m", "fails", {}, work) == ({"n": 3}, False), \
        "a failure is not replayed: the key is free again"


async def test_concurrent_requests_wait_for_the_first(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path / "idempotency.json")
    release = trio.Event()
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "done"

    results: list[tuple[str, bool]] = []

    async def request() -> None:
        results.append(await store.run("m", "k", {}, slow))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(request)
            await trio.sleep(0.05)
            assert calls == 1
            release.set()
    assert sorted(results) == [("done", False), ("done", True), ("done", True)]


async def test_keys_persist_and_expire(tmp_path: Path) -> None:
    path = tmp_path / "idempotency.json"
    store = IdempotencyStore(path, ttl_s=60)

    async def one() -> int:
        return 1

    await store.run("m", "keep", {}, one)
    short = IdempotencyStore(path, ttl_s=0.05)
    short.load()
    await short.run("m", "brief", {}, one)
    assert {row["key"] for row in json.loads(path.read_text())["entries"]} == {"keep", "brief"}
    await trio.sleep(0.1)
    reloaded = IdempotencyStore(path)
    reloaded.load()
    assert reloaded.lookup("m", "keep") == 1
    assert reloaded.lookup("m", "brief") is None, "expired keys are dropped"

    path.write_text("{not json")
    damaged = IdempotencyStore(path)
    damaged.load()  # logged, not fatal
    assert len(damaged) == 0


async def test_launch_with_a_key_survives_a_daemon_restart(short_dir: Path) -> None:
    config = make_config(short_dir, executable=HEADLESS_SHELL)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            first: Daemon = await nursery.start(serve, config)
            async with AsyncClient(config.socket) as bd:
                launched = await bd.call("runtimes.launch", {"name": "crm",
                                                             "idempotency_key": "job-7"})
                again = await bd.call("runtimes.launch", {"name": "crm",
                                                          "idempotency_key": "job-7"})
                assert again == launched and launched["started"] is True
                with pytest.raises(errors.IdempotencyConflict):
                    await bd.call("runtimes.launch", {"name": "crm", "headless": False,
                                                      "idempotency_key": "job-7"})
                # without a key an active runtime comes back with started=false
                plain = await bd.call("runtimes.launch", {"name": "crm"})
                assert plain["started"] is False
            first.stop()
        assert (config.state_dir / "idempotency.json").exists()

        async with trio.open_nursery() as nursery:
            second: Daemon = await nursery.start(serve, config)
            async with AsyncClient(config.socket) as bd:
                replayed = await bd.call("runtimes.launch", {"name": "crm",
                                                             "idempotency_key": "job-7"})
                assert replayed == launched, "the first result, after a restart"
                runtime = await bd.runtimes.get("crm")
                assert runtime.status == "stopped", "the replay launched nothing"
                fresh = await bd.call("runtimes.launch", {"name": "crm",
                                                          "idempotency_key": "job-8"})
                assert fresh["started"] and fresh["run"]["id"] != launched["run"]["id"]
            second.stop()


async def test_stored_results_have_a_byte_budget(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idempotency, "MAX_BYTES", 100_000)  # 16 MiB in the daemon
    path = tmp_path / "idempotency.json"
    store = IdempotencyStore(path)

    def result(key: str) -> Callable[[], Awaitable[dict[str, str]]]:
        async def work() -> dict[str, str]:
            return {"key": key, "body": "x" * 30_000}
        return work

    for number in range(6):
        await store.run("m", f"k{number}", {}, result(f"k{number}"))
    assert store.stored_bytes <= 100_000
    assert [store.lookup("m", f"k{n}") is not None for n in range(6)] == [False] * 3 + [True] * 3
    assert path.stat().st_size <= 100_000 + 1000, "the file is bounded the same way"
    # A file written by an older daemon, over the budget, is trimmed as it is loaded.
    monkeypatch.setattr(idempotency, "MAX_BYTES", 70_000)
    reloaded = IdempotencyStore(path)
    reloaded.load()
    assert len(reloaded) == 2 and reloaded.lookup("m", "k5") == {"key": "k5",
                                                                  "body": "x" * 30_000}
