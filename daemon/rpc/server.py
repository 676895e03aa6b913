"""The RPC server: the Unix socket, the accept loop, and one session per client connection.

trio code here only pumps bytes and owns tasks; framing is `browserd.client.wire`, and the
session's states are the table below. Each connection is on its own: whatever one client sends,
the others never notice.
"""

from __future__ import annotations

import grp
import logging
import math
import os
import socket as stdlib_socket
import struct
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import attrs
import psutil
import trio

from browserd.client import wire

from ..base.errors import ApiError, resource_error
from ..base.params import Params
from ..system.accept_loop import accept_loop, write_nowait
from ..system.fd_budget import Pool, Slot
from ..system.listen_fds import SocketUnusable
from ..system.logs import Throttled
from .api import Api, Caller, Method

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0  # config limits.hello_timeout_s
_PEERCRED = struct.Struct("3i")
# Each session reads into a buffer of its own, reused for every read: a fresh bytes object
# per read (receive_some) is allocated large and shrunk to what arrived, which fragmented the
# heap under load (memory.py). Small while requests are small; large while a read fills it.
_RECEIVE_SMALL = 16 * 1024
_RECEIVE_LARGE = 256 * 1024
# A read loop serving inline requests writes their replies after this many, or this many bytes.
_OUTBOX_MAX_REPLIES = 64
_OUTBOX_MAX_BYTES = 256 * 1024


class SessionState(StrEnum):
    AWAITING_HELLO = "awaiting_hello"
    READY = "ready"
    CLOSING = "closing"


# Invariants: nothing but `hello` is served before READY; the daemon sends no notification
# before READY except the final `rpc.error` of a connection it is closing (a connection over
# the budget, one that sent no hello in time, one whose bytes cannot be decoded).
SESSION_TRANSITIONS: dict[tuple[SessionState, str], SessionState] = {
    (SessionState.AWAITING_HELLO, "hello_ok"): SessionState.READY,
    (SessionState.AWAITING_HELLO, "close"): SessionState.CLOSING,
    (SessionState.READY, "close"): SessionState.CLOSING,
}


