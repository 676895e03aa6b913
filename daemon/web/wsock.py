"""The server side of a page's WebSocket, on a stream whose upgrade request h11 has read.

    ws = await accept(stream, conn, headers)
    await ws.send(text)
    text = await ws.receive()        # None once the page has closed it
    await ws.close(4410, "expired")

The handshake is answered through h11 (so the 101 is framed by it), and frames are wsproto's
sans-io `Connection`. Sends are serialized by a lock (a trio stream takes one sender at a
time); messages the page sends are capped at MAX_MESSAGE bytes.
"""

from __future__ import annotations

import h11
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import generate_accept_token

__all__ = ["PageSocket", "accept"]

MAX_MESSAGE = 64 * 1024
_CHUNK = 64 * 1024


class PageSocket:
    def __init__(self, stream: trio.SocketStream, ws: Connection) -> None:
        self._stream = stream
        self._ws = ws
        self._send_lock = trio.Lock()
        self._partial: list[str] = []
        self._partial_len = 0
        self._texts: list[str] = []
        self.closed = False

    async def send(self, text: str) -> None:
        await self._send_bytes(self._ws.send(TextMessage(data=text)))

    async def _send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            await self._stream.send_all(data)

    async def receive(self) -> str | None:
        """The page's next text message; None when it closed (or broke) the socket."""
        while not self._texts:
            if self.closed:
                return None
            try:
                data = await self._stream.receive_some(_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.closed = True
                return None
            self._ws.receive_data(data)
            for event in self._ws.events():
                await self._on_event(event)
        return self._texts.pop(0)

    async def _on_event(self, event: object) -> None:
        if isinstance(event, Ping):
            await self._send_bytes(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            if not self.closed:
                self.closed = True
                try:
                    await self._send_bytes(self._ws.send(event.response()))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        elif isinstance(event, Message):
            if not isinstance(event, TextMessage):
                return  # pages send only text; bytes are ignored
            self._partial.append(event.data)
            self._partial_len += len(event.data)
            if self._partial_len > MAX_MESSAGE:
                await self.close(1009, "message too big")
                return
            if event.message_finished:
                self._texts.append("".join(self._partial))
                self._partial, self._partial_len = [], 0

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a Close frame (once); the stream itself is closed by its owner."""
        if self.closed:
            return
        self.closed = True
        try:
            await self._send_bytes(self._ws.send(CloseConnection(code=code, reason=reason)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def accept(stream: trio.SocketStream, conn: h11.Connection,
                 headers: dict[bytes, bytes]) -> PageSocket:
    """Answer the upgrade with 101 and return the socket (the caller checked the request)."""
    token = generate_accept_token(headers[b"sec-websocket-key"]).decode("ascii")
    await stream.send_all(conn.send(h11.InformationalResponse(
        status_code=101,
        headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                 ("Sec-WebSocket-Accept", token)])))
    early, _ = conn.trailing_data
    return PageSocket(stream, Connection(ConnectionType.SERVER, trailing_data=bytes(early)))
