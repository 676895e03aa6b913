"""Lease origins: a bare `http://127.0.0.1:PORT` per lease, for discovery that drops paths.

`endpoint.http_url` carries the lease in its path (`/cdp/<id>/<token>`), which Playwright keeps.
Puppeteer's `connect({browserURL})` does not: it fetches `new URL('/json/version', browserURL)`,
an absolute path, so only the origin of the URL survives. A lease therefore also gets its own
origin, `endpoint.browser_url`: a listener on a free loopback port that answers only the
discovery documents (/json/version[/], /json[/], /json/list[/]) of that lease, with every
WebSocket URL pointing at the CDP proxy's tokened paths. It serves no WebSocket itself.

A port is not a secret, so each request must also come from the uid that created the lease
(or the daemon's own uid, or root), checked by the owner of the client's TCP socket; and, as on
the proxy, a non-loopback Host or any Origin header is refused (DNS rebinding, web pages). The
listener closes when the lease stops being active (expired, revoked, closed). The lease's token
is held in memory while its origin is open, to write those URLs.

Each origin's listener is a descriptor held for the lease's life: live origins are capped by
the `lease_ports` budget (fd_budget.py), and the port is bound before the lease is made, so a
lease is never granted without it. Requests to the origins count among the CDP port's
(`cdp_pending`): past that cap they are answered 503 at once.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from functools import partial

import attrs
import h11
import trio

from ..base.errors import resource_shortage
from ..base.lifecycle import LeaseStatus
from ..base.model import Lease, parse_time
from ..cdp.http_front import (
    Refused,
    error_body,
    fetch_browser_json,
    is_loopback_host,
    json_response,
    over_capacity_response,
    read_request,
    rewrite_discovery,
)
from ..cdp.peers import owner_uid
from ..core.registry import Registry
from ..system.accept_loop import accept_loop, write_nowait
from ..system.fd_budget import Slot

__all__ = ["BoundPort", "LeaseOrigins"]

log = logging.getLogger(__name__)

_DISCOVERY = {"/json/version": "/json/version", "/json/version/": "/json/version",
              "/json": "/json/list", "/json/": "/json/list",
              "/json/list": "/json/list", "/json/list/": "/json/list"}
_CHECK_EVERY_S = 0.5
_REQUEST_TIMEOUT_S = 10.0


@attrs.define(eq=False)
class BoundPort:
    """A listener bound for a lease's origin, holding its `lease_ports` slot until closed."""

    sock: trio.socket.SocketType
    slot: Slot
    port: int

    def close(self) -> None:
        self.sock.close()
        self.slot.release()


@attrs.define
class _Origin:
    lease_id: str
    token: str = attrs.field(repr=False)
    uid: int  # the uid that created the lease
    port: int
    proxy_port: int | None = None  # where the client reaches the proxy (a forward), if not its port
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)


