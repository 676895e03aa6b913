"""Supervision that never leaks: restarts, crash loops, idle and lifetime limits, memory limits,
queues for slots, profiles that survive and stale locks that do not."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from playwright.sync_api import sync_playwright

from browserd.client import AsyncClient, errors
from browserd.daemon.base.config import Config, LimitsConfig, ResourcesConfig
from browserd.daemon.browser.profiles import ProfileStore
from browserd.daemon.core.restart import RestartPolicy
from browserd.daemon.service import Daemon, serve

from .conftest import assert_no_processes, make_config, processes_using

SHELL = "/usr/bin/chromium-headless-shell"


@attrs.define
class Running:
    daemon: Daemon
    bd: AsyncClient


@contextlib.asynccontextmanager
async def _run_daemon(config: Config) -> AsyncIterator[Running]:
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve, config)
        async with AsyncClient(config.socket) as bd:
            yield Running(daemon, bd)
        daemon.stop()
    assert_no_processes(config.state_dir)


@pytest.fixture
async def fast(short_dir: Path) -> AsyncIterator[Running]:
    """A daemon on the light headless shell that samples resources often."""
    config = attrs.evolve(make_config(short_dir, executable=SHELL),
                          resources=ResourcesConfig(sample_interval_s=0.3))
    async with _run_daemon(config) as running:
        yield running


async def wait_status(runtime: Any, status: str) -> None:
    while (await runtime.refresh()).status != status:  # noqa: ASYNC110 - polls the daemon
        await trio.sleep(0.05)


async def test_restart_on_failure_then_crash_loop_breaker(fast: Running) -> None:
    bd, registry = fast.bd, fast.daemon.registry
    with trio.fail_after(60):
        runtime = await bd.runtimes.browser.launch(name="phoenix", restart="on-failure")
        live = registry.runtimes[runtime.id]
        live.restart_policy = RestartPolicy(max_crashes=3, window_s=60, base_delay_s=0.2)
        first_run = runtime.active_run_id
        seen_runs = [first_run]
        for _ in range(2):
            assert live.process is not None
            os.kill(live.process.pid, signal.SIGKILL)
            # it comes back by itself, as a new run
            while True:
                await runtime.refresh()
                if runtime.status == "active" and runtime.active_run_id not in seen_runs:
                    break
                await trio.sleep(0.05)
            seen_runs.append(runtime.active_run_id)
        crashed = await bd.runs.get(first_run)
        assert crashed.status == "failed" and crashed.end_reason == "crashed"
        reasons = [e.data.get("reason") for e in await crashed.events.list(types=["alert"])]
        assert "restart_scheduled" in reasons
        # the third crash within the window trips the breaker: it stays failed
        assert live.process is not None
        os.kill(live.process.pid, signal.SIGKILL)
        await wait_status(runtime, "failed")
        last = await bd.runs.get(seen_runs[-1])
        alerts = [e.data for e in await last.events.list(types=["alert"])]
        assert any(a.get("reason") == "crash_loop" for a in alerts)
        await trio.sleep(1.0)
        assert (await runtime.refresh()).status == "failed", "no restart after the breaker"
        assert len(await runtime.runs.list()) == 3


async def test_idle_timeout_waits_for_the_last_client(fast: Running) -> None:
    bd = fast.bd
    with trio.fail_after(60):
        runtime = await bd.runtimes.browser.launch(name="idle", idle_timeout_s=1)
        conn = await runtime.connections.create(ttl_s=1)
        assert conn.endpoint is not None
        from trio_websocket import open_websocket_url

        async with open_websocket_url(conn.endpoint.url):
            # an open socket keeps it alive well past the idle timeout (and past the lease)
            await trio.sleep(2.5)
            assert (await runtime.refresh()).status == "active"
        run_id = runtime.active_run_id
        started = trio.current_time()
        await wait_status(runtime, "stopped")
        waited = trio.current_time() - started
        assert 0.8 <= waited <= 4, waited
        run = await bd.runs.get(run_id)
        assert run.end_reason == "idle_timeout"


async def test_max_lifetime_ends_the_run(fast: Running) -> None:
    with trio.fail_after(60):
        runtime = await fast.bd.runtimes.browser.launch(name="short", max_lifetime_s=1.5)
        run_id = runtime.active_run_id
        await wait_status(runtime, "stopped")
        assert (await fast.bd.runs.get(run_id)).end_reason == "max_lifetime"


async def test_memory_limit_and_stats(fast: Running) -> None:
    bd = fast.bd
    with trio.fail_after(60):
        runtime = await bd.runtimes.browser.launch(name="measured")
        stats = await bd.call("runtimes.stats", {"id": runtime.id})
        assert stats["rss_bytes"] > 10 * 1024 * 1024
        assert stats["processes"] >= 2 and stats["targets"] >= 1
        run = await runtime.current_run()
        while not await run.events.list(types=["resource.sample"]):  # noqa: ASYNC110
            await trio.sleep(0.1)
        await runtime.stop()
        with pytest.raises(errors.BrowserdError) as not_active:
            await bd.call("runtimes.stats", {"id": runtime.id})
        assert not_active.value.code == "runtime.not_active"

        hog = await bd.runtimes.browser.launch(name="hog", memory_limit_mb=64)
        run_id = hog.active_run_id
        await wait_status(hog, "stopped")
        run = await bd.runs.get(run_id)
        assert run.end_reason == "memory_limit"
        alert = (await run.events.list(types=["alert"]))[-1]
        assert alert.data["limit_mb"] == 64 and alert.data["rss_bytes"] > 64 * 1024 * 1024


MIB = 1024 * 1024


async def open_tabs(runtime: Any, count: int) -> None:
    """`count` more pages, each loaded (its renderer answers) before this returns."""
    for i in range(count):
        tab = await runtime.targets.create(url=f"data:text/html,<title>tab {i}</title><p>{i}")
        await runtime.invocations.create("evaluate", {"expression": "document.title"},
                                         target_id=tab.id)


async def wait_samples(run: Any, count: int, after_seq: int = 0) -> list[Any]:
    """`count` samples after `after_seq`; fails at once if the run ends first."""
    while len(samples := [e for e in await run.events.list(types=["resource.sample"])
                          if e.seq > after_seq]) < count:
        assert (await run.refresh()).status == "active", (await run.events.list())[-3:]
        await trio.sleep(0.1)
    return samples


async def test_memory_is_the_trees_pss_and_the_limit_applies_to_it(fast: Running) -> None:
    """Chromium's processes share most of their pages: summed RSS counts each shared page once
    per process, PSS once. `memory_bytes` is the PSS, and `memory_limit_mb` applies to it."""
    bd = fast.bd
    with trio.fail_after(90):
        probe = await bd.runtimes.browser.launch(name="probe")
        await open_tabs(probe, 4)
        stats = await bd.call("runtimes.stats", {"id": probe.id})
        assert 0 < stats["memory_bytes"] < stats["rss_bytes"], stats
        assert stats["memory_bytes"] > 64 * MIB, "five pages hold more than 64 MiB"
        run = await probe.current_run()
        [sample] = (await wait_samples(run, 1))[-1:]
        assert 0 < sample.data["memory_bytes"] < sample.data["rss_bytes"]
        await probe.stop()

        # A limit between the two figures: the browser is within it, and keeps running.
        between = (stats["memory_bytes"] + stats["rss_bytes"]) // 2
        roomy = await bd.runtimes.browser.launch(name="roomy", memory_limit_mb=between // MIB)
        await open_tabs(roomy, 4)
        run = await roomy.current_run()
        opened = (await run.events.list())[-1].seq
        samples = await wait_samples(run, 5, after_seq=opened)  # 1.5 s of samples
        for sample in samples:
            assert sample.data["memory_bytes"] < between < sample.data["rss_bytes"], sample.data
        await roomy.stop()

        # Below the PSS: stopped, and the alert says by how much.
        tight = await bd.runtimes.browser.launch(name="tight", memory_limit_mb=64)
        run_id = tight.active_run_id
        await wait_status(tight, "stopped")
        run = await bd.runs.get(run_id)
        assert run.end_reason == "memory_limit"
        alert = (await run.events.list(types=["alert"]))[-1]
        assert alert.data["limit_mb"] == 64 and alert.data["memory_bytes"] > 64 * MIB
        assert alert.data["memory_bytes"] < alert.data["rss_bytes"]


async def test_measurements_of_one_runtime_take_turns(fast: Running,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The periodic sample and `runtimes.stats` calls measure one runtime's tree with the
    same Process objects and PSS readings, in worker threads: one at a time (a measurement
    is slowed here so that overlapping ones would meet)."""
    from browserd.daemon.services import monitor as monitor_module

    measure, running, most = monitor_module._measure, [0], [0]

    def slow_measure(*args: Any) -> Any:
        running[0] += 1  # the GIL keeps these counts whole
        most[0] = max(most[0], running[0])
        try:
            time.sleep(0.05)
            return measure(*args)
        finally:
            running[0] -= 1

    monkeypatch.setattr(monitor_module, "_measure", slow_measure)
    with trio.fail_after(60):
        runtime = await fast.bd.runtimes.browser.launch(name="turns")
        results: list[dict[str, Any]] = []

        async def stats() -> None:
            results.append(await fast.bd.call("runtimes.stats", {"id": runtime.id}))

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(stats)
        await runtime.stop()
    assert len(results) == 6 and all(result["processes"] >= 2 for result in results)
    assert most[0] == 1, most[0]


