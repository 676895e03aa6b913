"""Faults: kill -9 of a browser, of a renderer and of the daemon mid-write; a full state dir.
Running out of file descriptors is test_descriptors.py's.

Each ends the same way: the daemon (restarted, for the daemon kill) serves, every run log is
whole (each line a valid event except possibly a torn last line, seq without gaps), every
acknowledged operation is in the log (data lost: zero), and after the daemon stops nothing
whose command line names the state dir is left.
"""

from __future__ import annotations

import http.server
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from browserd.client import Client, Runtime, errors

from .conftest import fill
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
    config_text,
    descendants,
    renderer_of,
)

CHROMIUM = "/usr/bin/chromium"  # headless-shell often refuses Browser.setDownloadBehavior


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


STALL_SENT = 256 * 1024  # what the stalling server sends of each download before it stalls


@pytest.fixture
def stalling_site() -> Iterator[str]:
    """Pages with a download link each (`/page/NAME`), and downloads (`/files/NAME`) that send
    STALL_SENT bytes of the 8 MiB they announce, then stall until the test ends."""
    done = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            kind, _, name = self.path.strip("/").partition("/")
            if kind == "files":
                self._head("application/octet-stream", 8 * 1024 * 1024)
                self.wfile.write(b"p" * STALL_SENT)
                self.wfile.flush()
                done.wait(60)
                return
            body = (f'<!doctype html><title>{name}</title>'
                    f'<a id=dl download="{name}" href="/files/{name}">{name}</a>').encode()
            self._head("text/html", len(body))
            self.wfile.write(body)

        def _head(self, content_type: str, length: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(length))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    done.set()
    server.shutdown()
    server.server_close()


def start_download(runtime: Runtime, site: str, name: str) -> None:
    """A new page on `site`'s page for `name`, whose download link is clicked."""
    page = runtime.targets.create()
    runtime.invocations.create("navigate", {"url": f"{site}/page/{name}"}, target_id=page.id)
    runtime.invocations.create("evaluate", {"expression": "document.getElementById('dl').click()"},
                               target_id=page.id)


def download_events(bd: Client, run_id: str) -> list[dict[str, Any]]:
    return [e for e in events_of(bd, run_id) if e["type"] == "download"]


def test_kill_9_of_the_daemon_mid_download(make_daemon: Any, stalling_site: str,
                                           short_dir: Path) -> None:
    """Two downloads in flight when the daemon dies: one in the run's own staging folder, one
    in a folder a CDP client set. The next daemon records both as failed, removes the partial
    file from the run's folder, and touches nothing outside the run's directory."""
    config = config_text(executable=CHROMIUM)
    daemon = make_daemon(config=config)
    client_folder = short_dir / "client-downloads"
    client_folder.mkdir()
    outside = short_dir / "outside"
    outside.mkdir()
    (outside / "keep.bin").write_bytes(b"not the daemon's")
    with Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="fetcher")
        run_id = runtime.active_run_id or ""
        incoming = daemon.state_dir / "runs" / run_id / "artifacts" / ".incoming"
        start_download(runtime, stalling_site, "ours.bin")
        wait_for(lambda: [p for p in incoming.glob("*") if p.stat().st_size >= STALL_SENT],
                 20, "the partial file of the daemon's download")
        # A client sets its own folder (as Playwright does) and downloads into it.
        lease = runtime.connections.create(ttl_s=120)
        assert lease.endpoint is not None
        cdp = CdpSocket(lease.endpoint.url)
        cdp.call("Browser.setDownloadBehavior", {
            "behavior": "allow", "downloadPath": str(client_folder), "eventsEnabled": True})
        start_download(runtime, stalling_site, "theirs.bin")
        wait_for(lambda: [p for p in client_folder.glob("*") if p.stat().st_size >= STALL_SENT],
                 20, "the partial file of the client's download")
        started = wait_for(lambda: [e for e in download_events(bd, run_id)
                                    if e["status"] == "started"][1:] and
                           download_events(bd, run_id), 10, "both downloads' started events")
        guids = {e["data"]["guid"]: e["data"]["suggested_filename"]
                 for e in started if e["status"] == "started"}
        assert sorted(guids.values()) == ["ours.bin", "theirs.bin"]
        # Something the reconcile must not follow out of the run's directory.
        (incoming / "link-out").symlink_to(outside / "keep.bin")
        (incoming / "dir-out").symlink_to(outside)

    tree = descendants(daemon.pid)
    daemon.kill()
    cdp.close()
    assert_gone(tree)
    left_over = sorted(p.name for p in incoming.iterdir())
    assert any(name.endswith(".crdownload") for name in left_over), \
        f"the kill left no partial file to clean: {left_over}"

    daemon = make_daemon(config=config)  # reconciles the lost run
    with Client(daemon.socket) as bd:
        events = events_of(bd, run_id)
        failed = [e for e in events if e["type"] == "download" and e["status"] == "failed"]
        assert {e["data"]["guid"]: e["data"]["name"] for e in failed} == guids, failed
        for event in failed:
            assert event["data"]["reason"] == "daemon_lost", event
        # Recorded before the run's final event, which stays the last.
        assert events[-1]["type"] == "runtime.lifecycle", events[-1]
        assert events[-1]["data"]["end_reason"] == "daemon_lost"
        assert bd.runs.get(run_id).counts["events"] == events[-1]["seq"]
    assert not incoming.exists() or list(incoming.iterdir()) == [], list(incoming.iterdir())
    assert (outside / "keep.bin").read_bytes() == b"not the daemon's"
    assert sorted(p.name for p in client_folder.iterdir()), "the client's folder is its own"
    REPORT.faults["daemon kill -9 mid-download"] += 1
    finish(daemon)


# ------------------------------------------------------------------------------ resources


def call_clean(bd: Client, method: str, params: dict[str, Any]) -> Any:
    """Call; a failure must be a clean error (a documented code with a hint)."""
    try:
        return bd.call(method, params)
    except errors.BrowserdError as exc:
        check_error({"code": exc.code, "message": exc.message, "hint": exc.hint})
        return exc


def test_state_dir_on_a_full_filesystem(make_daemon: Any, small_state_fs: Path) -> None:
    daemon = make_daemon()
    (small_state_fs / "filler").touch()  # so a disk the browser filled first is still ours to free
    with Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="full")
        before = runtime.connections.create(ttl_s=60)
        filler = fill(small_state_fs / "filler")
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
        # A screenshot whose artifact the disk refuses fails that one action, as a full disk;
        # the run's control link goes on (it used to die, and every later action said
        # runtime.not_active while the runtime said active).
        with pytest.raises(errors.InvocationFailed) as caught:
            runtime.invocations.create("screenshot", {})
        record = caught.value.data["invocation"]
        assert record["status"] == "failed"
        assert record["error"]["data"]["cause"] == "state.unwritable", record
        assert "ENOSPC" in record["error"]["message"]
        assert runtime.invocations.create("evaluate", {"expression": "6 * 7"}).output == 42
        assert runtime.targets.list()
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

