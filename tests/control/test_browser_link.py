"""The daemon's one CDP connection per run (cdp/browser_link.py): the observer, the network
rules and the control link share it, each with sessions of its own."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio_websocket

from browserd.daemon.cdp.browser_link import LinkSlot, open_link
from browserd.daemon.cdp.client import CdpEvent

from .conftest import Launched, eventually


def established_to(port: int) -> int:
    """How many TCP connections this process holds to 127.0.0.1:`port` (the daemon runs in
    the test's own process; the browser's end of each has `port` as its local port)."""
    inodes = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    ours = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:[") and link[8:-1] in inodes:
            ours += 1
    return ours


async def wait_until(ok: Callable[[], bool]) -> None:
    """Until the link's reader has made `ok()` true (callers bound it with trio.fail_after)."""
    while not ok():  # noqa: ASYNC110 - made true by the reader task's handlers
        await trio.sleep(0.02)


async def test_one_connection_per_run_with_block_rules_and_invocations(
        launched: Launched, site: str) -> None:
    with trio.fail_after(60):
        runtime = await launched.bd.runtimes.browser.launch(
            name="lean", config={"block": {"resource_types": ["image"]}})
        done = await runtime.invocations.create("navigate", {"url": f"{site}/"})
        assert done.status == "succeeded"
        for name, rt_id in (("crm", launched.runtime.id), ("lean", runtime.id)):
            process = launched.daemon.registry.runtimes[rt_id].process
            assert process is not None
            # The observer, the control link (with an invocation's session) and, on "lean",
            # the block rules: one connection.
            assert established_to(process.endpoint.port) == 1, name


async def test_an_invocations_console_message_is_recorded_once(launched: Launched) -> None:
    """The observer's and an invocation's sessions on a page are separate: the message the
    invocation's evaluate logs is recorded once, for its page, not again for its session."""
    with trio.fail_after(60):
        done = await launched.runtime.invocations.create(
            "evaluate", {"expression": "console.error('once-' + 6 * 7); 1"})
        assert done.output == 1
        run = await launched.runtime.current_run()

        async def ours() -> list[dict[str, object]]:
            events = await run.events.list(types=["console.message"])
            return [{"text": e.data["text"], "target": e.target} for e in events
                    if e.data.get("text") == "once-42"]

        await eventually(ours, lambda found: len(found) >= 1)
        await trio.sleep(1)  # a second copy would come from the same burst of events
        found = await ours()
        assert len(found) == 1, found
        target = found[0]["target"]
        assert isinstance(target, dict) and target["id"] == done.target_id


async def test_sessions_are_private_and_a_failing_watcher_costs_the_others_nothing(
        launched: Launched, caplog: pytest.LogCaptureFixture) -> None:
    process = launched.daemon.registry.runtimes[launched.runtime.id].process
    assert process is not None
    with trio.fail_after(30):
        async with open_link(process.endpoint.ws_url) as link:
            def broken(event: CdpEvent) -> None:
                raise RuntimeError("a service's bug")

            watched: list[CdpEvent] = []
            link.watch(broken)
            link.watch(watched.append)
            created = await link.cdp.call("Target.createTarget", {"url": "about:blank"})
            page = str(created["targetId"])
            await wait_until(lambda: any(e.method == "Target.targetCreated"
                                         and e.params["targetInfo"]["targetId"] == page
                                         for e in watched))
            assert link.targets[page].type == "page"

            first: list[CdpEvent] = []
            second: list[CdpEvent] = []
            one = await link.attach(page, first.append)
            two = await link.attach(page, second.append)
            assert link.targets[page].sessions == {one, two}
            await link.cdp.call("Runtime.enable", session_id=one)
            await link.cdp.call("Runtime.evaluate", {"expression": "console.log('mine')"},
                                session_id=one)
            await wait_until(lambda: any(e.method == "Runtime.consoleAPICalled" for e in first))
            assert {e.session_id for e in first} == {one}
            assert second == []  # nothing enabled in that session: nothing of the other's

            late: list[CdpEvent] = []
            link.watch(late.append)  # told of the targets that exist, as targetCreated
            assert page in {e.params["targetInfo"]["targetId"] for e in late
                            if e.method == "Target.targetCreated"}

            await link.cdp.call("Target.closeTarget", {"targetId": page})
            await wait_until(lambda: page not in link.targets)
            assert any(e.method == "Target.targetDestroyed" for e in late)
    assert "a service's bug" in caplog.text


async def test_a_browser_gone_during_discovery_leaves_the_run_without_a_link(
        nursery: trio.Nursery) -> None:
    """The WebSocket is accepted, then dropped before discovery answers (a browser that goes
    away as it starts): the slot settles on None, and nothing is raised to the supervisor."""
    async def drop(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()  # Target.setDiscoverTargets
        await ws.aclose(code=1011)

    server = await nursery.start(trio_websocket.serve_websocket, drop, "127.0.0.1", 0, None)
    slot = LinkSlot()
    with trio.fail_after(10):
        await slot.serve(f"ws://127.0.0.1:{server.port}/devtools/browser/x")
        assert await slot.wait() is None
