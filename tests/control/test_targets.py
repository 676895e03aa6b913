"""targets.*: the runtime's pages on the daemon's own connection, and the active page."""

from __future__ import annotations

import pytest
import trio
from playwright.sync_api import sync_playwright

from browserd.client import errors

from .conftest import Launched, eventually


def navigate_with_playwright(cdp_url: str, target_id: str, page_url: str) -> None:
    """A client drives a page itself, as a user's script would."""
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(cdp_url, timeout=20_000)
        context = browser.contexts[0]
        for page in context.pages:
            info = context.new_cdp_session(page).send("Target.getTargetInfo")
            if info["targetInfo"]["targetId"] == target_id:
                page.goto(page_url)
                break
        else:
            raise AssertionError(f"Playwright does not see page {target_id}")
        browser.close()  # over CDP: the transport, not the browser


async def test_list_create_activate_close(launched: Launched, site: str) -> None:
    runtime = launched.runtime
    with trio.fail_after(60):
        pages = await runtime.targets.list()
        assert len(pages) == 1
        first = pages[0]
        assert first.type == "page" and first.active and first.url == "about:blank"

        second = await runtime.targets.create(f"{site}/other")
        assert second.active and second.id != first.id
        listed = await runtime.targets.list()
        assert [t.id for t in listed] == [first.id, second.id], "oldest first"
        assert [t.active for t in listed] == [False, True]
        # the title arrives once the page has loaded
        await eventually(runtime.targets.list, lambda pages: pages[1].title == "other page")

        activated = await runtime.targets.activate(first.id)
        assert activated.id == first.id and activated.active
        assert [t.active for t in await runtime.targets.list()] == [True, False]

        closed = await runtime.targets.close(first.id)
        assert closed.id == first.id and not closed.active
        remaining = await runtime.targets.list()
        assert [t.id for t in remaining] == [second.id]
        assert remaining[0].active, "closing the active page falls back to the oldest page"

        for call in (runtime.targets.activate, runtime.targets.close):
            with pytest.raises(errors.TargetNotFound):
                await call("NO-SUCH-TARGET")

        # Listing never attached the daemon to a page.
        link = launched.daemon.api.control.targets.link_nowait(
            launched.daemon.registry.runtimes[runtime.id])
        assert link is not None and link.attached() == set()

        await runtime.stop()
        with pytest.raises(errors.RuntimeNotActive):
            await runtime.targets.list()


async def test_a_page_a_client_navigates_becomes_active(launched: Launched, site: str) -> None:
    runtime = launched.runtime
    with trio.fail_after(60):
        first = (await runtime.targets.list())[0]
        second = await runtime.targets.create("about:blank")
        assert second.active
        lease = await runtime.connections.create(ttl_s=60)
        assert lease.endpoint is not None
        await trio.to_thread.run_sync(navigate_with_playwright, lease.endpoint.url, first.id,
                                   f"{site}/")
        pages = {t.id: t for t in await runtime.targets.list()}
        assert pages[first.id].active and not pages[second.id].active
        content = await runtime.invocations.create("content", {"format": "text"})
        assert content.target_id == first.id and "hello" in content.output


async def test_invalid_create(launched: Launched) -> None:
    with trio.fail_after(30), pytest.raises(errors.InvalidParams):
        await launched.runtime.targets.create("not a url at all")
