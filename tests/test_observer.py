"""The daemon's own CDP observer: target, console, error, dialog and crash events of a run.

A real daemon in-process, a real Chromium, a page served by the test, and a test client that
drives the browser over its own CDP connection through a lease (as any client would).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from browserd.daemon.base.config import EventsConfig
from browserd.daemon.cdp.client import CdpConnection, open_cdp
from browserd.daemon.core.registry import Registry
from browserd.daemon.core.runtime import LaunchOptions, Runtime
from browserd.daemon.service import Daemon, serve
from browserd.daemon.services.observer import console_types

from .conftest import HEADLESS_SHELL, assert_no_processes, make_config, serve_pages

PAGES: dict[str, tuple[str, bytes]] = {
    "/console": ("text/html", b"<!doctype html><title>console page</title><script>"
                 b"console.log('quiet log');console.error('boom', 42, {a: 1});"
                 b"setTimeout(() => { throw new Error('kaboom'); }, 0);</script>"),
    "/popup": ("text/html", b"<!doctype html><title>the popup</title>popup"),
    "/next": ("text/html", b"<!doctype html><title>next page</title>next"),
}


@pytest.fixture
def site() -> Iterator[str]:
    """A few pages (and files) served by the test on 127.0.0.1; yields the base URL."""
    with serve_pages(SITE_PAGES) as base:
        yield base


SITE_PAGES: dict[str, tuple[str, bytes]] = dict(PAGES)


async def start_daemon(nursery: trio.Nursery, base: Path, **events: Any) -> Daemon:
    config = make_config(base, executable=HEADLESS_SHELL)
    if events:
        config = attrs.evolve(config, events=EventsConfig(**events))
    daemon: Daemon = await nursery.start(serve, config)
    return daemon


async def launch(registry: Registry, name: str = "obs") -> Runtime:
    rt, _, _ = await registry.launch("default", name, LaunchOptions(), None)
    return rt


def lease_url(registry: Registry, rt: Runtime) -> str:
    lease, token = registry.lease_book.create(rt, protocol="cdp", ttl_s=60, exclusive=False,
                                         label="test", actor=None)
    return registry.lease_book.endpoint(lease, token)["url"]


async def wait_for(registry: Registry, rt: Runtime,
                   predicate: Callable[[dict[str, Any]], bool],
                   timeout_s: float = 15.0) -> dict[str, Any]:
    """The first event of the live run that matches, waiting for it at most timeout_s; on
    timeout the failure lists what the run did record (this wait failed once in CI, for a
    `target.navigated` that never came, with nothing to go on)."""
    assert rt.run is not None
    run = rt.run
    events: list[dict[str, Any]] = []
    with trio.move_on_after(timeout_s):
        while True:
            events = await registry.list_events(run, 0, 100_000, None)
            for event in events:
                if predicate(event):
                    return event
            await trio.sleep(0.05)
    seen = [(e["seq"], e["type"], e.get("status"), (e.get("target") or {}).get("url"))
            for e in events]
    raise AssertionError(f"no matching event within {timeout_s} s; the run recorded: {seen}")


async def open_page(cdp: CdpConnection, url: str) -> tuple[str, str]:
    """A new page target at `url`, attached from the test's connection: (target id, session)."""
    target_id = (await cdp.call("Target.createTarget", {"url": "about:blank"}))["targetId"]
    session = (await cdp.call("Target.attachToTarget",
                              {"targetId": target_id, "flatten": True}))["sessionId"]
    await cdp.call("Page.navigate", {"url": url}, session_id=session)
    return target_id, session


def test_console_levels() -> None:
    assert console_types("error") == {"error", "assert"}
    assert "warning" in console_types("warning") and "log" not in console_types("warning")
    assert {"log", "error", "warning"} <= console_types("info")
    assert "debug" in console_types("debug") and "debug" not in console_types("info")
    assert console_types("off") == frozenset()


