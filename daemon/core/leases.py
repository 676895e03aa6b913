"""Connection leases: CDP attach windows and live views with a secret token, and the CDP
proxy's hooks.

A lease admits new sockets while it is active (not expired, revoked or closed); sockets
already open stay until the client leaves, a forced delete, or the run's end. The book is also
the proxy's `ProxyHooks`: it authorizes each attach against a lease and records what the
proxy sees (attach, detach, commands, a client's Browser.close) in the lease's run log.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import trio

from ..base.config import Config
from ..base.errors import ApiError
from ..base.lifecycle import LeaseStatus, RuntimeStatus
from ..base.model import Lease, format_time, hash_token, parse_time
from ..cdp.http_front import Refused, Upstream
from ..store import storage
from ..system.logs import Throttled
from .runtime import Actor, Runtime

if TYPE_CHECKING:
    from ..cdp.proxy import CdpProxy

log = logging.getLogger(__name__)

# How long a lease that has ended (expired, revoked or closed) and has no open socket is still
# shown by connections.get/list. Then it is forgotten: agents and test suites make a lease per
# task, thousands an hour (3,396 in the ten-minute soak, every one still held at its end when
# this was ten minutes), and each costs memory. A minute covers a client asking why its attach
# was refused; the lease's whole history stays in its run's events.
ENDED_LEASE_KEPT_S = 60.0
# The expiry loop sleeps until the next lease time, but wakes at least this often: the lease
# times are the wall clock's, which may jump while it sleeps on the monotonic one.
_LONGEST_SLEEP_S = 30.0
_LATE_S = 0.001  # past the time, so that it has come by the text comparison


class LeaseBook:
    def __init__(self, runtimes: dict[str, Runtime], config: Config, *,
                 request_stop: Callable[[Runtime, str, Actor], None],
                 download_behaviors: dict[str, dict[str, Any]]) -> None:
        self.runtimes = runtimes  # the registry's table, shared, never replaced
        self.config = config
        self.leases: dict[str, Lease] = {}
        self.proxy: CdpProxy | None = None  # set once the proxy exists (it takes us as hooks)
        self._request_stop = request_stop
        self._download_behaviors = download_behaviors
        # Anyone on the machine can make the proxy refuse requests as fast as they can send
        # them: their log lines are throttled.
        self._refusal_log = Throttled(log)
        # Set, and replaced by a fresh one, when a lease time the expiry loop waits for may
        # have come nearer: a lease made, ended, or let go of its last socket.
        self._times_changed = trio.Event()

    def _wake_expiry(self) -> None:
        self._times_changed.set()
        self._times_changed = trio.Event()

    def close_run(self, run_id: str) -> None:
        """The run ended: its active leases are closed (sockets go with the browser)."""
        now = storage.now_rfc3339()
        for lease in self.leases.values():
            if lease.run_id == run_id and lease.status == LeaseStatus.ACTIVE:
                lease.status, lease.closed_at = LeaseStatus.CLOSED, now
                self._wake_expiry()

    def create(self, rt: Runtime, *, protocol: str, ttl_s: float, exclusive: bool,
                     label: str | None, actor: Actor | None,
                     control: bool = False) -> tuple[Lease, str]:
        """A new lease and its token (the only time the token exists outside the caller).

        Controllers are CDP leases and views in control mode; a watch-only view drives
        nothing, so it is granted even beside an exclusive lease and never blocks one."""
        if rt.record.status != RuntimeStatus.ACTIVE or rt.run is None or rt.log is None:
            raise ApiError(
                "runtime.not_active",
                f"Runtime {rt.record.space}/{rt.record.name} is {rt.record.status}.",
                hint="Launch it first: `browserctl launch NAME`.",
                data={"status": rt.record.status},
            )
        controller = protocol == "cdp" or control
        live = [lease for lease in self.live(rt) if lease.controller]
        holder = next((lease for lease in live if lease.exclusive), None)
        if controller and (holder is not None or (exclusive and live)):
            blocking = holder or live[0]
            raise ApiError(
                "runtime.controller_busy",
                "An exclusive lease holds this runtime." if holder
                else "Other leases are live, so an exclusive one cannot be granted.",
                hint="Wait for it to expire, or delete it with connections.delete.",
                data={"connection_id": blocking.id, "expires_at": blocking.expires_at},
            )
        token = secrets.token_urlsafe(32)
        created = datetime.now(UTC)
        lease = Lease(
            id=storage.make_id("conn"), runtime_id=rt.id, run_id=rt.run.id,
            space=rt.record.space, protocol=protocol, label=label, exclusive=exclusive,
            token_hash=hash_token(token), created_at=format_time(created),
            expires_at=format_time(created + timedelta(seconds=ttl_s)), control=control,
        )
        self.leases[lease.id] = lease
        self._wake_expiry()
        rt.run.counts["connections"] += 1
        rt.touch()
        rt.log.append("connection.created", {"connection_id": lease.id, "ttl_s": ttl_s,
                                             "exclusive": exclusive, "label": label,
                                             "protocol": protocol, "control": control},
                      actor=actor)
        return lease, token

    def _proxy(self) -> CdpProxy:
        assert self.proxy is not None
        return self.proxy

    def endpoint(self, lease: Lease, token: str) -> dict[str, str]:
        base = self._proxy().base_url()
        if lease.protocol == "view":  # a web page the daemon serves on the same port
            return {"url": f"{base}/view/{lease.id}/{token}"}
        path = f"/cdp/{lease.id}/{token}"
        return {"url": base.replace("http://", "ws://", 1) + path, "http_url": base + path}

    def live(self, rt: Runtime) -> Iterator[Lease]:
        now = datetime.now(UTC)
        for lease in self.leases.values():
            live = lease.status == LeaseStatus.ACTIVE and parse_time(lease.expires_at) > now
            if lease.runtime_id == rt.id and live:
                yield lease

    def view_status(self, lease: Lease) -> str:
        """What an open view of `lease` should do: "active" (carry on), else the reason it
        ends now ("expired", "revoked", "closed"). A view closes with its lease."""
        if lease.status == LeaseStatus.ACTIVE and parse_time(lease.expires_at) <= datetime.now(UTC):
            self._expire(lease)
        return lease.status

    def exclusive(self, rt: Runtime) -> Lease | None:
        """The live exclusive lease holding the runtime's controller lock, if any."""
        return next((lease for lease in self.live(rt) if lease.exclusive), None)

    def get(self, lease_id: str) -> Lease:
        lease = self.leases.get(lease_id)
        if lease is None:
            raise ApiError("connection.not_found", f"There is no connection {lease_id!r}.",
                           hint="List connections with connections.list.",
                           data={"connection_id": lease_id})
        return lease

    def revoke(self, lease: Lease, force: bool, actor: Actor | None) -> None:
        if lease.status == LeaseStatus.ACTIVE:
            lease.status, lease.revoked_at = LeaseStatus.REVOKED, storage.now_rfc3339()
            self._wake_expiry()
            if (rt := self.runtimes.get(lease.runtime_id)) is not None:
                rt.touch()
            self._log_for(lease.runtime_id, lease.run_id, "connection.revoked",
                          {"connection_id": lease.id, "force": force}, actor=actor)
        if force:
            self._proxy().close_connection(lease.id)

    async def expire_loop(self) -> None:
        """Mark leases past their TTL as expired (an event each), and forget those that ended
        more than ENDED_LEASE_KEPT_S ago. Asleep in between: until the next of those times,
        or until a lease is made or ends (no lease, no wakeups)."""
        while True:
            # Lease times are all written by format_time (UTC, fixed width), so they compare
            # as text: only the nearest one is parsed.
            now = datetime.now(UTC)
            now_text = format_time(now)
            forget_before = format_time(now - timedelta(seconds=ENDED_LEASE_KEPT_S))
            next_expiry = next_end = None
            for lease in list(self.leases.values()):
                if lease.status == LeaseStatus.ACTIVE:
                    if lease.expires_at > now_text:
                        next_expiry = min(next_expiry or lease.expires_at, lease.expires_at)
                        continue
                    self._expire(lease)
                if lease.open_sockets == 0:
                    ended = _ended_at(lease)
                    if ended < forget_before:
                        del self.leases[lease.id]
                    else:
                        next_end = min(next_end or ended, ended)
            wait_s = _LONGEST_SLEEP_S if next_expiry or next_end else math.inf
            if next_expiry is not None:
                wait_s = min(wait_s, (parse_time(next_expiry) - now).total_seconds())
            if next_end is not None:
                wait_s = min(wait_s, (parse_time(next_end) - now).total_seconds()
                             + ENDED_LEASE_KEPT_S)
            # Captured after the pass (which has no await): nothing can change in between.
            changed = self._times_changed
            with trio.move_on_after(max(wait_s, 0.0) + _LATE_S):
                await changed.wait()

    def _expire(self, lease: Lease) -> None:
        """The lease's TTL has passed: it is expired from now on (one event)."""
        lease.status = LeaseStatus.EXPIRED
        if (rt := self.runtimes.get(lease.runtime_id)) is not None:
            rt.touch()
        self._log_for(lease.runtime_id, lease.run_id, "connection.expired",
                      {"connection_id": lease.id})

    def _log_for(self, runtime_id: str, run_id: str, type: str, data: dict[str, Any],
                 actor: Actor | None = None, source: str = "daemon") -> None:
        rt = self.runtimes.get(runtime_id)
        if rt is not None:
            rt.log_if_current(run_id, type, data, actor=actor, source=source)

    # ------------------------------------------------------------------ CDP proxy hooks

    def authorize(self, connection_id: str, token: str) -> Upstream:
        lease, rt = self.admit(connection_id, token, "cdp")
        assert rt.process is not None
        endpoint = rt.process.endpoint
        return Upstream(runtime_id=rt.id, connection_id=lease.id, host=endpoint.host,
                        port=endpoint.port, browser_path=endpoint.browser_path)

    def admit(self, connection_id: str, token: str, protocol: str) -> tuple[Lease, Runtime]:
        """The lease `token` opens, for a client of `protocol`, and its live runtime; else
        Refused: 401 (unknown, bad token, or a lease of the other protocol), 410 (ended)."""
        lease = self.leases.get(connection_id)
        # Compare even for an unknown id, so timing does not tell ids apart.
        expected = lease.token_hash if lease else hash_token(secrets.token_urlsafe(32))
        matches = hmac.compare_digest(expected, hash_token(token))
        # A view's token never opens the CDP endpoint (a watcher must not get to drive).
        if not matches or lease is None or lease.protocol != protocol:
            raise Refused(401, "unknown connection or bad token")
        if lease.status == LeaseStatus.ACTIVE and parse_time(lease.expires_at) <= datetime.now(UTC):
            self._expire(lease)  # before the loop comes round: the refusal follows the event
        if lease.status != LeaseStatus.ACTIVE:
            raise Refused(410, f"connection lease is {lease.status}")
        rt = self.runtimes.get(lease.runtime_id)
        if rt is None or rt.process is None or rt.run is None or rt.run.id != lease.run_id:
            raise Refused(410, "the runtime's run has ended")
        return lease, rt

    def view_attached(self, lease: Lease, socket_id: str, peer: dict[str, Any]) -> None:
        """A view page opened its WebSocket (counted like a CDP socket: it keeps the runtime
        from idling out, and its run's log shows it)."""
        lease.open_sockets += 1
        if (rt := self.runtimes.get(lease.runtime_id)) is not None:
            rt.touch()
        self._log_for(lease.runtime_id, lease.run_id, "connection.attached",
                      {"connection_id": lease.id, "socket_id": socket_id, "protocol": "view"},
                      actor={"type": "viewer", **peer})

    def view_detached(self, lease: Lease, socket_id: str, stats: dict[str, Any]) -> None:
        lease.open_sockets -= 1
        if lease.open_sockets == 0:
            self._wake_expiry()
        if (rt := self.runtimes.get(lease.runtime_id)) is not None:
            rt.touch()
        self._log_for(lease.runtime_id, lease.run_id, "connection.detached",
                      {"connection_id": lease.id, "socket_id": socket_id, "protocol": "view",
                       **stats})

    def attached(self, upstream: Upstream, socket_id: str, peer: dict[str, Any]) -> None:
        rt = self.runtimes.get(upstream.runtime_id)
        lease = self.leases.get(upstream.connection_id)
        if lease is not None:
            lease.open_sockets += 1
            if rt is not None:
                rt.open_sockets += 1
                rt.touch()
            self._log_for(lease.runtime_id, lease.run_id, "connection.attached",
                          {"connection_id": lease.id, "socket_id": socket_id},
                          actor={"type": "cdp_client", **peer})

    def detached(self, upstream: Upstream, socket_id: str, stats: dict[str, Any]) -> None:
        rt = self.runtimes.get(upstream.runtime_id)
        lease = self.leases.get(upstream.connection_id)
        if lease is not None:
            lease.open_sockets -= 1
            if lease.open_sockets == 0:
                self._wake_expiry()  # an ended lease is forgotten once its sockets are gone
            self._log_for(lease.runtime_id, lease.run_id, "connection.detached",
                          {"connection_id": lease.id, "socket_id": socket_id, **stats})
        if rt is not None:
            rt.open_sockets -= 1
            rt.touch()
            if rt.open_sockets == 0:
                rt.last_socket_closed.unpark_all()

    def command(self, upstream: Upstream, socket_id: str, record: dict[str, Any]) -> None:
        # Called for every CDP command a client sends: one append, nothing else.
        lease = self.leases.get(upstream.connection_id)
        if lease is not None:
            self._log_for(lease.runtime_id, lease.run_id, "connection.command",
                          {"connection_id": lease.id, "socket_id": socket_id, **record},
                          source="client")

    def browser_close(self, upstream: Upstream, socket_id: str, action: str) -> None:
        """A client's Browser.close: "detached" (the proxy answered it; the browser lives on)
        or "forwarded" (close_policy "allow": the run ends as stopped by that client)."""
        lease = self.leases.get(upstream.connection_id)
        if lease is None:
            return
        self._log_for(lease.runtime_id, lease.run_id, "connection.browser_close",
                      {"connection_id": lease.id, "socket_id": socket_id, "action": action,
                       "policy": self.config.cdp.close_policy}, source="client")
        rt = self.runtimes.get(upstream.runtime_id)
        if action == "forwarded" and rt is not None:
            # Chromium takes far longer to exit than this task takes to mark the stop, so the
            # exit is seen as asked for, not as a crash.
            self._request_stop(rt, "stopped", {"type": "cdp_client", "connection_id": lease.id,
                                               "socket_id": socket_id})

    def download_behavior(self, upstream: Upstream, socket_id: str, method: str,
                          params: dict[str, Any]) -> None:
        # Only the default context's setting: the daemon's own is per context as well.
        if method == "Browser.setDownloadBehavior" and "browserContextId" not in params:
            self._download_behaviors[upstream.runtime_id] = {
                key: params[key] for key in ("behavior", "downloadPath", "eventsEnabled")
                if key in params
            }

    def refused(self, connection_id: str | None, status: int, reason: str,
                peer: dict[str, Any]) -> None:
        self._refusal_log.log(logging.WARNING,
                              "CDP request refused (%d %s) for connection %s from %s", status,
                              reason, connection_id, peer)
        lease = self.leases.get(connection_id or "")
        if lease is not None:
            self._log_for(lease.runtime_id, lease.run_id, "connection.refused",
                          {"connection_id": lease.id, "status": status, "reason": reason},
                          actor={"type": "cdp_client", **peer})


def _ended_at(lease: Lease) -> str:
    """When the lease stopped admitting attaches (its expiry time while it is still active)."""
    return lease.closed_at or lease.revoked_at or lease.expires_at

