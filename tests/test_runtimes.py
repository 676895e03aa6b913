"""Runtime lifecycle through the real daemon: failures, conflicts, crashes, leases, big messages."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from browserd.client import AsyncClient, errors
from browserd.daemon.base.config import LimitsConfig
from browserd.daemon.service import Daemon, serve

from .conftest import assert_no_processes, make_config, processes_using


@pytest.fixture
async def bd(daemon: Daemon) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(daemon.config.socket) as client:
        yield client


async def expect_code(code: str, call: object) -> errors.BrowserdError:
    with pytest.raises(errors.BrowserdError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code == code, caught.value
    assert caught.value.hint
    return caught.value


async def test_launch_failure_reports_the_browsers_last_words(short_dir: Path) -> None:
    broken = short_dir / "broken-browser"
    broken.write_text("#!/bin/sh\necho 'cannot open display: nowhere' >&2\nexit 3\n")
    broken.chmod(0o755)
    config = make_config(short_dir, executable=str(broken))
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve, config)
        async with AsyncClient(config.socket) as bd:
            with trio.fail_after(30):
                error = await expect_code("browser.launch_failed",
                                          bd.runtimes.browser.launch(name="crm"))
            assert error.data["exit_code"] == 3
            assert any("cannot open display" in line for line in error.data["stderr_tail"])
            runtime = await bd.runtimes.get("crm")
            assert runtime.status == "failed" and runtime.active_run_id is None
            (run,) = await runtime.runs.list()
            assert run.status == "failed" and run.end_reason == "launch_failed"
            assert run.failure is not None and run.failure["code"] == "browser.launch_failed"
        daemon.stop()
    assert not any((config.state_dir / "ephemeral").iterdir())


async def test_missing_browser_says_how_to_get_one(short_dir: Path) -> None:
    config = make_config(short_dir, executable=str(short_dir / "no-such-chromium"))
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve, config)
        async with AsyncClient(config.socket) as bd:
            error = await expect_code("browser.not_found", bd.runtimes.browser.launch(name="x"))
            assert "apt-get install chromium" in error.hint or "BROWSERD_BROWSER" in error.hint
        daemon.stop()


async def test_profile_conflicts(bd: AsyncClient) -> None:
    with trio.fail_after(60):
        first = await bd.runtimes.browser.launch(name="one", profile="shared")
        error = await expect_code("profile.in_use",
                                  bd.runtimes.browser.launch(name="two", profile="shared"))
        assert error.data["holder"]["runtime_id"] == first.id
        await expect_code("runtime.name_conflict",
                          bd.runtimes.browser.launch(name="one", profile="other"))
        await first.stop()
        second = await bd.runtimes.browser.launch(name="two", profile="shared")
        assert second.status == "active"
        await expect_code("runtime.not_stopped", second.delete())
        await second.delete(force=True)
        await expect_code("runtime.not_found", bd.runtimes.get("two"))


async def test_crash_is_recorded_and_nothing_is_left(bd: AsyncClient, daemon: Daemon) -> None:
    with trio.fail_after(60):
        runtime = await bd.runtimes.browser.launch(name="crashy")
        run = await runtime.current_run()
        live = daemon.registry.runtimes[runtime.id]
        assert live.process is not None and live.user_data_dir is not None
        user_data_dir = live.user_data_dir
        os.kill(live.process.pid, signal.SIGKILL)
        while (await runtime.refresh()).status != "failed":  # noqa: ASYNC110 - polls the daemon
            await trio.sleep(0.05)
        await run.refresh()
        assert run.status == "failed" and run.end_reason == "crashed"
        assert run.failure is not None and run.failure["signal"] == signal.SIGKILL
        assert not processes_using(user_data_dir)
        types = [e.type for e in await run.events.list()]
        assert "alert" in types
        # a failed runtime can be launched again, as a new run
        again = await bd.runtimes.browser.launch(name="crashy")
        assert again.status == "active" and again.active_run_id != run.id
        await again.stop()


async def test_leases_gate_the_endpoint(bd: AsyncClient) -> None:
    with trio.fail_after(60):
        await expect_code("runtime.not_found", bd.runtimes.get("nothing"))
        runtime = await bd.runtimes.browser.launch(name="gate")
        conn = await runtime.connections.create(ttl_s=1)
        assert conn.endpoint is not None
        url = conn.endpoint.url
        async with open_websocket_url(url) as ws:
            await ws.send_message(json.dumps({"id": 1, "method": "Browser.getVersion"}))
            reply = json.loads(await ws.get_message())
            assert reply["id"] == 1 and "product" in reply["result"]
        # a wrong token is refused
        bad = url[: url.rindex("/") + 1] + "x" * 43
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(bad):
                pass
        assert rejected.value.status_code == 401
        # after the TTL the lease admits nobody
        await trio.sleep(1.2)
        with pytest.raises(ConnectionRejected) as expired:
            async with open_websocket_url(url):
                pass
        assert expired.value.status_code == 410
        # a revoked lease too, and force closes sockets already open
        second = await runtime.connections.create(ttl_s=60)
        assert second.endpoint is not None
        async with open_websocket_url(second.endpoint.url) as ws:
            await second.delete(force=True)
            with pytest.raises(Exception):  # noqa: B017 - closed by the daemon, any close kind
                await ws.get_message()
        types = [e.type for e in await (await runtime.current_run()).events.list()]
        for expected in ("connection.expired", "connection.revoked", "connection.refused"):
            assert expected in types
        # a stopped runtime grants no lease
        await runtime.stop()
        await expect_code("runtime.not_active", runtime.connections.create())


async def test_exclusive_lease_holds_the_runtime(bd: AsyncClient) -> None:
    with trio.fail_after(60):
        runtime = await bd.runtimes.browser.launch(name="solo")
        lock = await runtime.connections.create(exclusive=True)
        await expect_code("runtime.controller_busy", runtime.connections.create())
        await lock.delete()
        await runtime.connections.create()
        await runtime.stop()


async def test_twenty_mib_message_through_the_proxy(bd: AsyncClient) -> None:
    with trio.fail_after(90):
        runtime = await bd.runtimes.browser.launch(name="big")
        conn = await runtime.connections.create()
        assert conn.endpoint is not None
        size = 20 * 1024 * 1024
        async with open_websocket_url(conn.endpoint.url, max_message_size=64 << 20) as ws:
            await ws.send_message(json.dumps({"id": 1, "method": "Target.getTargets"}))
            targets = json.loads(await ws.get_message())["result"]["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            await ws.send_message(json.dumps({
                "id": 2, "method": "Target.attachToTarget",
                "params": {"targetId": page["targetId"], "flatten": True}}))
            session = None
            while session is None:
                message = json.loads(await ws.get_message())
                if message.get("id") == 2:
                    session = message["result"]["sessionId"]
            # 20 MiB client -> browser, and 20 MiB browser -> client
            blob = "x" * size
            await ws.send_message(json.dumps({
                "id": 3, "sessionId": session, "method": "Runtime.evaluate",
                "params": {"expression": f"'{blob}'.length + ':' + 'y'.repeat({size})",
                           "returnByValue": True}}))
            while True:
                message = json.loads(await ws.get_message())
                if message.get("id") == 3:
                    break
            value = message["result"]["result"]["value"]
            assert value.startswith(f"{size}:") and len(value) == len(str(size)) + 1 + size
        await runtime.stop()


async def test_quota_and_shutdown(short_dir: Path) -> None:
    config = make_config(short_dir)
    config = type(config)(state_dir=config.state_dir, socket=config.socket,
                          limits=LimitsConfig(max_runtimes=2))
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            daemon: Daemon = await nursery.start(serve, config)
            async with AsyncClient(config.socket) as bd:
                a = await bd.runtimes.browser.launch(name="a")
                await bd.runtimes.browser.launch(name="b")
                error = await expect_code("browser.concurrent_quota_exceeded",
                                          bd.runtimes.browser.launch(name="c"))
                assert {h["name"] for h in error.data["holders"]} == {"a", "b"}
                run_a = await a.current_run()
            daemon.stop()  # an orderly shutdown stops every runtime
    async with trio.open_nursery() as nursery:
        daemon = await nursery.start(serve, config)
        async with AsyncClient(config.socket) as bd:
            run = await bd.runs.get(run_a.id)
            assert run.status == "ended" and run.end_reason == "daemon_shutdown"
            assert {r.status for r in await bd.runtimes.list()} == {"stopped"}
        daemon.stop()
    assert_no_processes(config.state_dir)


async def test_spaces(bd: AsyncClient) -> None:
    with trio.fail_after(60):
        assert [s.name for s in await bd.spaces.list()] == ["default"]
        await bd.spaces.create("team", {"owner": "qa"})
        runtime = await bd.space("team").runtimes.browser.launch(name="crm")
        # the same name in another space is another runtime
        other = await bd.runtimes.browser.launch(name="crm")
        assert other.id != runtime.id
        await expect_code("space.not_empty", bd.spaces.delete("team"))
        await runtime.delete(force=True)
        await other.stop()
        await bd.spaces.delete("team")
        await expect_code("space.not_found", bd.space("team").runtimes.browser.launch(name="x"))
