"""Socket activation: the LISTEN_* protocol, with real sockets passed by systemd-socket-activate."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from browserd.daemon.system.listen_fds import listen_fds

ACTIVATE = shutil.which("systemd-socket-activate")
needs_activate = pytest.mark.skipif(ACTIVATE is None,
                                    reason="systemd-socket-activate is not installed")

# Run in the activated process: take the listener as the daemon does and report what it got.
PROBE = """
import fcntl, os, sys
from browserd.daemon.system.listen_fds import activated_listener, socket_path
from browserd.daemon.system.listen_fds import SocketUnusable
try:
    listener = activated_listener()
except SocketUnusable as exc:
    print("refused:", exc)
    sys.exit(0)
fd = listener.fileno()
print("path:", socket_path(listener))
print("fd:", fd)
print("cloexec:", bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC))
print("env:", sorted(k for k in os.environ if k.startswith("LISTEN_")))
print("open:", sorted(n for n in (3, 4) if n != fd and os.path.exists(f"/proc/self/fd/{n}")))
"""


def test_variables_for_another_process_are_ignored_and_removed() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "rpc", "PATH": "/bin"}
    assert listen_fds(env) == []
    assert env == {"PATH": "/bin"}
    assert listen_fds({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "many"}) == []
    assert listen_fds({}) == []


def _activate(options: list[str], trigger: Callable[[], None]) -> str:
    assert ACTIVATE is not None
    proc = subprocess.Popen(
        [ACTIVATE, *options, "-E", "PYTHONPATH=" + os.pathsep.join(sys.path),
         sys.executable, "-c", PROBE],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        trigger()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    return out


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _connect(path: Path) -> None:
    _wait_for(path)
    deadline = time.monotonic() + 10
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(path))
                return
            except ConnectionRefusedError:  # bound, not yet listening
                assert time.monotonic() < deadline, f"{path} never listened"
        time.sleep(0.02)


@needs_activate
def test_the_socket_named_rpc_is_served_and_the_rest_closed(short_dir: Path) -> None:
    other, rpc = short_dir / "other.sock", short_dir / "rpc.sock"
    out = _activate(["-l", str(other), "-l", str(rpc), "--fdname=other:rpc"],
                    lambda: _connect(rpc))
    assert f"path: {rpc}\n" in out
    assert "fd: 4\n" in out
    assert "cloexec: True\n" in out  # a browser never inherits the listener
    assert "env: []\n" in out  # nor the variables
    assert "open: []\n" in out  # the socket not served is closed


@needs_activate
def test_a_single_unnamed_socket_is_served(short_dir: Path) -> None:
    path = short_dir / "one.sock"
    out = _activate(["-l", str(path)], lambda: _connect(path))
    assert f"path: {path}\n" in out


@needs_activate
def test_several_sockets_without_rpc_are_refused(short_dir: Path) -> None:
    a, b = short_dir / "a.sock", short_dir / "b.sock"
    out = _activate(["-l", str(a), "-l", str(b), "--fdname=a:b"],
                    lambda: _connect(a))
    assert out.startswith("refused: socket activation passed 2 sockets (a, b)")
    assert "FileDescriptorName=rpc" in out


@needs_activate
def test_a_datagram_socket_is_refused(short_dir: Path) -> None:
    path = short_dir / "dgram.sock"

    def trigger() -> None:
        _wait_for(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"x", str(path))

    out = _activate(["--datagram", "-l", str(path), "--fdname=rpc"], trigger)
    assert out.startswith("refused: the activated socket 'rpc' (fd 3) is not a listening Unix "
                          "stream socket")
