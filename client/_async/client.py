"""AsyncClient: the entry points to the daemon's resources, over its transport.

The connection is made on first use (or by ``open()`` / ``async with``); ``aclose()`` ends
it. Calls may run concurrently: see ``transport.py`` for who may share a client and how (tasks
of one event loop on one connection, on the async side; threads, each calling on a connection
of its own, on the blocking side).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

from .. import wire
from ..contexts import destination
from .resources import AsyncProfiles, AsyncRuns, AsyncRuntimes, AsyncSpace, AsyncSpaces
from .transport import AsyncTransport, Subscription


class AsyncClient:
    """A connection to the browserd daemon.

    ``bd = AsyncClient()`` connects on the first call and ``await bd.aclose()`` closes it;
    or ``async with AsyncClient() as bd:``, which connects on entry (so a missing daemon
    fails there) and closes on exit. The daemon is ``host`` (``ssh://[user@]host[:port]``
    for one on another machine, reached with ``ssh HOST browserctl dial-stdio``; or
    ``unix:///path``), else the socket ``socket_path``, else ``$BROWSERD_HOST``, else
    ``$BROWSERD_SOCKET``, else the current context, else the default socket path
    (:mod:`browserd.client.contexts`). ``remote_browserctl`` is the far machine's
    ``browserctl`` when it is not on the SSH session's PATH. ``connect_timeout`` bounds
    connecting (ssh included) and the ``hello`` exchange.

    Entry points: :attr:`spaces`, :attr:`runtimes` (the default space), :meth:`space`,
    :attr:`runs`, :attr:`profiles`, :meth:`status`, and :meth:`call` for any RPC method.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        host: str | None = None,
        remote_browserctl: str | None = None,
        client_name: str = "browserd-python",
        connect_timeout: float = 10.0,
        max_buffer_size: int = wire.DEFAULT_MAX_BUFFER,
    ) -> None:
        self._transport = AsyncTransport(
            destination(host, socket_path, remote_browserctl=remote_browserctl),
            client_name=client_name,
            connect_timeout=connect_timeout,
            max_buffer_size=max_buffer_size,
        )
        # The resource groups hold nothing but the transport: made once, not per access.
        self._spaces = AsyncSpaces(self._transport)
        self._runtimes = AsyncRuntimes(self._transport, None)
        self._runs = AsyncRuns(self._transport)
        self._profiles = AsyncProfiles(self._transport)

    @property
    def socket_path(self) -> Path | None:
        """The daemon socket this client uses (None for a daemon on another machine)."""
        return self._transport.socket_path

    @property
    def host(self) -> str:
        """The daemon this client uses: ``ssh://...`` or ``unix:///path``."""
        return str(self._transport.destination)

    @property
    def hello(self) -> dict[str, Any]:
        """The daemon's answer to ``hello`` (empty until connected): api_level, daemon
        {version, pid, ...}, peer."""
        return self._transport.hello

    # -- resources -----------------------------------------------------------------------

    @property
    def spaces(self) -> AsyncSpaces:
        """Create, get, list and delete spaces."""
        return self._spaces

    @property
    def runtimes(self) -> AsyncRuntimes:
        """Runtimes of the default space (``list()`` shows every space)."""
        return self._runtimes

    @property
    def runs(self) -> AsyncRuns:
        """Runs of any runtime, by id."""
        return self._runs

    @property
    def profiles(self) -> AsyncProfiles:
        """Persistent profiles: list, get, delete, clone."""
        return self._profiles

    def space(self, name: str) -> AsyncSpace:
        """A handle on space ``name`` (no call is made; ``await .refresh()`` loads it)."""
        return AsyncSpace(name=name, transport=self._transport)

    async def status(self) -> dict[str, Any]:
        """``daemon.status``: version, pid, uptime, counts, rss/cpu, limits, paths."""
        result: dict[str, Any] = await self._transport.call("daemon.status")
        return result

    async def ui_url(self) -> str:
        """``daemon.ui``: the local dashboard's URL (with its token; only for the daemon's
        own user)."""
        return await self._transport.call_for_page("daemon.ui", {})

    # -- calls ---------------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call one RPC method and return its result; raises the error class of its code."""
        return await self._transport.call(method, params)

    async def subscribe(self, method: str, params: dict[str, Any]) -> Subscription:
        """Call a ``*.follow`` method; the notifications it starts go to the Subscription."""
        return await self._transport.subscribe(method, params)

    def cancel_subscription_nowait(self, subscription_id: str) -> None:
        """Stop a subscription: it ends here at once; the daemon is told without waiting."""
        self._transport.cancel_subscription_nowait(subscription_id)

    # -- connection ----------------------------------------------------------------------

    async def open(self) -> AsyncClient:
        """Connect and say hello now (calls do it on first use); returns self. Raises
        DaemonUnavailable when the daemon is not there."""
        await self._transport.open()
        return self

    async def aclose(self) -> None:
        """Close the connection; calls still in flight fail with ConnectionLost, and later
        calls too (a closed client stays closed: make a new one)."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
