"""Socket activation (sd_listen_fds(3)): take the listening socket the service manager passed.

With ``$LISTEN_PID`` naming this process, ``$LISTEN_FDS`` sockets start at fd 3, in the socket
unit's order, named by ``$LISTEN_FDNAMES`` (``FileDescriptorName=``). The daemon serves the one
named ``rpc`` (or the only one passed), closes the others, and removes the variables so no
child claims the sockets. Activated sockets are never unlinked or ``shutdown()``: systemd owns
the path and holds a duplicate of the socket for the next start.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping
from pathlib import Path

import attrs
import trio

__all__ = ["LISTEN_ENV", "ListenFd", "activated_listener", "listen_fds", "socket_path"]

log = logging.getLogger(__name__)

LISTEN_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
LISTEN_FDS_START = 3
RPC_FD_NAME = "rpc"


@attrs.frozen
class ListenFd:
    fd: int
    name: str  # "unknown" when the manager gave no names, as sd_listen_fds_with_names does



class SocketUnusable(Exception):
    """The RPC socket cannot be served: a live daemon answers on its path, it is not safe, or
    what systemd passed is not a listening stream socket."""

def listen_fds(environ: MutableMapping[str, str] | None = None, *,
               unset: bool = True) -> list[ListenFd]:
    """The sockets passed to this process (none when not socket-activated).

    Each fd is made close-on-exec, so a browser never inherits the daemon's listener.
    """
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    names = env.get("LISTEN_FDNAMES")
    if unset:
        for name in LISTEN_ENV:
            env.pop(name, None)
    if not pid or not count:
        return []
    try:
        if int(pid) != os.getpid():
            return []  # meant for another process (we inherited the variables)
        n = int(count)
    except ValueError:
        log.warning("ignoring malformed LISTEN_PID=%r / LISTEN_FDS=%r", pid, count)
        return []
    labels = names.split(":") if names else []
    fds = []
    for i in range(max(n, 0)):
        fd = LISTEN_FDS_START + i
        try:
            os.set_inheritable(fd, False)
        except OSError as exc:
            log.warning("LISTEN_FDS names fd %d, which is not open: %s", fd, exc)
            continue
        fds.append(ListenFd(fd, labels[i] if i < len(labels) and labels[i] else "unknown"))
    return fds


def activated_listener(environ: MutableMapping[str, str] | None = None, *,
                       name: str = RPC_FD_NAME) -> trio.socket.SocketType | None:
    """The activated RPC listener, or None when the daemon must bind its own socket.

    Raises SocketUnusable when sockets were passed but none is usable: several without one
    named `name`, or one that is not a listening Unix stream socket bound to a path (peer
    credentials, which authorise every client, exist only on Unix sockets; clients and the
    health probe connect by path).
    """
    fds = listen_fds(environ)
    if not fds:
        return None
    named = [f for f in fds if f.name == name]
    chosen = named[0] if len(named) == 1 else fds[0] if len(fds) == 1 else None
    for other in fds:
        if other is not chosen:
            os.close(other.fd)  # not ours to serve; systemd keeps its own duplicate
    if chosen is None:
        raise SocketUnusable(
            f"socket activation passed {len(fds)} sockets "
            f"({', '.join(f.name for f in fds)}) and none is named {name!r}; set "
            f"FileDescriptorName={name} in the socket unit"
        )
    sock = socket.socket(fileno=chosen.fd)
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    usable = (sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM
              and listening and socket_path(sock) is not None)
    if not usable:
        sock.detach()  # leave the fd to the manager; we only refuse it
        raise SocketUnusable(
            f"the activated socket {chosen.name!r} (fd {chosen.fd}) is not a listening Unix "
            "stream socket bound to a path; use ListenStream=/path/to/browserd.sock in the "
            "socket unit"
        )
    log.info("socket activation: serving fd %d (%s) at %s", chosen.fd, chosen.name,
             socket_path(sock))
    return trio.socket.from_stdlib_socket(sock)


def socket_path(sock: socket.socket | trio.socket.SocketType) -> Path | None:
    """The filesystem path a Unix socket is bound to (None when abstract or unbound)."""
    name = sock.getsockname()
    if isinstance(name, str) and name.startswith("/"):
        return Path(name)
    return None
