"""runs.events.follow: replay then live, heartbeats, overflow, cancel, and the clients' iterators.

A real daemon in the test's trio loop with chromium-headless-shell; the blocking client runs in
a worker thread against the same daemon.
"""

from __future__ import annotations

import json
import os
import pty
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from browserd.client import AsyncClient, AsyncRun, AsyncRuntime, Client
from browserd.client.cli_timeline import timeline_line
from browserd.client.errors import BrowserdError
from browserd.client.records import Event
from browserd.daemon.rpc import follow
from browserd.daemon.service import Daemon, serve
from browserd.daemon.store.eventlog import EventLog

from .conftest import BIN, DaemonProcess, make_config

HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"


@pytest.fixture
async def daemon(nursery: trio.Nursery, short_dir: Path) -> AsyncIterator[Daemon]:
    config = make_config(short_dir, executable=HEADLESS_SHELL)
    with trio.fail_after(20):
        running: Daemon = await nursery.start(serve, config)
    yield running
    running.stop()


async def launch_with_log(daemon: Daemon, bd: AsyncClient,
                          name: str) -> tuple[AsyncRuntime, AsyncRun, EventLog]:
    """Launch `name`: the client's runtime and current run, and the daemon's log of the run."""
    runtime = await bd.runtimes.browser.launch(name=name)
    run = await runtime.current_run()
    log = daemon.registry.runtimes[runtime.id].log
    assert log is not None
    return runtime, run, log


def assert_contiguous(events: list[Event], first: int = 1) -> None:
    assert [e.seq for e in events] == list(range(first, first + len(events)))


async def test_follow_replays_then_streams_live_until_the_run_ends(daemon: Daemon) -> None:
    with trio.fail_after(60):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="live")
            run = await runtime.current_run()
            await runtime.connections.create()  # logged before the subscription: replayed
            got: list[Event] = []
            live = trio.Event()

            async def collect() -> None:
                async with aclosing(run.events.follow()) as events:
                    async for event in events:
                        got.append(event)
                        if event.type == "connection.created" and len(got) > 3:
                            live.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(collect)
                while not any(e.type == "connection.created" for e in got):  # noqa: ASYNC110 - polls
                    await trio.sleep(0.01)
                await runtime.connections.create()  # live
                await live.wait()
                await runtime.stop()  # the iterator ends by itself after the final event
            assert_contiguous(got)
            assert got[-1].type == "runtime.lifecycle" and got[-1].status == "ended"
            assert [e.type for e in got].count("connection.created") == 2
            # Exactly the log, in order.
            assert [e.seq for e in await run.events.list()] == [e.seq for e in got]


async def test_follow_of_an_ended_run_replays_and_ends(daemon: Daemon) -> None:
    with trio.fail_after(60):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="done")
            run = await runtime.current_run()
            await runtime.stop()
            async with aclosing(run.events.follow(after_seq=1)) as events:
                got = [event async for event in events]
            assert_contiguous(got, first=2)
            assert got[-1].status == "ended"
            sub = await bd.subscribe("runs.events.follow",
                                     {"run_id": run.id, "types": ["runtime.lifecycle"]})
            payloads = [p async for p in sub.receive]
            assert sub.ended_reason == "run_ended"
            assert {p["event"]["type"] for p in payloads} == {"runtime.lifecycle"}


def follow_blocking(socket: Path, run_id: str, after_seq: int, out: list[Event]) -> None:
    with Client(socket) as bd:
        for event in bd.runs.get(run_id).events.follow(after_seq=after_seq,
                                                        types=["runtime.*", "connection.*"]):
            out.append(event)


async def test_blocking_follow_iterates_until_the_run_ends(daemon: Daemon) -> None:
    with trio.fail_after(60):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="blocking")
            run = await runtime.current_run()
            got: list[Event] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, follow_blocking,
                                   daemon.config.socket, run.id, 0, got)
                while len(got) < 2:  # noqa: ASYNC110 - polls
                    await trio.sleep(0.02)
                await runtime.connections.create()
                while "connection.created" not in [e.type for e in got]:  # noqa: ASYNC110 - polls
                    await trio.sleep(0.02)
                await runtime.stop()
            assert got[-1].status == "ended"
            assert all(e.type.startswith(("runtime.", "connection.")) for e in got)
            seqs = [e.seq for e in got]
            assert seqs == sorted(set(seqs))


