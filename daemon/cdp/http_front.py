"""The HTTP side of the CDP endpoint: routes, the Host and Origin checks, /json discovery.

URL layout (docs/api.md, The CDP endpoint), with <cid> a connection (lease) id and <token>
its secret:

    ws://127.0.0.1:PORT/cdp/<cid>/<token>                         the browser target
    ws://127.0.0.1:PORT/cdp/<cid>/<token>/devtools/page/<id>      a page target
    ws://127.0.0.1:PORT/cdp/<cid>/<token>/devtools/browser/<id>   the browser target again
    http://127.0.0.1:PORT/cdp/<cid>/<token>/json/version[/]       Chromium's answer with
    http://127.0.0.1:PORT/cdp/<cid>/<token>/json[/], /json/list[/] its ws URLs rewritten

h11 parses each request. `HttpFront` answers the checks, refusals and /json documents, and
hands an authorized WebSocket upgrade to the proxy (`cdp_proxy`), which replays it to Chromium
with `open_upstream` (the client's own Sec-WebSocket-Key, so Chromium's 101 is valid for the
client) and then relays frames.
"""

from __future__ import annotations

import http
import json
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol
from urllib.parse import urlsplit

import attrs
import h11
import trio

from ..base.errors import RESOURCE_ERRNOS
from ..system.fd_budget import Pool, Slot

log = logging.getLogger(__name__)

HEAD_TIMEOUT_S = 5.0  # a request head (or the next keep-alive request) must arrive within this
_UPSTREAM_TIMEOUT_S = 10.0  # connect + handshake or discovery fetch to Chromium
_MAX_HEAD = 16 * 1024
_MAX_DISCOVERY_BODY = 16 * 1024 * 1024
_CHUNK = 256 * 1024


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
    503: "daemon.resources_exhausted",
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


class AccessHooks(Protocol):
    """What the HTTP side asks of the registry (a part of `cdp_proxy.ProxyHooks`)."""

    def authorize(self, connection_id: str, token: str) -> Upstream: ...

    def refused(
        self, connection_id: str | None, status: int, reason: str, peer: dict[str, Any]
    ) -> None: ...


@attrs.frozen
class Route:
    """A parsed /cdp/... path."""

    connection_id: str
    token: str
    kind: str  # "ws" or "json"
    upstream_path: str | None  # None: the upstream's browser path


