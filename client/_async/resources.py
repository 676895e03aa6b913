"""Resource objects: records (``records.py``) plus the calls that act on them.

Every method maps to RPC calls on the object's transport; resources refresh their fields in
place from each reply. Written once, here; ``scripts/unasync.py`` makes the blocking twins.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncGenerator, Collection
from typing import Any

import attrs

from ..errors import ConnectionLost, LaunchWarning, NoActiveRun
from ..records import (
    ConnectionRecord,
    Event,
    ProfileRecord,
    RunRecord,
    RuntimeRecord,
    RuntimeStats,
    SpaceRecord,
    from_wire,
    from_wire_list,
)
from .artifacts import AsyncRunArtifacts
from .control import AsyncFiles, AsyncInvocations, AsyncTargets
from .transport import AsyncTransport

DEFAULT_SPACE = "default"
_EVENTS_PAGE = 1000


def _params(**values: Any) -> dict[str, Any]:
    """RPC params without the options left unset (None)."""
    return {key: value for key, value in values.items() if value is not None}


async def _collect(
    transport: AsyncTransport, method: str, params: dict[str, Any], limit: int | None
) -> list[dict[str, Any]]:
    """Page through a `{data, next_cursor}` list until `limit` items (None: all)."""
    page = await transport.call(method, params)
    items: list[dict[str, Any]] = page["data"]
    cursor: str | None = page.get("next_cursor")
    while cursor is not None and (limit is None or len(items) < limit):
        page = await transport.call(method, {**params, "cursor": cursor})
        items.extend(page["data"])
        cursor = page.get("next_cursor")
    return items[:limit] if limit is not None else items


# -- spaces ------------------------------------------------------------------------------


@attrs.define(on_setattr=attrs.setters.NO_OP)  # as the records (records.Record)
class AsyncSpace(SpaceRecord):
    """A space: a namespace of runtimes. ``bd.space(name)`` gives an unloaded handle."""

    _transport: AsyncTransport = attrs.field(kw_only=True, repr=False, eq=False)

    @property
    def runtimes(self) -> AsyncRuntimes:
        """Runtimes of this space."""
        return AsyncRuntimes(self._transport, self.name)

    @property
    def runs(self) -> AsyncRuns:
        """Runs of this space's runtimes."""
        return AsyncRuns(self._transport, space=self.name)

    async def refresh(self) -> AsyncSpace:
        """Reload this space's fields; returns self."""
        self._update(await self._transport.call("spaces.get", {"name": self.name}))
        return self

    async def delete(self) -> None:
        """Delete the space (refused with space.not_empty while runtimes are active)."""
        await self._transport.call("spaces.delete", {"name": self.name})


@attrs.frozen
class AsyncSpaces:
    """``bd.spaces``: create, get, list and delete spaces."""

    _transport: AsyncTransport

    async def create(self, name: str, metadata: dict[str, Any] | None = None) -> AsyncSpace:
        """Create space ``name``."""
        wire = await self._transport.call("spaces.create", _params(name=name, metadata=metadata))
        return from_wire(AsyncSpace, wire, transport=self._transport)

    async def get(self, name: str) -> AsyncSpace:
        """Space ``name``; raises SpaceNotFound."""
        wire = await self._transport.call("spaces.get", {"name": name})
        return from_wire(AsyncSpace, wire, transport=self._transport)

    async def list(self) -> list[AsyncSpace]:
        """Every space."""
        items = await _collect(self._transport, "spaces.list", {}, None)
        return from_wire_list(AsyncSpace, items, transport=self._transport)

    async def delete(self, name: str) -> None:
        """Delete space ``name``."""
        await self._transport.call("spaces.delete", {"name": name})


# -- runtimes ----------------------------------------------------------------------------