async def test_samples_of_many_runtimes_share_one_read_of_proc(fast: Running) -> None:
    monitor = fast.daemon.api.monitor
    assert monitor is not None
    with trio.fail_after(60):
        runtimes = [await fast.bd.runtimes.browser.launch(name=f"m{i}") for i in range(3)]
        before = monitor.reads
        await trio.sleep(0.3 * 6)  # six ticks of the 0.3 s sample clock
        reads = monitor.reads - before
        for runtime in runtimes:
            run = await runtime.current_run()
            assert len(await run.events.list(types=["resource.sample"])) >= 4
            await runtime.stop()
    # One read per tick (give or take the ticks at either end), not one per runtime.
    assert 4 <= reads <= 8, reads


async def test_launch_can_queue_for_a_slot(short_dir: Path) -> None:
    config = attrs.evolve(make_config(short_dir, executable=SHELL),
                          limits=LimitsConfig(max_runtimes=1))
    async with _run_daemon(config) as running:
        bd = running.bd
        with trio.fail_after(60):
            first = await bd.runtimes.browser.launch(name="first")
            queued: list[Any] = []

            async def launch_second() -> None:
                queued.append(await bd.runtimes.browser.launch(name="second", wait_s=20))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(launch_second)
                await trio.sleep(0.5)
                assert not queued, "the second launch waits for a slot"
                await first.stop()
            assert queued[0].status == "active"
            with pytest.raises(errors.BrowserdError) as full:
                await bd.runtimes.browser.launch(name="third", wait_s=0.3)
            assert full.value.code == "browser.concurrent_quota_exceeded"
            await queued[0].stop()