async def test_live_events_arrive_within_100_ms(daemon: Daemon) -> None:
    """Latency from the append (the event's own timestamp) to the follower's hands."""
    delays: list[float] = []
    with trio.fail_after(60):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime, run, log = await launch_with_log(daemon, bd, "fast")
            sub = await bd.subscribe("runs.events.follow", {"run_id": run.id, "types": ["test.*"]})
            for i in range(30):
                log.append("test.tick", {"i": i})
                with trio.fail_after(1):
                    payload = await sub.receive.receive()
                arrived = time.time()
                sent = datetime.strptime(payload["event"]["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
                delays.append(arrived - sent.replace(tzinfo=UTC).timestamp())
                assert payload["event"]["data"] == {"i": i}
                await trio.sleep(0.01)
            await runtime.stop()
    p50 = statistics.median(delays)
    print(f"follow latency: p50 {p50 * 1000:.2f} ms, max {max(delays) * 1000:.2f} ms")
    assert p50 < 0.1 and max(delays) < 0.1, delays


async def test_heartbeats_when_idle_and_cancel(daemon: Daemon,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow, "HEARTBEAT_S", 0.2)
    with trio.fail_after(60):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime, run, log = await launch_with_log(daemon, bd, "idle")
            listeners = log.listener_count
            before = log.last_seq
            sub = await bd.subscribe("runs.events.follow", {"run_id": run.id,
                                                            "types": ["test.*"]})
            heartbeat = await sub.receive.receive()  # nothing matches yet: a heartbeat
            assert heartbeat.keys() == {"subscription", "last_seq"}
            assert heartbeat["subscription"] == sub.id
            assert before <= heartbeat["last_seq"] <= log.last_seq
            assert log.listener_count == listeners + 1
            result = await bd.call("subscriptions.cancel", {"subscription": sub.id})
            assert result == {"subscription": sub.id, "cancelled": True}
            async for _ in sub.receive:  # drained until the daemon's `subscription.ended`
                pass
            assert sub.ended_reason == "cancelled"
            assert log.listener_count == listeners  # the daemon let go of the log
            again = await bd.call("subscriptions.cancel", {"subscription": sub.id})
            assert again["cancelled"] is False
            await runtime.stop()


async def test_overflow_ends_the_stream_and_the_client_resubscribes(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(follow, "QUEUE_SIZE", 5)
    with trio.fail_after(60):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime, run, log = await launch_with_log(daemon, bd, "burst")
            # The daemon's side: a burst larger than the queue, appended without a pause.
            sub = await bd.subscribe("runs.events.follow", {"run_id": run.id,
                                                            "types": ["test.*"]})
            first = log.last_seq + 1
            for i in range(20):
                log.append("test.burst", {"i": i})
            payloads = [p async for p in sub.receive]
            assert sub.ended_reason == "overflow"
            assert [p["event"]["data"]["i"] for p in payloads] == list(range(5))
            # The client's iterator resubscribes from its last seq: nothing lost or doubled.
            got: list[Event] = []
            async with trio.open_nursery() as nursery:

                async def collect() -> None:
                    async with aclosing(run.events.follow(after_seq=first - 1)) as events:
                        async for event in events:
                            got.append(event)

                nursery.start_soon(collect)
                while len(got) < 1:  # noqa: ASYNC110 - polls
                    await trio.sleep(0.01)
                for i in range(20, 40):
                    log.append("test.burst", {"i": i})
                while len([e for e in got if e.type == "test.burst"]) < 40:  # noqa: ASYNC110 - polls
                    await trio.sleep(0.01)
                await runtime.stop()
            bursts = [e.data["i"] for e in got if e.type == "test.burst"]
            assert bursts == list(range(40))
            assert_contiguous(got, first=first)


async def test_connection_close_releases_the_subscription(daemon: Daemon) -> None:
    with trio.fail_after(60):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime, run, log = await launch_with_log(daemon, bd, "leave")
            listeners = log.listener_count
            async with AsyncClient(daemon.config.socket) as other:
                await other.subscribe("runs.events.follow", {"run_id": run.id})
                assert log.listener_count == listeners + 1
            while log.listener_count != listeners:  # noqa: ASYNC110 - polls
                await trio.sleep(0.01)
            log.append("test.after", {})  # no listener of a gone connection is called
            await runtime.stop()


async def test_a_follow_cancelled_before_its_reply_does_not_leak(daemon: Daemon) -> None:
    """A caller cancelled between sending runs.events.follow and its reply never learns the
    subscription id; the client cancels it when the reply comes. (The soak found this: a
    follower with a timeout filled its connection's 64 subscriptions.)"""
    with trio.fail_after(60):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime, run, log = await launch_with_log(daemon, bd, "hasty")
            listeners = log.listener_count
            # Timeouts from 0 to 2 ms: many land between the request and its reply. In
            # batches, so the cancels (sent in the background) never pile up to the limit.
            for batch in range(10):
                for attempt in range(40):
                    with trio.move_on_after((batch * 40 + attempt) * 5e-6):
                        sub = await bd.subscribe("runs.events.follow", {"run_id": run.id})
                        bd.cancel_subscription_nowait(sub.id)
                for _ in range(500):  # up to 5 s for the background cancels
                    if log.listener_count == listeners:
                        break
                    await trio.sleep(0.01)
                assert log.listener_count == listeners, f"subscriptions leaked ({batch=})"
            # and the connection can still subscribe (it is far from its 64)
            sub = await bd.subscribe("runs.events.follow", {"run_id": run.id})
            bd.cancel_subscription_nowait(sub.id)
            await runtime.stop()


async def test_follow_refuses_bad_input(daemon: Daemon) -> None:
    with trio.fail_after(30):
        async with AsyncClient(daemon.config.socket) as bd:
            errors: dict[str, Any] = {}
            for params in ({"run_id": "run_nope"}, {"run_id": "x", "after_seq": -1},
                           {"run_id": "x", "typos": []}):
                try:
                    await bd.call("runs.events.follow", params)
                except BrowserdError as exc:
                    errors[str(params)] = exc.code
            assert list(errors.values()) == ["run.not_found", "rpc.invalid_params",
                                             "rpc.invalid_params"]


# -- browserctl events -f ----------------------------------------------------------------------


@pytest.fixture
def daemon_proc(short_dir: Path) -> Iterator[DaemonProcess]:
    (short_dir / "config.toml").write_text(f'[browser]\nexecutable = "{HEADLESS_SHELL}"\n')
    running = DaemonProcess(short_dir)
    running.start()
    yield running
    assert running.stop() == 0


def ctl_follow(daemon: DaemonProcess, *args: str, tty: bool = False) -> subprocess.Popen[bytes]:
    """`browserctl events ... -f` running in the background (on a pseudo-terminal if tty)."""
    if not tty:
        return subprocess.Popen([str(BIN / "browserctl"), *args], env=daemon.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(BIN / "browserctl"), *args], env=daemon.env,
                            stdout=follower, stderr=follower)
    os.close(follower)
    proc.stdout = os.fdopen(leader, "rb")  # type: ignore[assignment]
    return proc


def read_all(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    chunks = []
    while True:
        try:
            chunk = proc.stdout.read1(65536)  # type: ignore[attr-defined]
        except OSError:  # EIO: the pty's other side is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_events_follow_prints_a_timeline_until_the_run_ends(daemon_proc: DaemonProcess) -> None:
    daemon_proc.ctl("launch", "cli")
    plain = ctl_follow(daemon_proc, "events", "cli", "-f")
    lines = ctl_follow(daemon_proc, "--json", "events", "cli", "-f")
    coloured = ctl_follow(daemon_proc, "events", "cli", "-f", "--type", "runtime.*", tty=True)
    time.sleep(1.0)  # the followers are live (and printing what was logged)
    daemon_proc.ctl("connect", "cli")
    daemon_proc.ctl("stop", "cli")
    for proc in (plain, lines, coloured):
        assert proc.wait(timeout=30) == 0  # they end by themselves with the run
    text = read_all(plain)
    assert text.startswith("run run_")
    assert "connection.created" in text and "\x1b[" not in text
    assert text.rstrip().splitlines()[-1].split()[2:5] == ["runtime.lifecycle", "ended",
                                                           "end_reason=stopped"]
    docs = [json.loads(line) for line in read_all(lines).splitlines()]
    assert [d["seq"] for d in docs] == list(range(1, len(docs) + 1))
    assert docs[-1]["status"] == "ended"
    tty_text = read_all(coloured)
    assert "\x1b[" in tty_text and "connection.created" not in tty_text


def test_timeline_lines() -> None:
    command = Event.from_wire({
        "seq": 12, "time": "2026-11-28T09:44:51.123456Z", "type": "connection.command",
        "source": "client", "data": {"method": "Page.navigate", "outcome": "error",
                                     "duration_ms": 3.5,
                                     "error": {"code": -32000, "message": "bad url"}},
    })
    line = timeline_line(command, colour=False)
    assert line == ("09:44:51.123     12  connection.command               Page.navigate error "
                    "3.5 ms (-32000: bad url)")
    assert "\x1b[31m" in timeline_line(command, colour=True)  # an error shows red
