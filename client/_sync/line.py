"""Line: one connection to the daemon on a plain blocking socket, with no thread of its own.

A call writes its request and reads until its reply is in, in the calling thread. Threads
may share one Line: the writes are behind a lock, and of the threads waiting (for replies or
for a subscription's next payload) one at a time reads and hands every message to the
:class:`~browserd.client.session.Session`, which settles what it answers, so each waiter
finds its reply settled when its turn comes. A thread that has the line to itself (the
transport's pool hands out idle lines) calls through :meth:`Line.call_owned` instead, which
takes no lock. Nothing here runs in the background, so a client that is never closed never
keeps the interpreter from exiting. Every failure of the socket is mapped here, at the edge,
so callers only ever see ``browserd.client.errors``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import wire
from ..contexts import Destination
from ..errors import BrowserdError, ConnectionLost, DaemonUnavailable
from ..last_word import last_word
from ..session import START_HINT, Call, Feed, Session, fresh, hello_params, lost_hint
from ..ssh import SshLink, proxy_address

# Each read lands in one buffer kept for the connection's life: a fresh bytes object per
# read would be a mmap, mremap and munmap per call for a large one (glibc maps blocks over
# 128 KiB), which measured slower than the call's own round trip on a VM. 64 KiB: a client
# keeps up to 16 idle lines, and a large reply only takes more reads of it.
_RECEIVE_SIZE = 64 * 1024
_BACKLOG_RETRY_S = 0.01
_SSH_EXIT_WAIT_S = 2.0  # for ssh to exit after its pipe ended, to read why


class Subscription:
    """The receiving end of a server-pushed stream (``*.follow``).

    ``for payload in sub.receive`` gives notification payloads until the stream ends; then
    ``ended_reason`` says why (``cancelled``, ``run_ended``, ``overflow``,
    ``connection_closed``).
    """

    def __init__(self, line: Line, feed: Feed,
                 on_end: Callable[[], None] | None = None) -> None:
        self.id = feed.id
        self.receive = SubscriptionStream(line, feed, on_end)

    @property
    def ended_reason(self) -> str | None:
        return self.receive._feed.ended_reason

    def __repr__(self) -> str:
        return f"Subscription(id={self.id!r}, ended_reason={self.ended_reason!r})"


class SubscriptionStream:
    """``subscription.receive``: payloads in order, until the stream has ended."""

    def __init__(self, line: Line, feed: Feed, on_end: Callable[[], None] | None) -> None:
        self._line = line
        self._feed = feed
        self._on_end = on_end  # told once the stream has ended and was read to its end

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        feed = self._feed
        if not feed.ready:
            self._line._wait(feed)
        with self._line._lock:
            if feed.payloads:
                return feed.payloads.popleft()
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()
        raise StopIteration


class Line:
    """One connection to the daemon: connects on first use, calls, subscriptions.

    Thread-safe: any number of threads may call through one Line at once.
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
        self._open_lock = threading.Lock()
        self._send_lock = threading.Lock()
        # _lock guards the Session, _sock, _reading and _sleepers; threads waiting while
        # another reads sleep on _state. (`with self._lock` is the C lock itself: cheaper
        # than entering the Condition, on the path every shared call takes. `acquire()` and a
        # `try` would be cheaper still, but a ^C can land between the two and leave the lock
        # held for good; `with` takes it and arms the release in one step.)
        self._lock = threading.Lock()
        self._state = threading.Condition(self._lock)
        self._reading = False  # a thread is reading (it holds no lock while it does)
        self._buffer = bytearray(_RECEIVE_SIZE)  # the reading thread's alone
        self._view = memoryview(self._buffer)
        self._sleepers = 0  # threads in _state.wait()
        self._link: SshLink | None = None  # the ssh process, for a far host
        self._link_lock = threading.Lock()  # its forwards
        self._proxy_port: int | None = None  # the local forward of the far CDP proxy

    # -- connection ----------------------------------------------------------------------

    def open(self) -> None:
        """Connect and say hello, unless connected; raises DaemonUnavailable when the daemon
        is not there (the next call tries again)."""
        if self._connected or self._session.closed_error is not None:
            return
        with self._open_lock:
            if not self._connected and self._session.closed_error is None:
                self._open()

    def _open(self) -> None:
        # Only this thread has the socket until hello is answered (others wait on _open_lock).
        deadline = time.monotonic() + self.connect_timeout
        sock = self._connect(deadline)
        session, state = self._session, self._state
        try:
            with state:
                _, call, frame = session.start_call("hello", hello_params(self.client_name))
            sock.settimeout(max(deadline - time.monotonic(), 1e-3))
            sock.sendall(frame)
            while not call.ready:
                data = self._view[:sock.recv_into(self._buffer)]
                with state:
                    out = session.receive_data(data)
                sock.sendall(out)
            hello = session.finish_call(call)
            sock.settimeout(None)
        except BaseException as exc:
            if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
                with state:
                    last_word(sock, session)  # the daemon's reason, if it gave one
            sock.close()
            # a clean slate for the next try
            self._session = Session(self._max_buffer_size, lost_hint=self._lost_hint)
            link, self._link = self._link, None
            if link is not None:
                raise self._link_failed(link, exc) from None
            if isinstance(exc, TimeoutError):
                raise self._timed_out() from None
            if isinstance(exc, OSError):
                with state:
                    error = session.transport_error(exc)
                raise error from exc
            raise
        with self._state:
            if self._session.closed_error is not None:  # closed meanwhile, from a thread
                sock.close()
                link, self._link = self._link, None
                if link is not None:
                    link.close_now()
                raise fresh(self._session.closed_error)
            self._sock, self.hello, self._connected = sock, hello, True

    def _connect(self, deadline: float) -> socket.socket:
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
                    if time.monotonic() >= deadline:
                        raise self._timed_out() from None
                    time.sleep(_BACKLOG_RETRY_S)
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

    def _link_failed(self, link: SshLink, exc: BaseException) -> BaseException:
        """What a failed hello through ssh means (ssh's exit and stderr), once ssh is gone."""
        if not isinstance(exc, (OSError, ConnectionLost)):
            link.close_now()
            return exc  # the daemon answered, with an error of its own (or ^C)
        # The pipe ended or stayed silent: ssh has ended or is ending; give it a moment.
        end = time.monotonic() + (0 if isinstance(exc, TimeoutError) else _SSH_EXIT_WAIT_S)
        while link.exit_status() is None and time.monotonic() < end:
            time.sleep(0.01)
        error = link.failure(self.connect_timeout if isinstance(exc, TimeoutError) else None)
        link.close_now()
        return error

    def _timed_out(self) -> DaemonUnavailable:
        return DaemonUnavailable.make(
            f"the daemon at {self.socket_path} did not answer within {self.connect_timeout:g} s",
            START_HINT,
            {"socket": str(self.socket_path)},
        )

    def close(self) -> None:
        """Close the connection; calls in flight (in other threads) fail with ConnectionLost,
        subscriptions end with ``connection_closed``. Any thread may call it, any number of
        times."""
        with self._state:
            self._session.connection_gone(_closed_by_user())
            sock, self._sock = self._sock, None
            self._state.notify_all()
        if sock is None:
            return
        link, self._link = self._link, None
        if link is not None:
            link.terminate()  # ssh ends, and its forwards with it
        # Shut down first: a thread blocked on the socket wakes (EOF, EPIPE) and lets go;
        # the descriptor is closed only then, never under a thread still using it.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with self._send_lock, self._state:
            while self._reading:
                self._sleepers += 1
                try:
                    self._state.wait()
                finally:
                    self._sleepers -= 1
            sock.close()
        if link is not None:
            link.close_now()

    # -- calls ---------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             subscribe: bool = False) -> Any:
        """Call one RPC method and return its result; raises the error class of its code.
        With ``subscribe`` (a ``*.follow`` method) the result is the Feed of its stream."""
        if not self._connected:
            self.open()
        with self._lock:
            msgid, pending, frame = self._session.start_call(
                method, params or {}, subscribe=subscribe)
        try:
            self._send(frame)
            self._wait(pending)
        except BaseException:
            with self._lock:
                if subscribe and pending.ready:  # interrupted (^C) with the reply in
                    frame = self._session.abandon_subscribe(msgid, pending)
                else:
                    frame = b""
                    self._session.forget(msgid, pending)
            self._send_quietly(frame)
            raise
        return self._session.finish_call(pending)

    def call_owned(self, method: str, params: dict[str, Any]) -> Any:
        """:meth:`call` for the one thread that has this line to itself (an idle line the
        transport handed out): no lock is taken, and the reply is read by this thread
        straight from the socket. Meanwhile no other thread touches the line but to
        :meth:`interrupt` it."""
        if not self._connected:
            self.open()
        session, sock = self._session, self._sock
        msgid, frame = session.start_own_call(method, params)
        assert sock is not None  # connected, and only its owner closes it
        try:
            sock.sendall(frame)
        except OSError as exc:
            last_word(sock, session)
            raise session.transport_error(exc) from exc
        # Read first: nothing read before the request went out can be its reply.
        buffer, view, codec = self._buffer, self._view, session.codec
        receive, next_frame = codec.receive_data, codec.next_frame
        try:
            while True:
                receive(view[:sock.recv_into(buffer)])
                while (frame := next_frame()) is not wire.NEED_DATA:
                    # Its plain result is taken from the frame as decoded (the hot path);
                    # anything else is read in full by the session.
                    if (type(frame) is list and len(frame) == 4 and frame[1] == msgid
                            and frame[0] == wire.RESPONSE and frame[2] is None
                            and type(frame[1]) is int):
                        return frame[3]
                    if (result := session.own_frame(msgid, frame)) is not wire.NEED_DATA:
                        return result
        except OSError as exc:
            raise session.transport_error(exc) from exc
        except wire.RemoteProtocolError as exc:
            raise session.protocol_error(exc) from None

    @property
    def closed_error(self) -> BrowserdError | None:
        """Why the connection is gone (the daemon closed it, a read or write failed)."""
        return self._session.closed_error

    def interrupt(self) -> None:
        """Shut the socket down, from any thread: a call on it fails at once (its owner then
        closes the line; the descriptor stays open until then)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def subscribe(self, method: str, params: dict[str, Any],
                  on_end: Callable[[], None] | None = None) -> Subscription:
        """Call a ``*.follow`` method; the notifications it starts go to the Subscription
        (``on_end`` is called when its stream has been read to its end)."""
        feed: Feed = self.call(method, params, subscribe=True)
        return Subscription(self, feed, on_end)

    def create_lease(self, params: dict[str, Any]) -> dict[str, Any]:
        """``connections.create``; through ssh, the endpoint's URLs point at local forwards
        of the far addresses (made on the one SSH connection), usable here as they are."""
        if not self._connected:
            self.open()  # for the link
        link = self._link
        if link is None:
            lease: dict[str, Any] = self.call("connections.create", params)
            return lease
        with self._link_lock:
            if self._proxy_port is None:
                address = proxy_address(self.call("daemon.status", {}))
                if address is not None:
                    self._proxy_port = link.forward(*address, self.connect_timeout)
            if self._proxy_port is not None:
                params = {**params, "proxy_port": self._proxy_port}
            lease = self.call("connections.create", params)
            return link.localize_lease(lease, self.connect_timeout)

    def call_for_page(self, method: str, params: dict[str, Any]) -> str:
        """Call a method whose result is ``{url}`` of a page the daemon serves (dashboard,
        replay); through ssh, the URL points at a local forward of its far address."""
        result: dict[str, Any] = self.call(method, params)
        url = str(result["url"])
        link = self._link
        if link is None:
            return url
        with self._link_lock:
            return link.localize_url(url, self.connect_timeout)

    def lease_revoked(self, lease_id: str) -> None:
        """The lease is revoked: close the forward of its own origin (through ssh)."""
        link = self._link
        if link is not None:
            with self._link_lock:
                link.forget_origin(lease_id, self.connect_timeout)

    def cancel_subscription_nowait(self, subscription_id: str) -> None:
        """Stop a subscription: it ends here at once; the daemon is told without waiting for
        its answer."""
        with self._lock:
            frame = self._session.cancel_subscription(subscription_id)
        self._send_quietly(frame)

    def being_read(self) -> bool:
        """A thread is reading (or waiting to read) this line for a subscription."""
        with self._lock:
            return self._reading or self._sleepers > 0

    # -- the socket ----------------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        with self._send_lock:
            sock = self._sock
            if sock is None:
                with self._state:
                    raise self._closed()
            try:
                sock.sendall(frame)
            except OSError as exc:
                with self._state:
                    last_word(sock, self._session)
                    error = self._session.transport_error(exc)
                    self._state.notify_all()
                raise error from exc
            except BaseException:
                # Interrupted part-way (^C): how much went out is unknown, so the stream
                # is no longer framed; nothing more can be sent on it.
                with self._state:
                    self._session.connection_gone(ConnectionLost.make(
                        "a request was interrupted while it was being written",
                        "Open a new client to go on."))
                    self._state.notify_all()
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                raise

    def _send_quietly(self, frames: bytes) -> None:
        """Write frames nobody waits on (cancels); a broken connection is the next call's news."""
        if frames:
            with contextlib.suppress(BrowserdError):
                self._send(frames)

    def _wait(self, until: Call | Feed) -> None:
        """Read and settle messages until ``until.ready``. One thread reads at a time, holding
        no lock while it blocks; the others sleep until it has settled what it read."""
        out = b""
        state = self._state
        with self._lock:
            while not until.ready:
                if self._reading:
                    self._sleepers += 1
                    try:
                        state.wait()
                    finally:
                        self._sleepers -= 1
                    continue
                sock = self._sock
                if sock is None:
                    raise self._closed()
                self._reading = True
                try:
                    # Let go inside the try: a ^C that lands right after the release still
                    # finds the lock taken back below before `with` releases it again.
                    state.release()
                    data = self._view[:sock.recv_into(self._buffer)]
                    error = None
                except OSError as exc:
                    data, error = self._view[:0], exc
                finally:
                    state.acquire()
                    self._reading = False
                    if self._sleepers:
                        # They wake once this lock is free, after what was read is settled;
                        # each checks its own call, and one of them reads next.
                        state.notify_all()
                if error is not None:
                    self._session.transport_error(error)
                else:
                    out += self._session.receive_data(data)
        if out:
            self._send_quietly(out)

    def _closed(self) -> BrowserdError:
        """The error for an operation on a closed client (call it holding ``_state``)."""
        self._session.connection_gone(_closed_by_user())
        assert self._session.closed_error is not None
        return fresh(self._session.closed_error)


def _closed_by_user() -> ConnectionLost:
    return ConnectionLost.make("the client was closed", "Open a new client to go on.")