def _cookie_roundtrip(url: str, set_value: str | None) -> list[dict[str, Any]]:
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(url)
        context = browser.contexts[0]  # the persistent profile's own context
        if set_value is not None:
            context.add_cookies([{"name": "session", "value": set_value, "domain": "example.test",
                                  "path": "/", "expires": 4_000_000_000}])
        cookies = [dict(c) for c in context.cookies("https://example.test/")]
        browser.close()
        return cookies


async def test_cookies_survive_a_stop_and_launch(daemon: Daemon) -> None:
    async with AsyncClient(daemon.config.socket) as bd:
        with trio.fail_after(90):
            runtime = await bd.runtimes.browser.launch(name="crm", profile="crm-bot")
            conn = await runtime.connections.create()
            assert conn.endpoint is not None
            await trio.to_thread.run_sync(_cookie_roundtrip, conn.endpoint.url, "s3cret")
            await runtime.stop()
            await bd.runtimes.browser.launch(name="crm", profile="crm-bot")
            conn = await runtime.connections.create()
            assert conn.endpoint is not None
            cookies = await trio.to_thread.run_sync(_cookie_roundtrip, conn.endpoint.url, None)
            assert [c["value"] for c in cookies if c["name"] == "session"] == ["s3cret"]
            await runtime.stop()


async def test_stale_singleton_lock_is_cleared_only_when_provably_dead(fast: Running) -> None:
    store: ProfileStore = fast.daemon.registry.profiles
    user_data = store.path("stale") / "user-data"
    user_data.mkdir(parents=True)
    # a lock left by a process of this host that no longer exists
    exited = await trio.lowlevel.open_process(["true"])
    await exited.wait()
    dead = exited.pid
    os.symlink(f"{socket.gethostname()}-{dead}", user_data / "SingletonLock")
    with trio.fail_after(60):
        runtime = await fast.bd.runtimes.browser.launch(name="stale", profile="stale")
        run = await runtime.current_run()
        cleared = await run.events.list(types=["profile.lock_cleared"])
        assert cleared and cleared[0].data["pid"] == dead
        await runtime.stop()
    # a live pid, or another host: left alone
    for target in (f"{socket.gethostname()}-{os.getpid()}", f"elsewhere-{dead}"):
        os.symlink(target, user_data / "SingletonLock")
        assert store.clear_stale_singleton(user_data) is None
        assert os.readlink(user_data / "SingletonLock") == target
        os.unlink(user_data / "SingletonLock")