def bind_unix_socket(path: Path, gid: int | None = None) -> trio.socket.SocketType:
    """Bind the listening socket: parent dir 0700, socket 0600, a stale socket file replaced.

    With `gid` (the allowed group of a system service) the socket is 0660 in that group and a
    directory the daemon creates is 0750 in it, as a socket unit with SocketGroup= would make.
    A socket file that still answers belongs to a live daemon: refuse rather than steal it.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
        if gid is not None:
            os.chown(path.parent, -1, gid)
            os.chmod(path.parent, 0o750)
    owner = path.parent.stat()
    if owner.st_uid != os.geteuid() or owner.st_mode & 0o022:
        # Someone else could swap our socket for theirs: refuse rather than serve through it.
        raise SocketUnusable(
            f"the socket directory {path.parent} is not owned by this user or is writable by "
            "others; remove it or choose another socket path"
        )
    if path.exists() or path.is_symlink():
        if not path.is_socket():
            raise SocketUnusable(
                f"{path} exists and is not a socket; remove it or choose another socket path"
            )
        probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # left behind by a daemon that died
        except OSError as exc:
            raise SocketUnusable(f"cannot check the existing socket {path}: {exc}") from None
        else:
            raise SocketUnusable(
                f"another browserd is already serving on {path}; stop it first "
                "(or set BROWSERD_SOCKET to run a second daemon elsewhere)"
            )
        finally:
            probe.close()
    sock = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is born 0600; no window where others may connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    if gid is not None:
        os.chown(path, -1, gid)
        os.chmod(path, 0o660)
    sock.listen(128)
    return trio.socket.from_stdlib_socket(sock)


def peer_credentials(sock: trio.socket.SocketType) -> tuple[int, int, int]:
    raw = sock.getsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def _process_name(pid: int) -> str | None:
    try:
        return str(psutil.Process(pid).name())
    except (psutil.Error, OSError):
        return None


def _supplementary_groups(pid: int) -> set[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


class RpcServer:
    """Serves the socket: at most `connections.limit` clients at once (a connection over it
    gets a final `rpc.error` notification, `daemon.resources_exhausted`, and is closed; the
    daemon's own health probe is let in all the same), each closed after `hello_timeout_s`
    unless it has said hello by then."""

    def __init__(self, api: Api, *, socket_path: Path, requests_in_flight: int,
                 allowed_group: str | None = None,
                 listener: trio.socket.SocketType | None = None,
                 connections: Pool | None = None,
                 hello_timeout_s: float = HELLO_TIMEOUT_S) -> None:
        self.api = api
        self.socket_path = socket_path
        self.requests_in_flight = requests_in_flight
        self.allowed_gid = grp.getgrnam(allowed_group).gr_gid if allowed_group else None
        self._listener = listener
        self.connections = connections or Pool("rpc_connections", 1 << 30)
        self.hello_timeout_s = hello_timeout_s
        self.silent_log = Throttled(log)  # connections closed for want of hello
        self.sessions: set[Session] = set()

    def is_allowed(self, pid: int, uid: int, gid: int) -> bool:
        """Same uid or root; or, for a system service, a member of the configured group."""
        if uid in (0, os.geteuid()):
            return True
        if self.allowed_gid is None:
            return False
        return gid == self.allowed_gid or self.allowed_gid in _supplementary_groups(pid)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        listener = self._listener or bind_unix_socket(self.socket_path, self.allowed_gid)
        bound_here = self._listener is None
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                await accept_loop(listener, self.connections, self._serve_connection,
                                  self._turn_away, nursery=nursery, logger=log,
                                  what="RPC socket", admit_over_cap=_is_own)
        finally:
            listener.close()
            if bound_here:
                self.socket_path.unlink(missing_ok=True)

    def _turn_away(self, sock: trio.socket.SocketType) -> None:
        """The last word to a connection over the budget, written without waiting."""
        error = self.connections.exhausted().to_wire()
        write_nowait(sock, wire.Connection().send_notification("rpc.error", {"error": error}))

    async def _serve_connection(self, sock: trio.socket.SocketType, slot: Slot) -> None:
        async with trio.SocketStream(sock) as stream:
            try:
                pid, uid, gid = peer_credentials(stream.socket)
                caller = Caller(pid=pid, uid=uid, name=_process_name(pid))
                session = Session(self, stream, caller, allowed=self.is_allowed(pid, uid, gid))
                self.sessions.add(session)
                self.api.clients += 1
                try:
                    await session.run()
                finally:
                    self.sessions.discard(session)
                    self.api.clients -= 1
            except* (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except* Exception:
                # One connection's failure must never take the accept loop down (except*: it
                # may come grouped with a Cancelled).
                log.exception("RPC connection failed")


def _is_own(sock: trio.socket.SocketType) -> bool:
    """A connection from this very process: the watchdog's health probe (health.py), which
    must see the daemon answer, not its budget."""
    try:
        return peer_credentials(sock)[0] == os.getpid()
    except OSError:
        return False


class Session:
    """One client connection: hello first, then requests served concurrently.

    The read loop serves plain-function methods itself and collects their replies in an outbox,
    sent with one write when the loop has read everything the client sent (or has served
    `_OUTBOX_MAX_REPLIES` in a row, so one client's pipeline never starves the others). Async
    methods get a task each and send their own replies. The outbox is always flushed before the
    read loop waits for anything, so no task of this session writes ahead of a queued reply.
    """

    def __init__(self, server: RpcServer, stream: trio.SocketStream, caller: Caller,
                 *, allowed: bool) -> None:
        self.server = server
        self.stream = stream
        self.caller = attrs.evolve(caller, session=self)  # methods reach their connection
        self.allowed = allowed
        self.state = SessionState.AWAITING_HELLO
        self.wire = wire.Connection()
        self.subscriptions: dict[str, Any] = {}  # server-pushed streams (see follow.py)
        self._nursery: trio.Nursery | None = None
        self._buffer = bytearray(_RECEIVE_SMALL)
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        # FIFO: a reply queued before a notification is sent before it (a subscription's
        # first notification never overtakes the reply that names it).
        self._send_lock = trio.Lock()
        self._hello_deadline = trio.CancelScope()  # replaced by the one `run` sets
        # Past this many requests in flight the session stops reading: backpressure on the client.
        self._slots = trio.Semaphore(server.requests_in_flight)

    def _transition(self, trigger: str) -> None:
        self.state = SESSION_TRANSITIONS[self.state, trigger]

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Run a task for this connection; it is cancelled when the connection closes."""
        assert self._nursery is not None, "the session is not running"
        self._nursery.start_soon(fn, *args)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                # Until hello: a connection that says nothing must not hold its slot for good.
                with trio.move_on_after(self.server.hello_timeout_s) as self._hello_deadline:
                    await self._read_loop(nursery)
                    await self._flush()
                if self._hello_deadline.cancelled_caught:
                    await self._close_without_hello()
            except wire.RemoteProtocolError as exc:
                log.info("closing connection of pid %s: %s", self.caller.pid, exc.message)
                self._queue(self.wire.send_notification("rpc.error", {"error": exc.error}))
                await self._flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away; its requests in flight are cancelled below
            finally:
                self._transition("close")
                nursery.cancel_scope.cancel()  # requests in flight have nobody to answer to

    async def _close_without_hello(self) -> None:
        timeout = self.server.hello_timeout_s
        self.server.silent_log.log(logging.INFO, "closing connection of pid %s: no hello "
                                   "within %g s", self.caller.pid, timeout)
        error = ApiError(
            "rpc.hello_required",
            f"No hello within {timeout:g} s of connecting: the connection is closed.",
            hint="Send hello {client, api} as the first request, right after connecting "
                 "(the browserd client does this).",
            data={"hello_timeout_s": timeout})
        self._queue(self.wire.send_notification("rpc.error", {"error": error.to_wire()}))
        with trio.move_on_after(1):  # a client that reads nothing does not get to hold us
            await self._flush()

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        while True:
            event = self.wire.next_event()
            if event is wire.NEED_DATA:
                await self._flush()
                await self._receive()
            elif event is wire.CLOSED:
                return
            elif isinstance(event, wire.Request):
                if not await self._dispatch(event, nursery):
                    return
            elif isinstance(event, wire.InvalidMessage):
                if event.msgid is not None:
                    self._queue(self.wire.send_response(event.msgid, event.error, None))
                else:
                    self._queue(self.wire.send_notification("rpc.error", {"error": event.error}))
            # Responses and notifications from a client mean nothing to the daemon: ignored.
            if len(self._outbox) >= _OUTBOX_MAX_REPLIES or self._outbox_bytes >= _OUTBOX_MAX_BYTES:
                await self._flush()

    async def _receive(self) -> None:
        """Read what the client sent into the session's buffer and hand it to the decoder
        (which copies it); an empty read is the client's end of the stream."""
        try:
            count = await self.stream.socket.recv_into(self._buffer)
        except OSError as exc:  # what receive_some would raise as BrokenResourceError
            raise trio.BrokenResourceError(f"the client's connection broke: {exc}") from exc
        with memoryview(self._buffer) as view:
            self.wire.receive_data(view[:count])
        if count == len(self._buffer) and count < _RECEIVE_LARGE:
            self._buffer = bytearray(_RECEIVE_LARGE)  # a large request: read it in big bites
        elif count < _RECEIVE_SMALL < len(self._buffer):
            self._buffer = bytearray(_RECEIVE_SMALL)

    async def _dispatch(self, request: wire.Request, nursery: trio.Nursery) -> bool:
        """Serve or start one request; False when the connection must end."""
        if not self.allowed:
            self._queue(self._error_reply(request, ApiError(
                "auth.forbidden",
                f"uid {self.caller.uid} may not use this daemon.",
                hint="Connect as the daemon's user, or ask for the browserd group.",
                data={"uid": self.caller.uid},
            )))
            return False
        if self.state is SessionState.AWAITING_HELLO:
            if request.method != "hello":
                self._queue(self._error_reply(request, ApiError(
                    "rpc.hello_required", "The first request on a connection must be hello.",
                    hint="Send hello {client, api} first (the browserd client does this).",
                )))
                return True
            try:
                result = self.server.api.hello_result(self.caller, Params(request.params))
            except ApiError as exc:
                self._queue(self._error_reply(request, exc))
                return True
            self._transition("hello_ok")
            self._hello_deadline.deadline = math.inf
            self._queue(self._result_reply(request, result))
            return True
        if request.method == "hello":
            self._queue(self._error_reply(request, ApiError(
                "rpc.invalid_request", "hello was already done on this connection.",
                hint="Send hello once, as the first request.")))
            return True
        try:
            found = self.server.api.method(request.method)
        except ApiError as exc:
            self._queue(self._error_reply(request, exc))
            return True
        if found.inline:
            try:
                result = found.handler(self.server.api, self.caller, Params(request.params))
            except Exception as exc:
                self._queue(self._error_reply(request, exc))
            else:
                self._queue(self._result_reply(request, result))
            return True
        await self._flush()  # what was queued goes before anything the new task sends
        await self._slots.acquire()
        nursery.start_soon(self._serve_request, request, found)
        return True

    async def _serve_request(self, request: wire.Request, found: Method) -> None:
        try:
            try:
                result = await found.handler(self.server.api, self.caller,
                                             Params(request.params))
            except Exception as exc:
                await self._send(self._error_reply(request, exc))
                return
            await self._send(self._result_reply(request, result))
        finally:
            self._slots.release()

    def _result_reply(self, request: wire.Request, result: Any) -> bytes:
        try:
            data: bytes = self.wire.send_response(request.msgid, None, result)
        except wire.LocalProtocolError as exc:
            if exc.code != "rpc.too_large":
                log.exception("method %s returned an unencodable result", request.method)
            return self._error_reply(request, ApiError(
                exc.code, exc.message,
                hint=exc.hint or "Ask for less at once (a smaller limit or length)."))
        return data

    def _error_reply(self, request: wire.Request, exc: Exception) -> bytes:
        """The error response for whatever a method raised: its ApiError, a clean error for a
        machine short of disk or descriptors, or `rpc.internal_error` (a bug, logged)."""
        api_error = _single_api_error(exc) or _resource_error(exc, request.method)
        if api_error is None:
            log.exception("method %s failed", request.method, exc_info=exc)
            api_error = ApiError("rpc.internal_error",
                                 f"The daemon failed while serving {request.method}.",
                                 hint="This is a bug; the daemon log has the details.")
        data: bytes = self.wire.send_response(request.msgid, api_error.to_wire(), None)
        return data

    async def notify(self, method: str, payload: dict[str, Any]) -> None:
        await self._send(self.wire.send_notification(method, payload))

    def _queue(self, data: bytes) -> None:
        self._outbox.append(data)
        self._outbox_bytes += len(data)

    async def _flush(self) -> None:
        if self._outbox:
            data = b"".join(self._outbox)
            self._outbox.clear()
            self._outbox_bytes = 0
            await self._send(data)

    async def _send(self, data: bytes) -> None:
        # A free lock is taken without `await acquire()`, whose checkpoint would cost a whole
        # scheduler round per reply; send_all checkpoints anyway. The lock stays FIFO: it is
        # not free while others wait for it.
        try:
            self._send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self._send_lock.acquire()
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The client left; the read loop sees the same and ends the session.
            log.debug("dropped a reply to pid %s: connection gone", self.caller.pid)
        finally:
            self._send_lock.release()


def _resource_error(exc: BaseException, method: str) -> ApiError | None:
    error = resource_error(exc, f"serving {method}")
    if error is not None:
        log.warning("method %s failed: %s", method, error.message)
    return error


def _single_api_error(exc: BaseException) -> ApiError | None:
    """The ApiError inside an exception group of exactly one (nurseries wrap what they raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, ApiError) else None
