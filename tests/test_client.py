"""AsyncClient and Client against a scripted peer on a real Unix socket.

The real daemon is exercised by the end-to-end tests; these cover what it cannot be made
to do on purpose: answer out of order, send garbage, vanish mid-call, never answer, push
notifications right behind a response. Each scenario runs under asyncio and under trio.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgpack
import pytest
from anyio.from_thread import start_blocking_portal

from browserd.client import AsyncClient, AsyncRunEvents, Client, errors, wire

BACKENDS = ["asyncio", "trio"]
HELLO_RESULT = {
    "api_level": 1,
    "api_compatible": 1,
    "daemon": {"version": "0.1.0", "pid": 1, "started_at": "2026-01-01T00:00:00.000000Z"},
    "peer": {"pid": 2, "uid": 3},
    "capabilities": [],
}


class Peer:
    """The daemon's end of one client connection, driven by a test script."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.wire = wire.Connection()

    async def request(self) -> wire.Request:
        while True:
            event = self.wire.next_event()
            if event is wire.NEED_DATA:
                try:
                    data = await self.stream.receive()
                except anyio.EndOfStream:
                    data = b""
                self.wire.receive_data(data)
                continue
            assert isinstance(event, wire.Request), event
            return event

    async def wait_closed(self) -> None:
        while self.wire.next_event() is not wire.CLOSED:
            try:
                self.wire.receive_data(await self.stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return

    async def reply(self, request: wire.Request, result: Any = None, error: Any = None) -> None:
        await self.stream.send(self.wire.send_response(request.msgid, error, result))

    async def notify(self, method: str, payload: dict[str, Any]) -> None:
        await self.stream.send(self.wire.send_notification(method, payload))

    async def hello(self) -> wire.Request:
        request = await self.request()
        assert request.method == "hello"
        await self.reply(request, HELLO_RESULT)
        return request


PeerScript = Callable[[Peer], Awaitable[None]]


async def with_peer(path: Path, script: PeerScript, client_part: Callable[[], Awaitable[None]]):
    """Serve one connection on `path` with `script` while `client_part` runs."""
    with anyio.fail_after(10):
        listener = await anyio.create_unix_listener(path)
        async with listener, anyio.create_task_group() as tg:

            async def serve_one() -> None:
                stream = await listener.accept()
                async with stream:
                    await script(Peer(stream))

            tg.start_soon(serve_one)
            await client_part()


def run(backend: str, path: Path, script: PeerScript, client_part: Callable[..., Any]) -> None:
    anyio.run(with_peer, path, script, client_part, backend=backend)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "d.sock"


def test_hello_then_out_of_order_responses(backend: str, sock: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(peer: Peer) -> None:
        seen["hello"] = (await peer.hello()).params
        first, second = await peer.request(), await peer.request()
        await peer.reply(second, {"echo": second.params["n"]})
        await peer.reply(first, {"echo": first.params["n"]})
        await peer.wait_closed()

    async def client() -> None:
        results: dict[int, Any] = {}
        async with AsyncClient(sock, client_name="t") as bd:
            assert bd.hello == HELLO_RESULT

            async def call(n: int) -> None:
                results[n] = await bd.call("echo", {"n": n})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, 1)
                await anyio.sleep(0.05)  # request 1 is written first
                tg.start_soon(call, 2)
        assert results == {1: {"echo": 1}, 2: {"echo": 2}}

    run(backend, sock, script, client)
    assert seen["hello"]["client"]["name"] == "t"
    assert isinstance(seen["hello"]["client"]["version"], str)
    assert seen["hello"]["api"] == {"min": 1, "max": 1}


def test_error_response_raises_the_class_of_its_code(backend: str, sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.hello()
        await peer.reply(await peer.request(), error=wire.make_error("space.not_found", "m", "h"))
        await peer.reply(await peer.request(), {"ok": True})
        await peer.wait_closed()

    async def client() -> None:
        async with AsyncClient(sock) as bd:
            with pytest.raises(errors.SpaceNotFound) as info:
                await bd.spaces.get("nope")
            assert (info.value.message, info.value.hint) == ("m", "h")
            assert await bd.call("still.works") == {"ok": True}

    run(backend, sock, script, client)


def test_api_mismatch_at_hello(backend: str, sock: Path) -> None:
    async def script(peer: Peer) -> None:
        hello = await peer.request()
        await peer.reply(hello, error=wire.make_error("rpc.api_mismatch", "levels 2-3 only"))
        await peer.wait_closed()

    async def client() -> None:
        with pytest.raises(errors.ApiMismatch):
            async with AsyncClient(sock):
                pytest.fail("connected despite the mismatch")

    run(backend, sock, script, client)


def test_peer_vanishes_mid_call(backend: str, sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.hello()
        await peer.request()  # and close without answering

    async def client() -> None:
        async with AsyncClient(sock) as bd:
            with pytest.raises(errors.ConnectionLost, match="closed the connection"):
                await bd.status()
            with pytest.raises(errors.ConnectionLost):
                await bd.status()

    run(backend, sock, script, client)


def test_final_rpc_error_notification_is_the_reason(backend: str, sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.hello()
        await peer.request()
        await peer.notify("rpc.error", {"error": wire.make_error("rpc.too_large", "big", "less")})

    async def client() -> None:
        async with AsyncClient(sock) as bd:
            with pytest.raises(errors.TooLarge, match="big"):
                await bd.call("huge", {"blob": b"x"})

    run(backend, sock, script, client)


def test_garbage_from_the_peer(backend: str, sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.hello()
        await peer.request()
        await peer.stream.send(b"\xc1garbage")
        await peer.wait_closed()

    async def client() -> None:
        async with AsyncClient(sock) as bd:
            with pytest.raises(errors.ConnectionLost, match=r"rpc\.parse_error"):
                await bd.status()

    run(backend, sock, script, client)


def test_invalid_response_fails_only_its_call(backend: str, sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.hello()
        bad = await peer.request()
        # A well-framed response whose error is not a map: wire.Connection would refuse it.
        await peer.stream.send(msgpack.packb([1, bad.msgid, "an error must be a map", None]))
        await peer.reply(await peer.request(), "fine")
        await peer.wait_closed()

    async def client() -> None:
        async with AsyncClient(sock) as bd:
            with pytest.raises(errors.InvalidRequest, match="invalid response"):
                await bd.status()
            assert await bd.call("next") == "fine"

    run(backend, sock, script, client)


def test_silent_daemon_times_out(backend: str, sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()  # hello, never answered
        await peer.wait_closed()

    async def client() -> None:
        with pytest.raises(errors.DaemonUnavailable, match=r"did not answer within 0\.3 s"):
            async with AsyncClient(sock, connect_timeout=0.3):
                pass

    run(backend, sock, script, client)


def test_follow_receives_notifications_right_behind_the_response(backend: str, sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.hello()
        follow = await peer.request()
        assert follow.method == "runs.events.follow"
        assert follow.params == {"run_id": "run_1", "after_seq": 0}
        await peer.reply(follow, {"subscription": "s1"})
        for seq in (1, 2):
            await peer.notify("runs.event", {"subscription": "s1", "event": {"seq": seq}})
        await peer.notify("runs.event", {"subscription": "s9", "event": {"seq": 99}})
        await peer.notify("runs.heartbeat", {"subscription": "s1"})
        await peer.notify("subscription.ended", {"subscription": "s1", "reason": "overflow"})
        again = await peer.request()
        assert again.params == {"run_id": "run_1", "after_seq": 2}
        await peer.reply(again, {"subscription": "s2"})
        await peer.notify("runs.event", {"subscription": "s2", "event": {"seq": 3}})
        await peer.notify("subscription.ended", {"subscription": "s2", "reason": "run_ended"})
        await peer.wait_closed()

    async def client() -> None:
        async with AsyncClient(sock) as bd:
            events = [event.seq async for event in AsyncRunEvents(bd, "run_1").follow()]
        assert events == [1, 2, 3]

    run(backend, sock, script, client)


def test_blocking_client_mirrors_resources(sock: Path) -> None:
    runtime = {"id": "rt_1", "space": "default", "name": "crm", "status": "active",
               "active_run_id": "run_1", "future_key": 1}  # fmt: skip
    stopped = {**runtime, "status": "stopped", "active_run_id": None}
    run_record = {"id": "run_1", "runtime_id": "rt_1", "status": "ended", "end_reason": "stopped"}

    async def script(peer: Peer) -> None:
        await peer.hello()
        get = await peer.request()
        assert (get.method, get.params) == ("runtimes.get", {"space": "default", "name": "crm"})
        await peer.reply(get, runtime)
        stop = await peer.request()
        assert (stop.method, stop.params) == ("runtimes.stop", {"id": "rt_1"})
        await peer.reply(stop, {"runtime": stopped, "run": run_record, "stopped": True})
        refresh = await peer.request()
        assert (refresh.method, refresh.params) == ("runtimes.get", {"id": "rt_1"})
        await peer.reply(refresh, stopped)
        await peer.wait_closed()

    with start_blocking_portal("trio") as portal:
        listener = portal.call(anyio.create_unix_listener, sock)

        async def serve_one() -> None:
            async with listener:
                stream = await listener.accept()
                async with stream:
                    await script(Peer(stream))

        peer_done = portal.start_task_soon(serve_one)
        with Client(sock) as bd:
            rt = bd.runtimes.get("crm")
            assert (rt.name, rt.status, rt.raw["future_key"]) == ("crm", "active", 1)
            run_ = rt.stop()
            assert run_ is not None and run_.end_reason == "stopped"
            assert (rt.status, rt.active_run_id) == ("stopped", None)  # updated in place
            with pytest.raises(errors.NoActiveRun):
                rt.current_run()
        peer_done.result(timeout=10)
