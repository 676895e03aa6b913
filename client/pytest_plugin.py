"""The browserd pytest plugin: browsers for a test suite from browserd, instead of each suite
launching its own. Installed with the package (entry point ``pytest11``); nothing happens
until a test asks for one of its fixtures.

- ``browserd``: a blocking :class:`~browserd.client.Client` for the session. It talks to the
  daemon answering on ``$BROWSERD_SOCKET`` (or the default socket); with none there, the
  plugin starts a daemon of its own for the session, on temporary directories, and stops it
  at the end, leaving nothing behind. With ``$BROWSERD_HOST`` (or a current context) naming
  an ``ssh://`` host, it uses that machine's daemon instead.
- ``browserd_runtime``: a fresh ephemeral runtime for one test, stopped and deleted after it.
- ``browserd_cdp_url``: a CDP lease URL for that runtime (what ``connect_over_cdp`` takes).
- ``browserd_page``: a Playwright ``Page`` in that runtime's default context (needs
  ``pip install 'browserd[playwright]'``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._sync.client import Client
from ._sync.resources import Runtime
from .contexts import destination
from .errors import BrowserdError
from .paths import socket_path

__all__ = ["browserd", "browserd_cdp_url", "browserd_page", "browserd_runtime"]

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 45.0


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


@contextlib.contextmanager
def _own_daemon() -> Iterator[Path]:
    """A daemon of the session's own, on temporary directories; yields its socket. Its
    directories are removed once it has stopped (and with it every browser it ran)."""
    base = Path(tempfile.mkdtemp(prefix="browserd-pytest-", dir="/tmp"))  # short: a socket
    sock = base / "run" / "browserd.sock"
    config = base / "config.toml"
    config.write_text("")
    env = {**os.environ, "BROWSERD_SOCKET": str(sock), "BROWSERD_STATE_DIR": str(base / "state"),
           "BROWSERD_CONFIG": str(config)}
    log = open(base / "daemon.log", "wb")  # noqa: SIM115 - closed below, after the daemon
    daemon = subprocess.Popen([sys.executable, "-m", "browserd.daemon"], env=env,
                              stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(sock):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise pytest.UsageError(
                    "browserd: the daemon the plugin started did not come up:\n"
                    + (base / "daemon.log").read_text(errors="replace")[-4000:])
            time.sleep(0.05)
        yield sock
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def browserd() -> Iterator[Client]:
    """A blocking Client for the session: the running daemon's, else one of its own."""
    with contextlib.ExitStack() as stack:
        where = destination()
        if where.ssh is not None:  # $BROWSERD_HOST or a context: that machine's daemon
            yield stack.enter_context(Client(host=str(where.ssh), client_name="browserd-pytest",
                                             remote_browserctl=where.remote_browserctl))
            return
        path = where.socket_path or socket_path()
        if not _answers(path):
            path = stack.enter_context(_own_daemon())
        client = stack.enter_context(Client(path, client_name="browserd-pytest"))
        yield client


def _runtime_name(nodeid: str) -> str:
    """A runtime name for a test: readable, unique, and within the name rule."""
    tail = nodeid.rsplit("::", 1)[-1]
    readable = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in tail)[:40]
    digest = hashlib.sha256(f"{nodeid}{time.time_ns()}".encode()).hexdigest()[:10]
    return f"pytest-{readable}-{digest}".replace("--", "-")


@pytest.fixture
def browserd_runtime(browserd: Client, request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """A fresh ephemeral runtime for this test; stopped and deleted after it."""
    runtime = browserd.runtimes.browser.launch(name=_runtime_name(request.node.nodeid),
                                               metadata={"pytest": request.node.nodeid})
    try:
        yield runtime
    finally:
        with contextlib.suppress(BrowserdError):
            runtime.delete(force=True)


@pytest.fixture
def browserd_cdp_url(browserd_runtime: Runtime) -> str:
    """A CDP lease URL (ws://…) for this test's runtime, valid for an hour."""
    conn = browserd_runtime.connections.create(ttl_s=3600, label="pytest")
    assert conn.endpoint is not None
    return conn.endpoint.url


@pytest.fixture
def browserd_page(browserd_cdp_url: str) -> Iterator[Any]:
    """A Playwright Page in the test runtime's default context."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("browserd_page needs Playwright: pip install 'browserd[playwright]'",
                    pytrace=False)
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(browserd_cdp_url)
        page = browser.contexts[0].new_page()
        try:
            yield page
        finally:
            with contextlib.suppress(Exception):
                page.close()
            browser.close()  # over CDP this only disconnects; the runtime's stop ends it
