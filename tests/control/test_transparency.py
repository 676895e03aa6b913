"""A lease is indistinguishable from the browser itself (issue 16).

The daemon keeps CDP connections of its own to every runtime's browser (the observer, the
control link). Playwright and Puppeteer pause each new target (auto-attach with
waitForDebuggerOnStart) and apply their settings before letting it run; the daemon must never
resume, attach in a way that holds, or change a target before the client has. The first
two tests check that rule at the protocol level, deterministically; the others run what users
run, through a lease and straight at the same Chromium, and compare.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import sync_playwright

from browserd.daemon.cdp.client import CdpConnection, CdpEvent, open_cdp

from ..conftest import REPO
from . import client_scenarios
from .client_scenarios import Site
from .conftest import Launched, eventually

POPUP_ROUNDS = 4  # the old observer failed about one popup scenario in 60 (issue 16)
PUPPETEER_SCRIPT = REPO / "tests" / "js" / "puppeteer_behaviour.mjs"


@pytest.fixture
def pages() -> Iterator[Site]:
    with Site().serving() as site:
        yield site


def direct_url(launched: Launched) -> str:
    """The runtime's own DevTools URL, past the proxy (tests only: clients never get it)."""
    rt = launched.daemon.registry.find_runtime("default", "crm")
    assert rt is not None and rt.process is not None
    return rt.process.endpoint.ws_url


async def lease_url(launched: Launched) -> str:
    conn = await launched.runtime.connections.create(ttl_s=600)
    assert conn.endpoint is not None
    return conn.endpoint.url


async def next_event(cdp: CdpConnection, wanted: Callable[[CdpEvent], bool]) -> CdpEvent:
    async for event in cdp.events:
        if wanted(event):
            return event
    raise AssertionError("the connection ended before the event came")


def attached_page(opener: bool) -> Callable[[CdpEvent], bool]:
    def wanted(event: CdpEvent) -> bool:
        info = event.params.get("targetInfo") or {}
        return (event.method == "Target.attachedToTarget" and info.get("type") == "page"
                and bool(info.get("openerId")) == opener)
    return wanted


async def test_a_popup_the_client_holds_waits_for_the_client(launched: Launched,
                                                              pages: Site) -> None:
    """A client that pauses new targets decides alone when a popup runs. (The observer used to
    auto-attach and say run: the popup's request left before the client let it go.)"""
    held = "/popup/held"
    with trio.fail_after(60):
        async with open_cdp(await lease_url(launched)) as cdp, trio.open_nursery() as nursery:
            await cdp.call("Target.setAutoAttach", {"autoAttach": True,
                                                    "waitForDebuggerOnStart": True,
                                                    "flatten": True})
            opener = (await next_event(cdp, attached_page(opener=False))).params["sessionId"]
            await cdp.call("Page.navigate", {"url": pages.base + "/empty"}, session_id=opener)

            async def open_popup() -> None:
                # window.open itself returns only once the popup runs.
                await cdp.call("Runtime.evaluate",
                               {"expression": f"window.open('{held}'); 1"}, session_id=opener)

            nursery.start_soon(open_popup)
            event = await next_event(cdp, attached_page(opener=True))
            assert event.params["waitingForDebugger"] is True
            await trio.sleep(1.5)
            assert held not in pages.headers, "the popup ran before its client let it"
            await cdp.call("Runtime.runIfWaitingForDebugger",
                           session_id=event.params["sessionId"])

            async def requested() -> bool:
                return held in pages.headers

            await eventually(requested, bool)


async def test_window_open_runs_with_no_client_attached(launched: Launched,
                                                        pages: Site) -> None:
    """Nothing holds a popup when no client is there to let it run (an auto-attaching observer
    that never said run would hang window.open)."""
    invocations = launched.runtime.invocations
    with trio.fail_after(30):
        await invocations.create("navigate", {"url": pages.base + "/empty"})
        invocation = await invocations.create(
            "evaluate", {"expression": "window.open('/popup/free') !== null"}, timeout_s=10)
        assert invocation.output is True

        async def requested() -> bool:
            return "/popup/free" in pages.headers

        await eventually(requested, bool)


def popups_with_playwright(url: str, site: Site, rounds: int) -> dict[str, list[Any]]:
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(url)
        try:
            return client_scenarios.run_popups(browser, site, rounds)
        finally:
            browser.close()


async def test_playwright_popups_through_a_lease(launched: Launched, pages: Site) -> None:
    """Playwright's popup behaviours (after its own popup tests), several rounds each: the
    failures were intermittent."""
    url = await lease_url(launched)
    with trio.fail_after(240):
        failed = await trio.to_thread.run_sync(popups_with_playwright, url, pages,
                                               POPUP_ROUNDS)
    assert failed == {}, f"popup scenarios failed through the lease: {failed}"


def behaviour_with_playwright(url: str, site: Site) -> dict[str, Any]:
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as downloads:
        browser = pw.chromium.connect_over_cdp(url)
        try:
            return client_scenarios.behaviour(browser, site, Path(downloads))
        finally:
            browser.close()


async def test_playwright_behaves_the_same_directly_and_through_a_lease(
        launched: Launched, pages: Site) -> None:
    with trio.fail_after(120):
        direct = await trio.to_thread.run_sync(behaviour_with_playwright,
                                               direct_url(launched), pages)
        leased = await trio.to_thread.run_sync(behaviour_with_playwright,
                                               await lease_url(launched), pages)
    assert leased == direct
    # And what it saw is what a browser does (not two equal failures).
    assert direct["navigation"] == [200, "plain", "/plain"]
    assert direct["dialogs"] == [[("alert", "a"), ("confirm", "c"), ("prompt", "p")],
                                 [None, True, "typed"]]
    assert direct["download"] == ["report.txt", client_scenarios.DOWNLOAD.decode()]
    assert direct["interception"] == [201, "fulfilled", ["/pixel.png"]]
    assert direct["input"] == ["clicked ab", ["a", "b", "c", "Backspace"]]


def puppeteer(endpoint: str, site: Site) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node is required (the machine has node 20)"
    result = subprocess.run([node, str(PUPPETEER_SCRIPT), endpoint, site.base], cwd=REPO,
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, f"puppeteer failed:\n{result.stdout}\n{result.stderr}"
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


async def test_puppeteer_behaves_the_same_directly_and_through_a_lease(
        launched: Launched, pages: Site) -> None:
    with trio.fail_after(200):
        direct = await trio.to_thread.run_sync(puppeteer, direct_url(launched), pages)
        leased = await trio.to_thread.run_sync(puppeteer, await lease_url(launched), pages)
    assert leased == direct
    assert direct["popups"] == {"opened": 6, "dialogs": 6}
    assert direct["dialogs"] == [[["alert", "a"], ["confirm", "c"], ["prompt", "p"]],
                                 [None, True, "typed"]]
    assert direct["download"] == [["report.txt", client_scenarios.DOWNLOAD.decode()]]
    assert direct["interception"] == {"status": 201, "aborted": ["/pixel.png"]}
