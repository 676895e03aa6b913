"""The CDP endpoint: one loopback HTTP/WebSocket listener in front of every runtime's Chromium.

The HTTP side (routes, checks, /json discovery, the upstream handshake) is `http_front`. After
an authorized upgrade, bytes are relayed as they are in both directions: masking and framing
are the same on both legs (docs/api.md, The CDP endpoint), so nothing is re-encoded. The relay
is raw on purpose: a proxy that terminated WebSocket on both legs (trio-websocket, decoding and
re-encoding every frame) added about 25 % to a Playwright `evaluate` round trip when the design
was measured, raw forwarding about 12 %, and this one is within 0.96-1.13x of a direct
connection (BENCHMARKS.md, proxy). The relay reads:

- client-to-browser: every message, unmasked (commands are small; past 64 KiB only the first
  and last bytes), to record commands, to see where clients send downloads, and to apply the
  close policy. A small message is forwarded only once it is whole, so a `Browser.close` can
  still be dropped; in practice a chunk holds whole commands and nothing waits.
- browser-to-client: frame headers, and (when recording) the first 256 bytes of each message,
  where Chromium writes `{"id":N,...`; the rest of a 20 MiB screenshot is never looked at.

Close policy (config `cdp.close_policy`): with "detach" (the default) a client's
`Browser.close` is not forwarded; the proxy answers it `{"id":N,"result":{}}`, closes that
client's socket, and the browser, shared with other clients and owned by the daemon (persistent
profile or ephemeral alike: stopping is `runtimes.stop`'s job), lives on. With "allow" it is
forwarded, and the registry records the browser's exit as a stop asked for by that client.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

import attrs
import h11
import trio

from ..system.accept_loop import accept_loop, write_nowait
from ..system.fd_budget import FdBudget, Slot
from .commands import (
    LEVELS,
    REQUEST_CAPTURE,
    REQUEST_TAIL,
    RESPONSE_CAPTURE,
    Command,
    CommandTracker,
)
from .http_front import (
    HEAD_TIMEOUT_S,
    AccessHooks,
    HttpFront,
    Route,
    Upstream,
    UpstreamError,
    WebHandler,
    open_upstream,
    over_capacity_response,
)
from .peers import PeerLookup
from .ws_frames import OP_CLOSE, OP_TEXT, FrameError
from .ws_messages import MessageScanner, encode_frame

__all__ = ["CLOSE_POLICIES", "CdpProxy", "ProxyHooks"]

log = logging.getLogger(__name__)

CLOSE_POLICIES = ("detach", "allow")
_DETACH_LINGER_S = 2.0  # after answering Browser.close, how long the client may take to leave
_CHUNK = 64 * 1024  # each pump reads into a buffer of this size, its own for its life
_MAX_UNYIELDED = 16  # chunks a pump may forward back to back before it yields
_CLOSE_NORMAL = encode_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
# Download settings a client may make, reported so the daemon's observer can follow them.
_DOWNLOAD_METHODS = frozenset({"Browser.setDownloadBehavior", "Page.setDownloadBehavior"})


class ProxyHooks(AccessHooks, Protocol):
    """What the proxy asks of (and tells) the registry. Called synchronously from the proxy's
    trio tasks, some for every CDP command: they must be cheap and must not block.

    Stats keys of `detached`: messages_in/bytes_in count client-to-browser traffic,
    messages_out/bytes_out browser-to-client traffic (bytes after the handshake, frame headers
    included), commands (client commands read); also duration_s and ended_by:
    "client_closed" / "browser_closed" (the side that sent the first Close frame, else the
    side whose TCP stream ended first), "detached" (the close policy answered the client's
    Browser.close), "connection_closed", "runtime_closed", "protocol_error", "proxy_shutdown"
    or "proxy_error". With command recording at "all", also `events`: browser events by method.
    """

    def attached(self, upstream: Upstream, socket_id: str, peer: dict[str, Any]) -> None: ...

    def detached(self, upstream: Upstream, socket_id: str, stats: dict[str, Any]) -> None: ...

    def command(self, upstream: Upstream, socket_id: str, record: dict[str, Any]) -> None:
        """A client's command finished (see `cdp_commands` for the record's keys)."""

    def browser_close(self, upstream: Upstream, socket_id: str, action: str) -> None:
        """A client sent Browser.close: action "detached" (answered here) or "forwarded"."""

    def download_behavior(self, upstream: Upstream, socket_id: str, method: str,
                          params: dict[str, Any]) -> None:
        """A client sent Browser.setDownloadBehavior (or Page.setDownloadBehavior)."""


@attrs.define(eq=False)
class _Socket:
    socket_id: str
    upstream: Upstream
    tracker: CommandTracker
    cancel_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    opened_at: float = attrs.Factory(time.monotonic)
    attached: bool = False
    ended_by: str | None = None
    close_initiator: str | None = None  # side whose Close frame came first
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    detach: Command | None = None  # a Browser.close the browser-to-client pump must answer
    out_wait: trio.CancelScope | None = None  # wakes the browser-to-client pump

    def end(self, reason: str) -> None:
        if self.ended_by is None:  # the first cause wins
            self.ended_by = reason

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "commands": self.tracker.commands,
            "duration_s": round(time.monotonic() - self.opened_at, 6),
            "ended_by": self.ended_by,
        }
        if self.tracker.level == "all":
            stats["events"] = dict(self.tracker.events)
        return stats


class CdpProxy:
    """Serves the CDP endpoint on `host` (an IP literal) and forwards leases to Chromium.

    record_commands: "off", "commands" or "all" (config `events.record_commands`);
    close_policy: "detach" or "allow" (config `cdp.close_policy`), see the module docstring;
    budget: the caps on requests in their HTTP phase (`cdp_pending`) and on proxied sockets
    (`cdp_sockets`); a client over either is answered 503 `daemon.resources_exhausted`.
    head_timeout_s: how long a request head may take to arrive whole.
    """

    def __init__(
        self,
        hooks: ProxyHooks,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_origins: Collection[str] = (),
        record_commands: str = "commands",
        close_policy: str = "detach",
        budget: FdBudget | None = None,
        head_timeout_s: float = HEAD_TIMEOUT_S,
    ) -> None:
        if record_commands not in LEVELS:
            raise ValueError(f"record_commands must be one of {LEVELS}, got {record_commands!r}")
        if close_policy not in CLOSE_POLICIES:
            raise ValueError(f"close_policy must be one of {CLOSE_POLICIES}, got {close_policy!r}")
        self._hooks = hooks
        self._host = host
        self._requested_port = port
        self.record_commands = record_commands
        self.close_policy = close_policy
        self.budget = budget or FdBudget.unlimited()
        self._peer_of = PeerLookup()
        self._http = HttpFront(hooks, allowed_origins=allowed_origins, port=lambda: self.port,
                               peer_of=self._peer_of.quick, upgrade=self._upgrade,
                               head_timeout_s=head_timeout_s)
        self._sockets: dict[str, _Socket] = {}
        self._by_connection: dict[str, set[_Socket]] = {}
        self._by_runtime: dict[str, set[_Socket]] = {}
        self.port = 0

    def base_url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; reports the bound port through task_status."""
        listeners = await trio.open_tcp_listeners(self._requested_port, host=self._host)
        try:
            self.port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                log.info("cdp proxy listening on %s", self.base_url())
                task_status.started(self.port)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    def serve_web(self, handler: WebHandler) -> None:
        """Requests outside /cdp/ go to `handler` (the daemon's web pages) from now on."""
        self._http.web = handler

    def close_connection(self, connection_id: str) -> None:
        """Close every socket opened through this lease (including handshakes in progress)."""
        for sock in list(self._by_connection.get(connection_id, ())):
            sock.end("connection_closed")
            sock.cancel_scope.cancel()

    def close_runtime(self, runtime_id: str) -> None:
        """Close every socket leading to this runtime."""
        for sock in list(self._by_runtime.get(runtime_id, ())):
            sock.end("runtime_closed")
            sock.cancel_scope.cancel()

    def open_sockets(self, connection_id: str | None = None) -> int:
        if connection_id is None:
            return len(self._sockets)
        return len(self._by_connection.get(connection_id, ()))

    def socket_stats(self, connection_id: str | None = None) -> list[dict[str, Any]]:
        """Live stats of open sockets (optionally of one lease), with their ids."""
        socks = (
            self._sockets.values()
            if connection_id is None
            else self._by_connection.get(connection_id, set())
        )
        return [
            {
                "socket_id": s.socket_id,
                "connection_id": s.upstream.connection_id,
                "runtime_id": s.upstream.runtime_id,
                **s.stats(),
            }
            for s in socks
        ]

    # -- accept loop -------------------------------------------------------------------------

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        pending = self.budget.cdp_pending
        busy = over_capacity_response(pending)
        await accept_loop(listener.socket, pending, self._handle_stream,
                          lambda sock: write_nowait(sock, busy), nursery=nursery, logger=log,
                          what="cdp proxy")

    async def _handle_stream(self, sock: trio.socket.SocketType, pending: Slot) -> None:
        stream = trio.SocketStream(sock)
        try:
            await self._http.serve(stream, pending)
        except* Exception:  # except*: it may come grouped with a Cancelled
            log.exception("cdp proxy: request handler failed")
        finally:
            await trio.aclose_forcefully(stream)

    # -- WebSocket ---------------------------------------------------------------------------

    async def _upgrade(
        self,
        stream: trio.SocketStream,
        conn: h11.Connection,
        route: Route,
        upstream: Upstream,
        headers: dict[bytes, bytes],
        early: bytes,
    ) -> None:
        slot = self.budget.cdp_sockets.take_nowait()
        if slot is None:
            error = self.budget.cdp_sockets.exhausted()
            await self._http.refuse(stream, conn, route.connection_id, 503, error.code,
                                    error.message)
            return
        sock = _Socket(socket_id=f"sock_{secrets.token_hex(10)}", upstream=upstream,
                       tracker=CommandTracker(self.record_commands))
        self._register(sock)
        browser: trio.SocketStream | None = None
        try:
            with sock.cancel_scope:
                peer: dict[str, Any] = {}
                failure: UpstreamError | None = None

                async def lookup() -> None:
                    peer.update(await self._peer_of(stream))

                # The pid lookup (a /proc walk) overlaps the upstream handshake.
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(lookup)
                    try:
                        browser, response, rest = await open_upstream(
                            upstream, route.upstream_path or upstream.browser_path, headers
                        )
                    except UpstreamError as exc:
                        failure = exc
                if failure is not None:
                    await self._http.refuse(
                        stream, conn, route.connection_id, failure.status, None,
                        failure.message, peer,
                    )  # fmt: skip
                    return
                assert browser is not None
                # Chromium's 101, as it said it (its Sec-WebSocket-Accept answers the client's
                # own key); h11 writes it and switches the client's connection over.
                switch = conn.send(h11.InformationalResponse(
                    status_code=101, headers=response.headers.raw_items(),
                    reason=response.reason))
                try:
                    await stream.send_all(switch)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the client left during the handshake
                sock.attached = True
                self._call_hook(self._hooks.attached, upstream, sock.socket_id, peer)
                await self._relay(sock, stream, browser, early, rest)
        except Exception:
            sock.end("proxy_error")
            raise
        finally:
            slot.release()
            sock.end("proxy_shutdown")  # cancelled from outside, and nothing else named a cause
            self._unregister(sock)
            with trio.CancelScope(shield=True):  # closing a socket never blocks
                if browser is not None:
                    await browser.aclose()
                await stream.aclose()
            if sock.attached:
                for record in sock.tracker.unanswered():
                    self._record(sock, record)
                self._call_hook(self._hooks.detached, upstream, sock.socket_id, sock.stats())

    async def _relay(
        self,
        sock: _Socket,
        client: trio.SocketStream,
        browser: trio.SocketStream,
        early_in: bytes,
        early_out: bytes,
    ) -> None:
        # Each pump is the only reader of its source and the only writer of its destination
        # while the relay runs; the streams are closed (through trio) only after both ended.
        # They work on the file descriptors: one park in wait_readable per message instead of
        # the several scheduler passes of receive_some/send_all.
        async with trio.open_nursery() as nursery:
            done = nursery.cancel_scope
            nursery.start_soon(self._pump_in, sock, client, browser, early_in, done)
            nursery.start_soon(self._pump_out, sock, browser, client, early_out, done)

    async def _pump_in(
        self,
        sock: _Socket,
        src: trio.SocketStream,
        dst: trio.SocketStream,
        data: bytes,
        done: trio.CancelScope,
    ) -> None:
        """Client to browser: read each command; forward everything but a detached close."""
        src_fd, dst_fd = src.socket.fileno(), dst.socket.fileno()
        buffer = bytearray(_CHUNK)
        scanner = MessageScanner(masked=True, capture=REQUEST_CAPTURE, tail_capture=REQUEST_TAIL)
        held = b""  # scanned but not forwarded: the start of a small, still incomplete message
        held_at = 0  # stream offset of held[0] (of the next byte when nothing is held)
        unyielded = 0
        try:
            while True:
                if data:
                    messages = scanner.receive_data(data)
                    if scanner.close_seen and sock.close_initiator is None:
                        sock.close_initiator = "client"
                    sock.bytes_in += len(data)
                    sock.messages_in = scanner.messages
                    buf = held + data if held else data
                    base = held_at
                    for message in messages:
                        command = sock.tracker.client_message(message)
                        if command is None:
                            continue
                        if self._intercepts(command) and message.start >= base:
                            # Forward what came before it; the rest of the client's bytes
                            # have nowhere to go once it is detached.
                            if not await _write_all(dst_fd, buf[: message.start - base]):
                                sock.end("browser_closed")
                                return
                            await self._detach(sock, src_fd, command)
                            return
                        self._on_command(sock, command)
                    safe = max(base, scanner.safe_until(REQUEST_CAPTURE))
                    if safe - base < len(buf):
                        held, held_at = buf[safe - base :], safe
                        buf = buf[: safe - base]
                    else:
                        held, held_at = b"", safe
                    if buf and not await _write_all(dst_fd, buf):
                        sock.end(f"{sock.close_initiator or 'browser'}_closed")
                        return
                    unyielded += 1
                    if unyielded >= _MAX_UNYIELDED:  # a busy stream must not starve the others
                        unyielded = 0
                        await trio.lowlevel.checkpoint()
                try:
                    data = _read(src_fd, buffer)
                except BlockingIOError:
                    unyielded = 0
                    await trio.lowlevel.wait_readable(src_fd)
                    data = b""
                    continue
                except OSError:  # ECONNRESET and friends: the peer is gone
                    data = b""
                if not data:
                    sock.end(f"{sock.close_initiator or 'client'}_closed")
                    return
        except FrameError as exc:
            log.warning("cdp proxy: client sent bad frames on %s: %s", sock.socket_id, exc)
            sock.end("protocol_error")
        finally:
            done.cancel()  # when either direction ends, both end

    async def _pump_out(
        self,
        sock: _Socket,
        src: trio.SocketStream,
        dst: trio.SocketStream,
        data: bytes,
        done: trio.CancelScope,
    ) -> None:
        """Browser to client: headers and response heads only; answers a detached close."""
        src_fd, dst_fd = src.socket.fileno(), dst.socket.fileno()
        buffer = bytearray(_CHUNK)
        recording = sock.tracker.recording
        scanner = MessageScanner(masked=False, capture=RESPONSE_CAPTURE if recording else 0)
        unyielded = 0
        try:
            while True:
                if data:
                    base = scanner.bytes_seen
                    messages = scanner.receive_data(data)
                    if scanner.close_seen and sock.close_initiator is None:
                        sock.close_initiator = "browser"
                    sock.bytes_out += len(data)
                    sock.messages_out = scanner.messages
                    if sock.detach is not None and scanner.last_boundary >= base:
                        # Answer at the last message boundary; what follows is dropped.
                        cut = scanner.last_boundary - base
                        await self._answer_detach(sock, dst_fd, data[:cut])
                        return
                    if not await _write_all(dst_fd, data):
                        sock.end(f"{sock.close_initiator or 'client'}_closed")
                        return
                    if recording:  # after the write: logging never delays the client
                        for message in messages:
                            record = sock.tracker.browser_message(message)
                            if record is not None:
                                self._record(sock, record)
                    unyielded += 1
                    if unyielded >= _MAX_UNYIELDED:
                        unyielded = 0
                        await trio.lowlevel.checkpoint()
                elif sock.detach is not None and scanner.last_boundary == scanner.bytes_seen:
                    await self._answer_detach(sock, dst_fd, b"")
                    return
                try:
                    data = _read(src_fd, buffer)
                except BlockingIOError:
                    unyielded = 0
                    with trio.CancelScope() as sock.out_wait:
                        await trio.lowlevel.wait_readable(src_fd)
                    sock.out_wait = None
                    data = b""
                    continue
                except OSError:
                    data = b""
                if not data:
                    sock.end(f"{sock.close_initiator or 'browser'}_closed")
                    return
        except FrameError as exc:
            log.warning("cdp proxy: browser sent bad frames on %s: %s", sock.socket_id, exc)
            sock.end("protocol_error")
        finally:
            done.cancel()

    # -- close policy and commands -----------------------------------------------------------

    def _intercepts(self, command: Command) -> bool:
        return (command.method == "Browser.close" and self.close_policy == "detach"
                and command.id is not None and not command.partial)

    def _on_command(self, sock: _Socket, command: Command) -> None:
        """What a forwarded command tells the daemon (download folders, an allowed close)."""
        if command.method in _DOWNLOAD_METHODS and command.params is not None:
            self._call_hook(self._hooks.download_behavior, sock.upstream, sock.socket_id,
                            command.method, command.params)
        elif command.method == "Browser.close":
            self._call_hook(self._hooks.browser_close, sock.upstream, sock.socket_id,
                            "forwarded")

    async def _detach(self, sock: _Socket, src_fd: int, command: Command) -> None:
        """Hand the answer to the other pump, then drain the client until it leaves."""
        sock.detach = command
        sock.end("detached")
        if sock.out_wait is not None:
            sock.out_wait.cancel()  # the other pump is idle: wake it to answer now
        self._call_hook(self._hooks.browser_close, sock.upstream, sock.socket_id, "detached")
        record = sock.tracker.answered_here(command)
        if record is not None:
            self._record(sock, record)
        # The client should read the answer and the Close frame, then close; nothing it sends
        # now reaches the browser.
        with trio.move_on_after(_DETACH_LINGER_S):
            while True:
                await trio.lowlevel.wait_readable(src_fd)
                try:
                    if not os.read(src_fd, _CHUNK):
                        return
                except BlockingIOError:
                    continue
                except OSError:
                    return

    async def _answer_detach(self, sock: _Socket, dst_fd: int, before: bytes) -> None:
        assert sock.detach is not None
        reply = encode_frame(OP_TEXT, sock.detach.reply())
        if await _write_all(dst_fd, before + reply + _CLOSE_NORMAL):
            await trio.sleep_forever()  # the client pump ends the relay once the client left

    def _record(self, sock: _Socket, record: dict[str, Any]) -> None:
        self._call_hook(self._hooks.command, sock.upstream, sock.socket_id, record)

    # -- bookkeeping -------------------------------------------------------------------------

    def _register(self, sock: _Socket) -> None:
        self._sockets[sock.socket_id] = sock
        self._by_connection.setdefault(sock.upstream.connection_id, set()).add(sock)
        self._by_runtime.setdefault(sock.upstream.runtime_id, set()).add(sock)

    def _unregister(self, sock: _Socket) -> None:
        self._sockets.pop(sock.socket_id, None)
        for index, key in (
            (self._by_connection, sock.upstream.connection_id),
            (self._by_runtime, sock.upstream.runtime_id),
        ):
            group = index.get(key)
            if group is not None:
                group.discard(sock)
                if not group:
                    del index[key]

    def _call_hook(self, hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("cdp proxy: hook %s failed", getattr(hook, "__name__", hook))


async def _write_all(fd: int, data: bytes) -> bool:
    """Write all of data to a non-blocking socket fd; False if the peer is gone."""
    view = memoryview(data)
    while view:
        try:
            sent = os.write(fd, view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)
            continue
        except OSError:  # EPIPE (SIGPIPE is ignored by Python), ECONNRESET
            return False
        view = view[sent:]
    return True


def _read(fd: int, buffer: bytearray) -> bytes:
    """What is there to read on `fd` (raises BlockingIOError when nothing is), copied out of
    the pump's own buffer. os.read(fd, n) allocates n bytes per call and shrinks them to what
    arrived, which fragments the heap under load (see memory.py)."""
    count = os.readv(fd, [buffer])
    with memoryview(buffer) as view:
        return bytes(view[:count])
