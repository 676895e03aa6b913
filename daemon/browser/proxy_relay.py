"""A loopback proxy per browser, in front of the runtime's upstream proxy (config.proxy).

Chromium takes no proxy credentials on its command line and cannot authenticate to a SOCKS5
proxy at all; answering its 407s over CDP would need a hook in every target, before the
user's client gets it. So the daemon runs this relay: Chromium is started with
`--proxy-server=http://127.0.0.1:<port>`, and the relay forwards every connection to the
upstream, adding the credentials itself (`Proxy-Authorization: Basic` for an HTTP upstream,
RFC 1929 username/password for SOCKS5). Every page gets through, those the user's own client
opens too, and no client sees any of it.

What a connection from the browser may be:
- `CONNECT host:port` (HTTPS, WebSockets over TLS): a tunnel through the upstream, bytes
  relayed untouched once it stands.
- A plain-HTTP request in absolute form (`GET http://host/path HTTP/1.1`): one request per
  connection (`Connection: close` is set), so the credentials go with every request; sent to
  an HTTP upstream as it is (plus the credentials), or, through a SOCKS5 tunnel to the host,
  in origin form.
If the upstream refuses, the browser gets a 502 whose body says why (never the credentials).

The relay lives in the run's nursery: it is bound before the browser starts (its port is on
the command line), and closed with everything it relays when the run ends. If the daemon
dies, the relay dies with it (and, without live restore, the browser too); a daemon that
adopts the browser (live restore) binds a new relay on the port the browser's command line
names, before it reports the runtime adopted. The credentials
are only in this object's memory and in the daemon's 0600 secrets file.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import socket
from urllib.parse import urlsplit

import trio

from ..base.runtime_config import ProxyConfig, ProxyCredentials
from ..system.accept_loop import accept_loop, write_nowait
from ..system.fd_budget import Pool, Slot

__all__ = ["ProxyRelay", "RequestHead", "parse_request_head", "relay_port_of"]

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
MAX_CONNECTIONS = 512  # the cap of a relay that is given no pool (a relay on its own)
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
         b"Connection: close\r\nContent-Length: 64\r\n\r\n"
         b"browserd proxy relay: the daemon is at its limit of connections\n")
CONNECT_TIMEOUT_S = 30.0
CHUNK = 64 * 1024
_HOP_HEADERS = (b"proxy-authorization", b"proxy-connection", b"connection", b"keep-alive")


class RequestHead:
    """A request head the browser sent the relay."""

    def __init__(self, method: str, target: str, version: str,
                 headers: list[tuple[bytes, bytes]]) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers

    def authority(self) -> tuple[str, int]:
        """(host, port) the request is for."""
        if self.method == "CONNECT":
            host, sep, port = self.target.rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError(f"bad CONNECT target {self.target!r}")
            return host.strip("[]"), int(port)
        parts = urlsplit(self.target)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an absolute http URL: {self.target!r}")
        return parts.hostname, parts.port or 80

    def encode(self, *, origin_form: bool, extra: list[tuple[bytes, bytes]]) -> bytes:
        """The head to send on: hop-by-hop headers dropped, `Connection: close` and `extra`
        added; with `origin_form` the request line names only the path."""
        target = self.target
        if origin_form:
            parts = urlsplit(self.target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{self.method} {target} {self.version}".encode()]
        lines += [name + b": " + value for name, value in self.headers
                  if name.lower() not in _HOP_HEADERS]
        lines += [name + b": " + value for name, value in extra]
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n"


def parse_request_head(data: bytes) -> RequestHead:
    """The head of `data` (which holds it whole, up to the blank line); ValueError if bad."""
    lines = data.split(b"\r\n")
    try:
        method, target, version = lines[0].decode("latin-1").split(" ")
    except ValueError:
        raise ValueError("bad request line") from None
    if not version.startswith("HTTP/1."):
        raise ValueError(f"unsupported version {version!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            break
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ValueError("bad header line")
        headers.append((name, value.strip()))
    return RequestHead(method, target, version, headers)


def relay_port_of(pid: int) -> int | None:
    """The relay port a running browser was started with (from its command line), or None.
    A new daemon that adopts the browser (live restore) listens there again."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    prefix = b"--proxy-server=http://127.0.0.1:"
    for arg in argv:
        if arg.startswith(prefix) and arg[len(prefix):].isdigit():
            return int(arg[len(prefix):])
    return None


