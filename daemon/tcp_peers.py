"""Which local process is at the other end of a loopback TCP connection.

The CDP proxy names the process behind each socket in its events (docs/reliability.md,
Security model: every event records which local process acted). The lookup walks /proc
through psutil, so it runs in a worker thread, a few at a time, and is best effort: any
failure gives None fields.
"""

from __future__ import annotations

import logging
from typing import Any

import psutil
import trio

__all__ = ["PeerLookup", "find_peer_process"]

log = logging.getLogger("browserd.daemon.cdp_proxy")

_TIMEOUT_S = 5.0


class PeerLookup:
    """`await lookup(stream)` -> {pid, uid, name, addr} of the client; None where unknown."""

    def __init__(self, concurrency: int = 4) -> None:
        self._limiter = trio.CapacityLimiter(concurrency)

    async def __call__(self, stream: trio.SocketStream) -> dict[str, Any]:
        try:
            client = stream.socket.getpeername()
            server = stream.socket.getsockname()
        except OSError:
            return {"pid": None, "uid": None, "name": None, "addr": None}
        peer: dict[str, Any] = {"pid": None, "uid": None, "name": None}
        try:
            with trio.fail_after(_TIMEOUT_S):
                peer = await trio.to_thread.run_sync(
                    find_peer_process,
                    (client[0], client[1]),
                    (server[0], server[1]),
                    limiter=self._limiter,
                    abandon_on_cancel=True,
                )
        except Exception as exc:  # attribution is best effort; never fail the request over it
            log.debug("cdp proxy: peer lookup failed: %r", exc)
        return {**peer, "addr": f"{client[0]}:{client[1]}"}


def find_peer_process(client: tuple[str, int], server: tuple[str, int]) -> dict[str, Any]:
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
