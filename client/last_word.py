"""The daemon's last word on a connection it closed: read without waiting, before a transport
reports the connection lost.

A daemon that turns a connection away (past a budget, or a client that broke the protocol)
writes why, as a final `rpc.error` notification, and closes. A client writing at that moment
sees EPIPE or ECONNRESET before it has read the reason; feeding what is still buffered to the
session first lets it report the daemon's error (`daemon.resources_exhausted`, ...) instead of
a bare "connection lost". Shared by both transports.
"""

from __future__ import annotations

import contextlib
import socket

from .errors import BrowserdError
from .session import Session

__all__ = ["last_word"]

_MAX = 1 << 20


def last_word(sock: socket.socket, session: Session) -> None:
    """Feed `session` what the daemon sent before it closed the connection (never waits)."""
    data = bytearray()
    while len(data) < _MAX:
        try:
            chunk = sock.recv(65536, socket.MSG_DONTWAIT)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    if data:
        with contextlib.suppress(BrowserdError):
            session.receive_data(bytes(data))
