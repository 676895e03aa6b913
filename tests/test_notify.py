"""sd_notify: the Notifier against real datagram sockets, the health loop's pings, and a real
`browserd` reporting READY, STATUS, WATCHDOG, STOPPING and EXTEND_TIMEOUT_USEC in order."""

from __future__ import annotations

import array
import os
import re
import socket
import time
from pathlib import Path

import pytest
import trio

from browserd.daemon import health
from browserd.daemon.browser.process import scrubbed_env
from browserd.daemon.service import Daemon
from browserd.daemon.system.notify import Notifier

from .conftest import DaemonProcess, processes_using

SYSTEMD_VARS = re.compile(r"^(NOTIFY_SOCKET|LISTEN_\w+|WATCHDOG_\w+)=")


class NotifyReceiver:
    """A fake service manager: a bound SOCK_DGRAM socket that records every notification."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[list[str]] = []

    def receive(self, timeout_s: float) -> list[str] | None:
        self.sock.settimeout(timeout_s)
        try:
            data, ancdata, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
        except TimeoutError:
            return None
        for level, kind, payload in ancdata:  # fds passed (systemd-notify's barrier): close
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                for fd in fds:
                    os.close(fd)
        lines = data.decode().split("\n")
        self.messages.append(lines)
        return lines

    def wait_for(self, prefix: str, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            lines = self.receive(left)
            if lines is not None and any(line.startswith(prefix) for line in lines):
                return lines
        raise AssertionError(f"no {prefix} within {timeout_s} s; got {self.messages}")

    def drain(self, timeout_s: float = 0.2) -> None:
        while self.receive(timeout_s) is not None:
            pass

    def flat(self) -> list[str]:
        return [line for message in self.messages for line in message]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver(short_dir: Path):  # type: ignore[no-untyped-def]
    r = NotifyReceiver(short_dir / "notify.sock")
    yield r
    r.close()


def test_send_reaches_a_path_socket(receiver: NotifyReceiver) -> None:
    notifier = Notifier(str(receiver.path))
    assert notifier.ready("serving") is True
    assert receiver.receive(2) == ["READY=1", "STATUS=serving"]
    assert notifier.status("two\nlines") is True  # STATUS= is one line, whatever it is given
    assert receiver.receive(2) == ["STATUS=two lines"]
    assert notifier.extend_timeout(2.5) is True
    assert receiver.receive(2) == ["EXTEND_TIMEOUT_USEC=2500000"]


def test_send_reaches_an_abstract_socket() -> None:
    name = f"browserd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert Notifier("@" + name).stopping() is True
        assert sock.recv(100) == b"STOPPING=1"


def test_without_a_manager_nothing_is_sent_and_nothing_fails(short_dir: Path) -> None:
    assert Notifier().ready() is False
    assert Notifier(str(short_dir / "gone.sock")).ready() is False  # nobody listens: no raise


def test_a_manager_that_stops_reading_never_blocks(receiver: NotifyReceiver) -> None:
    notifier = Notifier(str(receiver.path))
    started = time.monotonic()
    results = [notifier.status(f"message {i}") for i in range(5000)]
    assert time.monotonic() - started < 5
    assert results[0] is True and results[-1] is False  # the queue filled; sends were dropped


def test_from_environ_takes_and_removes_the_variables() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000",
           "WATCHDOG_PID": str(os.getpid()), "PATH": "/usr/bin"}
    notifier = Notifier.from_environ(env)
    assert notifier == Notifier("/run/systemd/notify", 30_000_000)
    assert notifier.watchdog_interval_s == 30.0
    assert env == {"PATH": "/usr/bin"}
    # A watchdog asked of another process (we inherited its variables) is not ours to answer.
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    assert Notifier.from_environ(env).watchdog_usec is None
    assert Notifier.from_environ({"WATCHDOG_USEC": "soon"}).watchdog_usec is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled is False


def test_scrubbed_env_drops_every_systemd_protocol_variable() -> None:
    env = {"NOTIFY_SOCKET": "/n", "LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "rpc",
           "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1", "PATH": "/usr/bin", "HOME": "/root"}
    assert scrubbed_env(env) == {"PATH": "/usr/bin", "HOME": "/root"}


async def test_health_loop_pings_only_after_passing_rounds(daemon: Daemon,
                                                           short_dir: Path) -> None:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(str(short_dir / "wd.sock"))
    notifier = Notifier(str(short_dir / "wd.sock"), watchdog_usec=1_000_000)

    async def next_message() -> list[str]:
        return (await sock.recv(65536)).decode().split("\n")

    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(health.watch, daemon.registry, daemon.api, notifier)
            with trio.fail_after(10):
                message = await next_message()
                while message[0] != "WATCHDOG=1":  # a loaded machine may fail a round
                    message = await next_message()
            assert re.fullmatch(r"STATUS=serving .*: 0 runtime\(s\) active of 0, \d client\(s\)",
                                message[1])
            # The socket stops serving: rounds fail, the pings stop, STATUS says why.
            daemon.api.socket_path = str(short_dir / "nothing-here.sock")
            with trio.fail_after(10):
                message = await next_message()
                while message[0] == "WATCHDOG=1":  # one ping may already be on its way
                    message = await next_message()
            assert message == [f"STATUS=unhealthy: the RPC socket {short_dir}/nothing-here.sock "
                               "does not serve: [Errno 2] No such file or directory"]
            for _ in range(2):
                with trio.fail_after(10):
                    assert (await next_message())[0].startswith("STATUS=unhealthy")
            nursery.cancel_scope.cancel()


def test_daemon_reports_ready_status_watchdog_stopping(receiver: NotifyReceiver,
                                                       short_dir: Path) -> None:
    (short_dir / "config.toml").write_text(
        '[browser]\nexecutable = "/usr/bin/chromium-headless-shell"\n')
    running = DaemonProcess(short_dir, {"NOTIFY_SOCKET": str(receiver.path),
                                        "WATCHDOG_USEC": "4000000"})
    running.start()
    try:
        ready = receiver.wait_for("READY=1", 10)
        assert ready[0] == "READY=1" and ready[1].startswith("STATUS=serving ")
        assert running.socket.is_socket()  # READY only once the socket is bound
        assert receiver.wait_for("WATCHDOG=1", 15)
        running.ctl("launch", "w")
        browsers = processes_using(running.state_dir)
        assert browsers
        for proc in browsers:  # nothing of systemd's protocol reaches a browser
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
            assert not [v for v in environ if SYSTEMD_VARS.match(v.decode(errors="replace"))]
        deadline = time.monotonic() + 20  # the next health round counts the runtime
        while not any("1 runtime(s) active of 1" in line for line in receiver.flat()):
            assert time.monotonic() < deadline, receiver.messages
            receiver.receive(1)
    finally:
        code = running.stop()
    assert code == 0, running.log.read_text()
    receiver.drain()
    lines = receiver.flat()
    first = {key: next(i for i, line in enumerate(lines) if line.startswith(key))
             for key in ("READY=1", "STATUS=", "WATCHDOG=1", "STOPPING=1",
                         "EXTEND_TIMEOUT_USEC=")}
    assert first["READY=1"] < first["STATUS="] < first["WATCHDOG=1"] < first["STOPPING=1"]
    assert first["STOPPING=1"] < first["EXTEND_TIMEOUT_USEC="]  # a browser was still stopping
    after_stopping = lines[first["STOPPING=1"]:]
    assert "WATCHDOG=1" not in after_stopping  # the health loop ends when shutdown begins
    assert any(re.fullmatch(r"STATUS=stopping: 1 runtime\(s\) still running", line)
               for line in after_stopping)
