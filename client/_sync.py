"""Client: the blocking face of AsyncClient.

An anyio blocking portal runs one AsyncClient on an event loop in a background thread;
every blocking method here runs its async twin (``resources.py``) through that portal
and then copies the refreshed fields back, so the logic exists once. A Client may be
shared by threads: calls from several threads run concurrently on the one connection.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

import attrs
from anyio.from_thread import BlockingPortal, start_blocking_portal

from . import wire
from ._async import AsyncClient
from ._sync_artifacts import RunArtifacts
from ._sync_control import Files, Invocations, Targets
from .records import (
    ConnectionRecord,
    Event,
    ProfileRecord,
    Record,
    RunRecord,
    RuntimeRecord,
    RuntimeStats,
    SpaceRecord,
    from_wire,
)
from .resources import (
    AsyncBrowserRuntimes,
    AsyncConnection,
    AsyncConnections,
    AsyncProfile,
    AsyncProfiles,
    AsyncRun,
    AsyncRunEvents,
    AsyncRuns,
    AsyncRuntime,
    AsyncRuntimes,
    AsyncSpace,
    AsyncSpaces,
)

T = TypeVar("T")


class Client:
    """A blocking connection to the browserd daemon; the same API as AsyncClient.

    Use it as ``with Client() as bd:`` (or call :meth:`open` and :meth:`close`).
    ``backend`` is the anyio backend of the background event loop.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        client_name: str = "browserd-python",
        connect_timeout: float = 10.0,
        max_buffer_size: int = wire.DEFAULT_MAX_BUFFER,
        backend: str = "asyncio",
    ) -> None:
        self._async = AsyncClient(
            socket_path,
            client_name=client_name,
            connect_timeout=connect_timeout,
            max_buffer_size=max_buffer_size,
        )
        self._backend = backend
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._client_cm: AbstractContextManager[AsyncClient] | None = None

    @property
    def socket_path(self) -> Path:
        """The daemon socket this client uses."""
        return self._async.socket_path

    @property
    def hello(self) -> dict[str, Any]:
        """The daemon's answer to ``hello``: api_level, daemon {version, pid, ...}, peer."""
        return self._async.hello

    def open(self) -> Client:
        """Connect and say hello; raises DaemonUnavailable when the daemon is not there."""
        if self._portal_cm is not None:
            raise RuntimeError("this Client is already open")
        self._portal_cm = start_blocking_portal(self._backend)
        self._portal = self._portal_cm.__enter__()
        try:
            self._client_cm = self._portal.wrap_async_context_manager(self._async)
            self._client_cm.__enter__()
        except BaseException:
            self._client_cm = None
            self._close_portal()
            raise
        return self

    def close(self) -> None:
        """Close the connection and stop the background event loop."""
        try:
            if self._client_cm is not None:
                cm, self._client_cm = self._client_cm, None
                cm.__exit__(None, None, None)
        finally:
            self._close_portal()

    def _close_portal(self) -> None:
        if self._portal_cm is not None:
            cm, self._portal_cm, self._portal = self._portal_cm, None, None
            cm.__exit__(None, None, None)

    def __enter__(self) -> Client:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if self._portal is None:
            raise RuntimeError("use the client inside `with Client() as bd:`")
        return self._portal.call(functools.partial(fn, *args, **kwargs))

    # -- entry points ------------------------------------------------------------------

    @property
    def spaces(self) -> Spaces:
        """Create, get, list and delete spaces."""
        return Spaces(self, self._async.spaces)

    @property
    def runtimes(self) -> Runtimes:
        """Runtimes of the default space (``list()`` shows every space)."""
        return Runtimes(self, self._async.runtimes)

    @property
    def runs(self) -> Runs:
        """Runs of any runtime, by id."""
        return Runs(self, self._async.runs)

    @property
    def profiles(self) -> Profiles:
        """Persistent profiles: list, get, delete, clone."""
        return Profiles(self, self._async.profiles)

    def space(self, name: str) -> Space:
        """A handle on space ``name`` (no call is made; ``.refresh()`` loads it)."""
        return _mirror(self, self._async.space(name))

    def status(self) -> dict[str, Any]:
        """``daemon.status``: version, pid, uptime, counts, rss/cpu, limits, paths."""
        return self._run(self._async.status)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call one RPC method and return its result; raises the error class of its code."""
        return self._run(self._async.call, method, params)


# -- resources: records whose methods run their async twin ------------------------------


class _Mirror(Record):
    """A blocking resource: ``_impl`` is its async twin, ``_bd`` the Client."""

    _impl: Any
    _bd: Client

    def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        try:
            return self._bd._run(fn, *args, **kwargs)
        finally:
            self._update(self._impl.raw)  # the twin refreshed itself: copy its fields


@attrs.define
class Space(_Mirror, SpaceRecord):
    """A space: a namespace of runtimes. ``bd.space(name)`` gives an unloaded handle."""

    _impl: AsyncSpace = attrs.field(kw_only=True, repr=False, eq=False)
    _bd: Client = attrs.field(kw_only=True, repr=False, eq=False)

    @property
    def runtimes(self) -> Runtimes:
        """Runtimes of this space."""
        return Runtimes(self._bd, self._impl.runtimes)

    @property
    def runs(self) -> Runs:
        """Runs of this space's runtimes."""
        return Runs(self._bd, self._impl.runs)

    def refresh(self) -> Space:
        """Reload this space's fields; returns self."""
        self._run(self._impl.refresh)
        return self

    def delete(self) -> None:
        """Delete the space (refused with space.not_empty while runtimes are active)."""
        self._run(self._impl.delete)


