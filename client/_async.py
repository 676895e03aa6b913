"""AsyncClient: one connection to the daemon, on anyio (runs under asyncio and trio).

One reader task turns received bytes into messages (``browserd.client.wire``) and hands
each response to the call waiting on its msgid, and each subscription notification to
its subscriber. Calls may run concurrently from any number of tasks. Every transport
failure is mapped here, at the edge, so callers only ever see ``browserd.client.errors``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import wire
from .errors import (
    BrowserdError,
    ConnectionLost,
    DaemonUnavailable,
    InvalidRequest,
    error_from_wire,
)
from .paths import socket_path as resolve_socket_path
from .resources import AsyncProfiles, AsyncRuns, AsyncRuntimes, AsyncSpace, AsyncSpaces

API_MIN = API_MAX = 1
_RECEIVE_SIZE = 256 * 1024
_SUBSCRIPTION_QUEUE = 1024
_START_HINT = "Start the daemon with `browserd` (or `make run`), or point BROWSERD_SOCKET at it."
_LOST_HINT = "The daemon may have stopped or restarted; check `browserctl status`, then reconnect."


def _client_version() -> str:
    try:
        return metadata.version("browserd")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@attrs.define
class Subscription:
    """The receiving end of a server-pushed stream (``*.follow``); see docs/api.md
    (Transport and framing).

    ``receive`` yields notification payloads; it ends when the stream ends, and then
    ``ended_reason`` says why (``cancelled``, ``run_ended``, ``overflow``,
    ``connection_closed``).
    """

    id: str
    receive: MemoryObjectReceiveStream[dict[str, Any]]
    _send: MemoryObjectSendStream[dict[str, Any]] = attrs.field(repr=False)
    ended_reason: str | None = None

    def _end(self, reason: str) -> None:
        if self.ended_reason is None:
            self.ended_reason = reason
        self._send.close()


@attrs.define
class _Call:
    done: anyio.Event
    subscribe: bool = False
    abandoned: bool = False  # a subscribe whose caller was cancelled before the reply came
    result: Any = None
    error: BrowserdError | None = None
    subscription: Subscription | None = None


def _fresh(error: BrowserdError) -> BrowserdError:
    """A new instance per raise: one shared instance would pile up tracebacks."""
    return type(error)(error.code, error.message, error.hint, error.data)


class AsyncClient:
    """An async connection to the browserd daemon.

    Use it as ``async with AsyncClient() as bd:``; leaving the block closes the
    connection (enter and leave it in the same task). The socket is ``socket_path``,
    else ``$BROWSERD_SOCKET``, else the default path (:mod:`browserd.client.paths`).

    Entry points: :attr:`spaces`, :attr:`runtimes` (the default space), :meth:`space`,
    :attr:`runs`, :attr:`profiles`, :meth:`status`, and :meth:`call` for any RPC method.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        client_name: str = "browserd-python",
        connect_timeout: float = 10.0,
        max_buffer_size: int = wire.DEFAULT_MAX_BUFFER,
    ) -> None:
        self.socket_path: Path = resolve_socket_path(socket_path)
        self.client_name = client_name
        self.connect_timeout = connect_timeout
        self.hello: dict[str, Any] = {}
        """The daemon's answer to ``hello``: api_level, daemon {version, pid, ...}, peer."""
        self._wire = wire.Connection(max_buffer_size)
        self._stream: anyio.abc.ByteStream | None = None
        self._stack = contextlib.AsyncExitStack()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._send_lock = anyio.Lock()
        self._calls: dict[int, _Call] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._next_msgid = 1
        self._closed_error: BrowserdError | None = None  # set once the connection is gone
        self._fatal: BrowserdError | None = None  # the daemon's last word (rpc.error)

    # -- resources ---------------------------------------------------------------------

    @property
    def spaces(self) -> AsyncSpaces:
        """Create, get, list and delete spaces."""
        return AsyncSpaces(self)

    @property
    def runtimes(self) -> AsyncRuntimes:
        """Runtimes of the default space (``list()`` shows every space)."""
        return AsyncRuntimes(self, None)

    @property
    def runs(self) -> AsyncRuns:
        """Runs of any runtime, by id."""
        return AsyncRuns(self)

    @property
    def profiles(self) -> AsyncProfiles:
        """Persistent profiles: list, get, delete, clone."""
        return AsyncProfiles(self)

    def space(self, name: str) -> AsyncSpace:
        """A handle on space ``name`` (no call is made; ``await .refresh()`` loads it)."""
        return AsyncSpace(name=name, client=self)

    async def status(self) -> dict[str, Any]:
        """``daemon.status``: version, pid, uptime, counts, rss/cpu, limits, paths."""
        result: dict[str, Any] = await self.call("daemon.status")
        return result

    # -- connection --------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _open(self) -> None:
        if self._stream is not None or self._closed_error is not None:
            raise RuntimeError("an AsyncClient connects once; create a new one to reconnect")
        # The task group is entered first: cancel scopes nest, and this one outlives
        # the connect deadline below.
        self._task_group = await self._stack.enter_async_context(anyio.create_task_group())
        try:
            with anyio.fail_after(self.connect_timeout):
                self._stream = await self._connect()
                self._task_group.start_soon(self._read_loop)
                self.hello = await self.call(
                    "hello",
                    {
                        "client": {"name": self.client_name, "version": _client_version()},
                        "api": {"min": API_MIN, "max": API_MAX},
                    },
                )
        except TimeoutError:
            await self.aclose()
            raise DaemonUnavailable.make(
                f"the daemon at {self.socket_path} did not answer within "
                f"{self.connect_timeout:g} s",
                _START_HINT,
                {"socket": str(self.socket_path)},
            ) from None
        except BaseException:
            await self.aclose()
            raise

    async def _connect(self) -> anyio.abc.ByteStream:
        path = self.socket_path
        try:
            return await anyio.connect_unix(path)
        except FileNotFoundError:
            reason = f"no daemon socket at {path}"
        except ConnectionRefusedError:
            reason = f"nothing is listening on {path} (stale socket file?)"
        except PermissionError:
            reason = f"permission denied on {path}"
        except OSError as exc:
            reason = f"cannot connect to {path}: {exc.strerror or exc}"
        raise DaemonUnavailable.make(reason, _START_HINT, {"socket": str(path)})

    async def aclose(self) -> None:
        """Close the connection; calls still in flight fail with ConnectionLost.

        Call it from the task that opened the client (leaving ``async with`` does).
        """
        self._connection_gone(
            ConnectionLost.make("the client was closed", "Open a new client to go on.")
        )
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
        await self._stack.aclose()
        if self._stream is not None:
            with contextlib.suppress(OSError, anyio.BrokenResourceError):
                await self._stream.aclose()

    # -- calls -------------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call one RPC method and return its result; raises the error class of its code."""
        return await self._call(method, params or {}, subscribe=False)

    async def subscribe(self, method: str, params: dict[str, Any]) -> Subscription:
        """Call a ``*.follow`` method; the notifications it starts go to the Subscription."""
        subscription: Subscription = await self._call(method, params, subscribe=True)
        return subscription

    async def _call(self, method: str, params: dict[str, Any], *, subscribe: bool) -> Any:
        if self._closed_error is not None:
            raise _fresh(self._closed_error)
        if self._stream is None:
            raise RuntimeError("use the client inside `async with AsyncClient() as bd:`")
        msgid = self._allocate_msgid()
        try:
            frame = self._wire.send_request(msgid, method, params)
        except wire.LocalProtocolError as exc:
            raise error_from_wire(exc.error) from None
        call = _Call(anyio.Event(), subscribe=subscribe)
        self._calls[msgid] = call
        sending = False  # from here on the daemon may have the request
        try:
            with self._map_transport_errors():
                async with self._send_lock:
                    sending = True
                    await self._stream.send(frame)
            await call.done.wait()
        except BaseException:
            if subscribe and sending:
                self._abandon_subscribe(call)
            raise
        finally:
            if not call.abandoned:
                self._calls.pop(msgid, None)
        if call.error is not None:
            raise call.error
        return call.subscription if subscribe else call.result

    def _abandon_subscribe(self, call: _Call) -> None:
        """The caller of a subscribe was cancelled: the daemon may be streaming already, and
        nobody will read it or cancel it, so cancel it here (the reader does, if the reply
        has not come yet); else it would run until the connection closes."""
        if not call.done.is_set():
            call.abandoned = True
        elif call.subscription is not None:
            self.cancel_subscription_nowait(call.subscription.id)

    def _allocate_msgid(self) -> int:
        while True:
            msgid = self._next_msgid
            self._next_msgid = 1 if msgid >= wire.MAX_MSGID else msgid + 1
            if msgid not in self._calls:
                return msgid

    @contextlib.contextmanager
    def _map_transport_errors(self) -> Iterator[None]:
        try:
            yield
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            error = self._fatal or ConnectionLost.make(
                f"the connection to the daemon broke: {exc}", _LOST_HINT
            )
            self._connection_gone(error)
            raise _fresh(error) from exc

    # -- the reader task ---------------------------------------------------------------

    async def _read_loop(self) -> None:
        assert self._stream is not None
        error: BrowserdError
        try:
            while True:
                event = self._wire.next_event()
                if event is wire.NEED_DATA:
                    try:
                        data = await self._stream.receive(_RECEIVE_SIZE)
                    except anyio.EndOfStream:
                        data = b""
                    self._wire.receive_data(data)
                elif event is wire.CLOSED:
                    error = ConnectionLost.make("the daemon closed the connection", _LOST_HINT)
                    break
                else:
                    self._dispatch(event)
        except wire.RemoteProtocolError as exc:
            error = ConnectionLost.make(
                f"the daemon broke the protocol ({exc.code}: {exc.message})",
                "This is a bug in browserd or a version mismatch; please report it.",
            )
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            error = ConnectionLost.make(f"the connection to the daemon broke: {exc}", _LOST_HINT)
        except Exception as exc:
            # A bug here must not cancel the task that owns the client (this task's
            # group is that task's scope): fail the calls instead, loudly.
            error = ConnectionLost.make(
                f"the client's reader failed: {exc!r}",
                "This is a bug in browserd; please report it.",
            )
        self._connection_gone(self._fatal or error)

    def _dispatch(self, event: wire.Event) -> None:
        if isinstance(event, wire.Response):
            call = self._calls.get(event.msgid)
            if call is None:
                return  # its caller was cancelled; nobody is waiting
            if call.abandoned:
                del self._calls[event.msgid]
                sub_id = event.result.get("subscription") if isinstance(event.result, dict) \
                    else None
                if event.error is None and isinstance(sub_id, str):
                    self.cancel_subscription_nowait(sub_id)
                return
            if event.error is not None:
                call.error = error_from_wire(event.error)
            else:
                call.result = event.result
                if call.subscribe:
                    call.subscription, call.error = self._register(event.result)
            call.done.set()
        elif isinstance(event, wire.Notification):
            self._notify(event.method, event.payload)
        elif isinstance(event, wire.InvalidMessage) and event.msgid is not None:
            call = self._calls.get(event.msgid)
            if call is not None:
                call.error = InvalidRequest.make(
                    f"the daemon sent an invalid response: {event.error.get('message')}",
                    "This is a bug in browserd or a version mismatch; please report it.",
                )
                call.done.set()
        # Requests from the daemon and invalid messages without msgid mean nothing here.

    def _register(self, result: Any) -> tuple[Subscription | None, BrowserdError | None]:
        # Registered by the reader itself, before it reads the next message: notifications
        # for this subscription may follow the response immediately.
        sub_id = result.get("subscription") if isinstance(result, dict) else None
        if not isinstance(sub_id, str):
            return None, InvalidRequest.make("the daemon's reply names no subscription")
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](_SUBSCRIPTION_QUEUE)
        sub = Subscription(sub_id, receive, send)
        self._subscriptions[sub_id] = sub
        return sub, None

    def _notify(self, method: str, payload: dict[str, Any]) -> None:
        if method == "rpc.error":
            # The daemon's last word before it closes this connection.
            self._fatal = error_from_wire(payload.get("error"))
            return
        sub_id = payload.get("subscription")
        sub = self._subscriptions.get(sub_id) if isinstance(sub_id, str) else None
        if sub is None:
            return
        if method == "subscription.ended":
            reason = payload.get("reason")
            self._end_subscription(sub, reason if isinstance(reason, str) else "cancelled")
            return
        try:
            sub._send.send_nowait(payload)
        except anyio.WouldBlock:
            # The reader never waits on one slow subscriber: that would stall every call.
            # The laggard gets `overflow` and resubscribes from its last seq.
            self._end_subscription(sub, "overflow")
            self.cancel_subscription_nowait(sub.id)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._end_subscription(sub, "cancelled")
            self.cancel_subscription_nowait(sub.id)

    def _end_subscription(self, sub: Subscription, reason: str) -> None:
        self._subscriptions.pop(sub.id, None)
        sub._end(reason)

    def cancel_subscription_nowait(self, subscription_id: str) -> None:
        """Stop a subscription: drop its queue now, tell the daemon in the background."""
        sub = self._subscriptions.pop(subscription_id, None)
        if sub is not None:
            sub._end("cancelled")
        if self._task_group is not None and self._closed_error is None:
            self._task_group.start_soon(self._cancel_quietly, subscription_id)

    async def _cancel_quietly(self, subscription_id: str) -> None:
        with contextlib.suppress(BrowserdError):
            await self.call("subscriptions.cancel", {"subscription": subscription_id})

    def _connection_gone(self, error: BrowserdError) -> None:
        """Fail every call in flight and end every subscription; later calls raise `error`."""
        if self._closed_error is None:
            self._closed_error = error
        for call in self._calls.values():
            if not call.done.is_set():
                call.error = _fresh(error)
                call.done.set()
        for sub in list(self._subscriptions.values()):
            self._end_subscription(sub, "connection_closed")
