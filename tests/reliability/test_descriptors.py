"""File descriptors: the daemon's budget holds against floods from other processes, and
running out of descriptors anyway ends nothing.

The budget tests run a daemon subprocess whose RLIMIT_NOFILE is low in both soft and hard
limits (it raises soft to hard at start, so only both hold it down), and open more of one kind
of client than its budget allows, from this process: idle TCP connections to the CDP port,
proxied sockets, leases with a browser_url port, RPC connections, connections that never say
hello. The daemon must stay up, answer RPC, turn the excess away with
`daemon.resources_exhausted`, close the silent ones after their deadline, and serve again once
the clients are gone. A flood of refused CDP requests (in-process, to count the calls) must
cost neither a process walk nor a log line each. Then real exhaustion: a launch short of
descriptors, and a daemon whose caps are set above its limit.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import psutil
import pytest
import trio

from browserd.client import Client, errors, wire
from browserd.daemon.base.config import LimitsConfig
from browserd.daemon.base.errors import ApiError
from browserd.daemon.browser.process import BrowserProcess, LaunchSpec
from browserd.daemon.service import serve

from ..conftest import make_config
from .harness import (
    HEADLESS_SHELL,
    REPORT,
    CdpSocket,
    Daemon,
    RawRpc,
    check_error,
    config_text,
    descendants,
    exchange,
    status_of,
)
from .test_faults import finish, wait_for

NOFILE = 256
# Short deadlines, so the tests do not wait 10 s and 5 s for the real ones.
LIMITS = {"max_runtimes": 2, "hello_timeout_s": 1.0, "cdp_header_timeout_s": 1.0}


def low_limit_daemon(make_daemon: Any, **limits: Any) -> Daemon:
    daemon: Daemon = make_daemon(config=config_text(limits={**LIMITS, **limits}),
                                 nofile=NOFILE)
    return daemon


def budgets(bd: Client) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = bd.status()["budgets"]
    return result


def cdp_port(bd: Client) -> int:
    return int(bd.status()["cdp_base_url"].rsplit(":", 1)[1])


def raw_ws_request(port: int, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def read_all(sock: socket.socket, timeout_s: float) -> bytes:
    """Everything the daemon sends until it closes the connection (bounded)."""
    sock.settimeout(timeout_s)
    data = bytearray()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            continue  # the deadline check decides
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError(f"the daemon did not close the connection: {bytes(data[:200])!r}")
    return bytes(data)


def in_session(sid: int) -> list[int]:
    """Live processes of session `sid` (a browser runs in a session of its own)."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.pid) == sid:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def no_tracebacks(daemon: Daemon) -> None:
    assert daemon.alive(), daemon.log_text()[-3000:]
    assert not daemon.tracebacks(), daemon.tracebacks()[0]


def test_the_soft_limit_is_raised_to_the_hard_limit(make_daemon: Any) -> None:
    daemon = make_daemon(config=config_text(limits={"max_runtimes": 2}), nofile=64,
                         nofile_hard=4096)
    limits = Path(f"/proc/{daemon.pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert line.split()[3:5] == ["4096", "4096"], line
    with Client(daemon.socket) as bd:
        status = bd.status()
        assert status["limits"]["nofile"] == 4096
        caps = {name: b["limit"] for name, b in status["budgets"].items()}
    # The caps, at their cost in descriptors, leave the daemon's reserve (64 + 16 per runtime).
    cost = (caps["rpc_connections"] + 2 * caps["cdp_sockets"] + 2 * caps["cdp_pending"]
            + caps["lease_ports"] + 2 * caps["relay_connections"])
    assert cost <= 4096 - (64 + 16 * 2), caps
    assert min(caps.values()) >= 200, caps
    no_tracebacks(daemon)


def test_idle_cdp_connections_past_the_budget(make_daemon: Any) -> None:
    daemon = low_limit_daemon(make_daemon)
    with Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="idle")
        lease = runtime.connections.create(ttl_s=120)
        assert lease.endpoint is not None
        port = cdp_port(bd)
        limit = budgets(bd)["cdp_pending"]["limit"]
        assert limit < NOFILE
        # More idle connections than the daemon has descriptors: each sends nothing.
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(limit)]
        wait_for(lambda: budgets(bd)["cdp_pending"]["in_use"] == limit, 5, "the budget to fill")
        over = [socket.create_connection(("127.0.0.1", port)) for _ in range(NOFILE + 100)]
        try:
            # The excess is answered at once: a 503 naming the budget, then the close.
            for sock in over:
                reply = read_all(sock, 5)
                assert status_of(reply) == 503, reply[:200]
                body = json.loads(reply.partition(b"\r\n\r\n")[2])
                assert body["code"] == "daemon.resources_exhausted"
            # The daemon serves RPC meanwhile, and new attaches are turned away cleanly.
            status = bd.status()
            assert status["budgets"]["cdp_pending"]["turned_away"] >= NOFILE + 100
            assert status_of(exchange(port, raw_ws_request(port, "/cdp/x/y"))) == 503
            # The silent ones are closed after the header deadline (1 s here).
            started = time.monotonic()
            for sock in idle:
                assert read_all(sock, 5) == b""
            assert time.monotonic() - started < 4
        finally:
            for sock in idle + over:
                sock.close()
        wait_for(lambda: budgets(bd)["cdp_pending"]["in_use"] == 0, 5, "the budget to drain")
        with CdpSocket(lease.endpoint.url) as cdp:  # recovered
            assert cdp.call("Browser.getVersion")["result"]["product"]
        runtime.stop()
    lines = [line for line in daemon.log_text().splitlines() if "turning new ones away" in line]
    assert 1 <= len(lines) <= 10, lines  # throttled: one a second at most
    no_tracebacks(daemon)
    REPORT.faults["idle cdp connections past the budget"] += 1
    finish(daemon)


