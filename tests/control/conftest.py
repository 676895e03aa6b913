"""Fixtures for the control-surface tests (invocations, targets, files, leases, discovery).

A daemon in-process on chromium-headless-shell (fast to start, prints PDFs), an AsyncClient
with a launched runtime, and a small site served by the test.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import attrs
import pytest
import trio

from browserd.client import AsyncClient, AsyncRuntime
from browserd.daemon.service import Daemon, serve

from ..conftest import (
    DaemonProcess,
    assert_no_processes,
    finish_daemon,
    make_config,
    serve_pages,
    start_shell_daemon,
)

HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"

SITE: dict[str, tuple[str, bytes]] = {
    "/": ("text/html", b"<!doctype html><title>browserd control</title>"
                       b"<h1 id=greeting>hello</h1><p>second line</p>"),
    "/tall": ("text/html", b"<!doctype html><title>tall page</title>"
                           b"<div style='height:3000px;background:#c00'>tall</div>"),
    "/other": ("text/html", b"<!doctype html><title>other page</title>other"),
    "/upload": ("text/html", b"<!doctype html><title>upload</title><input id=f type=file>"
                             b"<script>document.getElementById('f').onchange = async (e) => {"
                             b"const f = e.target.files[0];"
                             b"document.title = f.name + ':' + (await f.text()); };</script>"),
}


@pytest.fixture
def site() -> Iterator[str]:
    """The pages of SITE served on 127.0.0.1; yields the base URL (no trailing slash)."""
    with serve_pages(SITE) as base:
        yield base


@pytest.fixture
def shell_process(short_dir: Path) -> Iterator[DaemonProcess]:
    """`browserd` as a subprocess, on chromium-headless-shell."""
    running = start_shell_daemon(short_dir)
    yield running
    finish_daemon(running)


@pytest.fixture
async def shell_daemon(short_dir: Path) -> AsyncIterator[Daemon]:
    """A daemon in the test's trio loop that runs chromium-headless-shell."""
    config = make_config(short_dir, executable=HEADLESS_SHELL)
    async with trio.open_nursery() as nursery:
        running: Daemon = await nursery.start(serve, config)
        yield running
        running.stop()
    assert_no_processes(config.state_dir)


@attrs.frozen
class Launched:
    daemon: Daemon
    bd: AsyncClient
    runtime: AsyncRuntime


@pytest.fixture
async def launched(shell_daemon: Daemon) -> AsyncIterator[Launched]:
    """A client and an active runtime "crm" on the shell daemon."""
    async with AsyncClient(shell_daemon.config.socket) as bd:
        with trio.fail_after(30):
            runtime = await bd.runtimes.browser.launch(name="crm")
        yield Launched(shell_daemon, bd, runtime)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def artifact_bytes(daemon: Daemon, artifact: dict[str, object]) -> bytes:
    """An artifact's bytes, read from the run's directory on disk."""
    path = daemon.config.state_dir / "runs" / str(artifact["run_id"]) / str(artifact["path"])
    return path.read_bytes()


T = TypeVar("T")


async def eventually(fetch: Callable[[], Awaitable[T]], ok: Callable[[T], bool],
                     interval_s: float = 0.02) -> T:
    """Fetch until `ok(value)`, then return the value (the daemon's state is remote: there
    is no event to wait on). Callers bound it with trio.fail_after."""
    while not ok(value := await fetch()):  # noqa: ASYNC110 - polling another process
        await trio.sleep(interval_s)
    return value
