"""The daemon's CDP client: against real Chromium, and against a scripted WebSocket peer for
what a real browser will not do on demand (answer out of order, stay silent, flood events)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio_websocket

from browserd.daemon.browser.process import BrowserProcess, LaunchSpec
from browserd.daemon.cdp.client import CdpConnection, CdpError, CdpEvent, open_cdp

HEADLESS_SHELL = "/usr/lib/chromium/chromium-headless-shell"


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserProcess]:
    assert os.access(HEADLESS_SHELL, os.X_OK), f"{HEADLESS_SHELL} is needed for these tests"
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            proc = await BrowserProcess.launch(LaunchSpec(HEADLESS_SHELL, tmp_path / "p"), nursery)
        yield proc
        with trio.fail_after(30):
            await proc.stop()
        nursery.cancel_scope.cancel()


async def first_page(cdp: CdpConnection) -> str:
    targets = await cdp.call("Target.getTargets")
    return next(t["targetId"] for t in targets["targetInfos"] if t["type"] == "page")


# ---------------------------------------------------------------- real Chromium


async def test_calls_errors_events_and_sessions(browser: BrowserProcess) -> None:
    with trio.fail_after(20):
        async with open_cdp(browser.endpoint.ws_url) as cdp:
            version = await cdp.call("Browser.getVersion")
            assert "Chrome" in version["product"]

            with pytest.raises(CdpError) as caught:
                await cdp.call("No.suchMethod")
            assert caught.value.code == -32601
            assert caught.value.method == "No.suchMethod"

            await cdp.call("Target.setDiscoverTargets", {"discover": True})
            event = await cdp.events.receive()
            assert isinstance(event, CdpEvent)
            assert event.method == "Target.targetCreated"
            assert event.session_id is None

            attached = await cdp.call(
                "Target.attachToTarget", {"targetId": await first_page(cdp), "flatten": True}
            )
            session = attached["sessionId"]
            answer = await cdp.call("Runtime.evaluate", {"expression": "6 * 7"},
                                    session_id=session)
            assert answer["result"]["value"] == 42


async def test_messages_beyond_the_websocket_default_limit(browser: BrowserProcess) -> None:
    size = 8 * 1024 * 1024  # trio-websocket's default limit is 1 MiB
    with trio.fail_after(30):
        async with open_cdp(browser.endpoint.ws_url) as cdp:
            attached = await cdp.call(
                "Target.attachToTarget", {"targetId": await first_page(cdp), "flatten": True}
            )
            answer = await cdp.call(
                "Runtime.evaluate",
                {"expression": f"'x'.repeat({size})", "returnByValue": True},
                session_id=attached["sessionId"],
            )
    assert len(answer["result"]["value"]) == size


async def test_concurrent_calls_get_their_own_answers(browser: BrowserProcess) -> None:
    results: dict[int, int] = {}
    with trio.fail_after(20):
        async with open_cdp(browser.endpoint.ws_url) as cdp:
            session = (await cdp.call(
                "Target.attachToTarget", {"targetId": await first_page(cdp), "flatten": True}
            ))["sessionId"]

            async def evaluate(n: int) -> None:
                answer = await cdp.call("Runtime.evaluate", {"expression": f"{n} * 2"},
                                        session_id=session)
                results[n] = answer["result"]["value"]

            async with trio.open_nursery() as nursery:
                for n in range(50):
                    nursery.start_soon(evaluate, n)
    assert results == {n: n * 2 for n in range(50)}


async def test_browser_death_breaks_pending_calls_and_ends_events(
    browser: BrowserProcess,
) -> None:
    with trio.fail_after(20):
        async with open_cdp(browser.endpoint.ws_url) as cdp:
            session = (await cdp.call(
                "Target.attachToTarget", {"targetId": await first_page(cdp), "flatten": True}
            ))["sessionId"]

            async def kill_soon() -> None:
                await trio.sleep(0.3)
                os.kill(browser.pid, signal.SIGKILL)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_soon)
                with pytest.raises(trio.BrokenResourceError):
                    await cdp.call(
                        "Runtime.evaluate",
                        {"expression": "new Promise(() => {})", "awaitPromise": True},
                        session_id=session,
                    )
            async for _ in cdp.events:  # drains what came, then ends
                pass
            assert not cdp.is_open
            with pytest.raises(trio.BrokenResourceError):
                await cdp.call("Browser.getVersion")
    with pytest.raises(trio.ClosedResourceError):
        await cdp.call("Browser.getVersion")


# ---------------------------------------------------------------- scripted peer

Handler = Callable[[trio_websocket.WebSocketConnection], Awaitable[None]]


@asynccontextmanager
async def scripted_peer(
    handler: Handler, headers: list[list[tuple[bytes, bytes]]] | None = None
) -> AsyncIterator[str]:
    async def serve(request: trio_websocket.WebSocketRequest) -> None:
        if headers is not None:
            headers.append(list(request.headers))
        ws = await request.accept()
        try:
            await handler(ws)
        except trio_websocket.ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, serve, "127.0.0.1", 0, None)
        yield f"ws://127.0.0.1:{server.port}/devtools/browser/scripted"
        nursery.cancel_scope.cancel()


async def test_handshake_sends_no_origin() -> None:
    headers: list[list[tuple[bytes, bytes]]] = []

    async def idle(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.get_message()

    with trio.fail_after(10):
        async with scripted_peer(idle, headers) as url, open_cdp(url):
            pass
    names = {name.lower() for name, _ in headers[0]}
    assert b"sec-websocket-key" in names
    assert b"origin" not in names


async def test_answers_out_of_order_reach_their_callers() -> None:
    async def reverse(ws: trio_websocket.WebSocketConnection) -> None:
        requests = [json.loads(await ws.get_message()) for _ in range(3)]
        for request in reversed(requests):
            await ws.send_message(json.dumps({"id": request["id"],
                                              "result": {"echo": request["params"]["n"]}}))
        await ws.get_message()

    results: dict[int, int] = {}
    with trio.fail_after(10):
        async with scripted_peer(reverse) as url, open_cdp(url) as cdp:

            async def call(n: int) -> None:
                results[n] = (await cdp.call("Echo.echo", {"n": n}))["echo"]

            async with trio.open_nursery() as nursery:
                for n in range(3):
                    nursery.start_soon(call, n)
    assert results == {0: 0, 1: 1, 2: 2}


async def test_timeout_then_late_answer_is_ignored() -> None:
    async def slow_first(ws: trio_websocket.WebSocketConnection) -> None:
        first = json.loads(await ws.get_message())
        second = json.loads(await ws.get_message())
        await ws.send_message(b"not json at all")
        await ws.send_message(json.dumps({"id": first["id"], "result": {"late": True}}))
        await ws.send_message(json.dumps({"id": second["id"], "result": {"ok": True}}))
        await ws.get_message()

    with trio.fail_after(10):
        async with scripted_peer(slow_first) as url, open_cdp(url) as cdp:
            with pytest.raises(trio.TooSlowError):
                await cdp.call("Slow.first", timeout_s=0.2)
            assert await cdp.call("Fast.second") == {"ok": True}
            assert cdp.is_open


async def test_unread_events_are_dropped_not_blocking() -> None:
    async def flood(ws: trio_websocket.WebSocketConnection) -> None:
        request = json.loads(await ws.get_message())
        for i in range(50):
            await ws.send_message(json.dumps({"method": "Flood.event", "params": {"i": i}}))
        await ws.send_message(json.dumps({"id": request["id"], "result": {}}))
        await ws.get_message()

    with trio.fail_after(10):
        async with scripted_peer(flood) as url, open_cdp(url, max_buffered_events=10) as cdp:
            assert await cdp.call("Flood.start") == {}
            assert cdp.events_dropped == 40
            first = cdp.events.receive_nowait()
            assert first == CdpEvent("Flood.event", {"i": 0}, None)


async def test_errors_in_the_block_come_out_unwrapped() -> None:
    async def idle(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.get_message()

    with trio.fail_after(10):
        async with scripted_peer(idle) as url:
            with pytest.raises(KeyError):
                async with open_cdp(url):
                    raise KeyError("mine")


async def test_refused_connection_raises_handshake_error() -> None:
    with trio.fail_after(10), pytest.raises(trio_websocket.HandshakeError):
        async with open_cdp("ws://127.0.0.1:9/devtools/browser/none"):
            pass
