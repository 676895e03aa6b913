"""The accept loop every listener of the daemon runs: within its budget, through EMFILE.

Each accepted connection takes a slot of its pool (fd_budget.py) for as long as its handler
runs. At the cap, the connection is turned away at once and cheaply: `turn_away` writes a
short final answer without waiting (a 503, an `rpc.error` notification) and the socket is
closed, so a flood costs one accept and one write per connection, and the clients already in
never notice. Should accept itself fail for want of descriptors or memory (EMFILE, ENFILE,
ENOMEM, ENOBUFS: the process or the machine ran short elsewhere), the loop logs, backs off
(0.1 s, doubling to 1 s) and tries again, as systemd's and nginx's do; the pending clients
wait in the listen backlog meanwhile.

Not `trio.serve_listeners`, though it retries the same errnos: it starts a handler task (and,
through SocketStream, its buffers) for every connection before anything can be checked, so a
flood past the cap would still cost a task per connection, and it logs every failed accept.
Here the turn-away happens before any task exists, and the log is throttled.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable

import trio

from ..base.errors import RESOURCE_ERRNOS
from .fd_budget import Pool, Slot
from .logs import Throttled

__all__ = ["accept_loop", "write_nowait"]

_BACKOFF_MIN_S = 0.1
_BACKOFF_MAX_S = 1.0

Handler = Callable[[trio.socket.SocketType, Slot], Awaitable[None]]


async def accept_loop(
    listener: trio.socket.SocketType,
    pool: Pool,
    handle: Handler,
    turn_away: Callable[[trio.socket.SocketType], None],
    *,
    nursery: trio.Nursery,
    logger: logging.Logger,
    what: str,
    admit_over_cap: Callable[[trio.socket.SocketType], bool] | None = None,
) -> None:
    """Accept on `listener` until cancelled; each connection runs `handle(sock, slot)` in
    `nursery` and is closed (its slot given back) when that returns. Over the cap a connection
    is `turn_away`ed, unless `admit_over_cap(sock)` says it must be served all the same."""
    shortage = Throttled(logger)
    refusals = Throttled(logger)
    backoff = _BACKOFF_MIN_S
    while True:
        try:
            sock, _ = await listener.accept()
        except OSError as exc:
            if exc.errno not in RESOURCE_ERRNOS:
                raise
            shortage.log(logging.ERROR, "%s: accept failed (%s); retrying in %.1f s", what,
                         errno.errorcode[exc.errno], backoff)
            await trio.sleep(backoff)
            backoff = min(2 * backoff, _BACKOFF_MAX_S)
            continue
        backoff = _BACKOFF_MIN_S
        slot = pool.take_nowait()
        if slot is None:
            if admit_over_cap is None or not admit_over_cap(sock):
                refusals.log(logging.WARNING, "%s: at the limit of %d connections; turning "
                             "new ones away", what, pool.limit)
                try:
                    turn_away(sock)
                finally:
                    sock.close()
                continue
            slot = Slot(None)  # served, holding nothing
        nursery.start_soon(_serve, handle, sock, slot)


async def _serve(handle: Handler, sock: trio.socket.SocketType, slot: Slot) -> None:
    try:
        await handle(sock, slot)
    finally:
        slot.release()
        sock.close()  # idempotent: most handlers have closed it already


def write_nowait(sock: trio.socket.SocketType, data: bytes) -> None:
    """Write what fits into the socket's buffer now (a fresh one takes a few KiB whole);
    never wait, never fail: the peer may be gone already."""
    try:
        os.write(sock.fileno(), data)
    except OSError:
        pass
