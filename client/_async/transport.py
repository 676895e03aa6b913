"""AsyncTransport: one connection to the daemon on a non-blocking socket, under anyio (asyncio
or trio), with no task of its own.

Whoever waits reads: a task waiting for a reply (or a subscription's next payload) takes the
read lock, reads once, and hands every message to the :class:`~browserd.client.session.Session`,
which settles the calls and subscriptions it answers; then the next waiter goes (as
httpcore's HTTP/2 connection does). So a client needs no task group, works from any task,
and a call costs one wait for the socket to be readable. The blocking twins are
``_sync/line.py`` (one connection) and ``_sync/transport.py`` (a connection per caller).
Every transport failure is mapped here, at the edge, so callers only ever see
``browserd.client.errors``.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ..contexts import Destination
from ..errors import BrowserdError, ConnectionLost, DaemonUnavailable
from ..last_word import last_word
from ..session import START_HINT, Call, Feed, Session, fresh, hello_params, lost_hint
from ..ssh import SshLink, proxy_address

# Each read lands in one buffer kept for the connection's life: a fresh bytes object of
# this size per read would be a mmap, mremap and munmap per call (glibc maps blocks over
# 128 KiB), which measured slower than the call's own round trip on a VM.
_RECEIVE_SIZE = 256 * 1024
_BACKLOG_RETRY_S = 0.01
_SSH_EXIT_WAIT_S = 2.0  # for ssh to exit after its pipe ended, to read why
# A subscribe whose caller is cancelled after sending it waits this long, shielded, for
# the reply, so it can cancel the subscription it started.
_ABANDON_WAIT_S = 1.0
_TRANSPORT_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


class Subscription:
    """The receiving end of a server-pushed stream (``*.follow``).

    ``receive`` gives notification payloads (``await sub.receive.receive()``, or
    ``async for payload in sub.receive``) until the stream ends; then ``ended_reason``
    says why (``cancelled``, ``run_ended``, ``overflow``, ``connection_closed``).
    """

    def __init__(self, transport: AsyncTransport, feed: Feed) -> None:
        self.id = feed.id
        self.receive = SubscriptionStream(transport, feed)

    @property
    def ended_reason(self) -> str | None:
        return self.receive._feed.ended_reason

    def __repr__(self) -> str:
        return f"Subscription(id={self.id!r}, ended_reason={self.ended_reason!r})"


class SubscriptionStream:
    """``subscription.receive``: payloads in order; ``receive()`` raises anyio.EndOfStream,
    and ``async for`` stops, once the stream has ended and every payload was taken."""

    def __init__(self, transport: AsyncTransport, feed: Feed) -> None:
        self._transport = transport
        self._feed = feed

    async def receive(self) -> dict[str, Any]:
        feed = self._feed
        if not feed.ready:
            await self._transport._wait(feed)
        if feed.payloads:
            return feed.payloads.popleft()
        raise anyio.EndOfStream

    def __aiter__(self) -> SubscriptionStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class AsyncTransport:
    """The connection behind an AsyncClient: connects on first use, calls, subscriptions.

    Not thread-safe: use it from one event loop (any number of its tasks).
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
        self.hello: dict[str, Any] = {}
        self._max_buffer_size = max_buffer_size
        self._lost_hint = lost_hint(str(destination.ssh) if destination.ssh else None)
        self._session = Session(max_buffer_size, lost_hint=self._lost_hint)
        self._sock: socket.socket | None = None
        self._connected = False  # the daemon answered hello on _sock
        self._open_lock = anyio.Lock()
        # Taken without a checkpoint when free: a call then suspends only to wait for its
        # reply, which is what makes the client as fast as a bare socket loop.
        self._read_lock = anyio.Lock(fast_acquire=True)
        self._send_lock = anyio.Lock(fast_acquire=True)
        self._buffer = bytearray(_RECEIVE_SIZE)  # the read lock's holder's alone
        self._view = memoryview(self._buffer)
        # Bytes to write, in order. Normally empty between writes; it holds the rest of a
        # frame whose writer was cancelled part-way, and frames queued by *_nowait while
        # another task was writing (that task writes them before it lets go).
        self._outbox = bytearray()
        self._link: SshLink | None = None  # the ssh process, for a far host
        self._link_lock = anyio.Lock()  # its forwards
        self._proxy_port: int | None = None  # the local forward of the far CDP proxy

    # -- connection ----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and say hello, unless connected; raises DaemonUnavailable when the daemon
        is not there (the next call tries again)."""
        if self._connected or self._session.closed_error is not None:
            return
        async with self._open_lock:
            if not self._connected and self._session.closed_error is None:
                await self._open()

    async def _open(self) -> None:
        try:
            with anyio.fail_after(self.connect_timeout):
                self._sock = await self._connect()
                self.hello = await self._request("hello", hello_params(self.client_name))
            self._connected = True
        except BaseException as exc:
            sock, self._sock = self._sock, None
            if sock is not None:
                sock.close()  # nobody else has seen it: no reader or writer can be on it
            # a clean slate for the next try
            self._session = Session(self._max_buffer_size, lost_hint=self._lost_hint)
            link, self._link = self._link, None
            if link is not None:
                with anyio.CancelScope(shield=True):
                    error = await self._link_failed(link, exc)
                raise error from None
            if isinstance(exc, TimeoutError):
                raise DaemonUnavailable.make(
                    f"the daemon at {self.socket_path} did not answer within "
                    f"{self.connect_timeout:g} s",
                    START_HINT,
                    {"socket": str(self.socket_path)},
                ) from None
            raise

    async def _connect(self) -> socket.socket:
        target = self.destination.ssh
        if target is not None:
            link = SshLink.from_env(target, remote_browserctl=self.destination.remote_browserctl)
            sock = link.start(self.connect_timeout)
            self._link = link
            return sock
        path = self.socket_path
        assert path is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            while True:
                try:
                    sock.connect(str(path))
                    return sock
                except BlockingIOError:
                    # The listen backlog is full (the daemon is busy accepting): a Unix
                    # socket has no connect in progress to wait for, only a retry.
                    await anyio.sleep(_BACKLOG_RETRY_S)
        except FileNotFoundError:
            reason = f"no daemon socket at {path}"
        except ConnectionRefusedError:
            reason = f"nothing is listening on {path} (stale socket file?)"
        except PermissionError:
            reason = f"permission denied on {path}"
        except OSError as exc:
            reason = f"cannot connect to {path}: {exc.strerror or exc}"
        except BaseException:
            sock.close()
            raise
        sock.close()
        raise DaemonUnavailable.make(reason, START_HINT, {"socket": str(path)})

    async def _link_failed(self, link: SshLink, exc: BaseException) -> BaseException:
        """What a failed hello through ssh means (ssh's exit and stderr), once ssh is gone."""
        if not isinstance(exc, (OSError, ConnectionLost)):
            await _close_link(link)
            return exc  # the daemon answered, with an error of its own (or cancelled)
        # The pipe ended: ssh has ended or is ending; give it a moment.
        with anyio.move_on_after(0 if isinstance(exc, TimeoutError) else _SSH_EXIT_WAIT_S):
            # A child's exit is no event anyio can wait on without a thread: poll it.
            while link.exit_status() is None:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        error = link.failure(self.connect_timeout if isinstance(exc, TimeoutError) else None)
        await _close_link(link)
        return error

    async def aclose(self) -> None:
        """Close the connection; calls in flight fail with ConnectionLost, subscriptions end
        with ``connection_closed``. Any task may call it, any number of times."""
        self._session.connection_gone(_closed_by_user())
        sock, self._sock = self._sock, None
        if sock is None:
            return
        # Shut down first: a task waiting on the socket wakes (EOF, EPIPE) and lets go;
        # the descriptor is closed only then, never under a task still waiting on it.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        link, self._link = self._link, None
        if link is not None:
            link.terminate()  # ssh ends, and its forwards with it
        with anyio.CancelScope(shield=True):
            async with self._read_lock, self._send_lock:
                sock.close()
            if link is not None:
                await _close_link(link)

    # -- calls ---------------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call one RPC method and return its result; raises the error class of its code."""
        if not self._connected:
            await self.open()
        return await self._request(method, params or {})

    async def subscribe(self, method: str, params: dict[str, Any]) -> Subscription:
        """Call a ``*.follow`` method; the notifications it starts go to the Subscription."""
        if not self._connected:
            await self.open()
        feed: Feed = await self._request(method, params, subscribe=True)
        return Subscription(self, feed)

    async def create_lease(self, params: dict[str, Any]) -> dict[str, Any]:
        """``connections.create``; through ssh, the endpoint's URLs point at local forwards
        of the far addresses (made on the one SSH connection), usable here as they are."""
        if not self._connected:
            await self.open()
        link = self._link
        if link is None:
            lease: dict[str, Any] = await self._request("connections.create", params)
            return lease
        async with self._link_lock:
            if self._proxy_port is None:
                address = proxy_address(await self._request("daemon.status", {}))
                if address is not None:
                    self._proxy_port = await anyio.to_thread.run_sync(
                        link.forward, *address, self.connect_timeout)
            if self._proxy_port is not None:
                params = {**params, "proxy_port": self._proxy_port}
            lease = await self._request("connections.create", params)
            local: dict[str, Any] = await anyio.to_thread.run_sync(
                link.localize_lease, lease, self.connect_timeout)
            return local

    async def call_for_page(self, method: str, params: dict[str, Any]) -> str:
        """Call a method whose result is ``{url}`` of a page the daemon serves (dashboard,
        replay); through ssh, the URL points at a local forward of its far address."""
        result: dict[str, Any] = await self.call(method, params)
        url = str(result["url"])
        link = self._link
        if link is None:
            return url
        async with self._link_lock:
            local: str = await anyio.to_thread.run_sync(link.localize_url, url,
                                                        self.connect_timeout)
            return local

    async def lease_revoked(self, lease_id: str) -> None:
        """The lease is revoked: close the forward of its own origin (through ssh)."""
        link = self._link
        if link is not None:
            async with self._link_lock:
                await anyio.to_thread.run_sync(link.forget_origin, lease_id,
                                               self.connect_timeout)

    def cancel_subscription_nowait(self, subscription_id: str) -> None:
        """Stop a subscription: it ends here at once; the daemon is told without waiting."""
        self._send_nowait(self._session.cancel_subscription(subscription_id))

    async def _request(self, method: str, params: dict[str, Any], *,
                       subscribe: bool = False) -> Any:
        msgid, call, frame = self._session.start_call(method, params, subscribe=subscribe)
        try:
            await self._send(frame, call)
            if not call.ready:
                await self._wait(call)
        except BaseException:
            if subscribe and call.sent:
                await self._abandon(msgid, call)
            else:
                self._session.forget(msgid, call)
            raise
        return self._session.finish_call(call)

    async def _abandon(self, msgid: int, call: Call) -> None:
        # Shielded and bounded: the daemon answers a subscribe at once, and without the
        # answer the subscription would stream to nobody until the connection closes.
        with (anyio.CancelScope(shield=True), anyio.move_on_after(_ABANDON_WAIT_S),
              contextlib.suppress(BrowserdError)):
            await self._wait(call)
        self._send_nowait(self._session.abandon_subscribe(msgid, call))

    # -- the socket ----------------------------------------------------------------------

    async def _send(self, frame: bytes, call: Call) -> None:
        """Write ``frame`` whole, after whatever was queued before it, and mark ``call`` sent.
        Cancelled before any of it went out, it is dropped (not sent); cancelled part-way,
        the rest stays queued for the next writer, so the stream stays framed (sent)."""
        async with self._send_lock:
            sock = self._sock
            if sock is None:
                raise self._closed()
            outbox = self._outbox
            outbox += frame
            end = len(outbox)
            written = 0
            try:
                while outbox:
                    try:
                        n = sock.send(outbox)
                    except BlockingIOError:
                        await anyio.wait_writable(sock)
                        continue
                    del outbox[:n]  # cheap: a bytearray drops its head without copying
                    written += n
            except _TRANSPORT_ERRORS as exc:
                last_word(sock, self._session)  # the daemon's reason, if it gave one
                raise self._session.transport_error(exc) from exc
            except BaseException:
                start = end - len(frame) - written  # where the frame starts now
                if start >= 0:
                    del outbox[start:start + len(frame)]
                else:
                    call.sent = True
                raise
            call.sent = True

    def _send_nowait(self, frames: bytes) -> None:
        """Queue ``frames`` and write what the socket takes now. If a task is writing, it
        writes them before it lets go; else what did not fit goes with the next write."""
        if not frames:
            return
        self._outbox += frames
        sock = self._sock
        if sock is None or self._send_lock.locked():
            return
        try:
            n = sock.send(self._outbox)
        except BlockingIOError:
            return
        except OSError:
            return  # the connection broke: the next read or write reports it
        del self._outbox[:n]

    async def _wait(self, until: Call | Feed) -> None:
        """Read and settle messages until ``until.ready``; one reader at a time, the others
        wait for the read lock and find their reply settled when they get it."""
        while not until.ready:
            async with self._read_lock:
                if until.ready:
                    return
                sock = self._sock
                if sock is None:
                    raise self._closed()
                try:
                    await anyio.wait_readable(sock)
                    data = self._view[:sock.recv_into(self._buffer)]
                except BlockingIOError:
                    continue  # woken for nothing
                except _TRANSPORT_ERRORS as exc:
                    self._session.transport_error(exc)
                    continue  # every call and subscription is settled now
                self._send_nowait(self._session.receive_data(data))

    def _closed(self) -> BrowserdError:
        """The error for an operation on a closed client (settling whatever still waits)."""
        self._session.connection_gone(_closed_by_user())
        assert self._session.closed_error is not None
        return fresh(self._session.closed_error)


async def _close_link(link: SshLink) -> None:
    """End ssh: SIGTERM, a moment to go on its own, then SIGKILL; reaped, never left behind."""
    link.terminate()
    with anyio.move_on_after(_SSH_EXIT_WAIT_S / 2):
        while link.exit_status() is None:  # noqa: ASYNC110 (as in _link_failed)
            await anyio.sleep(0.01)
    link.close()


def _closed_by_user() -> ConnectionLost:
    return ConnectionLost.make("the client was closed", "Open a new client to go on.")