async def test_page_story_in_order_with_gap_free_seq(short_dir: Path, site: str) -> None:
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, short_dir, console_level="error")
        reg = daemon.registry
        with trio.fail_after(60):
            rt = await launch(reg)
            async with open_cdp(lease_url(reg, rt)) as cdp:
                page_id, session = await open_page(cdp, f"{site}/console")
                boom = await wait_for(reg, rt, lambda e: e["type"] == "console.message")
                error = await wait_for(reg, rt, lambda e: e["type"] == "page.error")

                await cdp.call("Runtime.evaluate", {"expression": f"window.open('{site}/popup')"},
                               session_id=session)
                popup = await wait_for(reg, rt, lambda e: e["type"] == "target.created"
                                       and e["data"]["opener_id"] == page_id)

                await cdp.call("Page.navigate", {"url": f"{site}/next"}, session_id=session)
                navigated = await wait_for(reg, rt, lambda e: e["type"] == "target.navigated"
                                           and e["data"]["url"] == f"{site}/next")
                await wait_for(reg, rt, lambda e: e["type"] == "target.navigated"
                               and e["data"].get("title") == "next page")

                await cdp.call("Page.enable", session_id=session)
                await cdp.call("Runtime.evaluate",
                               {"expression": "setTimeout(() => alert('hello there'), 0)"},
                               session_id=session)
                dialog = await wait_for(reg, rt, lambda e: e["type"] == "dialog")
                await cdp.call("Page.handleJavaScriptDialog", {"accept": True},
                               session_id=session)
                closed = await wait_for(reg, rt, lambda e: e["type"] == "dialog"
                                        and e["status"] == "closed")

                # Crash the tab; only the page dies.
                with trio.move_on_after(5):
                    await cdp.call("Page.navigate", {"url": "chrome://crash"}, session_id=session)
                # (The popup shares the page's renderer process, so it may crash with it.)
                crashed = await wait_for(reg, rt, lambda e: e["type"] == "target.crashed"
                                         and e["target"]["id"] == page_id)
                alert = await wait_for(reg, rt, lambda e: e["type"] == "alert"
                                       and e["target"]["id"] == page_id)
            assert rt.record.status == "active", "a crashed tab does not end the run"
            assert await cdp_still_works(reg, rt)
            assert rt.run is not None
            run = rt.run
            events = await reg.list_events(run, 0, 100_000, None)
            await reg.stop(rt)
        daemon.stop()

    # What each event says.
    page_ref = {"kind": "page", "id": page_id}
    assert boom["source"] == "browser"
    assert boom["data"]["level"] == "error" and boom["data"]["text"] == 'boom 42 Object'
    assert boom["data"]["url"] == f"{site}/console"
    assert {k: boom["target"][k] for k in ("kind", "id")} == page_ref
    assert not [e for e in events if e["type"] == "console.message"
                and "quiet" in e["data"]["text"]], "console.log is below the level"
    assert error["data"]["message"].startswith("Error: kaboom")
    assert popup["target"]["kind"] == "page" and popup["target"]["id"] != page_id
    assert navigated["status"] == "committed"
    assert navigated["data"]["previous_url"] == f"{site}/console"
    assert navigated["target"] == {"kind": "page", "id": page_id, "url": f"{site}/next"}
    assert dialog["status"] == "opened"
    assert dialog["data"]["type"] == "alert" and dialog["data"]["message"] == "hello there"
    assert closed["data"]["accepted"] is True
    assert crashed["target"]["id"] == page_id
    assert alert["data"]["reason"] == "target_crashed" and alert["target"]["id"] == page_id

    # In order, and seq has no gaps over the whole run.
    order = [boom, popup, navigated, dialog, closed, crashed, alert]
    seqs = [e["seq"] for e in order]
    assert seqs == sorted(seqs), [(e["seq"], e["type"]) for e in order]
    assert error["seq"] < popup["seq"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    created = [e for e in events if e["type"] == "target.created"
               and e["target"]["id"] == page_id]
    assert len(created) == 1 and created[0]["seq"] < boom["seq"]


async def cdp_still_works(registry: Registry, rt: Runtime) -> bool:
    """A fresh client can still use the browser after a tab crashed."""
    async with open_cdp(lease_url(registry, rt)) as cdp:
        version = await cdp.call("Browser.getVersion")
    return bool(version.get("product"))


async def test_console_level_info_and_destroyed(short_dir: Path, site: str) -> None:
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, short_dir, console_level="info")
        reg = daemon.registry
        with trio.fail_after(60):
            rt = await launch(reg)
            async with open_cdp(lease_url(reg, rt)) as cdp:
                page_id, _ = await open_page(cdp, f"{site}/console")
                quiet = await wait_for(reg, rt, lambda e: e["type"] == "console.message"
                                       and e["data"]["level"] == "log")
                await cdp.call("Target.closeTarget", {"targetId": page_id})
                destroyed = await wait_for(reg, rt, lambda e: e["type"] == "target.destroyed"
                                           and e["target"]["id"] == page_id)
            await reg.stop(rt)
        daemon.stop()
    assert quiet["data"]["text"] == "quiet log"
    assert destroyed["data"]["type"] == "page"


async def test_browser_going_away_ends_quietly(short_dir: Path) -> None:
    """Killing the browser under the observer ends the run as a crash, nothing else."""
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, short_dir)
        reg = daemon.registry
        with trio.fail_after(60):
            rt = await launch(reg)
            await wait_for(reg, rt, lambda e: e["type"] == "target.created")
            assert rt.process is not None and rt.run is not None
            run = rt.run
            os.kill(rt.process.pid, signal.SIGKILL)
            await rt.done.wait()
        events = await reg.list_events(run, 0, 100_000, None)
        daemon.stop()
    assert run.status == "failed" and run.end_reason == "crashed"
    assert events[-1]["type"] == "runtime.lifecycle"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert_no_processes(short_dir / "state")
