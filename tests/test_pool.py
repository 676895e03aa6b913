"""The warm pool: launches without a profile take a pre-started browser; the pool refills,
respects max_runtimes, gives slots back, and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio

from browserd.client import AsyncClient, cli
from browserd.daemon.base.config import LimitsConfig, PoolConfig
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
