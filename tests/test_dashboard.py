"""The local dashboard (`browserctl ui`), driven in a real Chromium against a real daemon.

It lists a runtime launched after the page was opened, with its stats; shows the runs of a
runtime and a run's events, following new ones live; offers its artifacts for download; opens
a live view; stops a runtime. Its token is checked like a lease's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page

from browserd.client import Client

from .conftest import DaemonProcess, finish_daemon, start_shell_daemon
from .test_view import RED_URL, get, wait_for


@pytest.fixture
def shell_daemon(short_dir: Path) -> Iterator[DaemonProcess]:
    running = start_shell_daemon(short_dir, "[resources]\nsample_interval_s = 1\n")
    yield running
    finish_daemon(running)




def row(page: Page, name: str) -> str:
    return f'[data-browserd-ui="runtimes"] tr[data-name="{name}"]'


def test_dashboard(shell_daemon: DaemonProcess, viewer: Browser) -> None:
    url = shell_daemon.ctl("ui").stdout.strip()
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname == "127.0.0.1"
    assert parts.path.startswith("/ui/") and len(parts.path) > 40
    status, headers, _ = get(url)
    assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
    assert get(url[:-4] + "AAAA")[0] == 401
    assert get(url, {"Origin": "http://evil.example"})[0] == 403

    page = viewer.new_page()
    page.goto(url)
    wait_for("the dashboard live", lambda: page.get_attribute("body", "data-state") == "live")
    assert page.locator(f'{row(page, "late")}').count() == 0

    with Client(shell_daemon.socket) as bd:
        # Launched after the page was opened: it appears, active, then with its stats.
        runtime = bd.runtimes.browser.launch("late")
        wait_for("the new runtime listed", lambda: page.get_attribute(
            row(page, "late"), "data-status") == "active")
        wait_for("its stats", lambda: page.inner_text(f"{row(page, 'late')} td:nth-child(6)")
                 .strip() != "", within_s=10)

        # Its runs, and the active run's events, followed live.
        page.click(row(page, "late"))
        run_id = runtime.active_run_id
        wait_for("the run listed", lambda: page.locator(
            f'[data-browserd-ui="runs"] li[data-run-id="{run_id}"]').count() == 1)
        events = page.locator('[data-browserd-ui="events"] li')
        wait_for("the run's events", lambda: events.count() > 0)
        runtime.invocations.create("navigate", {"url": RED_URL})
        wait_for("a new event, live", lambda: page.locator(
            '[data-browserd-ui="events"] li[data-type="invocation.succeeded"]').count() == 1)

        # Artifacts: a screenshot appears, and downloads as the same bytes.
        runtime.invocations.create("screenshot", {})
        link = page.locator('[data-browserd-ui="artifacts"] a')
        wait_for("the screenshot listed", lambda: link.count() == 1)
        artifact = runtime.current_run().artifacts.list()[0]
        status, headers, body = get(f"{parts.scheme}://{parts.netloc}"
                                    f"{link.get_attribute('href')}")
        assert status == 200 and "attachment" in headers["Content-Disposition"]
        assert hashlib.sha256(body).hexdigest() == artifact.sha256

        # A live view from the dashboard: a view lease, labelled, and its page shows frames.
        page.click(f'{row(page, "late")} [data-browserd-ui="view"]')
        opened = page.locator('[data-browserd-ui="open-view"]')
        wait_for("the view's link", lambda: opened.count() == 1)
        view_url = opened.get_attribute("href") or ""
        assert "/view/" in view_url
        lease = next(c for c in runtime.connections.list() if c.protocol == "view")
        assert lease.label == "dashboard" and not lease.control
        view = viewer.new_page()
        view.goto(view_url)
        wait_for("a frame in the view", lambda: view.get_attribute(
            '[data-browserd-view="screen"]', "data-frame-seq"))

        # Stop from the dashboard.
        page.click(f'{row(page, "late")} [data-browserd-ui="stop"]')
        wait_for("the runtime stopped", lambda: page.get_attribute(
            row(page, "late"), "data-status") == "stopped", within_s=20)
        assert runtime.refresh().status == "stopped"
        stopped = [e for e in runtime.runs.list(limit=1)[0].events.list(
            types=["runtime.lifecycle"]) if e.status == "stopping"]
        assert stopped and stopped[0].actor == {"type": "dashboard"}