def test_proxied_sockets_past_the_budget(make_daemon: Any) -> None:
    daemon = low_limit_daemon(make_daemon, cdp_sockets=3)
    with Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="sockets")
        lease = runtime.connections.create(ttl_s=120)
        assert lease.endpoint is not None
        port = cdp_port(bd)
        path = "/" + lease.endpoint.url.split("/", 3)[3]
        held = [CdpSocket(lease.endpoint.url) for _ in range(3)]
        try:
            reply = exchange(port, raw_ws_request(port, path))
            assert status_of(reply) == 503, reply[:300]
            body = json.loads(reply.partition(b"\r\n\r\n")[2])
            assert body["code"] == "daemon.resources_exhausted" and "3" in body["message"]
            for cdp in held:  # the sockets already in go on
                assert cdp.call("Browser.getVersion")["result"]["product"]
            assert budgets(bd)["cdp_sockets"] == {"limit": 3, "in_use": 3, "turned_away": 1}
        finally:
            held.pop().close()
        wait_for(lambda: budgets(bd)["cdp_sockets"]["in_use"] == 2, 5, "a socket to go")
        with CdpSocket(lease.endpoint.url) as cdp:
            assert cdp.call("Browser.getVersion")["result"]["product"]
        for cdp in held:
            cdp.close()
        runtime.stop()
    no_tracebacks(daemon)
    finish(daemon)


def test_leases_past_the_budget(make_daemon: Any) -> None:
    daemon = low_limit_daemon(make_daemon)
    with Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="leases")
        limit = budgets(bd)["lease_ports"]["limit"]
        leases = [runtime.connections.create(ttl_s=120) for _ in range(limit)]
        with pytest.raises(errors.ResourcesExhausted) as refused:
            runtime.connections.create(ttl_s=120)
        check_error({"code": refused.value.code, "message": refused.value.message,
                     "hint": refused.value.hint})
        assert refused.value.data == {"budget": "lease_ports", "limit": limit, "in_use": limit}
        # Nothing was made of the refused lease, and the others work.
        assert len(runtime.connections.list()) == limit
        url = leases[0].endpoint.url if leases[0].endpoint else ""
        with CdpSocket(url) as cdp:
            assert cdp.call("Browser.getVersion")["result"]["product"]
        for lease in leases[:3]:
            lease.delete()
        wait_for(lambda: budgets(bd)["lease_ports"]["in_use"] == limit - 3, 5,
                 "the revoked leases' ports to close")
        again = runtime.connections.create(ttl_s=120)
        assert again.endpoint is not None and again.endpoint.browser_url
        runtime.stop()
    no_tracebacks(daemon)
    REPORT.faults["leases past the budget"] += 1
    finish(daemon)


