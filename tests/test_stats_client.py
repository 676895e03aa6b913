"""Resource figures and launch limits through the Client and browserctl.

`runtime.stats()` and `browserctl stats` (one table, JSON, and the refreshing stream until
Ctrl-C) against a real `browserd` subprocess on chromium-headless-shell; `launch` with a
memory limit (the run ends with `memory_limit`) and with `wait_s` (queueing for a slot).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from browserd.client import Client, Runtime, RuntimeStats, errors

from .conftest import BIN, DaemonProcess, finish_daemon, start_shell_daemon


@pytest.fixture
def one_slot_daemon(short_dir: Path) -> Iterator[DaemonProcess]:
    """One runtime at a time, and resource samples (memory-limit checks) every 0.3 s."""
    running = start_shell_daemon(
        short_dir, "[limits]\nmax_runtimes = 1\n[resources]\nsample_interval_s = 0.3\n"
    )
    yield running
    finish_daemon(running)


def wait_until_stopped(runtime: Runtime, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while runtime.refresh().status not in ("stopped", "failed"):
        assert time.monotonic() < deadline, f"{runtime.name} still {runtime.status}"
        time.sleep(0.1)


def test_runtime_stats_through_the_client(shell_daemon: DaemonProcess) -> None:
    with Client(shell_daemon.socket) as bd:
        runtime = bd.spaces.create("lab").runtimes.browser.launch("crm")
        stats = runtime.stats()
        assert isinstance(stats, RuntimeStats)
        assert (stats.runtime_id, stats.name, stats.space) == (runtime.id, "crm", "lab")
        assert stats.rss_bytes > 10 * 2**20, "a browser tree uses more than 10 MiB"
        # its PSS: shared pages once, where the summed RSS counts them once per process
        assert stats.memory_bytes is not None and 0 < stats.memory_bytes < stats.rss_bytes
        assert stats.processes >= 2, "browser plus at least one child"
        assert stats.cpu_percent >= 0 and stats.sampled_at.endswith("Z")
        assert stats.to_dict()["rss_bytes"] == stats.rss_bytes
        pages = stats.targets
        assert pages is not None

        # Targets count the browser's pages: open one more over CDP and it shows.
        conn = runtime.connections.create(ttl_s=60)
        assert conn.endpoint is not None
        with sync_playwright() as pw:
            browser = pw.chromium.connect_over_cdp(conn.endpoint.url, timeout=20_000)
            page = browser.contexts[0].new_page()
            assert runtime.stats().targets == pages + 1
            page.close()
            browser.close()

        runtime.stop()
        with pytest.raises(errors.RuntimeNotActive):
            runtime.stats()


def stats_rows(output: str) -> dict[str, list[str]]:
    """`browserctl stats` table -> {name: [space, cpu, mem number, mem unit, procs, targets]}."""
    header, *rows = output.strip().splitlines()
    assert header.split() == ["NAME", "SPACE", "CPU", "%", "MEM", "PROCS", "TARGETS"]
    return {row.split()[0]: row.split()[1:] for row in rows}


def test_browserctl_stats(shell_daemon: DaemonProcess) -> None:
    ctl = shell_daemon.ctl
    with Client(shell_daemon.socket) as bd:  # set-up through the Client: fewer processes
        bd.runtimes.browser.launch("a")
        b = bd.spaces.create("lab").runtimes.browser.launch("b")

    rows = stats_rows(ctl("stats", "--no-stream").stdout)
    assert set(rows) == {"a", "b"}
    space, cpu, mem, unit, procs, targets = rows["b"]
    assert space == "lab" and cpu.endswith("%") and unit in ("MiB", "GiB")
    assert float(mem) > 10 and int(procs) >= 2 and targets.isdigit()

    document = json.loads(ctl("stats", "--json").stdout)
    assert [(d["space"], d["name"]) for d in document] == [("default", "a"), ("lab", "b")]
    for entry in document:
        assert entry["status"] == "active" and entry["runtime_id"].startswith("rt_")
        assert entry["rss_bytes"] > 10 * 2**20 and entry["processes"] >= 2
        assert 0 < entry["memory_bytes"] < entry["rss_bytes"]
    # MEM is the PSS: well under the summed RSS (less than half of it for Chromium)
    mib = float(mem) * (1024 if unit == "GiB" else 1)
    assert mib * 2**20 < 0.9 * document[1]["rss_bytes"], (mem, unit, document[1])

    assert set(stats_rows(ctl("stats", "a", "--no-stream").stdout)) == {"a"}
    [only_b] = json.loads(ctl("stats", "--space", "lab", "--json").stdout)
    assert only_b["name"] == "b"

    # A stopped runtime drops out of the listing; asked for by name it shows, with no figures.
    with Client(shell_daemon.socket) as bd:
        bd.space("lab").runtimes.get("b").stop()
    assert [d["name"] for d in json.loads(ctl("stats", "--json").stdout)] == ["a"]
    [stopped] = json.loads(ctl("stats", "b", "--space", "lab", "--json").stdout)
    assert stopped["runtime_id"] == b.id
    assert stopped["status"] == "stopped" and stopped["rss_bytes"] is None
    assert stopped["memory_bytes"] is None
    missing = ctl("stats", "nope", "--no-stream", check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("error: runtime.not_found: ")


def test_browserctl_stats_streams_until_ctrl_c(shell_daemon: DaemonProcess) -> None:
    shell_daemon.ctl("launch", "a")
    proc = subprocess.Popen(
        [str(BIN / "browserctl"), "stats", "--interval", "0.3"],
        env=shell_daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    output = b""
    try:
        deadline = time.monotonic() + 20
        while output.count(b"NAME") < 3:  # three frames: it refreshes
            assert time.monotonic() < deadline, f"no refresh: {output!r}"
            if select.select([proc.stdout], [], [], 0.5)[0]:
                output += os.read(proc.stdout.fileno(), 65536)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0, "Ctrl-C is the normal way out"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    assert "Traceback" not in stderr
    text = output.decode()
    assert "\x1b[" not in text, "no screen control codes when stdout is not a terminal"
    frames = [frame for frame in text.split("\n\n") if frame.strip()]
    assert len(frames) >= 3
    assert all(set(stats_rows(frame)) == {"a"} for frame in frames[:3])


def test_launch_with_memory_limit_and_wait(one_slot_daemon: DaemonProcess) -> None:
    ctl = one_slot_daemon.ctl
    with Client(one_slot_daemon.socket) as bd:
        # A browser tree is far over 64 MiB: the monitor stops it at its next sample.
        big = bd.runtimes.browser.launch("big", memory_limit_mb=64)
        assert big.config["memory_limit_mb"] == 64
        run = big.current_run()
        wait_until_stopped(big, within_s=20)
        assert run.refresh().end_reason == "memory_limit"

        launched = json.loads(ctl("launch", "one", "--memory-limit", "8192", "--json").stdout)
        assert launched["config"]["memory_limit_mb"] == 8192 and launched["status"] == "active"

        # The one slot is taken: no wait fails at once, a short wait fails after it.
        started = time.monotonic()
        with pytest.raises(errors.ConcurrentQuotaExceeded):
            bd.runtimes.browser.launch("two", wait_s=0.5)
        assert time.monotonic() - started >= 0.5
        refused = ctl("launch", "two", "--wait", "0.2", check=False)
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: browser.concurrent_quota_exceeded: ")

        # A long wait gets the slot as soon as it frees.
        got: list[Runtime | BaseException] = []

        def queue_up() -> None:
            try:
                got.append(bd.runtimes.browser.launch("two", wait_s=30))
            except BaseException as exc:
                got.append(exc)

        waiter = threading.Thread(target=queue_up)
        waiter.start()
        time.sleep(0.5)
        assert not got, "it waits while the slot is taken"
        stopped_at = time.monotonic()
        bd.runtimes.get("one").stop()
        waiter.join(timeout=30)
        assert not waiter.is_alive()
        [two] = got
        assert isinstance(two, Runtime) and two.status == "active", two
        assert time.monotonic() - stopped_at < 20
        two.stop()
