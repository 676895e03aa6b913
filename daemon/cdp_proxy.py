"""The CDP endpoint: one loopback HTTP/WebSocket listener in front of every runtime's Chromium.

URL layout (DESIGN section 5), with <cid> a connection (lease) id and <token> its secret:

    ws://127.0.0.1:PORT/cdp/<cid>/<token>                         the browser target
    ws://127.0.0.1:PORT/cdp/<cid>/<token>/devtools/page/<id>      a page target
    ws://127.0.0.1:PORT/cdp/<cid>/<token>/devtools/browser/<id>   the browser target again
    http://127.0.0.1:PORT/cdp/<cid>/<token>/json/version[/]       Chromium's answer with
    http://127.0.0.1:PORT/cdp/<cid>/<token>/json[/], /json/list[/] its ws URLs rewritten

h11 parses each request. A WebSocket upgrade that passes the checks is replayed to Chromium with
the client's own Sec-WebSocket-Key, so Chromium's 101 is valid for the client; after it, bytes are
forwarded as they are in both directions (masking and framing are the same on both legs) and only
frame headers are read, to count messages. Extensions are stripped from the upstream request so
frames stay uncompressed and readable.
"""

from __future__ import annotations

import errno
import http
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol
from urllib.parse import urlsplit

import attrs
import h11
import psutil
import trio

from .ws_frames import FrameError, FrameScanner

log = logging.getLogger(__name__)

_HEAD_TIMEOUT_S = 10.0  # a request head (or the next keep-alive request) must arrive within this
_UPSTREAM_TIMEOUT_S = 10.0  # connect + handshake or discovery fetch to Chromium
_PEER_TIMEOUT_S = 5.0  # psutil lookup of the client's pid
_MAX_HEAD = 16 * 1024
_MAX_DISCOVERY_BODY = 16 * 1024 * 1024
_CHUNK = 256 * 1024
_MAX_UNYIELDED = 16  # chunks a pump may forward back to back before it yields
_TRANSIENT_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY_S = 0.1

_ROUTE = re.compile(r"/cdp/([A-Za-z0-9._~-]+)/([A-Za-z0-9._~-]+)(/.*)?")
_TARGET = re.compile(r"/devtools/(page|browser)/([A-Za-z0-9._~-]+)")
_JSON_ROUTES = {
    "/json/version": "/json/version",
    "/json/version/": "/json/version",
    "/json": "/json/list",
    "/json/": "/json/list",
    "/json/list": "/json/list",
    "/json/list/": "/json/list",
}
_WS_KEY = re.compile(rb"[A-Za-z0-9+/]{22}==")
_HOST_PORT = re.compile(r":[0-9]{1,5}")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
_WS_PARAM = re.compile(r"([?&]ws=)([^&#]*)")
_DEFAULT_CODES = {
    400: "http.bad_request",
    401: "auth.unauthorized",
    403: "auth.forbidden",
    404: "http.not_found",
    405: "http.method_not_allowed",
    410: "connection.expired",
    413: "http.too_large",
    426: "http.upgrade_required",
    500: "proxy.internal_error",
    502: "browser.unreachable",
    504: "browser.timeout",
}


@attrs.frozen
class Upstream:
    """Where an authorized lease leads: a runtime's Chromium DevTools endpoint."""

    runtime_id: str
    connection_id: str
    host: str
    port: int
    browser_path: str  # "/devtools/browser/<uuid>"

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Refused(Exception):
    """Raised by `ProxyHooks.authorize`: answer the request with `status` and end it."""

    def __init__(self, status: int, reason: str, code: str | None = None) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.code = code or _DEFAULT_CODES.get(status, "http.error")


