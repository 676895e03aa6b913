"""The README's five-minute tour, end to end: real daemon, real Chromium, real Playwright.

Launch a runtime with a profile, take a CDP lease, drive a page through the daemon's proxy,
read the run's events, stop it, and check nothing of the browser is left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from playwright.sync_api import sync_playwright

from browserd.client import AsyncClient, Client, errors
from browserd.daemon.service import Daemon

from .conftest import DaemonProcess, assert_no_processes, processes_using, serve_pages

PAGE = b"<!doctype html><title>browserd tour</title><h1 id=greeting>hello</h1>"


@pytest.fixture
def web_page() -> Iterator[str]:
    """A page served by the test on 127.0.0.1."""
    with serve_pages({"/": ("text/html", PAGE)}) as base:
        yield base + "/"


def drive_page(cdp_url: str, page_url: str) -> str:
    """Attach Playwright over CDP, open the page, return its heading; leave the browser up."""
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(cdp_url, timeout=20_000)
        page = browser.contexts[0].new_page()
        page.goto(page_url)
        assert page.title() == "browserd tour"
        text = page.inner_text("#greeting")
        page.close()
        browser.close()  # over CDP this closes the transport, not the browser
        return text


def test_tour_with_the_blocking_client(daemon_process: DaemonProcess, web_page: str) -> None:
    profile_dir = daemon_process.state_dir / "profiles" / "crm-bot" / "user-data"
    with Client(daemon_process.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="crm", profile="crm-bot",
                                             metadata={"job": "123"})
        assert runtime.status == "active" and runtime.profile == "crm-bot"
        assert runtime.metadata == {"job": "123"}
        assert processes_using(profile_dir), "the browser runs on the named profile"

        conn = runtime.connections.create(protocol="cdp", ttl_s=600)
        assert conn.endpoint is not None
        assert conn.endpoint.url.startswith("ws://127.0.0.1:")
        assert drive_page(conn.endpoint.url, web_page) == "hello"
        listed = runtime.connections.list()
        assert [c.id for c in listed] == [conn.id]
        assert all(c.endpoint is None for c in listed), "a URL is shown only once"

        run = runtime.current_run()
        # launch again while active: the same runtime and run come back, nothing new starts
        again = bd.runtimes.browser.launch(name="crm", profile="crm-bot")
        assert again.id == runtime.id and again.active_run_id == run.id

        runtime.stop()
        assert_no_processes(profile_dir, within_s=0.5)
        assert runtime.refresh().status == "stopped"
        assert runtime.active_run_id is None
        with pytest.raises(errors.BrowserdError) as no_run:
            runtime.current_run()
        assert no_run.value.code == "runtime.no_active_run"

        events = run.events.list()
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        lifecycle = [e.status for e in events if e.type == "runtime.lifecycle"]
        assert lifecycle == ["starting", "active", "stopping", "ended"]
        assert events[-1].type == "runtime.lifecycle", "the run's end is its last event"
        types = [e.type for e in events]
        for expected in ("connection.created", "connection.attached", "connection.detached"):
            assert expected in types
        attached = next(e for e in events if e.type == "connection.attached")
        assert attached.actor is not None and attached.actor["pid"] > 0
        assert events[-1].data["end_reason"] == "stopped"
        assert run.refresh().status == "ended"

        # the run's log is plain JSONL on disk, one event per line
        log_path = daemon_process.state_dir / "runs" / run.id / "events.jsonl"
        lines = log_path.read_text().splitlines()
        assert [json.loads(line)["seq"] for line in lines] == [e.seq for e in events]


async def test_tour_with_the_async_client(daemon: Daemon, web_page: str) -> None:
    with trio.fail_after(90):
        async with AsyncClient(daemon.config.socket) as bd:
            space = await bd.spaces.create("sales")
            runtime = await bd.space(space.name).runtimes.browser.launch(name="crm")
            assert runtime.space == "sales" and runtime.status == "active"
            conn = await runtime.connections.create(ttl_s=60)
            assert conn.endpoint is not None
            heading = await trio.to_thread.run_sync(drive_page, conn.endpoint.url, web_page)
            assert heading == "hello"
            run = await runtime.current_run()
            ephemeral = daemon.config.state_dir / "ephemeral" / run.id
            assert ephemeral.is_dir() and processes_using(ephemeral)
            stopped_run = await runtime.stop()
            assert stopped_run is not None and stopped_run.end_reason == "stopped"
            assert not processes_using(ephemeral)
            assert not ephemeral.exists(), "an ephemeral profile goes with its run"
            # stop is idempotent
            assert (await runtime.refresh()).status == "stopped"
            await runtime.stop()
            types = [e.type for e in await run.events.list()]
            assert "connection.attached" in types and "connection.detached" in types


def test_browserctl_tour(daemon_process: DaemonProcess, web_page: str) -> None:
    out = daemon_process.ctl("launch", "crm", "--profile", "crm-bot")
    assert "crm" in out.stdout
    url = daemon_process.ctl("connect", "crm").stdout.strip()
    assert url.startswith("ws://127.0.0.1:") and "/cdp/conn_" in url
    assert drive_page(url, web_page) == "hello"
    listing = daemon_process.ctl("ls").stdout
    assert "crm" in listing and "active" in listing
    as_json = json.loads(daemon_process.ctl("ls", "--json").stdout)
    assert [r["name"] for r in as_json] == ["crm"]
    timeline = daemon_process.ctl("events", "crm").stdout
    assert "connection.attached" in timeline and "runtime.lifecycle" in timeline
    daemon_process.ctl("stop", "crm")
    assert_no_processes(daemon_process.state_dir / "profiles", within_s=0.5)
    # a failing command: non-zero exit, the code and a hint, no traceback
    failed = daemon_process.ctl("stop", "ghost", check=False)
    assert failed.returncode == 1
    assert "runtime.not_found" in failed.stderr and "hint:" in failed.stderr
    assert "Traceback" not in failed.stderr
    daemon_process.ctl("rm", "crm")
    assert json.loads(daemon_process.ctl("ls", "--json").stdout) == []


def test_two_clients_at_once(daemon_process: DaemonProcess) -> None:
    with Client(daemon_process.socket) as first, Client(daemon_process.socket) as second:
        one = first.runtimes.browser.launch(name="one")
        two = second.runtimes.browser.launch(name="two")
        assert {r.name for r in first.runtimes.list()} == {"one", "two"}
        second.runtimes.get("one").stop()
        assert first.runtimes.get("one").status == "stopped"
        assert two.refresh().status == "active"
        two.stop()
        assert one.refresh().status == "stopped"


def test_daemon_restart_ends_live_runs_as_daemon_lost(short_dir: Path) -> None:
    first = DaemonProcess(short_dir)
    first.start()
    with Client(first.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="crm", profile="keep")
        run_id = runtime.active_run_id
    first.kill()  # no chance to clean up
    second = DaemonProcess(short_dir)
    second.start()
    try:
        # every process of the old browser is gone once the new daemon is up
        assert_no_processes(short_dir / "state" / "profiles" / "keep", within_s=5)
        with Client(second.socket) as bd:
            runtime = bd.runtimes.get("crm")
            assert runtime.status == "stopped" and runtime.active_run_id is None
            run = bd.runs.get(run_id)
            assert run.status == "ended" and run.end_reason == "daemon_lost"
            # and the profile is free to launch again
            relaunched = bd.runtimes.browser.launch(name="crm", profile="keep")
            assert relaunched.active_run_id != run_id
            relaunched.stop()
    finally:
        assert second.stop() == 0, second.log.read_text()


def test_a_run_started_just_before_a_daemon_kill_is_ended_too(short_dir: Path) -> None:
    """The run's first record is on disk before the runtime's says it is starting: a daemon
    killed in between leaves a `starting` run under a `stopped` runtime. The next daemon ends
    that run as lost as well, instead of leaving it starting for good."""
    first = DaemonProcess(short_dir)
    first.start()
    with Client(first.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="torn")
        run_id = runtime.active_run_id
        runtime.stop()
    assert first.stop() == 0
    run_file = short_dir / "state" / "runs" / str(run_id) / "run.json"
    run = json.loads(run_file.read_text())
    run.update(status="starting", ended_at=None, end_reason=None)
    run_file.write_text(json.dumps(run))
    second = DaemonProcess(short_dir)
    second.start()
    try:
        with Client(second.socket) as bd:
            ended = bd.runs.get(str(run_id))
            assert (ended.status, ended.end_reason) == ("ended", "daemon_lost")
            assert bd.runtimes.get("torn").status == "stopped"
            last = bd.runs.get(str(run_id)).events.list()[-1]
            assert last.type == "runtime.lifecycle" and last.status == "ended"
    finally:
        assert second.stop() == 0, second.log.read_text()
