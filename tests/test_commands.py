"""Command recording and the close policy, through a real daemon, proxy and Chromium.

Raw trio-websocket clients speak CDP the way Puppeteer does (`browser.close()` sends
Browser.close), and Playwright drives a page, through connection leases of the daemon.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from browserd.client import AsyncClient
from browserd.daemon.base.config import CdpConfig, EventsConfig
from browserd.daemon.service import Daemon, serve

from .conftest import REPO, assert_no_processes, make_config
from .test_tour import drive_page, web_page  # noqa: F401 - web_page is a fixture

HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"


async def start_daemon(nursery: trio.Nursery, base: Path, *, record: str = "commands",
                       close_policy: str = "detach") -> Daemon:
    config = attrs.evolve(
        make_config(base, executable=HEADLESS_SHELL),
        events=EventsConfig(record_commands=record),
        cdp=CdpConfig(close_policy=close_policy),
    )
    with trio.fail_after(20):
        daemon: Daemon = await nursery.start(serve, config)
    return daemon


@pytest.fixture
async def daemon_off(nursery: trio.Nursery, short_dir: Path) -> AsyncIterator[Daemon]:
    daemon = await start_daemon(nursery, short_dir, record="off")
    yield daemon
    daemon.stop()


async def cdp(ws: WebSocketConnection, msg_id: int, method: str,
              params: dict[str, Any] | None = None, session_id: str | None = None
              ) -> dict[str, Any]:
    """Send one command and return its response (events in between are skipped)."""
    doc: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
    if session_id:
        doc["sessionId"] = session_id
    await ws.send_message(json.dumps(doc))
    while True:
        reply = json.loads(await ws.get_message())
        if reply.get("id") == msg_id:
            return reply


async def events_of(bd: AsyncClient, run_id: str, types: list[str]) -> list[Any]:
    run = await bd.runs.get(run_id)
    return await run.events.list(types=types)


async def wait_for_events(bd: AsyncClient, run_id: str, types: list[str], count: int
                          ) -> list[Any]:
    while len(events := await events_of(bd, run_id, types)) < count:  # noqa: ASYNC110 - polls
        await trio.sleep(0.05)
    return events


async def test_commands_are_recorded_with_their_outcome(
    nursery: trio.Nursery, short_dir: Path
) -> None:
    daemon = await start_daemon(nursery, short_dir)
    with trio.fail_after(60):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="rec")
            conn = await runtime.connections.create()
            assert conn.endpoint is not None and runtime.active_run_id is not None
            async with open_websocket_url(conn.endpoint.url) as ws:
                ok = await cdp(ws, 1, "Browser.getVersion")
                assert "product" in ok["result"]
                bad = await cdp(ws, 2, "Nope.nothing")
                assert bad["error"]["code"] == -32601
            commands = await wait_for_events(bd, runtime.active_run_id,
                                             ["connection.command"], 2)
            first, second = (e.data for e in commands)
            assert commands[0].source == "client"
            assert first["method"] == "Browser.getVersion" and first["outcome"] == "ok"
            assert first["connection_id"] == conn.id and first["socket_id"].startswith("sock_")
            assert first["id"] == 1 and first["session_id"] is None
            assert 0 < first["duration_ms"] < 10_000
            assert "request_bytes" not in first  # only at level "all"
            assert second["outcome"] == "error" and second["error"]["code"] == -32601
            assert "Nope.nothing" in second["error"]["message"]
            (detached,) = await wait_for_events(bd, runtime.active_run_id,
                                                ["connection.detached"], 1)
            assert detached.data["commands"] == 2
            await runtime.stop()


async def test_playwright_commands_carry_their_session(
    nursery: trio.Nursery, short_dir: Path, web_page: str  # noqa: F811
) -> None:
    daemon = await start_daemon(nursery, short_dir, record="all")
    with trio.fail_after(90):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="pw")
            conn = await runtime.connections.create()
            assert conn.endpoint is not None and runtime.active_run_id is not None
            assert await trio.to_thread.run_sync(drive_page, conn.endpoint.url,
                                                 web_page) == "hello"
            (detached,) = await wait_for_events(bd, runtime.active_run_id,
                                                ["connection.detached"], 1)
            commands = [e.data for e in await events_of(bd, runtime.active_run_id,
                                                        ["connection.command"])]
            methods = {c["method"] for c in commands}
            assert {"Target.setAutoAttach", "Page.navigate", "Target.createTarget"} <= methods
            navigate = next(c for c in commands if c["method"] == "Page.navigate")
            assert navigate["session_id"] and navigate["outcome"] == "ok"
            assert navigate["request_bytes"] > 0 and navigate["response_bytes"] > 0
            assert detached.data["commands"] >= len(commands) > 10
            # Level "all" also counts the browser's events by method.
            assert detached.data["events"].get("Page.lifecycleEvent", 0) > 0
            await runtime.stop()


async def test_level_off_records_no_commands(daemon_off: Daemon) -> None:
    with trio.fail_after(60):
        async with AsyncClient(daemon_off.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="quiet")
            conn = await runtime.connections.create()
            assert conn.endpoint is not None and runtime.active_run_id is not None
            async with open_websocket_url(conn.endpoint.url) as ws:
                await cdp(ws, 1, "Browser.getVersion")
            (detached,) = await wait_for_events(bd, runtime.active_run_id,
                                                ["connection.detached"], 1)
            assert detached.data["commands"] == 1  # read, not recorded
            assert await events_of(bd, runtime.active_run_id, ["connection.command"]) == []
            await runtime.stop()


async def test_browser_close_detaches_only_that_client(
    nursery: trio.Nursery, short_dir: Path
) -> None:
    """Puppeteer's browser.close() on a shared, persistent-profile browser: the client gets
    its answer and is let go; the browser and the other clients carry on."""
    daemon = await start_daemon(nursery, short_dir)
    with trio.fail_after(60):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="shared", profile="shared-bot")
            run_id = runtime.active_run_id
            assert run_id is not None
            leases = [await runtime.connections.create() for _ in range(2)]
            urls = [lease.endpoint.url for lease in leases if lease.endpoint is not None]
            async with open_websocket_url(urls[0]) as other, \
                    open_websocket_url(urls[1]) as closer:
                await cdp(other, 1, "Target.setDiscoverTargets", {"discover": True})
                reply = await cdp(closer, 41, "Browser.close")
                assert reply == {"id": 41, "result": {}}
                with pytest.raises(ConnectionClosed) as closed:
                    await closer.get_message()
                assert closed.value.reason is not None and closed.value.reason.code == 1000
                # The browser is alive and the other client is served as before.
                version = await cdp(other, 2, "Browser.getVersion")
                assert "product" in version["result"]
            assert (await runtime.refresh()).status == "active"
            (close,) = await wait_for_events(bd, run_id, ["connection.browser_close"], 1)
            assert close.data["action"] == "detached" and close.data["policy"] == "detach"
            detached = await wait_for_events(bd, run_id, ["connection.detached"], 2)
            ended_by = {e.data["connection_id"]: e.data["ended_by"] for e in detached}
            assert ended_by[leases[1].id] == "detached"
            assert ended_by[leases[0].id] == "client_closed"
            commands = await events_of(bd, run_id, ["connection.command"])
            assert any(c.data["method"] == "Browser.close" and c.data["outcome"] == "detached"
                       for c in commands)
            await runtime.stop()
    assert_no_processes(daemon.config.state_dir)


async def test_browser_close_detaches_on_an_ephemeral_runtime_too(daemon_off: Daemon) -> None:
    # The daemon owns an ephemeral browser as much as a profile's: stopping it is
    # runtimes.stop's job, so "detach" applies here too (and with recording off).
    with trio.fail_after(60):
        async with AsyncClient(daemon_off.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="eph")
            conn = await runtime.connections.create()
            assert conn.endpoint is not None
            async with open_websocket_url(conn.endpoint.url) as ws:
                reply = await cdp(ws, 5, "Browser.close", session_id="S")
                assert reply == {"id": 5, "result": {}, "sessionId": "S"}
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
            assert (await runtime.refresh()).status == "active"
            await runtime.stop()


def run_puppeteer_close(endpoint: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node is required (the machine has node 20)"
    assert (REPO / "node_modules" / "puppeteer-core").is_dir(), (
        "puppeteer-core is not installed: run `make test` (it runs npm ci) or `npm ci`"
    )
    result = subprocess.run([node, str(REPO / "tests" / "js" / "puppeteer_close.mjs"), endpoint],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, f"puppeteer failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def test_puppeteer_browser_close_leaves_the_runtime_running(daemon_off: Daemon) -> None:
    with trio.fail_after(90):
        async with AsyncClient(daemon_off.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="pptr", profile="pptr-bot")
            conn = await runtime.connections.create()
            assert conn.endpoint is not None and runtime.active_run_id is not None
            seen = await trio.to_thread.run_sync(run_puppeteer_close, conn.endpoint.url)
            assert seen["closed"] and not seen["connected"]
            assert seen["ms"] < 5000  # answered, not timed out
            assert (await runtime.refresh()).status == "active"
            (close,) = await wait_for_events(bd, runtime.active_run_id,
                                             ["connection.browser_close"], 1)
            assert close.data["action"] == "detached"
            await runtime.stop()


async def test_allow_policy_forwards_and_ends_the_run_as_stopped(
    nursery: trio.Nursery, short_dir: Path
) -> None:
    daemon = await start_daemon(nursery, short_dir, close_policy="allow")
    with trio.fail_after(60):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="allowed")
            run_id = runtime.active_run_id
            assert run_id is not None
            conn = await runtime.connections.create()
            assert conn.endpoint is not None
            async with open_websocket_url(conn.endpoint.url) as ws:
                await ws.send_message('{"id":1,"method":"Browser.close"}')
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.get_message()
            run = await bd.runs.get(run_id)
            while run.status not in ("ended", "failed"):
                await trio.sleep(0.05)
                run = await bd.runs.get(run_id)
            assert run.status == "ended" and run.end_reason == "stopped"  # not a crash
            stopping = await events_of(bd, run_id, ["runtime.lifecycle", "alert"])
            assert "alert" not in [e.type for e in stopping]
            asked = next(e for e in stopping if e.status == "stopping")
            assert asked.actor is not None and asked.actor["type"] == "cdp_client"
    assert_no_processes(daemon.config.state_dir)


async def test_download_behaviour_is_reported_to_the_daemon(daemon_off: Daemon) -> None:
    registry = daemon_off.registry
    with trio.fail_after(60):
        async with AsyncClient(daemon_off.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="dl")
            conn = await runtime.connections.create()
            assert conn.endpoint is not None
            folder = str(daemon_off.config.state_dir / "client-downloads")
            async with open_websocket_url(conn.endpoint.url) as ws:
                params = {"behavior": "allow", "downloadPath": folder, "eventsEnabled": True}
                assert "error" not in await cdp(ws, 1, "Browser.setDownloadBehavior", params)
                assert registry.download_behaviors[runtime.id] == params
                # A setting for another browser context is that client's own business.
                context = await cdp(ws, 2, "Target.createBrowserContext")
                other = {"behavior": "deny",
                         "browserContextId": context["result"]["browserContextId"]}
                await cdp(ws, 3, "Browser.setDownloadBehavior", other)
                assert registry.download_behaviors[runtime.id] == params
            await runtime.stop()