class ProxyHooks(Protocol):
    """What the proxy asks of the registry. Called synchronously from the proxy's trio tasks.

    Stats keys: messages_in/bytes_in count client-to-browser traffic, messages_out/bytes_out
    browser-to-client traffic (bytes after the handshake, frame headers included); also
    duration_s and ended_by: "client_closed" / "browser_closed" (the side that sent the first
    Close frame, else the side whose TCP stream ended first), "connection_closed",
    "runtime_closed", "protocol_error", "proxy_shutdown" or "proxy_error".
    """

    def authorize(self, connection_id: str, token: str) -> Upstream: ...

    def attached(self, upstream: Upstream, socket_id: str, peer: dict[str, Any]) -> None: ...

    def detached(self, upstream: Upstream, socket_id: str, stats: dict[str, Any]) -> None: ...

    def refused(
        self, connection_id: str | None, status: int, reason: str, peer: dict[str, Any]
    ) -> None: ...


@attrs.frozen
class _Route:
    connection_id: str
    token: str
    kind: str  # "ws" or "json"
    upstream_path: str | None  # None: the upstream's browser path


@attrs.define(eq=False)
class _Socket:
    socket_id: str
    upstream: Upstream
    cancel_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    opened_at: float = attrs.Factory(time.monotonic)
    attached: bool = False
    ended_by: str | None = None
    close_initiator: str | None = None  # side whose Close frame came first
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def end(self, reason: str) -> None:
        if self.ended_by is None:  # the first cause wins
            self.ended_by = reason

    def stats(self) -> dict[str, Any]:
        return {
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration_s": round(time.monotonic() - self.opened_at, 6),
            "ended_by": self.ended_by,
        }