def test_rpc_connections_past_the_budget_and_without_hello(make_daemon: Any) -> None:
    daemon = low_limit_daemon(make_daemon)
    with Client(daemon.socket) as bd:
        limit = budgets(bd)["rpc_connections"]["limit"]
        # Silent connections are closed after the hello deadline (1 s here), with a last word.
        silent = RawRpc(daemon.socket, hello=False)
        started = time.monotonic()
        event = silent.next_event(started + 5)
        assert isinstance(event, wire.Notification) and event.method == "rpc.error", event
        assert event.payload["error"]["code"] == "rpc.hello_required"
        assert silent.next_event(started + 5) is None
        assert 0.9 < time.monotonic() - started < 4
        silent.close()
        # `bd` holds one slot; fill the rest with clients that said hello.
        held = [RawRpc(daemon.socket) for _ in range(limit - 1)]
        try:
            over = RawRpc(daemon.socket, hello=False)
            event = over.next_event(time.monotonic() + 5)
            assert isinstance(event, wire.Notification) and event.method == "rpc.error", event
            error = event.payload["error"]
            check_error(error)
            assert error["code"] == "daemon.resources_exhausted"
            assert error["data"] == {"budget": "rpc_connections", "limit": limit,
                                     "in_use": limit}
            assert over.next_event(time.monotonic() + 5) is None
            over.close()
            with pytest.raises(errors.ResourcesExhausted):  # the client says why
                Client(daemon.socket).__enter__()
            # Those in are served as before.
            assert bd.status()["budgets"]["rpc_connections"]["in_use"] == limit
            assert held[-1].call("daemon.status", {}).error is None
        finally:
            for rpc in held:
                rpc.close()
        wait_for(lambda: budgets(bd)["rpc_connections"]["in_use"] == 1, 5, "the slots back")
        with Client(daemon.socket) as fresh:
            assert fresh.status()["counts"]["clients"] == 2
    no_tracebacks(daemon)
    REPORT.faults["rpc connections past the budget"] += 1
    finish(daemon)


# ------------------------------------------------------------------------------ refusals


async def test_refused_cdp_requests_are_cheap(short_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A flood of refusals walks no process table and writes a bounded number of log lines."""
    walks = []
    real = psutil.net_connections

    def counted(*args: Any, **kwargs: Any) -> Any:
        walks.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(psutil, "net_connections", counted)
    config = attrs.evolve(make_config(short_dir, executable=HEADLESS_SHELL),
                          limits=LimitsConfig(max_runtimes=2))
    caplog.set_level(logging.WARNING, logger="browserd.daemon.core.leases")
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            daemon = await nursery.start(serve, config)
            port = daemon.registry.proxy.port
            requests = [raw_ws_request(port, "/cdp/conn_00000000000000000000000000/bad"),
                        raw_ws_request(port, "/nothing/here"),
                        raw_ws_request(port, "/cdp/x/y").replace(b"Host: 127.0.0.1",
                                                                 b"Host: evil.example"),
                        raw_ws_request(port, "/cdp/x/y").replace(
                            b"\r\n\r\n", b"\r\nOrigin: http://evil.example\r\n\r\n")]
            count = 400
            unexpected: list[bytes] = []
            started = time.monotonic()

            def flood() -> None:
                for i in range(count // 4):
                    reply = exchange(port, requests[i % len(requests)])
                    if status_of(reply) not in (401, 403, 404):
                        unexpected.append(reply[:200])

            threads = [threading.Thread(target=flood) for _ in range(4)]
            await trio.to_thread.run_sync(lambda: [t.start() for t in threads])
            await trio.to_thread.run_sync(lambda: [t.join() for t in threads])
            elapsed = time.monotonic() - started
            daemon.stop()
    assert unexpected == []
    assert walks == [], "a refusal walked the process table (psutil.net_connections)"
    refusals = [r for r in caplog.records if "CDP request refused" in r.getMessage()]
    assert 1 <= len(refusals) <= elapsed + 2, (len(refusals), elapsed)
    assert "more like it" in refusals[-1].getMessage() or len(refusals) == 1
    REPORT.bad_inputs["cdp refusals"] += count


# ------------------------------------------------------------------------------ EMFILE


@contextmanager
def descriptors_left(free: int) -> Iterator[list[int]]:
    """Run the body with only `free` descriptors left to this process (their numbers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 64, hard))
    held: list[int] = []
    try:
        while True:
            try:
                held.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        spare = [held.pop() for _ in range(free)]
        for fd in spare:
            os.close(fd)
        yield spare
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False
    return True


