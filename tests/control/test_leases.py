"""Connection leases, complete: TTL bounds, every status with its time, connections.get, no URL
after create, and the exclusive controller lock over leases, invocations and pages.

(test_runtimes.py covers the endpoint gate itself: bad tokens, 410 after expiry and revoke,
force closing open sockets.)
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from browserd.client import errors
from browserd.daemon.core import leases

from .conftest import Launched, eventually


def seconds_between(start: str, end: str) -> float:
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))
            ).total_seconds()


async def test_ttl_bounds_and_default(launched: Launched) -> None:
    connections = launched.runtime.connections
    with trio.fail_after(30):
        default = await connections.create()
        assert seconds_between(default.created_at, default.expires_at or "") == 600
        longest = await connections.create(ttl_s=86400)
        assert seconds_between(longest.created_at, longest.expires_at or "") == 86400
        shortest = await connections.create(ttl_s=1)
        assert seconds_between(shortest.created_at, shortest.expires_at or "") == 1
        for bad in (0.5, 86401, -1):
            with pytest.raises(errors.InvalidParams) as refused:
                await connections.create(ttl_s=bad)
            assert refused.value.data["field"] == "ttl_s"


async def test_statuses_and_their_times(launched: Launched) -> None:
    runtime = launched.runtime
    with trio.fail_after(30):
        short = await runtime.connections.create(ttl_s=1, label="short")
        revoked = await runtime.connections.create(ttl_s=60)
        kept = await runtime.connections.create(ttl_s=60)
        assert kept.status == "active" and kept.revoked_at is None and kept.closed_at is None

        await revoked.delete()
        assert revoked.status == "revoked" and revoked.revoked_at is not None
        got = await runtime.connections.get(revoked.id)
        assert got.status == "revoked" and got.revoked_at == revoked.revoked_at
        assert got.endpoint is None, "get never shows the URL"

        expired = await eventually(lambda: runtime.connections.get(short.id),
                                   lambda lease: lease.status == "expired")
        assert expired.label == "short" and expired.revoked_at is None

        with pytest.raises(errors.ConnectionNotFound):
            await runtime.connections.get("conn_nope")

        await runtime.stop()
        closed = await runtime.connections.get(kept.id)
        assert closed.status == "closed" and closed.closed_at is not None
        # statuses that were final already stay as they were
        assert (await runtime.connections.get(revoked.id)).status == "revoked"
        assert (await runtime.connections.get(short.id)).status == "expired"


async def test_delete_by_id_on_the_collection(launched: Launched) -> None:
    """`runtime.connections.delete(id, force=False)`, as the seed API has it (besides
    `Connection.delete()`): revokes without closing open sockets; `force` closes them."""
    runtime = launched.runtime
    with trio.fail_after(30):
        kept_open = await runtime.connections.create(ttl_s=60)
        forced = await runtime.connections.create(ttl_s=60)
        assert kept_open.endpoint is not None and forced.endpoint is not None
        async with open_websocket_url(kept_open.endpoint.url) as first, \
                open_websocket_url(forced.endpoint.url) as second:
            for lease in (kept_open, forced):
                await eventually(lambda lease=lease: runtime.connections.get(lease.id),
                                 lambda got: got.open_sockets == 1)
            revoked = await runtime.connections.delete(kept_open.id)
            assert (revoked.id, revoked.status) == (kept_open.id, "revoked")
            assert revoked.revoked_at is not None and revoked.endpoint is None
            assert not first.closed, "without force, open sockets stay"
            gone = await runtime.connections.delete(forced.id, force=True)
            assert gone.status == "revoked"
            await eventually(lambda: runtime.connections.get(forced.id),
                             lambda got: got.open_sockets == 0)
            assert (await runtime.connections.get(kept_open.id)).open_sockets == 1
            with pytest.raises(ConnectionClosed):
                await second.get_message()
        with pytest.raises(errors.ConnectionNotFound):
            await runtime.connections.delete("conn_nope")


async def test_no_url_or_token_after_create(launched: Launched) -> None:
    runtime = launched.runtime
    with trio.fail_after(30):
        conn = await runtime.connections.create()
        assert conn.endpoint is not None
        token = conn.endpoint.url.rsplit("/", 1)[1]
        listed = await launched.bd.call("connections.list", {"runtime_id": runtime.id})
        every = await launched.bd.call("connections.list", {})
        got = await launched.bd.call("connections.get", {"id": conn.id})
        for wire in (listed, every, got):
            text = json.dumps(wire)
            assert token not in text and "ws://" not in text and "http://" not in text
            assert "endpoint" not in text and "token" not in text


async def test_open_sockets_are_counted(launched: Launched) -> None:
    runtime = launched.runtime
    with trio.fail_after(30):
        conn = await runtime.connections.create()
        assert conn.endpoint is not None
        async with open_websocket_url(conn.endpoint.url):
            await eventually(lambda: runtime.connections.get(conn.id),
                             lambda lease: lease.open_sockets == 1)
        await eventually(lambda: runtime.connections.get(conn.id),
                         lambda lease: lease.open_sockets == 0)


async def test_the_exclusive_lock(launched: Launched) -> None:
    runtime = launched.runtime
    with trio.fail_after(30):
        shared = await runtime.connections.create()
        with pytest.raises(errors.ControllerBusy):
            await runtime.connections.create(exclusive=True)  # others are live
        await shared.delete()

        lock = await runtime.connections.create(exclusive=True, ttl_s=1)
        for attempt in (
            runtime.connections.create(),
            runtime.invocations.create("evaluate", {"expression": "1"}),
            runtime.targets.create(),
        ):
            with pytest.raises(errors.ControllerBusy) as busy:
                await attempt
            assert busy.value.data["connection_id"] == lock.id
        # the lock lasts while the lease is live: expiry frees the runtime
        await eventually(lambda: runtime.connections.get(lock.id),
                         lambda lease: lease.status == "expired", interval_s=0.1)
        assert (await runtime.invocations.create("evaluate", {"expression": "2"})).output == 2
        await runtime.connections.create()


async def test_ended_leases_are_forgotten_after_a_while(
        launched: Launched, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ended lease without open sockets leaves the table (a daemon handing out a lease a
    minute for weeks must not keep them all); live ones and ones with a socket stay."""
    monkeypatch.setattr(leases, "ENDED_LEASE_KEPT_S", 1.0)
    runtime = launched.runtime
    with trio.fail_after(30):
        ended = await runtime.connections.create(ttl_s=60)
        attached = await runtime.connections.create(ttl_s=60)
        live = await runtime.connections.create(ttl_s=60)
        assert attached.endpoint is not None
        async with open_websocket_url(attached.endpoint.url):
            await eventually(lambda: runtime.connections.get(attached.id),
                             lambda lease: lease.open_sockets == 1)
            await ended.delete()
            await attached.delete()
            assert (await runtime.connections.get(ended.id)).status == "revoked"
            await trio.sleep(2.0)  # past the (patched) keep time
            with pytest.raises(errors.ConnectionNotFound):
                await runtime.connections.get(ended.id)
            # revoked too, but a client is still attached through it
            assert (await runtime.connections.get(attached.id)).status == "revoked"
        await eventually(lambda: launched.bd.call("connections.list", {}),
                         lambda page: [c["id"] for c in page["data"]] == [live.id])
        # the run's log keeps the forgotten lease's history
        events = await launched.bd.call("runs.events.list", {"run_id": runtime.active_run_id})
        assert any(e["type"] == "connection.revoked" and e["data"]["connection_id"] == ended.id
                   for e in events["data"])
