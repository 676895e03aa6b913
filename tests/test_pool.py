"""The warm pool: launches without a profile take a pre-started browser; the pool refills,
respects max_runtimes, gives slots back, and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio

from browserd.client import AsyncClient, AsyncRuntime, cli
from browserd.daemon.base.config import LimitsConfig, PoolConfig
from browserd.daemon.cdp.client import open_cdp
from browserd.daemon.service import Daemon, serve

from .conftest import assert_no_processes, make_config, processes_using

SHELL = "/usr/bin/chromium-headless-shell"


async def wait_pool(daemon: Daemon, size: int) -> None:
    while daemon.registry.pool is None or len(daemon.registry.pool) != size:  # noqa: ASYNC110
        await trio.sleep(0.05)


async def test_pool_serves_refills_and_respects_limits(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = attrs.evolve(make_config(short_dir, executable=SHELL), pool=PoolConfig(size=2),
                          limits=LimitsConfig(max_runtimes=2))
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            daemon: Daemon = await nursery.start(serve, config)
            async with AsyncClient(config.socket) as bd:
                await wait_pool(daemon, 2)
                assert (await bd.status())["pool"] == {"size": 2, "ready": 2, "starting": 0}
                command = ["--socket", str(config.socket), "status"]
                assert await trio.to_thread.run_sync(cli.main, command) == 0
                assert "2 ready / 2 (0 starting)" in capsys.readouterr().out
                pool = daemon.registry.pool
                assert pool is not None
                pooled_dirs = {p.user_data_dir for p in pool._ready}

                fast = await bd.runtimes.browser.launch(name="fast")
                run = await fast.current_run()
                first = (await run.events.list())[0]
                assert first.data["from_pool"] is True
                used_dir = daemon.registry.runtimes[fast.id].user_data_dir
                assert used_dir is not None and used_dir in pooled_dirs
                # one slot is live, so the pool refills to 1, not 2 (max_runtimes = 2)
                await wait_pool(daemon, 1)
                await trio.sleep(0.5)
                assert len(pool) == 1

                # a launch the pool cannot serve (a profile) gets the pooled browser's slot
                custom = await bd.runtimes.browser.launch(name="custom", profile="p")
                assert len(pool) == 0
                first = (await (await custom.current_run()).events.list())[0]
                assert first.data["from_pool"] is False

                # a used pooled browser is never reused: its profile goes with its run
                await fast.stop()
                assert not processes_using(used_dir) and not used_dir.exists()
                await custom.stop()
                await wait_pool(daemon, 2)
            daemon.stop()
    assert_no_processes(config.state_dir)
    assert not any((config.state_dir / "ephemeral").iterdir())


async def browser_state(runtime: AsyncRuntime) -> dict[str, object]:
    """What a client attaching to a runtime finds: targets, contexts, cookies, the page's
    history, storage and permissions state, the user agent."""
    conn = await runtime.connections.create(ttl_s=60)
    assert conn.endpoint is not None
    async with open_cdp(conn.endpoint.url) as cdp:
        targets = (await cdp.call("Target.getTargets"))["targetInfos"]
        pages = [t for t in targets if t["type"] == "page"]
        session = (await cdp.call("Target.attachToTarget", {
            "targetId": pages[0]["targetId"], "flatten": True}))["sessionId"]
        # A browser that has just started may not have committed its first about:blank yet.
        history = await cdp.call("Page.getNavigationHistory", session_id=session)
        while not history["entries"][0]["url"]:
            await trio.sleep(0.05)
            history = await cdp.call("Page.getNavigationHistory", session_id=session)
        targets = (await cdp.call("Target.getTargets"))["targetInfos"]
        evaluated = await cdp.call("Runtime.evaluate", {
            "expression": "[history.length, location.href, window.name, "
                          "performance.getEntriesByType('resource').length]",
            "returnByValue": True}, session_id=session)
        state = {
            "targets": sorted((t["type"], t["url"], t["title"]) for t in targets),
            "contexts": (await cdp.call("Target.getBrowserContexts"))["browserContextIds"],
            "cookies": (await cdp.call("Storage.getCookies"))["cookies"],
            "history": [(e["url"], e["title"]) for e in history["entries"]],
            "page": evaluated["result"]["value"],
            "user_agent": (await cdp.call("Browser.getVersion"))["userAgent"],
        }
        await cdp.call("Target.detachFromTarget", {"sessionId": session})
    await conn.delete(force=True)
    return state


async def test_a_pooled_browser_is_indistinguishable_from_a_fresh_one(short_dir: Path) -> None:
    """Nothing of the time a browser spent waiting in the pool shows: the same targets,
    contexts, cookies, history and page state as a browser started for the launch."""
    config = attrs.evolve(make_config(short_dir, executable=SHELL), pool=PoolConfig(size=1))
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            daemon: Daemon = await nursery.start(serve, config)
            async with AsyncClient(config.socket) as bd:
                await wait_pool(daemon, 1)
                await trio.sleep(1.0)  # it has waited a while, as pooled browsers do
                pooled = await bd.runtimes.browser.launch(name="pooled")
                # An extra switch is something the pool cannot serve: a fresh start.
                fresh = await bd.runtimes.browser.launch(name="fresh", args=["--mute-audio"])
                for runtime, from_pool in ((pooled, True), (fresh, False)):
                    first = (await (await runtime.current_run()).events.list())[0]
                    assert first.data["from_pool"] is from_pool
                pooled_state = await browser_state(pooled)
                fresh_state = await browser_state(fresh)
                assert pooled_state == fresh_state, f"{pooled_state!r} != {fresh_state!r}"
                assert pooled_state["targets"] == [("page", "about:blank", "about:blank")]
                assert pooled_state["cookies"] == [] and pooled_state["contexts"] == []
                assert pooled_state["page"] == [1, "about:blank", "", 0]
                # The run's log starts at the launch: nothing from before the browser was
                # taken (the observer attaches when the run starts).
                events = await (await pooled.current_run()).events.list()
                assert [e.type for e in events][:2] == ["runtime.lifecycle", "runtime.lifecycle"]
                await pooled.stop()
                await fresh.stop()
            daemon.stop()
    assert_no_processes(config.state_dir)