@attrs.define
class Runtime(_Mirror, RuntimeRecord):
    """A named browser runtime: launch, connect, stop; each start opens a new run."""

    _impl: AsyncRuntime = attrs.field(kw_only=True, repr=False, eq=False)
    _bd: Client = attrs.field(kw_only=True, repr=False, eq=False)

    @property
    def connections(self) -> Connections:
        """CDP connection leases on this runtime."""
        return Connections(self._bd, self._impl.connections)

    @property
    def runs(self) -> Runs:
        """This runtime's runs, newest first."""
        return Runs(self._bd, self._impl.runs)

    @property
    def invocations(self) -> Invocations:
        """Browser actions the daemon runs on this runtime's pages."""
        return Invocations(self._bd, self._impl.invocations)

    @property
    def targets(self) -> Targets:
        """This runtime's pages: list, create, activate, close."""
        return Targets(self._bd, self._impl.targets)

    @property
    def files(self) -> Files:
        """This runtime's file area: stage files in, list them, collect them as artifacts."""
        return Files(self._bd, self._impl.files)

    def refresh(self) -> Runtime:
        """Reload this runtime's fields; returns self."""
        self._run(self._impl.refresh)
        return self

    def current_run(self) -> Run:
        """The active run (after a refresh); raises NoActiveRun when there is none."""
        return _mirror(self._bd, self._run(self._impl.current_run))

    def stats(self) -> RuntimeStats:
        """Measure the browser's process tree now; raises RuntimeNotActive when not running."""
        return self._run(self._impl.stats)

    def stop(self, timeout_s: float | None = None) -> Run | None:
        """Stop the browser; returns when its whole process tree is gone.

        Returns the run this call ended, or None if the runtime was already stopped.
        """
        run = self._run(self._impl.stop, timeout_s)
        return None if run is None else _mirror(self._bd, run)

    def delete(self, force: bool = False) -> None:
        """Delete the runtime (refused with runtime.not_stopped unless stopped or ``force``)."""
        self._run(self._impl.delete, force)

    def update(
        self, *, metadata: dict[str, Any] | None = None, idle_timeout_s: float | None = None
    ) -> Runtime:
        """Replace metadata and/or change the idle timeout; returns self."""
        self._run(self._impl.update, metadata=metadata, idle_timeout_s=idle_timeout_s)
        return self


@attrs.define
class Run(_Mirror, RunRecord):
    """One activation of a runtime and everything recorded about it."""

    _impl: AsyncRun = attrs.field(kw_only=True, repr=False, eq=False)
    _bd: Client = attrs.field(kw_only=True, repr=False, eq=False)

    @property
    def events(self) -> RunEvents:
        """This run's event log."""
        return RunEvents(self._bd, self._impl.events)

    @property
    def artifacts(self) -> RunArtifacts:
        """This run's artifacts: downloads, screenshots, PDFs, collected files."""
        return RunArtifacts(self._bd, self._impl.artifacts)

    def refresh(self) -> Run:
        """Reload this run's fields; returns self."""
        self._run(self._impl.refresh)
        return self


