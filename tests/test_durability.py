"""Durability: batch fsync on a timer, and a full disk under a live run.

The full-disk test mounts a small tmpfs on <state>/runs (root only, as CI runs) and fills it
while a runtime is active: the browser, its leases and CDP traffic, follow and stop must all
go on, and the run must say it is degraded and why.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

from browserd.client import AsyncClient
from browserd.client.errors import BrowserdError
from browserd.daemon.service import Daemon, serve
from browserd.daemon.store.eventlog import BATCH_FSYNC_INTERVAL_S

from .conftest import assert_no_processes, make_config

HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"


@pytest.fixture
async def daemon(nursery: trio.Nursery, short_dir: Path) -> AsyncIterator[Daemon]:
    config = make_config(short_dir, executable=HEADLESS_SHELL)
    with trio.fail_after(20):
        running: Daemon = await nursery.start(serve, config)
    yield running
    running.stop()


async def test_batch_mode_syncs_a_quiet_log_on_a_timer(daemon: Daemon) -> None:
    with trio.fail_after(60):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="quiet")
            rt = daemon.registry.runtimes[runtime.id]
            assert rt.log is not None and rt.log.fsync == "batch"
            await trio.sleep(BATCH_FSYNC_INTERVAL_S * 2)  # the syncer has seen the log
            assert rt.log.sync_in_background
            rt.log.append("test.quiet", {})
            assert rt.log.dirty  # no fsync on the appending thread in batch mode
            # A quiet period: the syncer's timer syncs the tail (bounded; under load its
            # thread may take a few rounds, and the observer may append meanwhile).
            with trio.move_on_after(BATCH_FSYNC_INTERVAL_S * 25):
                while rt.log.dirty:  # noqa: ASYNC110 - the syncer runs in a thread
                    await trio.sleep(BATCH_FSYNC_INTERVAL_S / 4)
            assert not rt.log.dirty, "the tail of a quiet log was left unsynced"
            await runtime.stop()


@pytest.fixture
def tiny_runs_disk(short_dir: Path) -> Iterator[Path]:
    """<state>/runs on a 512 KiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    runs = short_dir / "state" / "runs"
    runs.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(runs)],
                   check=True)
    try:
        yield runs
    finally:
        subprocess.run(["umount", "-l", str(runs)], check=False)


def fill(directory: Path) -> None:
    """Write a file until the filesystem is full."""
    with open(directory / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"\0" * 4096)
    probe = directory / "probe"
    with pytest.raises(OSError) as full:
        probe.write_bytes(b"x" * 8192)
    assert full.value.errno == errno.ENOSPC


async def test_a_full_disk_never_stops_the_runtime(
    daemon_on_tiny_disk: Daemon, tiny_runs_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = daemon_on_tiny_disk
    caplog.set_level(logging.WARNING)
    with trio.fail_after(90):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="full")
            run = await runtime.current_run()
            assert not run.degraded
            got: list[str] = []

            async def follow() -> None:
                async with aclosing(run.events.follow(types=["connection.*", "test.*",
                                                             "runtime.lifecycle"])) as events:
                    async for event in events:
                        got.append(event.type)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                await trio.sleep(0.5)
                await trio.to_thread.run_sync(fill, tiny_runs_disk)

                # Leases, the proxy and CDP work on a full disk.
                conn = await runtime.connections.create()
                assert conn.endpoint is not None
                async with open_websocket_url(conn.endpoint.url) as ws:
                    # Enough recorded commands to fill the log file's last page too.
                    for i in range(1, 80):
                        await ws.send_message(json.dumps({"id": i,
                                                          "method": "Browser.getVersion"}))
                        reply = json.loads(await ws.get_message())
                        assert "product" in reply["result"]
                while "connection.detached" not in got:  # noqa: ASYNC110 - the live stream misses nothing
                    await trio.sleep(0.05)
                run = await run.refresh()
                assert run.status == "active" and run.degraded
                assert run.degraded_reason is not None and "ENOSPC" in run.degraded_reason

                stopped = await runtime.stop()  # and so does stop
                assert stopped is not None and stopped.status == "ended"
            assert got[-1] == "runtime.lifecycle"
            final = await bd.runs.get(run.id)
            assert final.status == "ended" and final.degraded
            # A later launch on the same full disk is refused cleanly, not half-done.
            with pytest.raises(BrowserdError) as refused:
                await bd.runtimes.browser.launch(name="full")
            assert getattr(refused.value, "code", None) == "state.unwritable"
            assert (await runtime.refresh()).status in ("stopped", "failed")
    assert any("degraded" in r.getMessage() and "ENOSPC" in r.getMessage()
               for r in caplog.records)
    assert_no_processes(daemon.config.state_dir)


@pytest.fixture
async def daemon_on_tiny_disk(nursery: trio.Nursery, short_dir: Path,
                              tiny_runs_disk: Path) -> AsyncIterator[Daemon]:
    config = make_config(short_dir, executable=HEADLESS_SHELL)
    with trio.fail_after(20):
        running: Daemon = await nursery.start(serve, config)
    yield running
    running.stop()