class UpstreamError(Exception):
    """Chromium could not be reached or refused: answer the client with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# The client's {pid, uid, name, addr} as far as it is cheap to know: called for every refusal.
QuickPeer = Callable[[trio.SocketStream], dict[str, Any]]
Upgrade = Callable[
    [trio.SocketStream, h11.Connection, Route, Upstream, dict[bytes, bytes], bytes],
    Awaitable[None],
]
# Serves a request outside /cdp/ (the daemon's web pages, daemon/web/); True if the
# connection may carry another request. Host is checked before; Origin is its own to check.
WebHandler = Callable[[trio.SocketStream, h11.Connection, h11.Request, Slot | None],
                      Awaitable[bool]]


class HttpFront:
    """Serves the HTTP requests of one listener's streams; WebSocket upgrades that pass every
    check go to `upgrade(stream, conn, route, upstream, headers, early_bytes)`.

    Each request head must arrive whole within `head_timeout_s` (config
    `limits.cdp_header_timeout_s`): a client that connects and sends nothing, or dribbles a
    head, is closed then and gives back its `pending` slot (fd_budget.py).
    """

    def __init__(
        self,
        hooks: AccessHooks,
        *,
        allowed_origins: Collection[str],
        port: Callable[[], int],
        peer_of: QuickPeer,
        upgrade: Upgrade,
        head_timeout_s: float = HEAD_TIMEOUT_S,
    ) -> None:
        self._hooks = hooks
        self._allowed_origins = frozenset(allowed_origins)
        self._port = port
        self._peer_of = peer_of
        self._upgrade = upgrade
        self._head_timeout_s = head_timeout_s
        self.web: WebHandler | None = None  # set by the composition root, if pages are served

    def _refused_hook(
        self, connection_id: str | None, status: int, reason: str, peer: dict[str, Any]
    ) -> None:
        try:
            self._hooks.refused(connection_id, status, reason, peer)
        except Exception:
            log.exception("cdp proxy: hook refused failed")

    async def serve(self, stream: trio.SocketStream, pending: Slot | None = None) -> None:
        """Serve the stream's requests; `pending` (the stream's slot among the requests in
        their HTTP phase) is given back when the stream is upgraded to a WebSocket."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        while True:
            request: h11.Request | None = None
            with trio.move_on_after(self._head_timeout_s):
                try:
                    request = await read_request(stream, conn)
                except h11.RemoteProtocolError as exc:
                    status = exc.error_status_hint
                    message = f"bad request: {str(exc)[:200]}"
                    await self.refuse(stream, None, None, status, None, message)
                    return
            if request is None:
                return
            if not await self._dispatch(stream, conn, request, pending):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _dispatch(
        self, stream: trio.SocketStream, conn: h11.Connection, request: h11.Request,
        pending: Slot | None = None,
    ) -> bool:
        """Answer one request; True if the connection may carry another one."""
        path = request.target.decode("ascii", "replace").partition("?")[0]
        route = parse_route(path)
        match = _ROUTE.fullmatch(path)
        cid = match.group(1) if match else None
        hosts = [v for k, v in request.headers if k == b"host"]
        origins = [v for k, v in request.headers if k == b"origin"]

        # Host and Origin first: a web page or a DNS-rebound name learns nothing, not even 404.
        if len(hosts) != 1 or not is_loopback_host(hosts[0]):
            await self.refuse(stream, conn, cid, 403, None, "Host header is not a loopback name")
            return False
        if self.web is not None and not path.startswith("/cdp/"):
            return await self.web(stream, conn, request, pending)
        if any(o.decode("latin-1") not in self._allowed_origins for o in origins):
            await self.refuse(stream, conn, cid, 403, None, "requests with an Origin are refused")
            return False
        if route is None:  # the message goes to logs: name the path without its token
            redacted = _ROUTE.sub(lambda m: f"/cdp/{m.group(1)}/<token>{m.group(3) or ''}", path)
            await self.refuse(stream, conn, cid, 404, None, f"no such endpoint: {redacted}")
            return False
        if request.method != b"GET":
            await self.refuse(stream, conn, cid, 405, None, "only GET is served here")
            return False
        try:
            upstream = self._hooks.authorize(route.connection_id, route.token)
        except Refused as exc:
            await self.refuse(stream, conn, cid, exc.status, exc.code, exc.reason)
            return False
        except Exception:
            log.exception("cdp proxy: authorize failed")
            await self.refuse(stream, conn, cid, 500, None, "internal error while authorizing")
            return False
        base = public_base(hosts[0].decode("ascii"), self._port(), route)
        if route.kind == "json":
            return await self._serve_json(stream, conn, route, upstream, base)

        headers = {k: v for k, v in request.headers}
        upgrade = headers.get(b"upgrade", b"").lower() == b"websocket" and b"upgrade" in [
            t.strip() for t in headers.get(b"connection", b"").lower().split(b",")
        ]
        if not upgrade:
            await self.refuse(stream, conn, cid, 426, None, "this endpoint is a WebSocket")
            return False
        key = headers.get(b"sec-websocket-key", b"")
        if headers.get(b"sec-websocket-version") != b"13" or not _WS_KEY.fullmatch(key):
            await self.refuse(stream, conn, cid, 400, None, "bad WebSocket handshake headers")
            return False
        early, _ = conn.trailing_data  # frames the client sent right behind its request
        if pending is not None:
            pending.release()  # from here on the socket counts among the proxied ones
        await self._upgrade(stream, conn, route, upstream, headers, bytes(early))
        return False

    async def _serve_json(
        self,
        stream: trio.SocketStream,
        conn: h11.Connection,
        route: Route,
        upstream: Upstream,
        public_base: str,
    ) -> bool:
        assert route.upstream_path is not None
        try:
            doc = await fetch_json(upstream, route.upstream_path)
        except UpstreamError as exc:
            await self.refuse(stream, conn, route.connection_id, exc.status, None, exc.message)
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

    async def refuse(
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
            peer = self._peer_of(stream)
        self._refused_hook(connection_id, status, message, peer)
        data = json_response(conn, status, error_body(status, code, message))
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


# -- pure helpers ------------------------------------------------------------------------------


def error_body(status: int, code: str | None, message: str) -> bytes:
    """The body of every refusal of the CDP front (the port and the lease origins alike):
    `{"code", "message"}`, the code defaulting to the status's."""
    return json.dumps(
        {"code": code or _DEFAULT_CODES.get(status, "http.error"), "message": message}
    ).encode()


def json_response(conn: h11.Connection | None, status: int, body: bytes) -> bytes:
    """A whole JSON response, closing the connection; framed by h11 when it accepted the
    request, by hand when it refused it (it then frames nothing)."""
    headers = [("Content-Type", "application/json; charset=UTF-8"),
               ("Content-Length", str(len(body))), ("Connection", "close")]
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    if conn is not None and conn.our_state is h11.SEND_RESPONSE:
        framed = conn.send(h11.Response(status_code=status, headers=headers, reason=phrase))
        if not _ASKED_HEAD.get(conn, False):
            framed += conn.send(h11.Data(data=body))
        return framed + conn.send(h11.EndOfMessage())
    head = f"HTTP/1.1 {status} {phrase}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode() + body


def over_capacity_response(pool: Pool) -> bytes:
    """The whole answer to a connection over the cap of `pool`: written without waiting, then
    the connection is closed (nothing of the request is read)."""
    body = json.dumps({"code": "daemon.resources_exhausted",
                       "message": pool.exhausted().message}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def parse_route(path: str) -> Route | None:
    match = _ROUTE.fullmatch(path)
    if match is None:
        return None
    cid, token, rest = match.group(1), match.group(2), match.group(3) or ""
    if rest in ("", "/"):
        return Route(cid, token, "ws", None)
    if rest in _JSON_ROUTES:
        return Route(cid, token, "json", _JSON_ROUTES[rest])
    target = _TARGET.fullmatch(rest)
    if target is None:
        return None
    # /devtools/browser/<id> always means this lease's browser, whatever uuid it names.
    return Route(cid, token, "ws", rest if target.group(1) == "page" else None)


def is_loopback_host(value: bytes) -> bool:
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


def public_base(host_header: str, port: int, route: Route) -> str:
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


# h11 frames the answer to a HEAD request as headers only and refuses a body, but keeps the
# request's method to itself: the reader notes which connections asked HEAD last, so that
# json_response leaves the body out for them (sending it raised, and the client got nothing).
_ASKED_HEAD: weakref.WeakKeyDictionary[h11.Connection, bool] = weakref.WeakKeyDictionary()


async def read_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
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
            _ASKED_HEAD[conn] = event.method == b"HEAD"
        elif isinstance(event, h11.Data):
            body += len(event.data)
            if body > _MAX_HEAD:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            return request
        else:  # ConnectionClosed
            return None


async def open_upstream(
    upstream: Upstream, path: str, client_headers: dict[bytes, bytes]
) -> tuple[trio.SocketStream, h11.InformationalResponse, bytes]:
    """Replay the client's handshake to Chromium (h11 in client mode); returns the stream,
    Chromium's 101 and the bytes it sent after it. Anything but a 101 is an UpstreamError."""
    headers = [
        ("Host", upstream.hostport),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        # The client's own key, so Chromium's Sec-WebSocket-Accept is valid for the client.
        ("Sec-WebSocket-Key", client_headers[b"sec-websocket-key"].decode("ascii")),
        ("Sec-WebSocket-Version", "13"),
    ]  # no Origin (Chromium would refuse it), no Sec-WebSocket-Extensions (frames stay plain)
    if b"sec-websocket-protocol" in client_headers:
        headers.append(("Sec-WebSocket-Protocol",
                        client_headers[b"sec-websocket-protocol"].decode("latin-1")))
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
    stream: trio.SocketStream | None = None
    refusal: h11.Response | None = None
    detail = bytearray()
    try:
        with trio.fail_after(_UPSTREAM_TIMEOUT_S):
            stream = await trio.open_tcp_stream(upstream.host, upstream.port)
            await stream.send_all(conn.send(h11.Request(method="GET", target=path,
                                                        headers=headers))
                                  + conn.send(h11.EndOfMessage()))
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(_CHUNK)
                    if not data and refusal is None:
                        raise UpstreamError(502, "the browser closed the connection during the "
                                                 "handshake")
                    conn.receive_data(data)
                elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                    return stream, event, bytes(conn.trailing_data[0])
                elif isinstance(event, h11.Response):
                    refusal = event
                elif isinstance(event, h11.Data) and len(detail) < 200:
                    detail += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    except BaseException as exc:  # includes Cancelled: the half-open stream must not leak
        if stream is not None:
            await trio.aclose_forcefully(stream)
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            raise UpstreamError(503, "the daemon is out of file descriptors: retry later"
                                ) from exc
        if isinstance(exc, OSError | trio.BrokenResourceError | trio.TooSlowError
                      | h11.ProtocolError):
            status = 504 if isinstance(exc, trio.TooSlowError) else 502
            raise UpstreamError(status, f"cannot reach the browser: {exc!r}") from exc
        raise
    await trio.aclose_forcefully(stream)
    code = refusal.status_code if refusal is not None else 502
    text = detail[:200].decode("utf-8", "replace")
    # Chromium answers an unknown target id with "500 ... No such target id: <id>".
    status = 404 if text.startswith("No such target") else code if 400 <= code < 500 else 502
    raise UpstreamError(status, f"the browser refused the WebSocket: HTTP {code} {text}")


async def fetch_browser_json(host: str, port: int, path: str) -> Any:
    """GET a /json document straight from a browser's DevTools HTTP endpoint."""
    return await fetch_json(Upstream("", "", host, port, ""), path)


async def fetch_json(upstream: Upstream, path: str) -> Any:
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
                            raise UpstreamError(502, "the browser's answer is too large")
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
    except (OSError, trio.BrokenResourceError, trio.TooSlowError, h11.ProtocolError) as exc:
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            raise UpstreamError(503, "the daemon is out of file descriptors: retry later"
                                ) from exc
        status = 504 if isinstance(exc, trio.TooSlowError) else 502
        raise UpstreamError(status, f"cannot reach the browser: {exc!r}") from exc
    if status != 200:
        raise UpstreamError(502, f"the browser answered {path} with HTTP {status}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise UpstreamError(502, f"the browser's {path} answer is not JSON") from exc
