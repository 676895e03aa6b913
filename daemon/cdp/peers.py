"""Which local user and process is at the other end of a loopback TCP connection.

The CDP proxy names the process behind each attached socket in its events (docs/reliability.md,
Security model: every event records which local process acted), and a lease's origin admits
only the uid that made the lease. Both start from the client's socket, found by its exact
address pair:

- `socket_owner`: the uid and inode of that one socket, asked of the kernel through
  sock_diag (NETLINK_SOCK_DIAG with the full 4-tuple: a hash lookup, about 15 us), or read
  from /proc/net/tcp{,6} where netlink is unavailable. Cheap enough for every request,
  refused ones included.
- `find_peer_process`: the pid holding that inode, found by reading the fd links of that
  uid's processes (a /proc walk: worker thread, a few at a time, only for attaches that
  succeed). psutil.net_connections did both jobs with a walk of every process's fds for
  every request, refused ones included: 20 ms of CPU each.

Everything here is best effort: a lookup that fails gives None fields.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from typing import Any

import psutil
import trio

__all__ = ["PeerLookup", "find_peer_process", "owner_uid", "socket_owner"]

log = logging.getLogger(__name__)

_TIMEOUT_S = 5.0

# linux/sock_diag.h, linux/inet_diag.h, linux/netlink.h
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NLMSG_HEADER = struct.Struct("=IHHII")
_NO_COOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF
_DIAG_MSG_UID_AT = 4 + 48 + 12  # inet_diag_msg: family..retrans, sockid, expires..wqueue
_UID_INODE = struct.Struct("=II")

Address = tuple[str, int]


def socket_owner(local: Address, remote: Address) -> tuple[int, int] | None:
    """(uid, inode) of the TCP socket bound to `local` and connected to `remote` in this
    network namespace; None if there is none. Never blocks for long: one netlink round trip,
    or one read of /proc/net/tcp when netlink is refused."""
    try:
        return _ask_sock_diag(local, remote)
    except FileNotFoundError:  # the kernel has no such socket (it closed already)
        return None
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            return None  # no descriptor for the netlink socket: /proc would need one too
        return _read_proc_net_tcp(local, remote)


def _ask_sock_diag(local: Address, remote: Address) -> tuple[int, int]:
    family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
    sockid = (struct.pack("!HH", local[1], remote[1])
              + socket.inet_pton(family, local[0]).ljust(16, b"\0")
              + socket.inet_pton(family, remote[0]).ljust(16, b"\0")
              + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE))
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, _ALL_STATES) + sockid
    header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY,
                                _NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       _NETLINK_SOCK_DIAG) as nl:
        nl.sendto(header + request, (0, 0))
        # The kernel answers within sendto: the reply is queued by the time it returns.
        reply = nl.recv(4096, socket.MSG_DONTWAIT)
    _, kind, _, _, _ = _NLMSG_HEADER.unpack_from(reply)
    if kind == _NLMSG_ERROR:
        code = -struct.unpack_from("=i", reply, _NLMSG_HEADER.size)[0]
        raise OSError(code, os.strerror(code))
    uid, inode = _UID_INODE.unpack_from(reply, _NLMSG_HEADER.size + _DIAG_MSG_UID_AT)
    return uid, inode


def _read_proc_net_tcp(local: Address, remote: Address) -> tuple[int, int] | None:
    """The same from /proc/net/tcp (or tcp6): the file lists every socket, so this costs a
    read of all of them; used only where sock_diag is refused."""
    six = ":" in local[0]
    wanted = (_proc_address(local, six), _proc_address(remote, six))
    try:
        with open("/proc/net/tcp6" if six else "/proc/net/tcp") as table:
            next(table, None)
            for line in table:
                fields = line.split()
                if (fields[1], fields[2]) == wanted:
                    return int(fields[7]), int(fields[9])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _proc_address(address: Address, six: bool) -> str:
    """An address as /proc/net/tcp writes it: each 32-bit word of the address as the host
    reads it from memory (%08X), then the port."""
    raw = socket.inet_pton(socket.AF_INET6 if six else socket.AF_INET, address[0])
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    return "".join(f"{word:08X}" for word in words) + f":{address[1]:04X}"


def find_peer_process(client: Address, server: Address) -> dict[str, Any]:
    """Runs in a thread: {pid, uid, name} of the process holding the client end of a loopback
    TCP connection (None where unknown)."""
    peer: dict[str, Any] = {"pid": None, "uid": None, "name": None}
    owner = socket_owner(client, server)
    if owner is None:
        return peer
    peer["uid"], inode = owner
    pid = _pid_holding(f"socket:[{inode}]", peer["uid"])
    if pid is not None:
        peer["pid"] = pid
        try:
            peer["name"] = psutil.Process(pid).name()
        except (psutil.Error, OSError):
            pass
    return peer


def _pid_holding(link: str, uid: int) -> int | None:
    """The first process (of `uid`, or any for root's sockets) with an fd pointing at `link`."""
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return None
    for pid in sorted(pids, reverse=True):  # a client is more often new than old
        directory = f"/proc/{pid}/fd"
        try:
            if uid != 0 and os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            for fd in os.listdir(directory):
                try:
                    if os.readlink(f"{directory}/{fd}") == link:
                        return pid
                except OSError:
                    continue
        except OSError:  # gone, or not ours to read
            continue
    return None


async def owner_uid(stream: trio.SocketStream) -> int | None:
    """The uid owning the client end of this loopback connection (None when unknown): the
    owner of that one socket, in a worker thread for the /proc fallback."""
    try:
        client = stream.socket.getpeername()
        server = stream.socket.getsockname()
    except OSError:
        return None
    owner = await trio.to_thread.run_sync(socket_owner, (client[0], client[1]),
                                          (server[0], server[1]), abandon_on_cancel=True)
    return None if owner is None else owner[0]


class PeerLookup:
    """`await lookup(stream)`: {pid, uid, name, addr} of the client, for an attach;
    `lookup.quick(stream)`: {uid, addr} only (pid and name None), for a refusal."""

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

    def quick(self, stream: trio.SocketStream) -> dict[str, Any]:
        peer: dict[str, Any] = {"pid": None, "uid": None, "name": None, "addr": None}
        try:
            client = stream.socket.getpeername()
            server = stream.socket.getsockname()
        except OSError:
            return peer
        peer["addr"] = f"{client[0]}:{client[1]}"
        owner = _quick_owner((client[0], client[1]), (server[0], server[1]))
        if owner is not None:
            peer["uid"] = owner[0]
        return peer


def _quick_owner(client: Address, server: Address) -> tuple[int, int] | None:
    """`socket_owner` through sock_diag only: on the event loop, so no /proc fallback."""
    try:
        return _ask_sock_diag(client, server)
    except OSError:
        return None