async def test_profiles_api(fast: Running) -> None:
    bd = fast.bd
    with trio.fail_after(60):
        runtime = await bd.runtimes.browser.launch(name="owner", profile="login")
        listed = (await bd.call("profiles.list"))["data"]
        assert [p["name"] for p in listed] == ["login"]
        assert listed[0]["in_use_by"]["runtime_id"] == runtime.id
        assert listed[0]["size_bytes"] > 0
        for method, params in (("profiles.delete", {"name": "login"}),
                               ("profiles.clone", {"name": "login", "to": "copy"})):
            with pytest.raises(errors.BrowserdError) as busy:
                await bd.call(method, params)
            assert busy.value.code == "profile.in_use"
        await runtime.stop()
        clone = await bd.call("profiles.clone", {"name": "login", "to": "copy"})
        assert clone["name"] == "copy" and clone["in_use_by"] is None
        copy_dir = fast.daemon.registry.profiles.path("copy") / "user-data"
        assert not (copy_dir / "SingletonLock").exists()
        other = await bd.runtimes.browser.launch(name="other", profile="copy")
        assert processes_using(copy_dir)
        await other.stop()
        await bd.call("profiles.delete", {"name": "copy"})
        with pytest.raises(errors.BrowserdError) as gone:
            await bd.call("profiles.get", {"name": "copy"})
        assert gone.value.code == "profile.not_found"


def test_live_restore_adopts_browsers_of_a_killed_daemon(short_dir: Path) -> None:
    import json
    import time

    from trio_websocket import open_websocket_url

    from browserd.client import Client

    from .conftest import DaemonProcess

    config = f'live_restore = true\n[browser]\nexecutable = "{SHELL}"\n'
    (short_dir / "config.toml").write_text(config)
    first = DaemonProcess(short_dir)
    first.start()
    with Client(first.socket) as bd:
        kept = bd.runtimes.browser.launch(name="kept", profile="kept")
        temp = bd.runtimes.browser.launch(name="temp")
        runs = {kept.id: kept.active_run_id, temp.id: temp.active_run_id}
        pids = {rt.id: first_pid(short_dir, rt.id) for rt in (kept, temp)}
    first.kill()
    time.sleep(0.5)
    for pid in pids.values():
        assert psutil_alive(pid), "with live_restore the browsers outlive the daemon"
    second = DaemonProcess(short_dir)
    second.start()
    try:
        with Client(second.socket) as bd:
            for runtime in bd.runtimes.list():
                assert runtime.status == "active"
                assert runtime.active_run_id == runs[runtime.id], "the same run goes on"
                conn = runtime.connections.create()
                assert conn.endpoint is not None

                async def version(url: str) -> str:
                    async with open_websocket_url(url) as ws:
                        await ws.send_message(json.dumps({"id": 1, "method": "Browser.getVersion"}))
                        return str(json.loads(await ws.get_message())["result"]["product"])

                assert "Chrome" in trio.run(version, conn.endpoint.url)
                events = runtime.current_run().events.list(types=["runtime.lifecycle"])
                assert events[-1].data.get("adopted") is True
                runtime.stop()
            assert not any((short_dir / "state" / "ephemeral").iterdir())
    finally:
        assert second.stop() == 0
    assert_no_processes(short_dir / "state")


def test_a_runtime_lost_before_its_ready_record_has_its_browser_killed(short_dir: Path) -> None:
    """The launch reply does not wait for the `active` record: a daemon killed before it was
    written leaves a runtime.json without the browser's process. The next daemon still finds a
    named profile's browser by the profile's dir."""
    import json

    from browserd.client import Client

    from .conftest import DaemonProcess

    # live_restore keeps the browser alive past the kill, as the moment before the parent-
    # death signal is armed would.
    config = f'[browser]\nexecutable = "{SHELL}"\n'
    (short_dir / "config.toml").write_text("live_restore = true\n" + config)
    first = DaemonProcess(short_dir)
    first.start()
    with Client(first.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="crm", profile="keep")
    first.kill()
    path = short_dir / "state" / "runtimes" / runtime.id / "runtime.json"
    record = json.loads(path.read_text())
    assert record["process"] is not None
    path.write_text(json.dumps({**record, "status": "starting", "process": None}))
    assert processes_using(short_dir / "state" / "profiles" / "keep"), "the browser lives on"
    (short_dir / "config.toml").write_text(config)
    second = DaemonProcess(short_dir)
    second.start()
    try:
        assert_no_processes(short_dir / "state" / "profiles" / "keep", within_s=5)
    finally:
        assert second.stop() == 0


def first_pid(base: Path, runtime_id: str) -> int:
    import json

    record = json.loads((base / "state" / "runtimes" / runtime_id / "runtime.json").read_text())
    return int(record["process"]["pid"])


def psutil_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
