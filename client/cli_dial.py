"""`browserctl dial-stdio`: this process's stdin and stdout, bridged to the local daemon's socket.

A client on another machine runs it through ssh (``BROWSERD_HOST=ssh://...``) and speaks
msgpack-RPC to it as to the socket. The daemon sees this process as its peer, so its access
rules apply to the SSH user as they would to a local one. Bytes are copied as they come, both
ways, each way with a bounded buffer, on non-blocking descriptors in one thread: neither way
can stall the other. When stdin ends the daemon is told (the socket's write side is shut) and
what it still sends is delivered; when the daemon closes, stdout is closed and the bridge
exits. A daemon that is not there is reported like every other command (exit 1).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys
import time
from pathlib import Path

from .errors import DaemonUnavailable
from .session import START_HINT

__all__ = ["bridge", "connect"]

_CHUNK = 256 * 1024
_MAX_PENDING = 1024 * 1024  # per direction: past it, the bridge stops reading that side
# After stdin ended, how long the daemon has to finish and close before the bridge leaves.
_DRAIN_S = 5.0


def connect(path: Path) -> socket.socket:
    """A connected socket to the daemon at ``path``; DaemonUnavailable if there is none."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise DaemonUnavailable.make(
            f"cannot connect to {path}: {exc.strerror or exc}", START_HINT, {"socket": str(path)}
        ) from None
    return sock


def bridge(sock: socket.socket, stdin: int = 0, stdout: int = 1) -> None:
    """Copy ``stdin`` to ``sock`` and ``sock`` to ``stdout`` until the daemon is done."""
    for fd in (stdin, stdout):
        os.set_blocking(fd, False)
    sock.setblocking(False)
    to_daemon = bytearray()
    to_caller = bytearray()
    stdin_open = True  # still reading stdin
    sock_open = True  # still reading the socket
    drain_until: float | None = None
    sel = selectors.DefaultSelector()
    try:
        while sock_open or to_caller:
            want = _interest(
                (stdin, selectors.EVENT_READ, stdin_open and len(to_daemon) < _MAX_PENDING),
                (sock.fileno(), selectors.EVENT_WRITE, bool(to_daemon)),
                (sock.fileno(), selectors.EVENT_READ, sock_open and len(to_caller) < _MAX_PENDING),
                (stdout, selectors.EVENT_WRITE, bool(to_caller)),
            )
            for fd, events in want.items():
                sel.register(fd, events)
            timeout = None if drain_until is None else max(drain_until - time.monotonic(), 0)
            ready = sel.select(timeout)
            for fd in want:
                sel.unregister(fd)
            if not ready and drain_until is not None:
                return  # the daemon kept the connection open after stdin ended: let go
            for key, events in ready:
                if key.fd == stdin and events & selectors.EVENT_READ:
                    data = _read(stdin)
                    if data:
                        to_daemon += data
                    elif data is not None:
                        stdin_open = False
                elif key.fd == sock.fileno():
                    if events & selectors.EVENT_WRITE:
                        try:
                            del to_daemon[:sock.send(to_daemon)]
                        except BlockingIOError:
                            pass
                        except OSError:
                            return  # the daemon went away
                    if events & selectors.EVENT_READ:
                        try:
                            data = sock.recv(_CHUNK)
                        except BlockingIOError:
                            continue
                        except OSError:
                            data = b""
                        if data:
                            to_caller += data
                        else:
                            sock_open = False
                elif key.fd == stdout and events & selectors.EVENT_WRITE:
                    try:
                        del to_caller[:os.write(stdout, to_caller)]
                    except BlockingIOError:
                        pass
                    except OSError:
                        return  # the caller went away (ssh closed): nothing to deliver to
            if not stdin_open and not to_daemon and drain_until is None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                drain_until = time.monotonic() + _DRAIN_S
    finally:
        sel.close()
        sock.close()
        with contextlib.suppress(OSError):
            os.close(stdout)


def _interest(*wishes: tuple[int, int, bool]) -> dict[int, int]:
    """fd -> the events to wait for, of the (fd, event, wanted) triples that are wanted."""
    want: dict[int, int] = {}
    for fd, event, wanted in wishes:
        if wanted:
            want[fd] = want.get(fd, 0) | event
    return want


def _read(fd: int) -> bytes | None:
    """What ``fd`` has (``b""``: it ended), or None when it had nothing after all."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def run(path: Path) -> int:
    """The command: bridge until done; 0, or 1 after printing why the daemon was not reached."""
    sock = connect(path)
    bridge(sock, sys.stdin.fileno(), sys.stdout.fileno())
    return 0