@attrs.define(on_setattr=attrs.setters.NO_OP)  # as the records (records.Record)
class AsyncRuntime(RuntimeRecord):
    """A named browser runtime: launch, connect, stop; each start opens a new run."""

    _transport: AsyncTransport = attrs.field(kw_only=True, repr=False, eq=False)

    @property
    def connections(self) -> AsyncConnections:
        """CDP connection leases on this runtime."""
        return AsyncConnections(self._transport, self.id)

    @property
    def runs(self) -> AsyncRuns:
        """This runtime's runs, newest first."""
        return AsyncRuns(self._transport, runtime_id=self.id)

    @property
    def invocations(self) -> AsyncInvocations:
        """Browser actions the daemon runs on this runtime's pages."""
        return AsyncInvocations(self._transport, self.id)

    @property
    def targets(self) -> AsyncTargets:
        """This runtime's pages: list, create, activate, close."""
        return AsyncTargets(self._transport, self.id)

    @property
    def files(self) -> AsyncFiles:
        """This runtime's file area: stage files in, list them, collect them as artifacts."""
        return AsyncFiles(self._transport, self.id)

    async def refresh(self) -> AsyncRuntime:
        """Reload this runtime's fields; returns self."""
        self._update(await self._transport.call("runtimes.get", {"id": self.id}))
        return self

    async def current_run(self) -> AsyncRun:
        """The active run (after a refresh); raises NoActiveRun when there is none."""
        await self.refresh()
        if self.active_run_id is None:
            raise NoActiveRun.make(
                f"runtime {self.space}/{self.name} has no active run (status {self.status})",
                "Launch it again to start a new run; past runs are in runtime.runs.list().",
                {"runtime_id": self.id, "status": self.status},
            )
        return await AsyncRuns(self._transport).get(self.active_run_id)

    async def stats(self) -> RuntimeStats:
        """Measure the browser's process tree now; raises RuntimeNotActive when not running."""
        return RuntimeStats.from_wire(await self._transport.call("runtimes.stats", {"id": self.id}))

    async def stop(self, timeout_s: float | None = None) -> AsyncRun | None:
        """Stop the browser; returns when its whole process tree is gone.

        Returns the run this call ended, or None if the runtime was already stopped.
        """
        result = await self._transport.call(
            "runtimes.stop", _params(id=self.id, timeout_s=timeout_s)
        )
        self._update(result["runtime"])
        if not result.get("stopped") or result.get("run") is None:
            return None
        return from_wire(AsyncRun, result["run"], transport=self._transport)

    async def delete(self, force: bool = False) -> None:
        """Delete the runtime (refused with runtime.not_stopped unless stopped or ``force``)."""
        result = await self._transport.call("runtimes.delete", {"id": self.id, "force": force})
        if isinstance(result.get("runtime"), dict):
            self._update(result["runtime"])

    async def update(
        self, *, metadata: dict[str, Any] | None = None, idle_timeout_s: float | None = None,
        config: dict[str, Any] | None = None,
    ) -> AsyncRuntime:
        """Replace metadata, change the idle timeout and/or the runtime config; returns self.

        ``config`` changes the keys it names (``None`` as a value clears one) and only while
        the runtime is stopped (RuntimeNotStopped otherwise).
        """
        self._update(
            await self._transport.call(
                "runtimes.update",
                _params(id=self.id, metadata=metadata, idle_timeout_s=idle_timeout_s,
                        config=config),
            )
        )
        return self


@attrs.frozen
class AsyncRuntimes:
    """``bd.runtimes`` (default space) or ``space.runtimes``: get, list, launch."""

    _transport: AsyncTransport
    _space: str | None  # None: the default space for get/launch, every space for list

    @property
    def browser(self) -> AsyncBrowserRuntimes:
        """Browser runtimes: ``.launch(name=...)``."""
        return AsyncBrowserRuntimes(self._transport, self._space or DEFAULT_SPACE)

    async def get(self, name: str) -> AsyncRuntime:
        """Runtime ``name``; raises RuntimeNotFound."""
        wire = await self._transport.call(
            "runtimes.get", {"space": self._space or DEFAULT_SPACE, "name": name}
        )
        return from_wire(AsyncRuntime, wire, transport=self._transport)

    async def list(self, status: str | None = None) -> list[AsyncRuntime]:
        """Runtimes, optionally only those with ``status``."""
        items = await _collect(
            self._transport, "runtimes.list", _params(space=self._space, status=status), None
        )
        return from_wire_list(AsyncRuntime, items, transport=self._transport)


