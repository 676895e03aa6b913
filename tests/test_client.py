"""AsyncClient and Client against a scripted peer on a real Unix socket.

The real daemon is exercised by the end-to-end tests; these cover what it cannot be made
to do on purpose: answer out of order, send garbage, vanish mid-call, never answer, push
notifications right behind a response. Each scenario runs under asyncio and under trio.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgpack
import pytest
from anyio.from_thread import start_blocking_portal

from browserd.client import AsyncClient, AsyncRunEvents, Client, errors, wire

from .conftest import DaemonProcess

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


    async def run_get(self) -> None:
        """Answer `runs.get` for run_1 (a blocking client's way to a Run)."""
        request = await self.request()
        assert request.method == "runs.get"
        await self.reply(request, {"id": "run_1", "status": "active"})


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


# -- without a context manager ----------------------------------------------------------


def test_async_client_connects_on_first_call(backend: str, sock: Path) -> None:
    """`AsyncClient()` needs no `async with`: the first call connects (hello), aclose() ends
    it, and a closed client stays closed."""

    async def script(peer: Peer) -> None:
        await peer.hello()
        await peer.reply(await peer.request(), {"n": 1})
        await peer.wait_closed()

    async def client() -> None:
        bd = AsyncClient(sock)
        assert bd.hello == {}, "nothing happens at construction"
        assert await bd.call("first") == {"n": 1}
        assert bd.hello == HELLO_RESULT
        await bd.aclose()
        with pytest.raises(errors.ConnectionLost, match="closed"):
            await bd.call("after.close")
        await bd.aclose()  # twice is fine

    run(backend, sock, script, client)


async def _concurrent_first_calls(sock: Path) -> None:
    bd = AsyncClient(sock)
    results: list[Any] = []

    async def call(n: int) -> None:
        results.append(await bd.call("echo", {"n": n}))

    async with anyio.create_task_group() as tg:  # the calls race to connect: one hello
        for n in range(5):
            tg.start_soon(call, n)
    assert sorted(r["n"] for r in results) == list(range(5))
    await bd.aclose()


def test_async_client_first_calls_from_many_tasks_say_hello_once(backend: str,
                                                                 sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.hello()
        for _ in range(5):
            request = await peer.request()
            assert request.method == "echo", "one hello only"
            await peer.reply(request, request.params)
        await peer.wait_closed()

    run(backend, sock, script, lambda: _concurrent_first_calls(sock))


def test_async_client_missing_daemon_then_retry(backend: str, sock: Path) -> None:
    """A failed first connect raises DaemonUnavailable; the next call tries again."""

    async def script(peer: Peer) -> None:
        await peer.hello()
        await peer.reply(await peer.request(), "late but fine")
        await peer.wait_closed()

    async def main() -> None:
        bd = AsyncClient(sock)
        with pytest.raises(errors.DaemonUnavailable, match="no daemon socket"):
            await bd.status()
        await with_peer(sock, script, lambda: _call_and_close(bd))

    anyio.run(main, backend=backend)


async def _call_and_close(bd: AsyncClient) -> None:
    assert await bd.call("x") == "late but fine"
    await bd.aclose()


# -- the blocking Client ----------------------------------------------------------------


@contextlib.contextmanager
def peer_in_thread(sock: Path, script: PeerScript, connections: int = 1) -> Iterator[None]:
    """Serve `connections` connections on `sock` with `script`, in a trio loop of its own
    thread, while the test drives a blocking Client from its own thread."""
    with start_blocking_portal("trio") as portal:
        listener = portal.call(anyio.create_unix_listener, sock)

        async def serve() -> None:
            with anyio.fail_after(10):
                async with listener, anyio.create_task_group() as tg:
                    for _ in range(connections):
                        stream = await listener.accept()
                        tg.start_soon(serve_one, stream)

        async def serve_one(stream: anyio.abc.ByteStream) -> None:
            async with stream:
                await script(Peer(stream))

        done = portal.start_task_soon(serve)
        yield
        done.result(timeout=10)


def test_client_connects_on_first_call_and_closes(sock: Path) -> None:
    """`Client()` without `with`: the first call connects, close() ends the connection."""

    async def script(peer: Peer) -> None:
        await peer.hello()
        await peer.reply(await peer.request(), {"ok": 1})
        await peer.wait_closed()  # returns only once the client has closed its end

    with peer_in_thread(sock, script):
        bd = Client(sock)
        assert bd.hello == {}
        assert bd.call("first") == {"ok": 1}
        assert bd.hello == HELLO_RESULT
        bd.close()
        with pytest.raises(errors.ConnectionLost, match="closed"):
            bd.status()
        bd.close()


def test_client_runs_no_thread(sock: Path) -> None:
    """A plain socket client: calls and follows run in the caller's thread, none other.
    Threads are compared as sets: one an earlier test left (an idle worker) may end
    meanwhile, which a count took for a client thread gone missing."""
    before = set(threading.enumerate())

    async def script(peer: Peer) -> None:
        await peer.hello()
        await peer.reply(await peer.request(), "x")
        await peer.run_get()
        follow = await peer.request()
        await peer.reply(follow, {"subscription": "s1"})
        await peer.notify("runs.event", {"subscription": "s1", "event": {"seq": 1}})
        await peer.notify("subscription.ended", {"subscription": "s1", "reason": "run_ended"})
        await peer.wait_closed()

    with peer_in_thread(sock, script):
        threads = set(threading.enumerate())
        assert len(threads - before) == 1  # the peer's own thread is running now
        with Client(sock) as bd:
            assert bd.call("x") == "x"
            for event in bd.runs.get("run_1").events.follow():
                assert set(threading.enumerate()) <= threads
                assert event.seq == 1
            assert set(threading.enumerate()) <= threads


def test_client_maps_transport_errors(sock: Path, tmp_path: Path) -> None:
    with pytest.raises(errors.DaemonUnavailable, match="no daemon socket"):
        Client(tmp_path / "none.sock").status()

    async def vanish(peer: Peer) -> None:
        await peer.hello()
        await peer.request()  # and close without answering

    with peer_in_thread(sock, vanish), Client(sock) as bd:
        with pytest.raises(errors.ConnectionLost, match="closed the connection"):
            bd.status()
        with pytest.raises(errors.ConnectionLost):
            bd.status()

    async def garbage(peer: Peer) -> None:
        await peer.hello()
        await peer.request()
        await peer.stream.send(b"\xc1garbage")
        await peer.wait_closed()

    with (peer_in_thread(sock, garbage), Client(sock) as bd,
          pytest.raises(errors.ConnectionLost, match=r"rpc\.parse_error")):
        bd.status()

    async def last_word(peer: Peer) -> None:
        await peer.hello()
        await peer.request()
        await peer.notify("rpc.error", {"error": wire.make_error("rpc.too_large", "big")})

    with (peer_in_thread(sock, last_word), Client(sock) as bd,
          pytest.raises(errors.TooLarge, match="big")):
        bd.call("huge", {"blob": b"x"})

    async def invalid(peer: Peer) -> None:
        await peer.hello()
        bad = await peer.request()
        await peer.stream.send(msgpack.packb([1, bad.msgid, "an error must be a map", None]))
        await peer.reply(await peer.request(), "fine")
        await peer.wait_closed()

    with peer_in_thread(sock, invalid), Client(sock) as bd:
        with pytest.raises(errors.InvalidRequest, match="invalid response"):
            bd.status()
        assert bd.call("next") == "fine"


def test_client_silent_daemon_times_out(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()  # hello, never answered
        await peer.wait_closed()

    with peer_in_thread(sock, script):
        started = time.monotonic()
        with pytest.raises(errors.DaemonUnavailable, match=r"did not answer within 0\.3 s"):
            Client(sock, connect_timeout=0.3).open()
        assert time.monotonic() - started < 2


def in_threads(work: Callable[[int], None], count: int, *, timeout: float) -> list[BaseException]:
    """Run ``work(n)`` for each n below ``count``, each in a thread of its own, all at once;
    returns what they raised. A thread still running after ``timeout`` fails the test."""
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
        assert not thread.is_alive(), "a caller hung"
    return failures


def test_client_shared_by_threads_gets_each_its_own_reply(sock: Path) -> None:
    """Threads call at once through one Client: each call has a connection to itself while
    the others are in flight (the daemon answers none until all are in, then in reverse
    order), and each thread gets its own reply."""
    count = 8
    arrived: list[int] = []
    all_in = anyio.Event()

    async def script(peer: Peer) -> None:
        await peer.hello()
        request = await peer.request()
        arrived.append(request.params["n"])
        if len(arrived) == count:
            all_in.set()
        await all_in.wait()
        await anyio.sleep((count - request.params["n"]) * 0.01)
        await peer.reply(request, {"echo": request.params["n"]})
        await peer.wait_closed()

    results: dict[int, Any] = {}
    with peer_in_thread(sock, script, connections=count), Client(sock) as bd:

        def worker(n: int) -> None:
            results[n] = bd.call("echo", {"n": n})

        failures = in_threads(worker, count, timeout=10)
    assert not failures, failures
    assert results == {n: {"echo": n} for n in range(count)}


def test_a_line_shared_by_threads_gets_each_its_own_reply(sock: Path) -> None:
    """One Line that threads share (through ssh, one carries every call): the daemon answers
    in reverse order, so every reply but the last is read by a thread other than the one
    waiting for it."""
    from browserd.client._sync.line import Line
    from browserd.client.contexts import destination

    count = 8

    async def script(peer: Peer) -> None:
        await peer.hello()
        requests = [await peer.request() for _ in range(count)]
        for request in reversed(requests):
            await peer.reply(request, {"echo": request.params["n"]})
            await anyio.sleep(0.01)
        await peer.wait_closed()

    results: dict[int, Any] = {}
    with peer_in_thread(sock, script):
        line = Line(destination(None, sock), client_name="test", connect_timeout=5,
                    max_buffer_size=wire.DEFAULT_MAX_BUFFER)

        def worker(n: int) -> None:
            results[n] = line.call("echo", {"n": n})

        try:
            failures = in_threads(worker, count, timeout=10)
        finally:
            line.close()
    assert not failures, failures
    assert results == {n: {"echo": n} for n in range(count)}


def test_client_close_from_another_thread_fails_the_waiting_call(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.hello()
        await peer.request()  # never answered
        await peer.wait_closed()

    with peer_in_thread(sock, script):
        bd = Client(sock)
        bd.open()
        timer = threading.Timer(0.2, bd.close)
        timer.start()
        with pytest.raises(errors.ConnectionLost, match="closed"):
            bd.call("slow")
        timer.join()


def test_a_call_interrupted_by_ctrl_c_leaves_a_client_that_works(sock: Path) -> None:
    """^C while a call waits: KeyboardInterrupt reaches the caller, the connection it was
    read on is closed (where the reading stopped is not known), and the next call goes out
    on a new one."""
    served: list[str] = []

    async def script(peer: Peer) -> None:
        await peer.hello()
        request = await peer.request()
        served.append(request.method)
        if request.method == "slow":
            await peer.wait_closed()  # never answered; the client drops the connection
            served.append("closed")
            return
        await peer.reply(request, "fine")
        await peer.wait_closed()

    main = threading.get_ident()
    with peer_in_thread(sock, script, connections=2), Client(sock) as bd:
        timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            bd.call("slow")
        timer.join()
        assert bd.call("next") == "fine"
    assert sorted(served) == ["closed", "next", "slow"]


def test_blocking_follow_resubscribes_after_overflow(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.hello()
        await peer.run_get()
        follow = await peer.request()
        await peer.reply(follow, {"subscription": "s1"})
        for seq in (1, 2):
            await peer.notify("runs.event", {"subscription": "s1", "event": {"seq": seq}})
        await peer.notify("subscription.heartbeat", {"subscription": "s1", "last_seq": 2})
        await peer.notify("subscription.ended", {"subscription": "s1", "reason": "overflow"})
        again = await peer.request()
        assert again.params == {"run_id": "run_1", "after_seq": 2}
        await peer.reply(again, {"subscription": "s2"})
        await peer.notify("runs.event", {"subscription": "s2", "event": {"seq": 3}})
        await peer.notify("subscription.ended", {"subscription": "s2", "reason": "run_ended"})
        await peer.wait_closed()

    with peer_in_thread(sock, script), Client(sock) as bd:
        assert [e.seq for e in bd.runs.get("run_1").events.follow()] == [1, 2, 3]


def test_blocking_follow_closed_early_cancels_the_subscription(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.hello()
        await peer.run_get()
        follow = await peer.request()
        await peer.reply(follow, {"subscription": "s1"})
        for seq in (1, 2, 3):
            await peer.notify("runs.event", {"subscription": "s1", "event": {"seq": seq}})
        cancel = await peer.request()
        assert (cancel.method, cancel.params) == ("subscriptions.cancel", {"subscription": "s1"})
        await peer.reply(cancel, {"subscription": "s1", "cancelled": True})
        await peer.reply(await peer.request(), "still fine")
        await peer.wait_closed()

    with peer_in_thread(sock, script), Client(sock) as bd:
        with contextlib.closing(bd.runs.get("run_1").events.follow()) as events:
            assert next(events).seq == 1
        assert bd.call("after") == "still fine"


UNCLOSED = """
import sys
from browserd.client import Client
entered = Client(sys.argv[1]).__enter__()   # entered, never left
print(entered.call("ping"), flush=True)
bd = Client(sys.argv[1])                    # never closed
print(bd.call("ping"), flush=True)
"""


def test_an_unclosed_client_does_not_keep_the_interpreter_alive(sock: Path) -> None:
    """A forgotten close() must not hang the script at exit (it did: the client's event loop
    ran in a non-daemon thread)."""

    async def script(peer: Peer) -> None:
        await peer.hello()
        await peer.reply(await peer.request(), "pong")
        await peer.wait_closed()

    with peer_in_thread(sock, script, connections=2):
        result = subprocess.run([sys.executable, "-c", UNCLOSED, str(sock)],
                                capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["pong", "pong"]


def test_a_call_cancelled_mid_write_leaves_the_stream_framed(backend: str, sock: Path) -> None:
    """The daemon is not reading, so a large request is cancelled half-written: its rest is
    still sent before the next request (else the stream would be garbage from there on),
    and a request cancelled before any of it went out is never sent at all."""
    resume = anyio.Event()
    big = b"x" * (4 * 1024 * 1024)

    async def script(peer: Peer) -> None:
        await peer.hello()
        await resume.wait()  # reads nothing meanwhile: the socket buffers fill
        first = await peer.request()
        assert (first.method, len(first.params["blob"])) == ("big", len(big))
        second = await peer.request()
        assert second.method == "after", "the unsent request was dropped"
        await peer.reply(second, "framed")
        await peer.wait_closed()

    async def client() -> None:
        async with AsyncClient(sock) as bd:
            with anyio.move_on_after(0.3):
                await bd.call("big", {"blob": big})
            with anyio.move_on_after(0.1):  # queued behind the big one's rest: not sent
                await bd.call("never", {})
            resume.set()
            assert await bd.call("after") == "framed"

    run(backend, sock, script, client)


def test_the_daemons_last_word_beats_a_broken_pipe() -> None:
    """A daemon that turns a connection away writes why and closes; a client whose next write
    fails on the closed socket still reports the daemon's reason, not a bare lost
    connection (seen as a flaky budget test before the client read what was buffered)."""
    import socket as stdlib_socket

    from browserd.client.last_word import last_word
    from browserd.client.session import Session

    daemon_end, client_end = stdlib_socket.socketpair()
    error = {"code": "daemon.resources_exhausted", "message": "too many connections",
             "hint": "wait", "data": {"budget": "rpc_connections", "limit": 1, "in_use": 1}}
    daemon_end.sendall(msgpack.packb([2, "rpc.error", [{"error": error}]]))
    daemon_end.close()
    with pytest.raises(BrokenPipeError):
        for _ in range(100):  # the first write may still land in the buffer
            client_end.sendall(b"x" * 65536)
    session = Session(1 << 20)
    last_word(client_end, session)
    reported = session.transport_error(BrokenPipeError())
    assert isinstance(reported, errors.ResourcesExhausted), reported
    assert reported.data["budget"] == "rpc_connections"
    client_end.close()


def not_its_reply(msgid: int) -> bytes:
    """Frames that look like the reply to call ``msgid`` and are not."""
    return b"".join(map(msgpack.packb, [
        [1, [msgid], None, "an unhashable msgid"],
        [1, True, None, "a bool is no msgid"],
        [1, msgid + 1000, None, "nobody asked (a late reply to a call given up)"],
        [1, 2**40, None, "out of range"],
        [2, "stray.notification", [{}]],
    ]))


def test_the_session_takes_only_well_formed_results_for_its_own_calls() -> None:
    """Replies are settled straight from the decoded frame when they are plain results for
    a waiting call; anything else that looks like one goes through the full reading."""
    from browserd.client.session import Session

    session = Session(1 << 20)
    msgid, call, _ = session.start_call("m", {})
    assert session.receive_data(not_its_reply(msgid)) == b""
    assert not call.ready and session.closed_error is None
    session.receive_data(msgpack.packb([1, msgid, None, {"mine": True}]))
    assert call.ready and Session.finish_call(call) == {"mine": True}

    # One element too many: still its reply, read as an invalid one (the call fails alone).
    msgid, call, _ = session.start_call("m", {})
    session.receive_data(msgpack.packb([1, msgid, None, "x", "extra"]))
    with pytest.raises(errors.InvalidRequest, match="invalid response"):
        Session.finish_call(call)
    # A subscribe's result registers its feed (the full reading, not the shortcut).
    msgid, call, _ = session.start_call("m.follow", {}, subscribe=True)
    session.receive_data(msgpack.packb([1, msgid, None, {"subscription": "sub_1"}]))
    assert Session.finish_call(call).id == "sub_1"
    assert session.closed_error is None


def test_a_call_read_by_its_own_caller_takes_only_its_own_reply(sock: Path) -> None:
    """`Line.call_owned`, the way of a caller that has the connection to itself: only a
    plain result for its msgid is its result (what looks like one and is not, even cut
    across reads, is read in full and does not end the call); its error raises its class;
    an invalid reply fails that call alone; the daemon closing fails it and every later one."""
    from browserd.client._sync.line import Line
    from browserd.client.contexts import destination

    async def script(peer: Peer) -> None:
        await peer.hello()
        request = await peer.request()
        assert (request.method, request.params) == ("m", {"a": 1})
        data = not_its_reply(request.msgid)
        await peer.stream.send(data[:7])  # a frame cut short
        await anyio.sleep(0.05)
        await peer.stream.send(data[7:])
        await peer.reply(request, {"mine": True})
        error = wire.make_error("space.not_found", "no such space")
        await peer.reply(await peer.request(), error=error)
        bad = await peer.request()
        await peer.stream.send(msgpack.packb([1, bad.msgid, None, "x", "extra"]))
        await peer.request()  # and close without answering

    with peer_in_thread(sock, script):
        line = Line(destination(None, sock), client_name="test", connect_timeout=5,
                    max_buffer_size=wire.DEFAULT_MAX_BUFFER)
        try:
            assert line.call_owned("m", {"a": 1}) == {"mine": True}
            with pytest.raises(errors.SpaceNotFound, match="no such space"):
                line.call_owned("m", {})
            with pytest.raises(errors.InvalidRequest, match="invalid response"):
                line.call_owned("m", {})
            assert line.closed_error is None  # each failed alone
            with pytest.raises(errors.ConnectionLost, match="closed the connection"):
                line.call_owned("m", {})
            with pytest.raises(errors.ConnectionLost):
                line.call_owned("m", {})
        finally:
            line.close()


def test_many_threads_share_one_client_against_the_daemon(daemon_process: DaemonProcess) -> None:
    """More threads than the client keeps idle lines call at once through one Client on a
    real daemon: every call gets its own answer, the daemon sees at most a connection per
    thread, keeps no more than its idle lines after, and close() leaves it none."""
    from browserd.client._sync.transport import _IDLE_LINES as IDLE_LINES

    threads_count, calls = 24, 30
    seen: set[str] = set()

    with Client(daemon_process.socket) as bd:
        bd.spaces.create("a")

        def worker(n: int) -> None:
            for i in range(calls):
                if i % 3 == 0:
                    clients = bd.status()["counts"]["clients"]
                    assert 1 <= clients <= threads_count + 1, clients
                space = bd.spaces.get("a")
                assert space.name == "a"
                seen.add(space.id)
                with pytest.raises(errors.SpaceNotFound):  # an error answers its caller
                    bd.spaces.get(f"nope-{n}")

        failures = in_threads(worker, threads_count, timeout=30)
        assert not failures, failures
        assert len(seen) == 1
        assert bd.spaces.get("a").name == "a"  # the client goes on after the crowd
        deadline = time.monotonic() + 5  # the lines over those kept idle are closed
        while (clients := bd.status()["counts"]["clients"]) > IDLE_LINES:
            assert time.monotonic() < deadline, f"{clients} connections stayed open"
            time.sleep(0.05)
    with Client(daemon_process.socket) as probe:
        deadline = time.monotonic() + 5
        while probe.status()["counts"]["clients"] != 1:
            assert time.monotonic() < deadline, "the closed client's connections stayed open"
            time.sleep(0.05)
