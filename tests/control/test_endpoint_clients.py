"""Endpoint discovery through the daemon, with the real third-party clients.

`endpoint.http_url` answers /json/version (with and without the trailing slash), /json/list and
/json with every URL rewritten to the proxy; page targets are proxied; Playwright
`connect_over_cdp(http_url)` and Puppeteer (puppeteer-core from npm, run by node)
`connect({browserURL})` and `connect({browserWSEndpoint})` attach, work, and leave.

Puppeteer resolves '/json/version' against the browserURL's origin, dropping any path, so it is
given `endpoint.browser_url`: the lease's own origin (lease_origins.py).
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import sync_playwright

from browserd.daemon.cdp.client import open_cdp

from ..conftest import REPO
from .conftest import Launched, eventually

PUPPETEER_SCRIPT = REPO / "tests" / "js" / "puppeteer_attach.mjs"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200
        return json.loads(reply.read())


def run_puppeteer(how: str, endpoint: str, page_url: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node is required (the machine has node 20)"
    assert (REPO / "node_modules" / "puppeteer-core").is_dir(), (
        "puppeteer-core is not installed: run `make test` (it runs npm ci) or `npm ci`"
    )
    result = subprocess.run([node, str(PUPPETEER_SCRIPT), how, endpoint, page_url],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"puppeteer failed:\n{result.stdout}\n{result.stderr}"
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


async def test_discovery_documents_point_at_the_proxy(launched: Launched) -> None:
    with trio.fail_after(30):
        conn = await launched.runtime.connections.create(ttl_s=60)
        assert conn.endpoint is not None
        http_url, ws_url = conn.endpoint.http_url, conn.endpoint.url
        assert http_url.startswith("http://127.0.0.1:") and ws_url == "ws" + http_url[4:]

        for rest in ("/json/version", "/json/version/"):
            version = await trio.to_thread.run_sync(get_json, http_url + rest)
            assert version["webSocketDebuggerUrl"] == ws_url
            assert "Browser" in version and "Protocol-Version" in version
        pages = [p for p in await trio.to_thread.run_sync(get_json, http_url + "/json/list")
                 if p["type"] == "page"]
        assert pages, "the runtime has a page"
        for rest in ("/json", "/json/"):
            again = await trio.to_thread.run_sync(get_json, http_url + rest)
            assert [p["id"] for p in again if p["type"] == "page"] == [p["id"] for p in pages]
        page = pages[0]
        assert page["webSocketDebuggerUrl"] == f"{ws_url}/devtools/page/{page['id']}"

        # The page-level WebSocket goes through the proxy to that page.
        async with open_cdp(page["webSocketDebuggerUrl"]) as cdp:
            reply = await cdp.call("Runtime.evaluate",
                                   {"expression": "6 * 7", "returnByValue": True})
            assert reply["result"]["value"] == 42
        run = await launched.runtime.current_run()
        attached = await run.events.list(types=["connection.attached"])
        assert attached and attached[-1].data["connection_id"] == conn.id


def title_with_playwright(cdp_url: str, page_url: str) -> str:
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(cdp_url, timeout=20_000)
        page = browser.contexts[0].new_page()
        page.goto(page_url)
        title = page.title()
        page.close()
        browser.close()  # over CDP this closes the transport, not the browser
        return title


async def test_playwright_connects_over_http_url(launched: Launched, site: str) -> None:
    with trio.fail_after(60):
        conn = await launched.runtime.connections.create(ttl_s=60)
        assert conn.endpoint is not None
        title = await trio.to_thread.run_sync(title_with_playwright, conn.endpoint.http_url,
                                              f"{site}/")
        assert title == "browserd control"


@pytest.mark.parametrize("how", ["browserURL", "browserWSEndpoint"])
async def test_puppeteer_attaches_and_disconnects(launched: Launched, site: str,
                                                  how: str) -> None:
    runtime = launched.runtime
    with trio.fail_after(90):
        conn = await runtime.connections.create(ttl_s=60)
        assert conn.endpoint is not None
        endpoint = conn.endpoint.browser_url if how == "browserURL" else conn.endpoint.url
        seen = await trio.to_thread.run_sync(run_puppeteer, how, endpoint, f"{site}/")
        assert seen["title"] == "browserd control" and seen["pages"] >= 2
        assert "Chrome" in seen["version"] or "Chromium" in seen["version"]
        # disconnect() left the browser running, and the socket is gone from the lease.
        assert (await runtime.refresh()).status == "active"
        await eventually(lambda: runtime.connections.get(conn.id),
                         lambda lease: lease.open_sockets == 0)
        run = await runtime.current_run()
        types = [e.type for e in await run.events.list(types=["connection.*"])]
        assert "connection.attached" in types and "connection.detached" in types


async def test_the_lease_origin_serves_discovery_only(launched: Launched) -> None:
    runtime = launched.runtime
    with trio.fail_after(30):
        conn = await runtime.connections.create(ttl_s=60)
        assert conn.endpoint is not None
        origin = conn.endpoint.browser_url
        assert origin.startswith("http://127.0.0.1:") and origin.count("/") == 2
        for rest in ("/json/version", "/json/version/"):
            version = await trio.to_thread.run_sync(get_json, origin + rest)
            assert version["webSocketDebuggerUrl"] == conn.endpoint.url
        listed = await trio.to_thread.run_sync(get_json, origin + "/json/list")
        assert all(p["webSocketDebuggerUrl"].startswith(conn.endpoint.url + "/devtools/page/")
                   for p in listed if p["type"] == "page")

        def status_of(path: str, headers: dict[str, str]) -> int:
            request = urllib.request.Request(origin + path, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10):
                    return 200
            except urllib.error.HTTPError as refused:
                return refused.code

        assert await trio.to_thread.run_sync(status_of, "/", {}) == 404
        assert await trio.to_thread.run_sync(status_of, "/devtools/browser/x", {}) == 404
        evil = {"Origin": "https://evil.example"}
        assert await trio.to_thread.run_sync(status_of, "/json/version", evil) == 403
        rebound = {"Host": "evil.example"}
        assert await trio.to_thread.run_sync(status_of, "/json/version", rebound) == 403

        # Another local user finds the port: refused.
        probe = ("import sys, urllib.request, urllib.error\n"
                 "try:\n urllib.request.urlopen(sys.argv[1], timeout=10)\n"
                 "except urllib.error.HTTPError as e:\n print(e.code)\n")
        other = await trio.to_thread.run_sync(lambda: subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
             "-c", probe, origin + "/json/version"],
            capture_output=True, text=True, timeout=30))
        assert other.stdout.strip() == "403", other.stderr

        # The origin goes with the lease.
        await conn.delete()
        origins = launched.daemon.api.control.origins

        async def _open_origins() -> int:
            return origins.open_count()

        with trio.fail_after(5):
            await eventually(_open_origins, lambda count: count == 0)
        with pytest.raises(urllib.error.URLError):
            await trio.to_thread.run_sync(get_json, origin + "/json/version")


def test_package_files_pin_puppeteer_core_without_a_browser() -> None:
    package = json.loads((REPO / "package.json").read_text())
    assert set(package["devDependencies"]) == {"puppeteer-core"}
    lock = json.loads((REPO / "package-lock.json").read_text())
    names = {Path(p).name for p in lock["packages"] if p}
    assert "puppeteer-core" in names and "puppeteer" not in names, \
        "puppeteer (which downloads a browser) must not be a dependency"


def head_status(url: str) -> tuple[int, bytes]:
    """A HEAD request's status and whatever came after the response's head (nothing, by
    HTTP's rules)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("HEAD", parts.path or "/")
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


async def test_head_requests_get_an_answer_without_a_body(launched: Launched) -> None:
    """HEAD gets a status and headers on every front (the CDP port, a lease's origin, the
    web pages): a body in answer to HEAD is refused by h11, and the client used to get
    nothing at all."""
    with trio.fail_after(30):
        conn = await launched.runtime.connections.create(ttl_s=60)
        assert conn.endpoint is not None
        base = conn.endpoint.http_url.split("/cdp/")[0]
        for url, status in ((base + "/cdp/unknown", 404),            # no such endpoint
                            (conn.endpoint.http_url + "/json/version", 405),  # GET only
                            (base + "/assets/view.js", 405),         # the web pages: GET only
                            (conn.endpoint.browser_url + "/json/version", 200)):
            assert await trio.to_thread.run_sync(head_status, url) == (status, b""), url
