"""The SSH path end to end: `browserctl dial-stdio`, Client(host="ssh://..."), forwards, contexts.

Everything goes through a real OpenSSH server (tests/sshd.py: its own host key, an authorized
key made for the test, loopback only). The far daemon is a real `browserd` on this machine with
its own socket, which sshd hands to sessions through SetEnv; the far `browserctl` is the
venv's, named by BROWSERD_REMOTE_BROWSERCTL, as a user whose browserctl is not on the SSH
session's PATH would name it. Each failure case is bounded in time and leaves no ssh behind.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import psutil
import pytest
import trio
from playwright.sync_api import sync_playwright

from browserd.client import AsyncClient, Client, errors, wire
from browserd.client.contexts import ContextStore, destination
from browserd.client.session import hello_params
from browserd.client.ssh import SshTarget

from .conftest import BIN, REPO, DaemonProcess, assert_no_processes, serve_pages
from .sshd import Sshd, free_port, sshd_available
from .test_pytest_plugin import run_user_suite

PAGE = b"<!doctype html><title>far page</title><h1 id=greeting>hello from afar</h1>"
BOUND_S = 20.0  # every failure must be reported within this
STARTED = time.time()  # control directories older than this are not ours


@pytest.fixture(scope="module")
def far(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Sshd]]:
    """A daemon with its own socket, and an sshd whose sessions reach it."""
    missing = sshd_available()
    assert missing is None, missing  # `make test` installs it (scripts/ensure-ssh.sh)
    base = Path(tempfile.mkdtemp(prefix="bd-ssh-", dir="/tmp"))  # short: socket paths
    (base / "far").mkdir()
    daemon = DaemonProcess(base / "far")
    daemon.start()
    sshd = Sshd(base / "sshd", {"BROWSERD_SOCKET": str(daemon.socket)})
    try:
        sshd.start()
        yield daemon, sshd
    finally:
        sshd.stop()
        daemon.stop()
        assert_no_processes(daemon.state_dir)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ssh_env(far: tuple[DaemonProcess, Sshd], monkeypatch: pytest.MonkeyPatch) -> Sshd:
    """This process's environment pointed at the test sshd, as a user would set it."""
    _, sshd = far
    monkeypatch.setenv("BROWSERD_SSH_COMMAND", sshd.ssh_command())
    monkeypatch.setenv("BROWSERD_REMOTE_BROWSERCTL", str(BIN / "browserctl"))
    monkeypatch.delenv("BROWSERD_HOST", raising=False)
    return sshd


@pytest.fixture
def web_page() -> Iterator[str]:
    with serve_pages({"/": ("text/html", PAGE)}) as base:
        yield base + "/"