def _turn_away(sock: trio.socket.SocketType) -> None:
    write_nowait(sock, _BUSY)


class UpstreamRefused(Exception):
    """The upstream proxy refused or failed; the message is safe to show (no secrets)."""


class ProxyRelay:
    """One relay: `bind()` (the port is known at once), then `serve` in a nursery."""

    def __init__(self, upstream: ProxyConfig, credentials: ProxyCredentials | None,
                 pool: Pool | None = None) -> None:
        """`pool`: the daemon's budget of relayed connections, shared by every relay (each
        holds two descriptors); past it the browser gets a 503 for that connection."""
        parts = urlsplit(upstream.server)
        assert parts.hostname is not None and parts.port is not None
        self.scheme = parts.scheme
        self._upstream = (parts.hostname, parts.port)
        self._credentials = credentials
        self._pool = pool if pool is not None else Pool("relay_connections", MAX_CONNECTIONS)
        self._listener: trio.socket.SocketType | None = None
        self.port = 0
        self.connections = 0  # relayed now
        self.refused = 0  # by the upstream

    def bind(self, port: int = 0) -> int:
        """Listen on 127.0.0.1:`port` (0: any free one); returns the port."""
        plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # The relayed connections of a dead daemon linger in TIME_WAIT on this port.
            plain.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            plain.bind(("127.0.0.1", port))
            plain.listen(128)
            plain.setblocking(False)
        except BaseException:
            plain.close()
            raise
        self._listener = trio.socket.from_stdlib_socket(plain)
        self.port = plain.getsockname()[1]
        return self.port

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Relay until cancelled; then the listener and every relayed connection close."""
        if self._listener is None:
            self.bind()
        listener = self._listener
        assert listener is not None
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                await accept_loop(listener, self._pool, self._serve_one, _turn_away,
                                  nursery=nursery, logger=log, what="proxy relay")
        finally:
            listener.close()

    async def _serve_one(self, sock: trio.socket.SocketType, slot: Slot) -> None:
        self.connections += 1
        try:
            await self._handle(trio.SocketStream(sock))
        finally:
            self.connections -= 1

    async def _handle(self, client: trio.SocketStream) -> None:
        try:
            async with client:
                head, rest = await _read_head(client)
                try:
                    request = parse_request_head(head)
                    host, port = request.authority()
                except ValueError as exc:
                    await _answer(client, 400, f"browserd proxy relay: {exc}")
                    return
                try:
                    with trio.fail_after(CONNECT_TIMEOUT_S):
                        upstream = await self._open(request, host, port)
                except (UpstreamRefused, OSError, trio.TooSlowError) as exc:
                    self.refused += 1
                    reason = (str(exc) if isinstance(exc, UpstreamRefused) else
                              "the upstream proxy did not answer in time"
                              if isinstance(exc, trio.TooSlowError)
                              else f"cannot reach the upstream proxy ({exc.strerror or exc})")
                    await _answer(client, 502, f"browserd proxy relay: {reason}")
                    return
                async with upstream:
                    if request.method == "CONNECT":
                        await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    if rest:
                        await upstream.send_all(rest)
                    await _pump_both(client, upstream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # either side went away: nothing to tell anyone

    async def _open(self, request: RequestHead, host: str, port: int) -> trio.SocketStream:
        """A stream to the upstream, ready for the request's bytes (CONNECT: a tunnel;
        plain HTTP: the rewritten head already sent)."""
        stream = await trio.open_tcp_stream(*self._upstream)
        try:
            if self.scheme == "http":
                auth = self._basic()
                if request.method == "CONNECT":
                    await _http_tunnel(stream, host, port, auth)
                else:
                    await stream.send_all(request.encode(origin_form=False, extra=auth))
            else:
                await _socks5_tunnel(stream, host, port, self._credentials)
                if request.method != "CONNECT":
                    await stream.send_all(request.encode(origin_form=True, extra=[]))
        except BaseException:
            await stream.aclose()
            raise
        return stream

    def _basic(self) -> list[tuple[bytes, bytes]]:
        if self._credentials is None:
            return []
        pair = f"{self._credentials.username}:{self._credentials.password}".encode()
        return [(b"Proxy-Authorization", b"Basic " + base64.b64encode(pair))]


async def _read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """(the head up to its blank line, what came after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD_BYTES:
            raise trio.BrokenResourceError("request head too large")
        chunk = await stream.receive_some(CHUNK)
        if not chunk:
            raise trio.BrokenResourceError("closed before the request head ended")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


async def _answer(stream: trio.SocketStream, status: int, text: str) -> None:
    reason = {400: "Bad Request", 502: "Bad Gateway"}[status]
    body = text.encode() + b"\n"
    await stream.send_all(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: "
        f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


async def _http_tunnel(stream: trio.SocketStream, host: str, port: int,
                       auth: list[tuple[bytes, bytes]]) -> None:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1".encode(), f"Host: {authority}".encode()]
    lines += [name + b": " + value for name, value in auth]
    await stream.send_all(b"\r\n".join(lines) + b"\r\n\r\n")
    head, rest = await _read_head(stream)
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or parts[1] != "200":
        code = parts[1] if len(parts) > 1 else "?"
        what = ("refused the credentials (407)" if code == "407"
                else f"answered CONNECT with {code}")
        raise UpstreamRefused(f"the upstream proxy {what}")
    if rest:
        raise UpstreamRefused("the upstream proxy sent data before the tunnel stood")


async def _receive_exactly(stream: trio.SocketStream, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        if not chunk:
            raise UpstreamRefused("the SOCKS5 proxy closed the connection")
        data += chunk
    return data


async def _socks5_tunnel(stream: trio.SocketStream, host: str, port: int,
                         credentials: ProxyCredentials | None) -> None:
    methods = b"\x00\x02" if credentials is not None else b"\x00"
    await stream.send_all(b"\x05" + bytes([len(methods)]) + methods)
    version, method = await _receive_exactly(stream, 2)
    if version != 5 or method == 0xFF:
        raise UpstreamRefused("the SOCKS5 proxy accepts none of our authentication methods")
    if method == 2:
        if credentials is None:
            raise UpstreamRefused("the SOCKS5 proxy wants a username and password")
        user, password = credentials.username.encode(), credentials.password.encode()
        await stream.send_all(b"\x01" + bytes([len(user)]) + user + bytes([len(password)])
                              + password)
        _, status = await _receive_exactly(stream, 2)
        if status != 0:
            raise UpstreamRefused("the SOCKS5 proxy refused the credentials")
    elif method != 0:
        raise UpstreamRefused(f"the SOCKS5 proxy chose an unknown method {method}")
    try:
        address = ipaddress.ip_address(host)
        target = (b"\x01" if address.version == 4 else b"\x04") + address.packed
    except ValueError:
        name = host.encode("idna")
        target = b"\x03" + bytes([len(name)]) + name
    await stream.send_all(b"\x05\x01\x00" + target + port.to_bytes(2, "big"))
    version, reply, _, kind = await _receive_exactly(stream, 4)
    if version != 5 or reply != 0:
        raise UpstreamRefused(f"the SOCKS5 proxy could not connect (reply {reply})")
    length = {1: 4, 4: 16}.get(kind)
    if length is None:
        length = (await _receive_exactly(stream, 1))[0]
    await _receive_exactly(stream, length + 2)


async def _pump_both(a: trio.SocketStream, b: trio.SocketStream) -> None:
    """Relay both ways until both have ended; an end in one direction is passed on as a
    half-close, so a response still in flight after the request's end gets through."""
    async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            while chunk := await source.receive_some(CHUNK):
                await sink.send_all(chunk)
            await sink.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            nursery.cancel_scope.cancel()  # one side broke: the relay of both is over

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, a, b)
        nursery.start_soon(pump, b, a)
