"""Faults: kill -9 of a browser, of a renderer and of the daemon mid-write; a full state dir.
Running out of file descriptors is test_descriptors.py's.

Each ends the same way: the daemon (restarted, for the daemon kill) serves, every run log is
whole (each line a valid event except possibly a torn last line, seq without gaps), every
acknowledged operation is in the log (data lost: zero), and after the daemon stops nothing
whose command line names the state dir is left.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from browserd.client import Client, errors

from .harness import (
    FAULT_CYCLES,
    REPORT,
    CdpSocket,
    Daemon,
    assert_gone,
    assert_no_orphans,
    check_error,
    check_run_logs,
    check_state_files,
    descendants,
    renderer_of,
)


def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def events_of(bd: Client, run_id: str) -> list[dict[str, Any]]:
    result: dict[str, Any] = bd.call("runs.events.list", {"run_id": run_id, "limit": 10_000})
    return list(result["data"])


def browser_pid(bd: Client, run_id: str) -> int:
    active = [e for e in events_of(bd, run_id) if e.get("status") == "active"]
    return int(active[0]["data"]["pid"])


def finish(daemon: Daemon) -> None:
    """The ending every fault test shares: logs whole, clean stop, nothing left."""
    logs = check_run_logs(daemon.state_dir)
    REPORT.events_checked += logs.events
    REPORT.disk_refused += logs.dropped
    check_state_files(daemon.state_dir)
    tree = descendants(daemon.pid)
    assert daemon.stop() == 0, daemon.log_text()[-3000:]
    assert_gone(tree)
    assert_no_orphans(daemon.state_dir)


# ------------------------------------------------------------------------------ browsers


def test_kill_9_of_a_browser(make_daemon: Any) -> None:
    daemon = make_daemon()
    with Client(daemon.socket) as bd:
        victim = bd.runtimes.browser.launch(name="victim")
        phoenix = bd.runtimes.browser.launch(name="phoenix", restart="on-failure")
        first_run = phoenix.active_run_id
        assert first_run is not None and victim.active_run_id is not None
        victim_tree = [psutil.Process(browser_pid(bd, victim.active_run_id))]
        victim_tree += victim_tree[0].children(recursive=True)
        os.kill(browser_pid(bd, victim.active_run_id), signal.SIGKILL)
        os.kill(browser_pid(bd, first_run), signal.SIGKILL)

        failed = wait_for(lambda: (r := bd.runtimes.get("victim")).status == "failed" and r,
                          15, "the killed browser's runtime to fail")
        (run,) = failed.runs.list()
        assert run.status == "failed" and run.end_reason == "crashed"
        assert run.failure is not None and run.failure["signal"] == signal.SIGKILL
        assert any(e["type"] == "alert" for e in events_of(bd, run.id))
        assert_gone(victim_tree)  # the zygotes and renderers of the killed browser too
        # on-failure: a new run, active again.
        restarted = wait_for(
            lambda: (r := bd.runtimes.get("phoenix")).status == "active"
            and r.active_run_id != first_run and r, 20, "the restart")
        assert restarted.active_run_id is not None
        again = bd.runtimes.browser.launch(name="victim")
        assert again.status == "active"
        for name in ("victim", "phoenix"):
            bd.runtimes.get(name).stop()
    REPORT.faults["browser kill -9"] += 2
    finish(daemon)


def test_kill_9_of_a_renderer(make_daemon: Any) -> None:
    daemon = make_daemon()
    with Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="tabs")
        lease = runtime.connections.create(ttl_s=120)
        assert lease.endpoint is not None
        with CdpSocket(lease.endpoint.url) as cdp:
            page = cdp.call("Target.createTarget", {"url": "data:text/html,<title>r</title>"})
            page_ids = {page["result"]["targetId"]} | {
                t["targetId"] for t in cdp.call("Target.getTargets")["result"]["targetInfos"]}
            renderer = wait_for(lambda: renderer_of(daemon.pid), 10, "a renderer")
            browser = browser_pid(bd, runtime.active_run_id or "")
            renderer.send_signal(signal.SIGKILL)
            psutil.wait_procs([renderer], timeout=5)
            # The page died, the browser did not: a new page works.
            fresh = cdp.call("Target.createTarget", {"url": "about:blank"})["result"]["targetId"]
            session = cdp.call("Target.attachToTarget", {"targetId": fresh, "flatten": True})
            session_id = session["result"]["sessionId"]
            answer = cdp.call("Runtime.evaluate", {"expression": "6 * 7"}, session_id=session_id)
            assert answer["result"]["result"]["value"] == 42
            assert psutil.pid_exists(browser)
        assert bd.runtimes.get("tabs").status == "active"
        run_id = runtime.active_run_id or ""
        crashed = wait_for(lambda: [e for e in events_of(bd, run_id)
                                    if e["type"] == "target.crashed"], 10,
                           "the observer's target.crashed event")
        # The renderer killed may have served the start page or ours (they share none).
        assert crashed[0]["target"]["id"] in page_ids, crashed
        runtime.stop()
    REPORT.faults["renderer kill -9"] += 1
    finish(daemon)


# ------------------------------------------------------------------------------ the daemon


class Churn:
    """Clients that keep the daemon writing (launches, stops, leases, attaches) until it dies,
    remembering every operation the daemon acknowledged."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.leases: list[tuple[str, str]] = []  # (run id, connection id), acknowledged
        self.runs: list[str] = []  # runs whose launch was acknowledged
        self.unexpected: list[BaseException] = []
        self.threads = [threading.Thread(target=self._guard, args=(fn,), daemon=True)
                        for fn in (self._launches, self._leases, self._leases, self._attaches)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a client hung after the daemon died"

    def _guard(self, fn: Any) -> None:
        try:
            with Client(self.daemon.socket) as bd:
                fn(bd)
        except (errors.ConnectionLost, errors.DaemonUnavailable):
            pass  # the daemon was killed: expected
        except errors.BrowserdError as exc:
            if exc.code not in ("daemon.shutting_down",):
                self.unexpected.append(exc)
        except OSError:
            pass  # a CDP socket cut by the kill
        except BaseException as exc:
            self.unexpected.append(exc)

    def _launches(self, bd: Client) -> None:
        for i in range(1000):
            runtime = bd.runtimes.browser.launch(name=f"churn-{i % 2}")
            self.runs.append(runtime.active_run_id or "")
            runtime.stop()

    def _leases(self, bd: Client) -> None:
        runtime = bd.runtimes.browser.launch(name="steady")
        while True:
            lease = runtime.connections.create(ttl_s=600)
            self.leases.append((lease.run_id, lease.id))

    def _attaches(self, bd: Client) -> None:
        runtime = bd.runtimes.browser.launch(name="steady")
        while True:
            lease = runtime.connections.create(ttl_s=600)
            self.leases.append((lease.run_id, lease.id))
            assert lease.endpoint is not None
            with CdpSocket(lease.endpoint.url) as cdp:
                cdp.call("Browser.getVersion")


def test_kill_9_of_the_daemon_mid_write(make_daemon: Any) -> None:
    rng = random.Random(8)
    lost = 0
    for cycle in range(FAULT_CYCLES):
        daemon = make_daemon()
        churn = Churn(daemon)
        churn.start()
        time.sleep(rng.uniform(1.5, 3.0) if cycle else 0.6)  # the first kill lands mid-launch
        tree = descendants(daemon.pid)
        daemon.kill()
        churn.join()
        assert not churn.unexpected, churn.unexpected[:3]
        # Browsers die with their daemon (parent-death signal), helpers included.
        assert_gone(tree)
        assert_no_orphans(daemon.state_dir)
        check_run_logs(daemon.state_dir)
        check_state_files(daemon.state_dir)

        daemon = make_daemon()  # reconciles what the dead daemon left
        with Client(daemon.socket) as bd:
            for runtime in bd.runtimes.list():
                assert runtime.status in ("stopped", "failed"), runtime
            for run in bd.runs.list():
                assert run.status in ("ended", "failed"), run
            seen: dict[str, set[str]] = {}
            for run_id, lease_id in churn.leases:
                if run_id not in seen:
                    seen[run_id] = {e["data"].get("connection_id") for e in events_of(bd, run_id)
                                    if e["type"] == "connection.created"}
                lost += lease_id not in seen[run_id]
            for run_id in churn.runs:
                assert events_of(bd, run_id)[0]["type"] == "runtime.lifecycle"
            assert bd.runtimes.browser.launch(name="steady").status == "active"
            bd.runtimes.get("steady").stop()
        REPORT.events_checked += check_run_logs(daemon.state_dir).events
        assert daemon.stop() == 0
        REPORT.faults["daemon kill -9"] += 1
        assert churn.leases or cycle == 0, "the churn never got going"
    REPORT.data_lost += lost
    assert lost == 0, f"{lost} acknowledged leases missing from their run logs"


# ------------------------------------------------------------------------------ resources


@pytest.fixture
def small_state_fs(short_dir: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs as the state dir (room for a headless profile, then filled up)."""
    state = short_dir / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(state)],
                   check=True)
    try:
        yield state
    finally:
        for proc in psutil.process_iter():
            try:
                if any(str(state) in part for part in proc.cmdline()):
                    proc.kill()
            except psutil.Error:
                continue
        subprocess.run(["umount", "-l", str(state)], check=False)


def fill(path: Path) -> Path:
    filler = path / "filler"
    with open(filler, "wb") as sink:
        try:
            while True:
                sink.write(b"\0" * 65536)
                sink.flush()
        except OSError:
            pass
    return filler


def call_clean(bd: Client, method: str, params: dict[str, Any]) -> Any:
    """Call; a failure must be a clean error (a documented code with a hint)."""
    try:
        return bd.call(method, params)
    except errors.BrowserdError as exc:
        check_error({"code": exc.code, "message": exc.message, "hint": exc.hint})
        return exc


def test_state_dir_on_a_full_filesystem(make_daemon: Any, small_state_fs: Path) -> None:
    daemon = make_daemon()
    with Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="full")
        before = runtime.connections.create(ttl_s=60)
        filler = fill(small_state_fs)
        # Everything answers, cleanly; the live browser goes on.
        for method, params in [
            ("daemon.status", {}), ("runtimes.list", {}),
            ("runs.events.list", {"run_id": runtime.active_run_id}),
            ("connections.create", {"name": "full"}), ("runtimes.launch", {"name": "other"}),
            ("spaces.create", {"name": "nospace"}), ("runtimes.update", {"name": "full",
                                                                          "metadata": {"a": 1}}),
            ("files.stage", {"name": "full", "path": "big.bin", "data": b"x" * (1 << 20)}),
        ]:
            call_clean(bd, method, params)
        assert bd.runtimes.get("full").status == "active"
        # A stop must complete even though the disk cannot take its records.
        call_clean(bd, "runtimes.stop", {"name": "full"})
        assert bd.runtimes.get("full").status == "stopped", "a full disk wedged the stop"
        filler.unlink()
        # Room again: everything works as before.
        again = bd.runtimes.browser.launch(name="full")
        lease = again.connections.create(ttl_s=60)
        assert lease.endpoint is not None
        with CdpSocket(lease.endpoint.url) as cdp:
            assert cdp.call("Browser.getVersion")["result"]
        again.stop()
        assert before.id
    REPORT.faults["state dir full"] += 1
    finish(daemon)