class _UpstreamError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CdpProxy:
    """Serves the CDP endpoint on `host` (an IP literal) and forwards leases to Chromium."""

    def __init__(
        self,
        hooks: ProxyHooks,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_origins: Collection[str] = (),
    ) -> None:
        self._hooks = hooks
        self._host = host
        self._requested_port = port
        self._allowed_origins = frozenset(allowed_origins)
        self._sockets: dict[str, _Socket] = {}
        self._by_connection: dict[str, set[_Socket]] = {}
        self._by_runtime: dict[str, set[_Socket]] = {}
        self._peer_limiter = trio.CapacityLimiter(4)
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
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _TRANSIENT_ACCEPT_ERRNOS:
                    raise
                log.error("cdp proxy: accept failed (%s); retrying", errno.errorcode[exc.errno])
                await trio.sleep(_ACCEPT_RETRY_S)
                continue
            nursery.start_soon(self._handle_stream, stream)

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        try:
            await self._serve_http(stream)
        except Exception:
            log.exception("cdp proxy: request handler failed")
        finally:
            await trio.aclose_forcefully(stream)

    # -- HTTP --------------------------------------------------------------------------------

    async def _serve_http(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        while True:
            request: h11.Request | None = None
            with trio.move_on_after(_HEAD_TIMEOUT_S):
                try:
                    request = await _read_request(stream, conn)
                except h11.RemoteProtocolError as exc:
                    status = exc.error_status_hint
                    message = f"bad request: {str(exc)[:200]}"
                    await self._refuse(stream, None, None, status, None, message)
                    return
            if request is None:
                return
            if not await self._dispatch(stream, conn, request):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _dispatch(
        self, stream: trio.SocketStream, conn: h11.Connection, request: h11.Request
    ) -> bool:
        """Answer one request; True if the connection may carry another one."""
        path = request.target.decode("ascii", "replace").partition("?")[0]
        route = _parse_route(path)
        match = _ROUTE.fullmatch(path)
        cid = match.group(1) if match else None
        hosts = [v for k, v in request.headers if k == b"host"]
        origins = [v for k, v in request.headers if k == b"origin"]

        # Host and Origin first: a web page or a DNS-rebound name learns nothing, not even 404.
        if len(hosts) != 1 or not _is_loopback_host(hosts[0]):
            await self._refuse(stream, conn, cid, 403, None, "Host header is not a loopback name")
            return False
        if any(o.decode("latin-1") not in self._allowed_origins for o in origins):
            await self._refuse(stream, conn, cid, 403, None, "requests with an Origin are refused")
            return False
        if route is None:  # the message goes to logs: name the path without its token
            redacted = _ROUTE.sub(lambda m: f"/cdp/{m.group(1)}/<token>{m.group(3) or ''}", path)
            await self._refuse(stream, conn, cid, 404, None, f"no such endpoint: {redacted}")
            return False
        if request.method != b"GET":
            await self._refuse(stream, conn, cid, 405, None, "only GET is served here")
            return False
        try:
            upstream = self._hooks.authorize(route.connection_id, route.token)
        except Refused as exc:
            await self._refuse(stream, conn, cid, exc.status, exc.code, exc.reason)
            return False
        except Exception:
            log.exception("cdp proxy: authorize failed")
            await self._refuse(stream, conn, cid, 500, None, "internal error while authorizing")
            return False
        public_base = _public_base(hosts[0].decode("ascii"), self.port, route)
        if route.kind == "json":
            return await self._serve_json(stream, conn, route, upstream, public_base)

        headers = {k: v for k, v in request.headers}
        upgrade = headers.get(b"upgrade", b"").lower() == b"websocket" and b"upgrade" in [
            t.strip() for t in headers.get(b"connection", b"").lower().split(b",")
        ]
        if not upgrade:
            await self._refuse(stream, conn, cid, 426, None, "this endpoint is a WebSocket")
            return False
        key = headers.get(b"sec-websocket-key", b"")
        if headers.get(b"sec-websocket-version") != b"13" or not _WS_KEY.fullmatch(key):
            await self._refuse(stream, conn, cid, 400, None, "bad WebSocket handshake headers")
            return False
        early, _ = conn.trailing_data  # frames the client sent right behind its request
        await self._upgrade(stream, conn, route, upstream, headers, bytes(early))
        return False

    async def _serve_json(
        self,
        stream: trio.SocketStream,
        conn: h11.Connection,
        route: _Route,
        upstream: Upstream,
        public_base: str,
    ) -> bool:
        assert route.upstream_path is not None
        try:
            doc = await _fetch_json(upstream, route.upstream_path)
        except _UpstreamError as exc:
            await self._refuse(stream, conn, route.connection_id, exc.status, None, exc.message)
            return False
        body = json.dumps(rewrite_discovery(doc, upstream, public_base), indent=2).encode()
        headers = [
            ("Content-Type", "application/json; charset=UTF-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        await stream.send_all(
            conn.send(h11.Response(status_code=200, headers=headers))
            + conn.send(h11.Data(data=body))
            + conn.send(h11.EndOfMessage())
        )
        return True

    async def _refuse(
        self,
        stream: trio.SocketStream,
        conn: h11.Connection | None,
        connection_id: str | None,
        status: int,
        code: str | None,
        message: str,
        peer: dict[str, Any] | None = None,
    ) -> None:
        if peer is None:
            peer = await self._peer_of(stream)
        self._call_hook(self._hooks.refused, connection_id, status, message, peer)
        body = json.dumps(
            {"code": code or _DEFAULT_CODES.get(status, "http.error"), "message": message}
        ).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        if conn is not None and conn.our_state is h11.SEND_RESPONSE:
            data = conn.send(h11.Response(status_code=status, headers=headers, reason=phrase))
            data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        else:  # h11 refused the request, so it will not frame our answer either
            head = f"HTTP/1.1 {status} {phrase}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
            data = head.encode() + body
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    # -- WebSocket ---------------------------------------------------------------------------

    async def _upgrade(
        self,
        stream: trio.SocketStream,
        conn: h11.Connection,
        route: _Route,
        upstream: Upstream,
        headers: dict[bytes, bytes],
        early: bytes,
    ) -> None:
        sock = _Socket(socket_id=f"sock_{secrets.token_hex(10)}", upstream=upstream)
        self._register(sock)
        browser: trio.SocketStream | None = None
        try:
            with sock.cancel_scope:
                peer: dict[str, Any] = {}
                failure: _UpstreamError | None = None

                async def lookup() -> None:
                    peer.update(await self._peer_of(stream))

                # The pid lookup (a /proc walk) overlaps the upstream handshake.
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(lookup)
                    try:
                        browser, response, rest = await _open_upstream(
                            upstream, route.upstream_path or upstream.browser_path, headers
                        )
                    except _UpstreamError as exc:
                        failure = exc
                if failure is not None:
                    await self._refuse(
                        stream, conn, route.connection_id, failure.status, None,
                        failure.message, peer,
                    )  # fmt: skip
                    return
                assert browser is not None
                try:
                    await stream.send_all(response)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the client left during the handshake
                sock.attached = True
                self._call_hook(self._hooks.attached, upstream, sock.socket_id, peer)
                await self._relay(sock, stream, browser, early, rest)
        except Exception:
            sock.end("proxy_error")
            raise
        finally:
            sock.end("proxy_shutdown")  # cancelled from outside, and nothing else named a cause
            self._unregister(sock)
            with trio.CancelScope(shield=True):  # closing a socket never blocks
                if browser is not None:
                    await browser.aclose()
                await stream.aclose()
            if sock.attached:
                self._call_hook(self._hooks.detached, upstream, sock.socket_id, sock.stats())

    async def _relay(
        self,
        sock: _Socket,
        client: trio.SocketStream,
        browser: trio.SocketStream,
        early_in: bytes,
        early_out: bytes,
    ) -> None:
        async with trio.open_nursery() as nursery:
            done = nursery.cancel_scope
            nursery.start_soon(self._pump, sock, client, browser, True, early_in, done)
            nursery.start_soon(self._pump, sock, browser, client, False, early_out, done)

    async def _pump(
        self,
        sock: _Socket,
        src: trio.SocketStream,
        dst: trio.SocketStream,
        inbound: bool,
        data: bytes,
        done: trio.CancelScope,
    ) -> None:
        # The hot path works on the file descriptors: one park in wait_readable per message
        # instead of the several scheduler passes of receive_some/send_all. This task is the
        # only reader of src and the only writer of dst while the relay runs; the streams are
        # closed (through trio) only after both pumps have ended.
        src_name, dst_name = ("client", "browser") if inbound else ("browser", "client")
        src_fd, dst_fd = src.socket.fileno(), dst.socket.fileno()
        scanner = FrameScanner(masked=inbound)
        unyielded = 0
        try:
            while True:
                if data:
                    scanner.receive_data(data)
                    if scanner.close_seen and sock.close_initiator is None:
                        sock.close_initiator = src_name
                    if inbound:
                        sock.bytes_in += len(data)
                        sock.messages_in = scanner.messages
                    else:
                        sock.bytes_out += len(data)
                        sock.messages_out = scanner.messages
                    if not await _write_all(dst_fd, data):
                        sock.end(f"{sock.close_initiator or dst_name}_closed")
                        return
                    unyielded += 1
                    if unyielded >= _MAX_UNYIELDED:  # a busy stream must not starve the others
                        unyielded = 0
                        await trio.lowlevel.checkpoint()
                try:
                    data = os.read(src_fd, _CHUNK)
                except BlockingIOError:
                    unyielded = 0
                    await trio.lowlevel.wait_readable(src_fd)
                    data = b""
                    continue
                except OSError:  # ECONNRESET and friends: the peer is gone
                    data = b""
                if not data:
                    sock.end(f"{sock.close_initiator or src_name}_closed")
                    return
        except FrameError as exc:
            log.warning("cdp proxy: %s sent bad frames on %s: %s", src_name, sock.socket_id, exc)
            sock.end("protocol_error")
        finally:
            done.cancel()  # when either direction ends, both end

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

    async def _peer_of(self, stream: trio.SocketStream) -> dict[str, Any]:
        """{pid, uid, name, addr} of the local process at the other end; None where unknown."""
        try:
            client = stream.socket.getpeername()
            server = stream.socket.getsockname()
        except OSError:
            return {"pid": None, "uid": None, "name": None, "addr": None}
        peer: dict[str, Any] = {"pid": None, "uid": None, "name": None}
        try:
            with trio.fail_after(_PEER_TIMEOUT_S):
                peer = await trio.to_thread.run_sync(
                    _find_peer_process,
                    (client[0], client[1]),
                    (server[0], server[1]),
                    limiter=self._peer_limiter,
                    abandon_on_cancel=True,
                )
        except Exception as exc:  # attribution is best effort; never fail the request over it
            log.debug("cdp proxy: peer lookup failed: %r", exc)
        return {**peer, "addr": f"{client[0]}:{client[1]}"}


# -- pure helpers ------------------------------------------------------------------------------


def _parse_route(path: str) -> _Route | None:
    match = _ROUTE.fullmatch(path)
    if match is None:
        return None
    cid, token, rest = match.group(1), match.group(2), match.group(3) or ""
    if rest in ("", "/"):
        return _Route(cid, token, "ws", None)
    if rest in _JSON_ROUTES:
        return _Route(cid, token, "json", _JSON_ROUTES[rest])
    target = _TARGET.fullmatch(rest)
    if target is None:
        return None
    # /devtools/browser/<id> always means this lease's browser, whatever uuid it names.
    return _Route(cid, token, "ws", rest if target.group(1) == "page" else None)


def _is_loopback_host(value: bytes) -> bool:
    """Host header check against DNS rebinding: 127.0.0.1, localhost or [::1], any port."""
    try:
        text = value.decode("ascii").lower()
    except UnicodeDecodeError:
        return False
    if text.startswith("["):
        end = text.find("]") + 1
        host, port = text[:end], text[end:]
    else:
        host, sep, port = text.partition(":")
        port = sep + port
    return host in _LOOPBACK_HOSTS and (port == "" or _HOST_PORT.fullmatch(port) is not None)


def _public_base(host_header: str, port: int, route: _Route) -> str:
    """'host:port/cdp/<cid>/<token>' as the client addressed us (the Host header is checked)."""
    if not _HOST_PORT.search(host_header.rpartition("]")[2]):
        host_header = f"{host_header}:{port}"
    return f"{host_header}/cdp/{route.connection_id}/{route.token}"


def rewrite_discovery(doc: Any, upstream: Upstream, public_base: str) -> Any:
    """Point every DevTools WebSocket URL in a /json answer at the proxy (in place; returns doc).

    public_base is 'host:port/cdp/<cid>/<token>'. The browser target maps to the bare lease URL,
    page targets to '<base>/devtools/page/<id>'. A devtoolsFrontendUrl's ws= parameter is
    rewritten when it names the upstream endpoint plainly, and left alone otherwise.
    """

    def public_path(path: str) -> str:
        return "" if path.startswith("/devtools/browser/") else path

    def rewrite_param(m: re.Match[str]) -> str:
        value = m.group(2)
        if not value.startswith(upstream.hostport + "/"):
            return m.group(0)
        return m.group(1) + public_base + public_path(value[len(upstream.hostport) :])

    for item in doc if isinstance(doc, list) else [doc]:
        if not isinstance(item, dict):
            continue
        ws = item.get("webSocketDebuggerUrl")
        if isinstance(ws, str):
            item["webSocketDebuggerUrl"] = f"ws://{public_base}{public_path(urlsplit(ws).path)}"
        for key in ("devtoolsFrontendUrl", "devtoolsFrontendUrlCompat"):
            value = item.get(key)
            if isinstance(value, str):
                item[key] = _WS_PARAM.sub(rewrite_param, value)
    return doc


def _find_peer_process(client: tuple[str, int], server: tuple[str, int]) -> dict[str, Any]:
    """Runs in a thread: the pid owning the client end of a loopback TCP connection."""
    peer: dict[str, Any] = {"pid": None, "uid": None, "name": None}
    for c in psutil.net_connections(kind="tcp"):
        if c.pid is None or not c.laddr or not c.raddr:
            continue
        if (c.laddr.ip, c.laddr.port) == client and (c.raddr.ip, c.raddr.port) == server:
            peer["pid"] = c.pid
            break
    else:
        return peer
    try:
        proc = psutil.Process(peer["pid"])
        peer["name"] = proc.name()
        peer["uid"] = proc.uids().real
    except psutil.Error:
        pass
    return peer


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    """The next request, read through its end (body discarded); None if the client left."""
    request: h11.Request | None = None
    body = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:  # the client left (between requests or in the middle of one)
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += len(event.data)
            if body > _MAX_HEAD:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            return request
        else:  # ConnectionClosed
            return None


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


async def _read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """Read an HTTP response head; returns (head through the blank line, bytes after it)."""
    buf = bytearray()
    while (end := buf.find(b"\r\n\r\n")) < 0:
        if len(buf) > _MAX_HEAD:
            raise _UpstreamError(502, "the browser sent an oversized handshake response")
        data = await stream.receive_some(_CHUNK)
        if not data:
            raise _UpstreamError(502, "the browser closed the connection during the handshake")
        buf += data
    return bytes(buf[: end + 4]), bytes(buf[end + 4 :])


async def _open_upstream(
    upstream: Upstream, path: str, client_headers: dict[bytes, bytes]
) -> tuple[trio.SocketStream, bytes, bytes]:
    """Replay the client's handshake to Chromium; returns (stream, 101 head, bytes after it)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {upstream.hostport}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {client_headers[b'sec-websocket-key'].decode('ascii')}",
        "Sec-WebSocket-Version: 13",
    ]  # no Origin (Chromium would refuse it), no Sec-WebSocket-Extensions (frames stay plain)
    if b"sec-websocket-protocol" in client_headers:
        lines.append(
            f"Sec-WebSocket-Protocol: {client_headers[b'sec-websocket-protocol'].decode('latin-1')}"
        )
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    stream: trio.SocketStream | None = None
    try:
        with trio.fail_after(_UPSTREAM_TIMEOUT_S):
            stream = await trio.open_tcp_stream(upstream.host, upstream.port)
            await stream.send_all(request)
            head, rest = await _read_head(stream)
    except BaseException as exc:  # includes Cancelled: the half-open stream must not leak
        if stream is not None:
            await trio.aclose_forcefully(stream)
        if isinstance(exc, OSError | trio.BrokenResourceError | trio.TooSlowError):
            status = 504 if isinstance(exc, trio.TooSlowError) else 502
            raise _UpstreamError(status, f"cannot reach the browser: {exc!r}") from exc
        raise
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or parts[1] != "101":
        await trio.aclose_forcefully(stream)
        detail = rest[:200].decode("utf-8", "replace")
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 502
        # Chromium answers an unknown target id with "500 ... No such target id: <id>".
        status = 404 if detail.startswith("No such target") else code if 400 <= code < 500 else 502
        raise _UpstreamError(status, f"the browser refused the WebSocket: {status_line} {detail}")
    return stream, head, rest


async def fetch_browser_json(host: str, port: int, path: str) -> Any:
    """GET a /json document straight from a browser's DevTools HTTP endpoint."""
    return await _fetch_json(Upstream("", "", host, port, ""), path)


async def _fetch_json(upstream: Upstream, path: str) -> Any:
    """GET a /json document from Chromium."""
    conn = h11.Connection(h11.CLIENT)
    headers = [("Host", upstream.hostport), ("Accept", "application/json"), ("Connection", "close")]
    status = 0
    body = bytearray()
    try:
        with trio.fail_after(_UPSTREAM_TIMEOUT_S):
            stream = await trio.open_tcp_stream(upstream.host, upstream.port)
            async with stream:
                await stream.send_all(
                    conn.send(h11.Request(method="GET", target=path, headers=headers))
                    + conn.send(h11.EndOfMessage())
                )
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(_CHUNK))
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                    elif isinstance(event, h11.Data):
                        body += event.data
                        if len(body) > _MAX_DISCOVERY_BODY:
                            raise _UpstreamError(502, "the browser's answer is too large")
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
    except (OSError, trio.BrokenResourceError, trio.TooSlowError, h11.ProtocolError) as exc:
        status = 504 if isinstance(exc, trio.TooSlowError) else 502
        raise _UpstreamError(status, f"cannot reach the browser: {exc!r}") from exc
    if status != 200:
        raise _UpstreamError(502, f"the browser answered {path} with HTTP {status}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise _UpstreamError(502, f"the browser's {path} answer is not JSON") from exc