class LeaseOrigins:
    """Opens and closes the per-lease discovery origins. `serve` hosts them."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._origins: dict[str, _Origin] = {}
        self._nursery: trio.Nursery | None = None
        self._opened = trio.Event()  # set, and replaced, when an origin opens

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Host the origins' listeners; close each once its lease is no longer active."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                if not self._origins:  # nothing to close: asleep until one opens
                    await self._opened.wait()
                await trio.sleep(_CHECK_EVERY_S)
                for origin in list(self._origins.values()):
                    if not self._live(self.registry.leases.get(origin.lease_id)):
                        self.close(origin.lease_id)

    def open_count(self) -> int:
        return len(self._origins)

    async def bind(self) -> BoundPort | None:
        """A port for a lease about to be made (None when the daemon is not serving). Raises
        `daemon.resources_exhausted` at the `lease_ports` cap or out of descriptors."""
        if self._nursery is None:
            return None
        slot = self.registry.budget.lease_ports.take()
        try:
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
            try:
                await sock.bind((self.registry.config.cdp.host, 0))
                sock.listen(16)
            except BaseException:
                sock.close()
                raise
        except BaseException as exc:
            slot.release()
            if (shortage := resource_shortage(exc, "opening a port for the lease")) is not None:
                raise shortage from None
            raise
        return BoundPort(sock, slot, sock.getsockname()[1])

    def open(self, lease: Lease, token: str, uid: int, bound: BoundPort,
             proxy_port: int | None = None) -> str:
        """Serve the lease's origin on its bound port; returns its URL. ``proxy_port``: the
        loopback port the client forwards to the proxy (SSH), named in the discovery URLs."""
        assert self._nursery is not None, "bind() returned a port, so the origins are served"
        origin = _Origin(lease.id, token, uid, bound.port, proxy_port)
        self._origins[lease.id] = origin
        self._nursery.start_soon(self._serve_origin, origin, bound)
        self._opened.set()
        self._opened = trio.Event()
        return f"http://{self.registry.config.cdp.host}:{bound.port}"

    def close(self, lease_id: str) -> None:
        origin = self._origins.pop(lease_id, None)
        if origin is not None:
            origin.scope.cancel()

    def _live(self, lease: Lease | None) -> bool:
        return (lease is not None and lease.status == LeaseStatus.ACTIVE
                and parse_time(lease.expires_at) > datetime.now(UTC))

    async def _serve_origin(self, origin: _Origin, bound: BoundPort) -> None:
        pending = self.registry.budget.cdp_pending
        busy = over_capacity_response(pending)
        try:
            with origin.scope:
                async with trio.open_nursery() as nursery:
                    await accept_loop(bound.sock, pending, partial(self._handle, origin),
                                      lambda sock: write_nowait(sock, busy), nursery=nursery,
                                      logger=log, what=f"origin of {origin.lease_id}")
        finally:
            bound.close()

    async def _handle(self, origin: _Origin, sock: trio.socket.SocketType, _: Slot) -> None:
        async with trio.SocketStream(sock) as stream:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
            with trio.move_on_after(self.registry.config.limits.cdp_header_timeout_s):
                try:
                    request = await read_request(stream, conn)
                except h11.RemoteProtocolError:
                    request = None
            if request is None:
                return
            with trio.move_on_after(_REQUEST_TIMEOUT_S):
                status, body = await self._answer(origin, stream, request)
                try:
                    await stream.send_all(json_response(conn, status, body))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def _answer(self, origin: _Origin, stream: trio.SocketStream,
                      request: h11.Request) -> tuple[int, bytes]:
        headers = dict(request.headers)
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        if request.method not in (b"GET", b"HEAD") or path not in _DISCOVERY:
            return 404, error_body(404, None, "no such endpoint: this origin answers "
                                   "/json/version, /json/list and /json")
        if b"origin" in headers or not is_loopback_host(headers.get(b"host", b"")):
            return 403, error_body(403, None, "requests from web pages or through other "
                                   "hostnames are refused")
        uid = await owner_uid(stream)
        if uid not in (origin.uid, os.getuid(), 0):
            return 403, error_body(403, None, "this lease belongs to another user")
        try:
            upstream = self.registry.lease_book.authorize(origin.lease_id, origin.token)
        except Refused as refused:
            return refused.status, error_body(refused.status, refused.code, refused.reason)
        try:
            doc = await fetch_browser_json(upstream.host, upstream.port, _DISCOVERY[path])
        except Exception as exc:  # the browser is going away: the client sees a 502
            log.debug("discovery fetch failed: %r", exc)
            return 502, error_body(502, None, "the browser did not answer")
        base = (f"{self.registry.config.cdp.host}:{origin.proxy_port or self.registry.proxy.port}"
                f"/cdp/{origin.lease_id}/{origin.token}")
        return 200, json.dumps(rewrite_discovery(doc, upstream, base), indent=2).encode()