def ssh_children() -> list[psutil.Process]:
    """This process's ssh children that are still alive (zombies count: nobody reaped them)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() == "ssh":
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def assert_no_ssh_left(within_s: float = 3.0) -> None:
    """No ssh child of this process, nor a control directory of this process's clients."""
    deadline = time.monotonic() + within_s
    while (left := ssh_children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"ssh processes left behind: {[(p.pid, p.cmdline()) for p in left]}"
    gc.collect()  # a link nobody closed removes its directory when collected
    dirs = [d for d in Path("/tmp").glob("browserd-ssh-*") if d.stat().st_mtime >= STARTED]
    assert not dirs, f"control directories left behind: {dirs}"


def drive_page(cdp_url: str, page_url: str) -> str:
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(cdp_url, timeout=20_000)
        page = browser.contexts[0].new_page()
        page.goto(page_url)
        text = page.inner_text("#greeting")
        page.close()
        browser.close()
        return text


def puppeteer_attach(how: str, endpoint: str, page_url: str) -> dict[str, object]:
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    assert (REPO / "node_modules" / "puppeteer-core").is_dir(), "run `npm ci` (make test does)"
    done = subprocess.run([node, str(REPO / "tests" / "js" / "puppeteer_attach.mjs"), how,
                           endpoint, page_url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"puppeteer failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- dial-stdio --------------------------------------------------------------------------


def test_dial_stdio_bridges_stdin_and_stdout_to_the_socket(
        far: tuple[DaemonProcess, Sshd]) -> None:
    daemon, _ = far
    proc = subprocess.Popen([str(BIN / "browserctl"), "--socket", str(daemon.socket),
                             "dial-stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        conn = wire.Connection()
        proc.stdin.write(conn.send_request(1, "hello", hello_params("test")))
        proc.stdin.write(conn.send_request(2, "daemon.status", {}))
        proc.stdin.flush()
        answers: dict[int, object] = {}
        reader = threading.Thread(target=_read_answers, args=(proc.stdout, conn, answers, 2))
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "no answers through dial-stdio within 10 s"
        assert isinstance(answers[1], dict) and answers[1]["api_level"] == 1
        assert isinstance(answers[2], dict) and answers[2]["socket"] == str(daemon.socket)
        proc.stdin.close()  # stdin ends: the bridge tells the daemon, which closes; it exits
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_answers(stream: object, conn: wire.Connection, answers: dict[int, object],
                  count: int) -> None:
    while len(answers) < count:
        data = os.read(stream.fileno(), 65536)  # type: ignore[attr-defined]
        if not data:
            return
        conn.receive_data(data)
        while (event := conn.next_event()) is not wire.NEED_DATA:
            if isinstance(event, wire.Response):
                answers[event.msgid] = event.result if event.error is None else event.error


def test_dial_stdio_without_a_daemon_says_so(tmp_path: Path) -> None:
    done = subprocess.run([str(BIN / "browserctl"), "--socket", str(tmp_path / "none.sock"),
                           "dial-stdio"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=10)
    assert done.returncode == 1
    assert "client.daemon_unavailable" in done.stderr and "none.sock" in done.stderr


# -- the tour through ssh ----------------------------------------------------------------


def test_tour_through_ssh(ssh_env: Sshd, web_page: str) -> None:
    with Client(host=ssh_env.url, connect_timeout=BOUND_S) as bd:
        assert bd.host == ssh_env.url and bd.socket_path is None
        runtime = bd.runtimes.browser.launch(name="far-tour")
        assert runtime.status == "active"
        conn = runtime.connections.create(ttl_s=120)
        endpoint = conn.endpoint
        assert endpoint is not None
        far_status = bd.status()
        far_port = int(far_status["cdp_base_url"].rsplit(":", 1)[1])
        for url in (endpoint.url, endpoint.http_url, endpoint.browser_url):
            assert url.split("//", 1)[1].startswith("127.0.0.1:")
            assert f":{far_port}/" not in url + "/", f"{url} is not the local forward"
        assert drive_page(endpoint.url, web_page) == "hello from afar"
        assert drive_page(endpoint.http_url, web_page) == "hello from afar"
        # Puppeteer's browserURL: the lease's own origin, forwarded, whose discovery names
        # the forward of the proxy (not the far port)
        with urllib.request.urlopen(endpoint.browser_url + "/json/version", timeout=10) as r:
            version = json.load(r)
        assert version["webSocketDebuggerUrl"].startswith(endpoint.url.split("/cdp/")[0])
        seen = puppeteer_attach("browserURL", endpoint.browser_url, web_page)
        assert seen["title"] == "far page"
        seen = puppeteer_attach("browserWSEndpoint", endpoint.url, web_page)
        assert seen["title"] == "far page"

        run = runtime.current_run()
        runtime.stop()
        events = run.events.list()
        types = [e.type for e in events]
        for expected in ("connection.created", "connection.attached", "connection.detached"):
            assert expected in types
        assert [e.status for e in events if e.type == "runtime.lifecycle"] == [
            "starting", "active", "stopping", "ended"]
        runtime.delete()
    assert_no_ssh_left()
    with pytest.raises(OSError):  # the forwards went with the client
        socket.create_connection(("127.0.0.1", int(endpoint.url.split(":")[2].split("/")[0])),
                                 timeout=2).close()


def _local_page(url: str, far_port: int) -> str:
    """GET a page the far daemon serves, through the client's forward; its HTML."""
    assert url.startswith("http://127.0.0.1:") and f":{far_port}/" not in url, url
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html")
        return str(reply.read().decode())


def test_view_replay_and_dashboard_pages_through_ssh(ssh_env: Sshd) -> None:
    """The far daemon's web pages (a live view, a run's replay, the dashboard) open here."""
    with Client(host=ssh_env.url, connect_timeout=BOUND_S) as bd:
        far_port = int(bd.status()["cdp_base_url"].rsplit(":", 1)[1])
        runtime = bd.runtimes.browser.launch(name="far-pages", record=True)
        view = runtime.connections.create(protocol="view", ttl_s=60)
        assert view.endpoint is not None
        assert "data-browserd-view" in _local_page(view.endpoint.url, far_port)
        _local_page(bd.ui_url(), far_port)
        run = runtime.current_run()
        runtime.stop()
        _local_page(run.replay_url(), far_port)
        runtime.delete()
    assert_no_ssh_left()


def test_revoking_a_lease_closes_its_origin_forward(ssh_env: Sshd) -> None:
    with Client(host=ssh_env.url, connect_timeout=BOUND_S) as bd:
        runtime = bd.runtimes.browser.launch(name="far-revoke")
        conn = runtime.connections.create(ttl_s=60)
        assert conn.endpoint is not None
        origin_port = int(conn.endpoint.browser_url.rsplit(":", 1)[1])
        socket.create_connection(("127.0.0.1", origin_port), timeout=2).close()
        conn.delete()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", origin_port), timeout=2).close()
        runtime.stop()
        runtime.delete()
    assert_no_ssh_left()


async def test_async_client_follows_a_run_through_ssh(ssh_env: Sshd) -> None:
    with trio.fail_after(90):
        async with AsyncClient(host=ssh_env.url, connect_timeout=BOUND_S) as bd:
            runtime = await bd.runtimes.browser.launch(name="far-follow")
            run = await runtime.current_run()
            seen: list[str] = []

            async def follow() -> None:
                async for event in run.events.follow():
                    seen.append(f"{event.type}:{event.status}")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                conn = await runtime.connections.create(ttl_s=60)
                assert conn.endpoint is not None
                await conn.delete()
                await runtime.stop()
                # follow ends by itself once the run has ended
            assert seen[0] == "runtime.lifecycle:starting"
            assert any(s.startswith("connection.created") for s in seen)
            assert seen[-1] == "runtime.lifecycle:ended"
            await runtime.delete()
    assert_no_ssh_left()


def _line_within(stream: IO[str], timeout_s: float) -> str:
    """The next line of ``stream``, or fail after ``timeout_s``."""
    ready, _, _ = select.select([stream], [], [], timeout_s)
    assert ready, f"no output within {timeout_s} s"
    return stream.readline().strip()


def test_browserctl_host_and_contexts(ssh_env: Sshd, tmp_path: Path, web_page: str) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("BROWSERD_SOCKET", None)
    env["BROWSERD_SOCKET"] = ""  # nothing local: only the context can lead to the daemon

    def ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(BIN / "browserctl"), *args], env=env, capture_output=True,
                              text=True, timeout=60)
        if check:
            assert done.returncode == 0, f"browserctl {args}: {done.stdout}\n{done.stderr}"
        return done

    out = ctl("--host", ssh_env.url, "launch", "far-cli").stdout
    assert "far-cli active" in out
    ctl("context", "create", "lab", "--host", ssh_env.url, "--description", "the test sshd")
    listing = ctl("context", "ls").stdout
    assert "default *" in listing and "lab" in listing and ssh_env.url in listing
    ctl("context", "use", "lab")
    assert ctl("context", "show").stdout.strip() == ssh_env.url
    names = [r["name"] for r in json.loads(ctl("ls", "--json").stdout)]
    assert "far-cli" in names
    # connect through ssh holds its forward while it runs, until Ctrl-C
    holder = subprocess.Popen([str(BIN / "browserctl"), "connect", "far-cli"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stderr is not None
        url = _line_within(holder.stdout, 30)
        assert url.startswith("ws://127.0.0.1:") and "/cdp/conn_" in url
        assert "forwarding through ssh://" in _line_within(holder.stderr, 10)
        assert drive_page(url, web_page) == "hello from afar"
        holder.send_signal(signal.SIGINT)
        assert holder.wait(15) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    ctl("stop", "far-cli")
    ctl("rm", "far-cli")
    refused = ctl("context", "rm", "lab", check=False)
    assert refused.returncode == 1 and "client.context_error" in refused.stderr
    ctl("context", "use", "default")
    ctl("context", "rm", "lab")
    bad = ctl("context", "create", "../x", "--host", ssh_env.url, check=False)
    assert bad.returncode == 1 and "not a valid context name" in bad.stderr
    bad = ctl("--host", "ftp://nope", "ls", check=False)
    assert bad.returncode == 1 and "client.invalid_host" in bad.stderr
    assert_no_ssh_left()


# -- failures: clear, bounded, nothing left behind ---------------------------------------


def _expect_unavailable(url: str, *, connect_timeout: float = BOUND_S) -> errors.BrowserdError:
    started = time.monotonic()
    with pytest.raises(errors.DaemonUnavailable) as caught:
        Client(host=url, connect_timeout=connect_timeout).open()
    elapsed = time.monotonic() - started
    assert elapsed < connect_timeout + 5, f"took {elapsed:.1f} s"
    assert_no_ssh_left()
    assert SshTarget.parse(url).host in caught.value.message
    return caught.value


def test_unknown_host_key(ssh_env: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv("BROWSERD_SSH_COMMAND", ssh_env.ssh_command(known_hosts=empty))
    error = _expect_unavailable(ssh_env.url)
    assert "Host key verification failed" in error.message
    assert "host key" in error.hint
    assert f"ssh -p {ssh_env.port} {ssh_env.user}@127.0.0.1" in error.hint


def test_refused_key(ssh_env: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True, timeout=30)
    monkeypatch.setenv("BROWSERD_SSH_COMMAND", ssh_env.ssh_command(key=stranger))
    error = _expect_unavailable(ssh_env.url)
    assert "Permission denied" in error.message
    assert "authorized_keys" in error.hint


def test_connection_refused(ssh_env: Sshd) -> None:
    error = _expect_unavailable(f"ssh://{ssh_env.user}@127.0.0.1:{free_port()}")
    assert "Connection refused" in error.message
    assert "sshd runs" in error.hint


def test_missing_remote_browserctl(ssh_env: Sshd, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROWSERD_REMOTE_BROWSERCTL", str(tmp_path / "nowhere" / "browserctl"))
    error = _expect_unavailable(ssh_env.url)
    assert error.data["exit_status"] == 127
    assert "BROWSERD_REMOTE_BROWSERCTL" in error.hint and "127.0.0.1" in error.hint


def test_no_daemon_on_the_far_side(ssh_env: Sshd, monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: Path) -> None:
    # The far browserctl runs, but finds no daemon at the socket it is given.
    monkeypatch.setenv("BROWSERD_REMOTE_BROWSERCTL",
                       f"{BIN / 'browserctl'} --socket {tmp_path / 'none.sock'}")
    error = _expect_unavailable(ssh_env.url)
    assert "client.daemon_unavailable" in error.message
    assert "not running" in error.hint


def test_silent_server_is_bounded_by_the_connect_timeout(ssh_env: Sshd) -> None:
    # Accepts TCP and never says a word: ssh would wait for its banner for ever.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        error = _expect_unavailable(f"ssh://{ssh_env.user}@127.0.0.1:{port}",
                                    connect_timeout=2.0)
    # Whichever gives up first: the client's own timer, or ssh's ConnectTimeout (the same
    # 2 s) during the banner exchange.
    assert "within 2 s" in error.message or "timed out" in error.message, error.message


# -- host resolution, without ssh --------------------------------------------------------


def test_destination_precedence(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), "XDG_RUNTIME_DIR": "/run/x"}
    assert str(destination(environ=env)) == "unix:///run/x/browserd/browserd.sock"
    store = ContextStore.from_env(env)
    store.create("lab", "ssh://me@lab:2222")
    store.use("lab")
    assert str(destination(environ=env)) == "ssh://me@lab:2222"
    assert str(destination(environ={**env, "BROWSERD_SOCKET": "/s.sock"})) == "unix:///s.sock"
    assert str(destination(environ={**env, "BROWSERD_HOST": "ssh://b"})) == "ssh://b"
    assert str(destination("ssh://c", environ={**env, "BROWSERD_HOST": "ssh://b"})) == "ssh://c"
    assert str(destination(socket_path="/p.sock", environ=env)) == "unix:///p.sock"
    assert str(destination(environ={**env, "BROWSERD_CONTEXT": "default"})).startswith("unix:")
    with pytest.raises(errors.ContextError):
        destination(environ={**env, "BROWSERD_CONTEXT": "ghost"})
    for bad in ("ssh://", "ssh://-oProxyCommand=x", "ssh://a/b", "ssh://a:99999", "http://a"):
        with pytest.raises(errors.InvalidHost):
            destination(bad, environ=env)
    target = SshTarget.parse("ssh://[::1]:22")
    assert target.host == "::1" and target.port == 22 and str(target) == "ssh://[::1]:22"


def test_an_unclosed_client_neither_holds_the_interpreter_nor_leaves_ssh(ssh_env: Sshd) -> None:
    script = ("import sys\nfrom browserd.client import Client\n"
              f"bd = Client(host={ssh_env.url!r})\nbd.status()\n"
              "print(bd.hello['peer']['pid'], flush=True)\n")  # exits without close()
    control_dirs = set(Path("/tmp").glob("browserd-ssh-*"))  # of other clients, if any
    started = time.monotonic()
    done = subprocess.run([str(BIN / "python"), "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 15
    bridge_pid = int(done.stdout.strip())  # the far `browserctl dial-stdio`
    # ssh saw its stdin close when the interpreter exited, and ended the session; the far
    # bridge saw its stdin end and left.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _reap_adopted_ssh()
        ssh_left = [p for p in psutil.process_iter(["name", "cmdline", "status"])
                    if p.info["name"] == "ssh" and p.info["status"] != psutil.STATUS_ZOMBIE
                    and str(ssh_env.port) in (p.info["cmdline"] or [])]
        if not ssh_left and not psutil.pid_exists(bridge_pid):
            _reap_adopted_ssh()  # it may have ended just now
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"left behind: ssh {ssh_left}, bridge alive "
                             f"{psutil.pid_exists(bridge_pid)}")
    assert not set(Path("/tmp").glob("browserd-ssh-*")) - control_dirs, "a control dir is left"


def _reap_adopted_ssh() -> None:
    """Reap the ssh of the exited client if this process adopted it: once a daemon has run
    in-process (the `daemon` fixture), pytest is a child subreaper, and orphans come here."""
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if child.name() == "ssh" and child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)


async def test_async_client_reports_a_missing_far_browserctl(
        ssh_env: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROWSERD_REMOTE_BROWSERCTL", str(tmp_path / "nowhere" / "browserctl"))
    with trio.fail_after(BOUND_S):
        with pytest.raises(errors.DaemonUnavailable) as caught:
            async with AsyncClient(host=ssh_env.url, connect_timeout=BOUND_S):
                pass
    assert caught.value.data["exit_status"] == 127
    assert "127.0.0.1" in caught.value.message
    assert_no_ssh_left()


async def test_async_client_is_bounded_by_its_connect_timeout(ssh_env: Sshd) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"ssh://{ssh_env.user}@127.0.0.1:{silent.getsockname()[1]}"
        with trio.fail_after(10), pytest.raises(errors.DaemonUnavailable) as caught:
            await AsyncClient(host=url, connect_timeout=1.5).open()
    assert "within 1.5 s" in caught.value.message
    assert_no_ssh_left()


def test_the_pytest_plugin_uses_the_far_daemon(far: tuple[DaemonProcess, Sshd], ssh_env: Sshd,
                                               tmp_path: Path) -> None:
    daemon, _ = far
    env = {k: v for k, v in os.environ.items() if k != "BROWSERD_SOCKET"}
    env["BROWSERD_HOST"] = ssh_env.url
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # no local daemon: the far one must be used
    runs_dir = daemon.state_dir / "runs"
    runs_before = set(runs_dir.iterdir()) if runs_dir.exists() else set()
    done = run_user_suite(tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    # The runtimes ran on the far daemon (a run each), and were deleted there.
    assert len(set(runs_dir.iterdir()) - runs_before) == 3
    runtimes = json.loads(daemon.ctl("ls", "--json").stdout)
    assert [r["name"] for r in runtimes if r["name"].startswith("pytest-")] == []
    assert not list(tmp_path.glob("browserd*")), "no local daemon was started"
    assert_no_ssh_left()


def test_losing_ssh_mid_session_is_connection_lost_naming_the_host(ssh_env: Sshd) -> None:
    bd = Client(host=ssh_env.url, connect_timeout=BOUND_S)
    try:
        bd.status()
        (ssh,) = ssh_children()
        ssh.kill()  # the link drops under an open client
        started = time.monotonic()
        with pytest.raises(errors.ConnectionLost) as caught:
            bd.status()
        assert time.monotonic() - started < 5
        assert ssh_env.url in caught.value.hint
    finally:
        bd.close()
    assert_no_ssh_left()


def test_doctor_through_ssh_checks_the_far_machine(far: tuple[DaemonProcess, Sshd],
                                                   ssh_env: Sshd, tmp_path: Path) -> None:
    """`doctor` is about the machine of the daemon browserctl talks to: with --host it runs
    there (the far daemon answers at the socket of the ssh session), not here."""
    daemon, _ = far
    env = {**os.environ, "BROWSERD_SOCKET": str(tmp_path / "nothing-here.sock")}
    done = subprocess.run([str(BIN / "browserctl"), "--host", ssh_env.url, "doctor", "--json"],
                          env=env, capture_output=True, text=True, timeout=60)
    report = json.loads(done.stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["daemon"]["status"] == "ok", checks["daemon"]
    assert str(daemon.socket) in json.dumps(report), "the far daemon's socket, not ours"
    assert f"doctor on {ssh_env.url}" in done.stderr
    assert done.returncode == (0 if report["healthy"] else 1)
    missing = subprocess.run(
        [str(BIN / "browserctl"), "--host", ssh_env.url, "doctor"],
        env={**env, "BROWSERD_REMOTE_BROWSERCTL": str(tmp_path / "nowhere" / "browserctl")},
        capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "BROWSERD_REMOTE_BROWSERCTL" in missing.stderr
    assert_no_ssh_left()