@attrs.define
class Connection(_Mirror, ConnectionRecord):
    """A CDP connection lease; ``endpoint.url`` is what connect_over_cdp takes."""

    _impl: AsyncConnection = attrs.field(kw_only=True, repr=False, eq=False)
    _bd: Client = attrs.field(kw_only=True, repr=False, eq=False)

    def delete(self, force: bool = False) -> Connection:
        """Revoke the lease (no new attaches); ``force`` also closes open sockets."""
        self._run(self._impl.delete, force)
        return self


@attrs.define
class Profile(_Mirror, ProfileRecord):
    """A persistent profile (user-data-dir) by name, held by one runtime at a time."""

    _impl: AsyncProfile = attrs.field(kw_only=True, repr=False, eq=False)
    _bd: Client = attrs.field(kw_only=True, repr=False, eq=False)

    def refresh(self) -> Profile:
        """Reload this profile's fields (size, holder, last use); returns self."""
        self._run(self._impl.refresh)
        return self

    def delete(self) -> None:
        """Delete the profile (refused with ProfileInUse while a runtime holds it)."""
        self._run(self._impl.delete)

    def clone(self, to: str) -> Profile:
        """Copy this profile to the new name ``to``; returns the copy.

        Refused with ProfileInUse while a runtime holds it (a running browser would tear
        the copy) and with ProfileExists when ``to`` is taken.
        """
        return _mirror(self._bd, self._run(self._impl.clone, to))


_MIRRORS: dict[type[Any], type[_Mirror]] = {
    AsyncSpace: Space,
    AsyncRuntime: Runtime,
    AsyncRun: Run,
    AsyncConnection: Connection,
    AsyncProfile: Profile,
}


@overload
def _mirror(bd: Client, impl: AsyncSpace) -> Space: ...
@overload
def _mirror(bd: Client, impl: AsyncRuntime) -> Runtime: ...
@overload
def _mirror(bd: Client, impl: AsyncRun) -> Run: ...
@overload
def _mirror(bd: Client, impl: AsyncConnection) -> Connection: ...
@overload
def _mirror(bd: Client, impl: AsyncProfile) -> Profile: ...
def _mirror(bd: Client, impl: Any) -> Any:
    """The blocking twin of an async resource, sharing its state by copy."""
    return from_wire(_MIRRORS[type(impl)], impl.raw, impl=impl, bd=bd)


# -- collections -------------------------------------------------------------------------


@attrs.frozen
class Spaces:
    """``bd.spaces``: create, get, list and delete spaces."""

    _bd: Client
    _impl: AsyncSpaces

    def create(self, name: str, metadata: dict[str, Any] | None = None) -> Space:
        """Create space ``name``."""
        return _mirror(self._bd, self._bd._run(self._impl.create, name, metadata))

    def get(self, name: str) -> Space:
        """Space ``name``; raises SpaceNotFound."""
        return _mirror(self._bd, self._bd._run(self._impl.get, name))

    def list(self) -> list[Space]:
        """Every space."""
        return [_mirror(self._bd, s) for s in self._bd._run(self._impl.list)]

    def delete(self, name: str) -> None:
        """Delete space ``name``."""
        self._bd._run(self._impl.delete, name)


@attrs.frozen
class Runtimes:
    """``bd.runtimes`` (default space) or ``space.runtimes``: get, list, launch."""

    _bd: Client
    _impl: AsyncRuntimes

    @property
    def browser(self) -> BrowserRuntimes:
        """Browser runtimes: ``.launch(name=...)``."""
        return BrowserRuntimes(self._bd, self._impl.browser)

    def get(self, name: str) -> Runtime:
        """Runtime ``name``; raises RuntimeNotFound."""
        return _mirror(self._bd, self._bd._run(self._impl.get, name))

    def list(self, status: str | None = None) -> list[Runtime]:
        """Runtimes, optionally only those with ``status``."""
        return [_mirror(self._bd, r) for r in self._bd._run(self._impl.list, status)]


