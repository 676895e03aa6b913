"""Large invocation outputs against a real daemon process: what stays in its memory.

Thirty `evaluate` results of 4-8 MiB used to stay in the daemon's invocation records (36 to
229 MiB of RSS, for good) and `invocations.list` built a 186 MB reply before refusing it. Now
each goes to an artifact of the run, the client reads it back, and the daemon's RSS must come
back within the load test's 10 % of its baseline.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from browserd.client import AsyncClient, Client, errors, wire

from .conftest import fill
from .harness import REPORT, Daemon, assert_no_orphans
from .test_faults import finish

RESULTS = 16
TOLERANCE = 0.10


def settled_rss(pid: int, bound: int, within_s: float = 15.0) -> int:
    """The process's RSS once it is within `bound` (the daemon gives freed memory back every
    10 s), or the last value seen after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        rss: int = psutil.Process(pid).memory_info().rss
        if rss <= bound or time.monotonic() > deadline:
            return rss
        time.sleep(0.5)


async def test_large_outputs_do_not_stay_in_the_daemons_memory(short_dir: Path) -> None:
    daemon = Daemon(short_dir / "d")
    daemon.start()
    try:
        async with AsyncClient(daemon.socket) as bd:
            with trio.fail_after(30):
                runtime = await bd.runtimes.browser.launch(name="big")
                await runtime.invocations.create("evaluate", {"expression": "1"})  # attached
            baseline = psutil.Process(daemon.pid).memory_info().rss
            sizes = [random.randint(4 << 20, 8 << 20) for _ in range(RESULTS)]
            with trio.fail_after(120):
                for size in sizes:
                    inv = await runtime.invocations.create(
                        "evaluate", {"expression": f"'0123456789abcdef'.repeat({size // 16})"},
                        timeout_s=60)
                    assert inv.output_truncated and len(inv.output) == size // 16 * 16
                    assert inv.output[-16:] == "0123456789abcdef", "the value, read back"
                page = await bd.call("invocations.list", {"runtime_id": runtime.id,
                                                          "limit": 1000})
            reply = len(wire.Connection().send_response(1, None, page))
            assert len(page["data"]) == RESULTS + 1 and page["next_cursor"] is None
            assert reply < 64 * 1024, reply
            bound = int(baseline * (1 + TOLERANCE))
            after = await trio.to_thread.run_sync(settled_rss, daemon.pid, bound)
            REPORT.notes.append(
                f"{RESULTS} evaluate results of 4-8 MiB ({sum(sizes) >> 20} MiB): daemon RSS "
                f"{baseline / 2**20:.1f} -> {after / 2**20:.1f} MiB; invocations.list reply "
                f"{reply} bytes")
            assert after <= bound, (f"RSS {baseline >> 20} -> {after >> 20} MiB after "
                                    f"{sum(sizes) >> 20} MiB of outputs")
            with trio.fail_after(20):
                await runtime.stop()
        assert not daemon.tracebacks(), daemon.tracebacks()
    finally:
        if daemon.alive():
            assert daemon.stop(timeout_s=30) == 0, daemon.log_text()
    assert_no_orphans(daemon.state_dir)


def test_an_output_a_full_disk_cannot_take_fails_cleanly(make_daemon: Any,
                                                         small_state_fs: Path) -> None:
    daemon = make_daemon()
    (small_state_fs / "filler").touch()  # while there is room (see fill)
    with Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="full")
        runtime.invocations.create("evaluate", {"expression": "1"})  # attached while there is room
        filler = fill(small_state_fs / "filler")
        with pytest.raises(errors.InvocationFailed) as failed:
            runtime.invocations.create("evaluate", {"expression": "'x'.repeat(1 << 20)"})
        error = failed.value.data["invocation"]["error"]
        assert error["data"]["cause"] == "state.unwritable", error
        assert "ENOSPC" in failed.value.message and failed.value.hint
        filler.unlink()
        # The run's control link lives on: with room again, the same works.
        again = runtime.invocations.create("evaluate", {"expression": "'y'.repeat(1 << 20)"})
        assert again.output == "y" * (1 << 20)
        runtime.stop()
    REPORT.faults["state dir full"] += 1
    finish(daemon)