@attrs.frozen
class AsyncBrowserRuntimes:
    """``runtimes.browser``: launch a browser runtime."""

    _transport: AsyncTransport
    _space: str

    async def launch(
        self,
        name: str,
        *,
        profile: str | None = None,
        metadata: dict[str, Any] | None = None,
        headless: bool | None = None,
        restart: str | None = None,
        idle_timeout_s: float | None = None,
        max_lifetime_s: float | None = None,
        args: Collection[str] | None = None,
        idempotency_key: str | None = None,
        memory_limit_mb: int | None = None,
        wait_s: float | None = None,
        config: dict[str, Any] | None = None,
        record: bool | None = None,
    ) -> AsyncRuntime:
        """Start runtime ``name`` (created if new); returns it once the browser is up.

        On an active runtime this returns it as it is, unless ``profile`` differs
        (RuntimeNameConflict); options given that differ from the running ones are not
        applied, and each is reported as a :class:`~browserd.client.errors.LaunchWarning`
        (Python's ``warnings``). ``headless`` defaults to true and ``restart`` (``"no"`` or
        ``"on-failure"``) to ``"no"``.
        ``memory_limit_mb`` (at least 64) stops the run (end reason ``memory_limit``) when
        the browser tree's memory (its PSS, as ``stats().memory_bytes``) exceeds it.
        ``wait_s`` queues up to that many seconds for a free slot when
        ``limits.max_runtimes`` are running, instead of failing at once with
        ConcurrentQuotaExceeded.
        ``config`` is how the browser looks to the web: ``proxy`` (``{server, username?,
        password?, bypass?}``), ``viewport`` (``{width, height, device_scale_factor?}``),
        ``user_agent``, ``locale``, ``timezone``, ``extensions``, ``block``
        (``{resource_types?, url_patterns?}``) and ``browser`` (docs/api.md, Runtime config).
        Without it, a new runtime gets its space's defaults and an existing one keeps its own.
        ``record`` keeps a recording of each run (an artifact of kind ``recording``, played
        by ``run.replay_url()``); None follows the daemon's ``record.default``.
        """
        result = await self._transport.call(
            "runtimes.launch",
            _params(
                space=self._space,
                name=name,
                profile=profile,
                metadata=metadata,
                headless=headless,
                restart=restart,
                idle_timeout_s=idle_timeout_s,
                max_lifetime_s=max_lifetime_s,
                args=list(args) if args is not None else None,
                idempotency_key=idempotency_key,
                memory_limit_mb=memory_limit_mb,
                wait_s=wait_s,
                config=config,
                record=record,
            ),
        )
        for text in result.get("warnings") or ():
            warnings.warn(LaunchWarning(text), stacklevel=2)
        return from_wire(AsyncRuntime, result["runtime"], transport=self._transport)


# -- runs and events ---------------------------------------------------------------------


@attrs.define(on_setattr=attrs.setters.NO_OP)  # as the records (records.Record)
class AsyncRun(RunRecord):
    """One activation of a runtime and everything recorded about it."""

    _transport: AsyncTransport = attrs.field(kw_only=True, repr=False, eq=False)

    @property
    def events(self) -> AsyncRunEvents:
        """This run's event log."""
        return AsyncRunEvents(self._transport, self.id)

    @property
    def artifacts(self) -> AsyncRunArtifacts:
        """This run's artifacts: downloads, screenshots, PDFs, collected files."""
        return AsyncRunArtifacts(self._transport, self.id)

    async def refresh(self) -> AsyncRun:
        """Reload this run's fields; returns self."""
        self._update(await self._transport.call("runs.get", {"run_id": self.id}))
        return self

    async def replay_url(self) -> str:
        """``runs.replay``: the URL of this run's replay page (its recorded frames beside
        its events); valid until the daemon restarts."""
        return await self._transport.call_for_page("runs.replay", {"run_id": self.id})