@attrs.frozen
class BrowserRuntimes:
    """``runtimes.browser``: launch a browser runtime."""

    _bd: Client
    _impl: AsyncBrowserRuntimes

    def launch(
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
    ) -> Runtime:
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
        """
        runtime = self._bd._run(
            self._impl.launch,
            name,
            profile=profile,
            metadata=metadata,
            headless=headless,
            restart=restart,
            idle_timeout_s=idle_timeout_s,
            max_lifetime_s=max_lifetime_s,
            args=args,
            idempotency_key=idempotency_key,
            memory_limit_mb=memory_limit_mb,
            wait_s=wait_s,
        )
        return _mirror(self._bd, runtime)


@attrs.frozen
class Runs:
    """``bd.runs``, ``space.runs`` or ``runtime.runs``: get and list runs."""

    _bd: Client
    _impl: AsyncRuns

    def get(self, run_id: str) -> Run:
        """Run ``run_id``; raises RunNotFound."""
        return _mirror(self._bd, self._bd._run(self._impl.get, run_id))

    def list(self, status: str | None = None, limit: int | None = None) -> list[Run]:
        """Runs, newest first; ``limit`` None means all."""
        return [_mirror(self._bd, r) for r in self._bd._run(self._impl.list, status, limit)]


@attrs.frozen
class RunEvents:
    """``run.events``: the run's append-only event log."""

    _bd: Client
    _impl: AsyncRunEvents

    def list(
        self,
        after_seq: int = 0,
        limit: int | None = None,
        types: Collection[str] | None = None,
    ) -> list[Event]:
        """Events with seq > ``after_seq``, in seq order; ``limit`` None means all."""
        return self._bd._run(self._impl.list, after_seq, limit, types)

    def follow(self, after_seq: int = 0, types: Collection[str] | None = None) -> Iterator[Event]:
        """Events after ``after_seq``: the log first, then live, until the run ends.

        Close the iterator (or leave ``contextlib.closing``) to stop early.
        """
        events = self._impl.follow(after_seq, types)
        try:
            while True:
                try:
                    event = self._bd._run(events.__anext__)
                except StopAsyncIteration:
                    return
                yield event
        finally:
            if self._bd._portal is not None:
                self._bd._run(events.aclose)


@attrs.frozen
class Connections:
    """``runtime.connections``: create and list CDP connection leases."""

    _bd: Client
    _impl: AsyncConnections

    def create(
        self,
        protocol: str = "cdp",
        ttl_s: float = 600,
        exclusive: bool = False,
        label: str | None = None,
    ) -> Connection:
        """Open a lease; its ``endpoint`` (shown only now) is valid for ``ttl_s`` seconds."""
        conn = self._bd._run(self._impl.create, protocol, ttl_s, exclusive, label)
        return _mirror(self._bd, conn)

    def get(self, connection_id: str) -> Connection:
        """Lease ``connection_id`` (metadata only: the URL is never shown again)."""
        return _mirror(self._bd, self._bd._run(self._impl.get, connection_id))

    def list(self) -> list[Connection]:
        """This runtime's leases (metadata only, never URLs)."""
        return [_mirror(self._bd, c) for c in self._bd._run(self._impl.list)]


@attrs.frozen
class Profiles:
    """``bd.profiles``: list, get, delete and clone profiles (a launch creates them)."""

    _bd: Client
    _impl: AsyncProfiles

    def list(self) -> list[Profile]:
        """Every profile, by name."""
        return [_mirror(self._bd, p) for p in self._bd._run(self._impl.list)]

    def get(self, name: str) -> Profile:
        """Profile ``name``; raises ProfileNotFound."""
        return _mirror(self._bd, self._bd._run(self._impl.get, name))

    def delete(self, name: str) -> None:
        """Delete profile ``name`` (refused with ProfileInUse while a runtime holds it)."""
        self._bd._run(self._impl.delete, name)

    def clone(self, name: str, to: str) -> Profile:
        """Copy profile ``name`` to the new name ``to``; returns the copy.

        Refused with ProfileInUse while a runtime holds ``name``, ProfileExists when
        ``to`` is taken.
        """
        return _mirror(self._bd, self._bd._run(self._impl.clone, name, to))
