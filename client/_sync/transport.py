"""Transport: the connections behind a blocking Client, made on first use.

The twin of ``_async/transport.py``, written by hand because the I/O differs. A call takes
an idle :class:`~browserd.client._sync.line.Line` (or connects a new one), has it to itself
for the call, and puts it back: one thread calling uses one connection over and over;
threads that call at once each use a line of their own; and no lock is taken on the way
(taking an idle line and putting it back are single deque operations, where a call through
a line that threads share takes three lock sections). A subscription (``*.follow``) has a
line to itself until its stream ends or it is cancelled. For a daemon reached through ssh,
where a line is an ssh process and the CDP forwards live on it, one shared line carries
every call and subscription, multiplexed by ``Line.call``.

A line on which a call was interrupted (^C) is closed rather than reused, since where its
reading stopped is not known; a line the daemon closed or that broke leaves the whole client
closed, as one connection would (later calls raise the same error: make a new client).
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import Any

from ..contexts import Destination
from ..errors import BrowserdError, ConnectionLost
from ..session import fresh
from .line import Line, Subscription

__all__ = ["Subscription", "Transport"]

# Idle lines kept for the next calls (one more is closed when put back): enough for the
# threads of a busy program to call at once without connecting anew each time.
_IDLE_LINES = 16


class Transport:
    """The connections behind a Client: calls, subscriptions, leases.

    Thread-safe: any number of threads may call through one Transport at once.
    """

    def __init__(
        self,
        destination: Destination,
        *,
        client_name: str,
        connect_timeout: float,
        max_buffer_size: int,
    ) -> None:
        self.destination = destination
        self.socket_path: Path | None = destination.socket_path
        self.client_name = client_name
        self.connect_timeout = connect_timeout
        self._max_buffer_size = max_buffer_size
        self._through_ssh = destination.ssh is not None
        self._first: Line | None = None  # the first line made: it holds the hello
        self._idle: deque[Line] = deque()
        # Every line that is open, idle or in use, so close() reaches them all. Taken only
        # to add, shut down or close a line, never on a call's way.
        self._lines: set[Line] = set()
        self._lines_lock = threading.Lock()
        self._shared: Line | None = None  # every call and subscription through ssh
        self._subscribed: dict[str, Line] = {}  # the line of each subscription (no ssh)
        self._closed: BrowserdError | None = None  # why later calls fail (close(), a loss)

    @property
    def hello(self) -> dict[str, Any]:
        """The daemon's answer to ``hello`` (empty until connected)."""
        for line in (self._first, self._shared, *self._idle):
            if line is not None and line.hello:
                return line.hello
        return {}

    def _new_line(self) -> Line:
        line = Line(self.destination, client_name=self.client_name,
                    connect_timeout=self.connect_timeout, max_buffer_size=self._max_buffer_size)
        if self._first is None:
            self._first = line
        return line

    # -- connection ----------------------------------------------------------------------

    def open(self) -> None:
        """Connect and say hello, unless connected; raises DaemonUnavailable when the daemon
        is not there (the next call tries again)."""
        if self._closed is not None:
            return
        if self._through_ssh:
            self._shared_line().open()
            return
        line = self._take()
        try:
            line.open()
        except BaseException:
            self._discard(line)
            raise
        self._put_back(line)

    def close(self) -> None:
        """Close every connection; calls in flight (in other threads) fail with
        ConnectionLost, subscriptions end with ``connection_closed``, and later calls fail
        too. Any thread may call it, any number of times."""
        with self._lines_lock:
            if self._closed is None:
                self._closed = _closed_by_user()
            shared, self._shared = self._shared, None
            subscribed = list(self._subscribed.values())
            self._subscribed.clear()
            for line in self._lines:
                if line not in subscribed:
                    line.interrupt()  # its owner, if it has one, closes it on its way out
        # A subscription's line (and the ssh one) is a shared Line: its close() waits for
        # a thread reading it to let go.
        for line in subscribed:
            self._discard(line)
        if shared is not None:
            shared.close()
        self._trim_idle()

    # -- calls ---------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call one RPC method and return its result; raises the error class of its code."""
        if self._through_ssh:
            return self._shared_line().call(method, params)
        try:
            line = self._idle.pop()  # the usual way: an idle line, taken without a lock
        except IndexError:
            line = self._take()
        try:
            result = line.call_owned(method, params or {})
        except BrowserdError as exc:
            if line.closed_error is None:
                self._put_back(line)
                raise
            self._lost(line, exc)
            if self._closed is not exc:  # closed by close(), not by the daemon
                raise fresh(self._closed) from None  # type: ignore[arg-type]
            raise
        except BaseException:
            self._discard(line)  # interrupted part-way: not to be read from again
            raise
        # _put_back, written out on the usual way (appended first: close() may have run
        # meanwhile and missed it)
        idle = self._idle
        idle.append(line)
        if self._closed is not None or len(idle) > _IDLE_LINES:
            self._trim_idle()
        return result

    def subscribe(self, method: str, params: dict[str, Any]) -> Subscription:
        """Call a ``*.follow`` method; the notifications it starts go to the Subscription,
        which has a line to itself until its stream ends or it is cancelled."""
        if self._through_ssh:
            return self._shared_line().subscribe(method, params)
        line = self._take()
        subscription_id: list[str] = []  # known once the daemon has answered
        try:
            subscription = line.subscribe(
                method, params, on_end=lambda: self._subscription_done(subscription_id[0]))
        except BrowserdError as exc:
            if line.closed_error is None:
                self._put_back(line)
                raise
            self._lost(line, exc)
            raise
        except BaseException:
            self._discard(line)
            raise
        subscription_id.append(subscription.id)
        self._subscribed[subscription.id] = line
        return subscription

    def cancel_subscription_nowait(self, subscription_id: str) -> None:
        """Stop a subscription: it ends here at once; the daemon is told without waiting for
        its answer."""
        line = self._subscribed.get(subscription_id) or self._shared
        if line is not None:
            line.cancel_subscription_nowait(subscription_id)
            if line is not self._shared:
                self._subscription_done(subscription_id)

    def create_lease(self, params: dict[str, Any]) -> dict[str, Any]:
        """``connections.create``; through ssh, the endpoint's URLs point at local forwards
        of the far addresses (made on the one SSH connection), usable here as they are."""
        if self._through_ssh:
            return self._shared_line().create_lease(params)
        lease: dict[str, Any] = self.call("connections.create", params)
        return lease

    def call_for_page(self, method: str, params: dict[str, Any]) -> str:
        """Call a method whose result is ``{url}`` of a page the daemon serves (dashboard,
        replay); through ssh, the URL points at a local forward of its far address."""
        if self._through_ssh:
            return self._shared_line().call_for_page(method, params)
        result: dict[str, Any] = self.call(method, params)
        return str(result["url"])

    def lease_revoked(self, lease_id: str) -> None:
        """The lease is revoked: close the forward of its own origin (through ssh)."""
        shared = self._shared
        if shared is not None:
            shared.lease_revoked(lease_id)

    # -- the lines -----------------------------------------------------------------------

    def _take(self) -> Line:
        """An idle line for this thread alone, or a new one (connected on its first call)."""
        if self._closed is not None:
            raise fresh(self._closed)
        try:
            return self._idle.pop()
        except IndexError:
            pass
        line = self._new_line()
        with self._lines_lock:
            if self._closed is not None:
                raise fresh(self._closed)
            self._lines.add(line)
        return line

    def _put_back(self, line: Line) -> None:
        idle = self._idle
        idle.append(line)
        if self._closed is not None or len(idle) > _IDLE_LINES:
            self._trim_idle()

    def _discard(self, line: Line) -> None:
        with self._lines_lock:  # out of close()'s reach before its socket is closed
            self._lines.discard(line)
        line.close()

    def _trim_idle(self) -> None:
        """Close the idle lines over the number kept, or every one once the client is
        closed."""
        idle = self._idle
        while len(idle) > (0 if self._closed is not None else _IDLE_LINES):
            try:
                line = idle.popleft()  # the one idle longest
            except IndexError:
                return  # another thread took it
            self._discard(line)

    def _subscription_done(self, subscription_id: str) -> None:
        """A subscription ended or was cancelled: its line is idle again, unless a thread
        is still reading it (that thread finds the stream ended and comes back here)."""
        line = self._subscribed.pop(subscription_id, None)
        if line is None:
            return
        error = line.closed_error
        if line.being_read():
            self._subscribed[subscription_id] = line
        elif error is not None:
            self._lost(line, error)
        else:
            self._put_back(line)

    def _lost(self, line: Line, error: BrowserdError) -> None:
        """The daemon closed ``line``, or it broke: the client is closed with that error."""
        with self._lines_lock:
            if self._closed is None:
                self._closed = error
        self._discard(line)
        self.close()

    def _shared_line(self) -> Line:
        shared = self._shared
        if shared is None:
            with self._lines_lock:
                if self._closed is not None:
                    raise fresh(self._closed)
                shared = self._shared
                if shared is None:
                    shared = self._shared = self._new_line()
        return shared


def _closed_by_user() -> ConnectionLost:
    return ConnectionLost.make("the client was closed", "Open a new client to go on.")