@attrs.frozen
class AsyncRuns:
    """``bd.runs``, ``space.runs`` or ``runtime.runs``: get and list runs."""

    _transport: AsyncTransport
    space: str | None = None
    runtime_id: str | None = None

    async def get(self, run_id: str) -> AsyncRun:
        """Run ``run_id``; raises RunNotFound."""
        wire = await self._transport.call("runs.get", {"run_id": run_id})
        return from_wire(AsyncRun, wire, transport=self._transport)

    async def list(self, status: str | None = None, limit: int | None = None) -> list[AsyncRun]:
        """Runs, newest first; ``limit`` None means all."""
        params = _params(space=self.space, runtime_id=self.runtime_id, status=status)
        items = await _collect(self._transport, "runs.list", params, limit)
        return from_wire_list(AsyncRun, items, transport=self._transport)


@attrs.frozen
class AsyncRunEvents:
    """``run.events``: the run's append-only event log."""

    _transport: AsyncTransport
    run_id: str

    async def list(
        self,
        after_seq: int = 0,
        limit: int | None = None,
        types: Collection[str] | None = None,
    ) -> list[Event]:
        """Events with seq > ``after_seq``, in seq order; ``limit`` None means all."""
        events: list[Event] = []
        while limit is None or len(events) < limit:
            page_size = _EVENTS_PAGE if limit is None else min(_EVENTS_PAGE, limit - len(events))
            page = await self._transport.call(
                "runs.events.list",
                _params(
                    run_id=self.run_id,
                    after_seq=after_seq,
                    limit=page_size,
                    types=list(types) if types is not None else None,
                ),
            )
            events.extend(Event.from_wire(wire) for wire in page["data"])
            if page.get("next_cursor") is None or not page["data"]:
                break
            after_seq = events[-1].seq
        return events

    async def follow(
        self, after_seq: int = 0, types: Collection[str] | None = None
    ) -> AsyncGenerator[Event, None]:
        """Events after ``after_seq``: the log first, then live, until the run ends.

        Use as ``async with contextlib.aclosing(run.events.follow()) as events:``
        so the subscription is cancelled when you stop early.
        """
        while True:
            sub = await self._transport.subscribe(
                "runs.events.follow",
                _params(
                    run_id=self.run_id,
                    after_seq=after_seq,
                    types=list(types) if types is not None else None,
                ),
            )
            try:
                async for payload in sub.receive:
                    wire = payload.get("event")
                    if isinstance(wire, dict):  # anything else is a heartbeat
                        event = Event.from_wire(wire)
                        after_seq = max(after_seq, event.seq)
                        yield event
            finally:
                if sub.ended_reason is None:
                    self._transport.cancel_subscription_nowait(sub.id)
            if sub.ended_reason == "overflow":
                continue  # we fell behind: resubscribe from the last seq we saw
            if sub.ended_reason == "connection_closed":
                raise ConnectionLost.make(
                    "the connection closed while following events",
                    f"Reconnect and follow again with after_seq={after_seq}.",
                    {"after_seq": after_seq},
                )
            return


# -- connection leases -------------------------------------------------------------------


@attrs.define(on_setattr=attrs.setters.NO_OP)  # as the records (records.Record)
class AsyncConnection(ConnectionRecord):
    """A connection lease: CDP (``endpoint.url`` is what connect_over_cdp takes) or a live
    view (``endpoint.url`` is its web page)."""

    _transport: AsyncTransport = attrs.field(kw_only=True, repr=False, eq=False)

    async def delete(self, force: bool = False) -> AsyncConnection:
        """Revoke the lease (no new attaches); ``force`` also closes open sockets."""
        self._update(
            await self._transport.call("connections.delete", {"id": self.id, "force": force})
        )
        await self._transport.lease_revoked(self.id)
        return self


