"""Shared fixtures: a real daemon (in-process or as a subprocess) on sockets in a short temp dir.

Unix socket paths are limited to 107 bytes, so daemons live under a short /tmp directory rather
than pytest's deep tmp_path.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
import trio

from browserd.client import Client
from browserd.daemon.base.config import BrowserConfig, Config
from browserd.daemon.service import Daemon, serve

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


Pages = dict[str, tuple[str, bytes]]  # path -> (content type, body)


@contextlib.contextmanager
def serve_pages(pages: Pages) -> Iterator[str]:
    """Serve `pages` on 127.0.0.1 from a thread; yields the base URL (no trailing slash).
    Unknown paths get 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            content_type, body = pages.get(self.path.split("?")[0], ("text/plain", b""))
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_config(base: Path, **browser: Any) -> Config:
    return Config(state_dir=base / "state", socket=base / "run" / "browserd.sock",
                  browser=BrowserConfig(**browser))


def processes_using(directory: Path) -> list[psutil.Process]:
    """Every live process whose command line names `directory` (browser trees name their
    --user-data-dir)."""
    found = []
    needle = str(directory)
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(needle in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def assert_no_processes(directory: Path, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while processes_using(directory):
        if time.monotonic() > deadline:
            left = [(p.pid, p.name()) for p in processes_using(directory)]
            raise AssertionError(f"processes still using {directory}: {left}")
        time.sleep(0.05)


@pytest.fixture
async def daemon(short_dir: Path) -> AsyncIterator[Daemon]:
    """A daemon served in the test's own trio loop."""
    config = make_config(short_dir)
    async with trio.open_nursery() as nursery:
        running: Daemon = await nursery.start(serve, config)
        yield running
        running.stop()
    assert_no_processes(config.state_dir)


class DaemonProcess:
    """`browserd` run as a real subprocess, as a user would run it."""

    def __init__(self, base: Path, extra_env: dict[str, str] | None = None) -> None:
        self.base = base
        self.socket = base / "run" / "browserd.sock"
        self.state_dir = base / "state"
        self.env = {
            **os.environ,
            "BROWSERD_SOCKET": str(self.socket),
            "BROWSERD_STATE_DIR": str(self.state_dir),
            "BROWSERD_CONFIG": str(base / "config.toml"),
            **(extra_env or {}),
        }
        if not (base / "config.toml").exists():
            (base / "config.toml").write_text("")
        self.log = base / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "browserd")], env=self.env,
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while not socket_accepts(self.socket):
            if self.proc.poll() is not None:
                raise AssertionError(f"browserd exited early:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"browserd did not bind in time:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 40.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(
                f"browserd did not stop in time:\n{self.log.read_text()}"
            ) from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def ctl(self, *args: str, check: bool = True, timeout_s: float = 60.0
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(BIN / "browserctl"), *args], env=self.env,
                                capture_output=True, text=True, timeout=timeout_s)
        if check and result.returncode != 0:
            raise AssertionError(f"browserctl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result


def socket_accepts(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


@pytest.fixture
def daemon_process(short_dir: Path) -> Iterator[DaemonProcess]:
    running = DaemonProcess(short_dir)
    running.start()
    yield running
    if running.proc is not None and running.proc.poll() is None:
        code = running.stop()
        assert code == 0, running.log.read_text()
    assert_no_processes(running.state_dir)


HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"


def start_shell_daemon(base: Path, extra_config: str = "") -> DaemonProcess:
    """`browserd` on chromium-headless-shell (faster to start), plus `extra_config` TOML."""
    (base / "config.toml").write_text(f'[browser]\nexecutable = "{HEADLESS_SHELL}"\n{extra_config}')
    running = DaemonProcess(base)
    running.start()
    return running


def finish_daemon(running: DaemonProcess) -> None:
    """Stop it as the `daemon_process` fixture does: exit 0, no browser process left."""
    if running.proc is not None and running.proc.poll() is None:
        code = running.stop()
        assert code == 0, running.log.read_text()
    assert_no_processes(running.state_dir)


@pytest.fixture
def shell_daemon(short_dir: Path) -> Iterator[DaemonProcess]:
    """`browserd` on the headless shell for one test (a module with a config of its own
    overrides this fixture), stopped after it with nothing left behind."""
    running = start_shell_daemon(short_dir)
    yield running
    finish_daemon(running)


@pytest.fixture
def bd(shell_daemon: DaemonProcess) -> Iterator[Client]:
    """A Client on `shell_daemon`, for set-up steps (fewer processes than browserctl)."""
    with Client(shell_daemon.socket) as client:
        yield client


@pytest.fixture
def pw() -> Iterator[Playwright]:
    """Playwright's sync API for the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture
def viewer(pw: Playwright) -> Iterator[Browser]:
    """A Chromium of the test's own (not a runtime's), to open the daemon's web pages in."""
    browser = pw.chromium.launch(executable_path=HEADLESS_SHELL)
    yield browser
    browser.close()