async def test_a_launch_out_of_descriptors_fails_cleanly(tmp_path: Path) -> None:
    """Whichever descriptor a launch cannot get (its output pipe, Popen's, the pidfd), it fails
    with `daemon.resources_exhausted` and leaves no process and no descriptor behind."""
    from ..conftest import processes_using

    failures: list[str] = []
    async with trio.open_nursery() as pumps:
        for free in range(12):
            profile = tmp_path / f"profile-{free}"
            spec = LaunchSpec(HEADLESS_SHELL, profile)
            process: BrowserProcess | None = None
            with descriptors_left(free) as spare:
                try:
                    with trio.fail_after(30):
                        process = await BrowserProcess.launch(spec, pumps)
                except ApiError as exc:
                    assert exc.code == "daemon.resources_exhausted", exc.to_wire()
                    check_error(exc.to_wire())
                    failures.append(exc.message)
                    assert all(not _is_open(fd) for fd in spare), "a descriptor leaked"
            if process is not None:
                await process.stop(5)
                break
            assert processes_using(profile) == [], "a browser was left behind"
        else:
            raise AssertionError("no launch succeeded with 11 descriptors to spare")
        pumps.cancel_scope.cancel()
    assert len(failures) >= 2, failures  # at least the output pipe and Popen's own
    REPORT.faults["launch out of descriptors"] += len(failures)


def test_no_emfile_ends_the_daemon(make_daemon: Any) -> None:
    """Caps set above what the limit allows: the daemon really runs out of descriptors, and
    its accept loops, orphan reaper, resource monitor, leases and launches all live through
    it."""
    config = config_text(limits={"max_runtimes": 3, "rpc_connections": 1000,
                                 "lease_ports": 1000, "cdp_pending": 1000},
                         resources={"sample_interval_s": 0.5})
    daemon = make_daemon(config=config, nofile=128)
    with Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="fds")
        before = {p.pid for p in descendants(daemon.pid)}
        doomed = bd.runtimes.browser.launch(name="doomed")
        (doomed_main,) = [p for p in descendants(daemon.pid)
                          if p.pid not in before and p.ppid() == daemon.pid]
        held: list[socket.socket] = []
        for _ in range(300):  # far past 128: the accept loop meets EMFILE, the backlog fills
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(str(daemon.socket))
            except BlockingIOError:
                sock.close()
                break
            held.append(sock)
        wait_for(lambda: daemon.resources().fds >= 124, 10, "the daemon to run out of fds")
        wait_for(lambda: "reading /proc failed" in daemon.log_text(), 10,
                 "the orphan reaper to meet EMFILE")
        # Starved, it still answers on open connections, cleanly.
        for method, params in [
            ("daemon.status", {}), ("runs.events.list", {"run_id": runtime.active_run_id}),
            ("connections.create", {"name": "fds"}), ("runtimes.stats", {"name": "fds"}),
        ]:
            try:
                bd.call(method, params)
            except errors.BrowserdError as exc:
                check_error({"code": exc.code, "message": exc.message, "hint": exc.hint})
        with pytest.raises(errors.ResourcesExhausted):
            bd.runtimes.browser.launch(name="more")
        assert bd.runtimes.get("more").status in ("stopped", "failed")
        # A stop reads /proc at every step: out of descriptors, it kills the browser's group
        # at once (no descriptor needed), and the browser's own connections, closing, give
        # back what the rest of the stop needs.
        doomed.stop()
        assert bd.runtimes.get("doomed").status == "stopped"
        assert not in_session(doomed_main.pid), "the stop left browser processes behind"
        assert "out of descriptors while stopping" in daemon.log_text()
        time.sleep(2.5)  # the reaper and the monitor go round again at EMFILE
        assert daemon.alive(), daemon.log_text()[-3000:]
        for sock in held:
            sock.close()
        # Fds back: new clients, new leases, attaches and launches work.
        wait_for(lambda: daemon.resources().fds < 60, 15, "the daemon to release fds")
        with Client(daemon.socket) as fresh:
            assert fresh.status()["counts"]["active_runtimes"] == 1
            lease = fresh.runtimes.get("fds").connections.create(ttl_s=60)
            assert lease.endpoint is not None
            with CdpSocket(lease.endpoint.url) as cdp:
                assert cdp.call("Browser.getVersion")["result"]
            assert fresh.runtimes.browser.launch(name="more").status == "active"
            for name in ("fds", "more"):
                fresh.runtimes.get(name).stop()
    no_tracebacks(daemon)
    REPORT.faults["fd exhaustion"] += 1
    finish(daemon)