@attrs.frozen
class AsyncConnections:
    """``runtime.connections``: create, get, list and delete CDP connection leases."""

    _transport: AsyncTransport
    runtime_id: str

    async def create(
        self,
        protocol: str = "cdp",
        ttl_s: float = 600,
        exclusive: bool = False,
        label: str | None = None,
        control: bool = False,
    ) -> AsyncConnection:
        """Open a lease; its ``endpoint`` (shown only now) is valid for ``ttl_s`` seconds.

        ``protocol="cdp"``: ``endpoint.url`` is what connect_over_cdp takes. ``"view"``:
        ``endpoint.url`` is a web page showing the runtime's active page live, which with
        ``control=True`` also drives it (mouse, keys, tabs) and is then a controller like a
        CDP lease (refused while an exclusive lease is live, and blocking one).
        """
        wire = await self._transport.create_lease(
            _params(
                runtime_id=self.runtime_id,
                protocol=protocol,
                ttl_s=ttl_s,
                exclusive=exclusive,
                label=label,
                control=control or None,
            ),
        )
        return from_wire(AsyncConnection, wire, transport=self._transport)

    async def get(self, connection_id: str) -> AsyncConnection:
        """Lease ``connection_id`` (metadata only: the URL is never shown again)."""
        wire = await self._transport.call("connections.get", {"id": connection_id})
        return from_wire(AsyncConnection, wire, transport=self._transport)

    async def list(self) -> list[AsyncConnection]:
        """This runtime's leases (metadata only, never URLs)."""
        items = await _collect(
            self._transport, "connections.list", {"runtime_id": self.runtime_id}, None
        )
        return from_wire_list(AsyncConnection, items, transport=self._transport)

    async def delete(self, connection_id: str, force: bool = False) -> AsyncConnection:
        """Revoke lease ``connection_id`` (no new attaches); ``force`` also closes its open
        sockets. Returns the revoked lease (metadata only)."""
        wire = await self._transport.call(
            "connections.delete", {"id": connection_id, "force": force}
        )
        await self._transport.lease_revoked(connection_id)
        return from_wire(AsyncConnection, wire, transport=self._transport)


# -- profiles ----------------------------------------------------------------------------


@attrs.define(on_setattr=attrs.setters.NO_OP)  # as the records (records.Record)
class AsyncProfile(ProfileRecord):
    """A persistent profile (user-data-dir) by name, held by one runtime at a time."""

    _transport: AsyncTransport = attrs.field(kw_only=True, repr=False, eq=False)

    async def refresh(self) -> AsyncProfile:
        """Reload this profile's fields (size, holder, last use); returns self."""
        self._update(await self._transport.call("profiles.get", {"name": self.name}))
        return self

    async def delete(self) -> None:
        """Delete the profile (refused with ProfileInUse while a runtime holds it)."""
        await self._transport.call("profiles.delete", {"name": self.name})

    async def clone(self, to: str) -> AsyncProfile:
        """Copy this profile to the new name ``to``; returns the copy.

        Refused with ProfileInUse while a runtime holds it (a running browser would tear
        the copy) and with ProfileExists when ``to`` is taken.
        """
        wire = await self._transport.call("profiles.clone", {"name": self.name, "to": to})
        return from_wire(AsyncProfile, wire, transport=self._transport)


@attrs.frozen
class AsyncProfiles:
    """``bd.profiles``: list, get, delete and clone profiles (a launch creates them)."""

    _transport: AsyncTransport

    async def list(self) -> list[AsyncProfile]:
        """Every profile, by name."""
        items = await _collect(self._transport, "profiles.list", {}, None)
        return from_wire_list(AsyncProfile, items, transport=self._transport)

    async def get(self, name: str) -> AsyncProfile:
        """Profile ``name``; raises ProfileNotFound."""
        wire = await self._transport.call("profiles.get", {"name": name})
        return from_wire(AsyncProfile, wire, transport=self._transport)

    async def delete(self, name: str) -> None:
        """Delete profile ``name`` (refused with ProfileInUse while a runtime holds it)."""
        await self._transport.call("profiles.delete", {"name": name})

    async def clone(self, name: str, to: str) -> AsyncProfile:
        """Copy profile ``name`` to the new name ``to``; returns the copy.

        Refused with ProfileInUse while a runtime holds ``name``, ProfileExists when
        ``to`` is taken.
        """
        wire = await self._transport.call("profiles.clone", {"name": name, "to": to})
        return from_wire(AsyncProfile, wire, transport=self._transport)
