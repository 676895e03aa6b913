"""Retention: old runs removed by count and age; live runs never; the sweeper runs by itself."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
import trio

from browserd.client import AsyncClient
from browserd.client.errors import BrowserdError
from browserd.daemon.base.config import RetentionConfig
from browserd.daemon.base.model import RunRecord, format_time
from browserd.daemon.service import Daemon, serve
from browserd.daemon.services import retention
from browserd.daemon.services.retention import Retention, expired_runs
from browserd.daemon.store import storage

from .conftest import make_config

HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def run_record(runtime_id: str, days_ago: float, status: str = "ended") -> RunRecord:
    started = NOW - timedelta(days=days_ago)
    # Ids sort by time, as storage.make_id's do: the older run gets the smaller id.
    return RunRecord(
        id=f"run_{started.timestamp():015.3f}", runtime_id=runtime_id, space="default",
        status=status, started_at=format_time(started),
        ended_at=format_time(started + timedelta(minutes=5)) if status in ("ended", "failed")
        else None,
    )


def test_policy_by_count_and_age() -> None:
    runs = [run_record("rt_a", d) for d in (1, 2, 3, 40)] + [run_record("rt_b", 50)]
    live = run_record("rt_a", 0.5, status="active")
    gone = expired_runs([*runs, live], set(), RetentionConfig(max_runs=2, max_age_days=30),
                        NOW)
    assert {r.id for r in gone} == {runs[2].id, runs[3].id, runs[4].id}
    # Count only, per runtime: rt_b's single run stays however old.
    gone = expired_runs(runs, set(), RetentionConfig(max_runs=3, max_age_days=0), NOW)
    assert [r.id for r in gone] == [runs[3].id]
    # Zero means no limit.
    assert expired_runs(runs, set(), RetentionConfig(max_runs=0, max_age_days=0), NOW) == []


def test_live_and_unfinished_runs_are_never_removed() -> None:
    old_active = run_record("rt_a", 90, status="active")
    old_stopping = run_record("rt_a", 80, status="stopping")
    old_ended_but_live = run_record("rt_a", 70)  # e.g. adopted: the registry says live
    policy = RetentionConfig(max_runs=1, max_age_days=1)
    assert expired_runs([old_active, old_stopping, old_ended_but_live],
                        {old_ended_but_live.id}, policy, NOW) == []


@pytest.fixture
async def small_limits(nursery: trio.Nursery, short_dir: Path) -> AsyncIterator[Daemon]:
    config = attrs.evolve(make_config(short_dir, executable=HEADLESS_SHELL),
                          retention=RetentionConfig(max_runs=2, max_age_days=30))
    with trio.fail_after(20):
        daemon: Daemon = await nursery.start(serve, config)
    yield daemon
    daemon.stop()


async def test_sweep_keeps_the_newest_runs_of_each_runtime(small_limits: Daemon) -> None:
    daemon = small_limits
    runs_dir = daemon.config.state_dir / "runs"
    with trio.fail_after(120):
        async with AsyncClient(daemon.config.socket) as bd:
            runtime = await bd.runtimes.browser.launch(name="cycle")
            ids = []
            for _ in range(4):
                run = await runtime.current_run()
                ids.append(run.id)
                await runtime.stop()
                await bd.runtimes.browser.launch(name="cycle")
            live = (await runtime.current_run()).id
            sweeper = Retention(daemon.registry, daemon.config.retention)
            # The daemon's own sweeper may have been first (it runs 5 s after start).
            removed = await sweeper.sweep()
            assert set(removed) <= set(ids[:2])
            for run_id in ids[:2]:
                assert not (runs_dir / run_id).exists()
                with pytest.raises(BrowserdError) as missing:
                    await bd.runs.get(run_id)
                assert missing.value.code == "run.not_found"
            listed = {r.id for r in await runtime.runs.list()}
            assert listed == {*ids[2:], live}  # the live run is never counted or removed
            assert all((runs_dir / run_id / "events.jsonl").exists() for run_id in listed)
            assert await sweeper.sweep() == []  # nothing more to do
            await runtime.stop()


async def test_the_sweeper_runs_in_the_background(
    nursery: trio.Nursery, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run left on disk from long ago is gone soon after the daemon starts."""
    monkeypatch.setattr(retention, "FIRST_SWEEP_DELAY_S", 0.0)
    config = make_config(short_dir, executable=HEADLESS_SHELL)  # default policy: 30 days
    old = RunRecord(id=storage.make_id("run"), runtime_id="rt_gone", space="default",
                    status="ended", started_at=format_time(NOW - timedelta(days=400)),
                    ended_at=format_time(NOW - timedelta(days=400)), end_reason="stopped")
    recent = attrs.evolve(old, id=storage.make_id("run"),
                          started_at=format_time(datetime.now(UTC)),
                          ended_at=format_time(datetime.now(UTC)))
    for run in (old, recent):
        directory = config.state_dir / "runs" / run.id
        directory.mkdir(parents=True)
        (directory / "run.json").write_text(json.dumps(run.to_json()))
        (directory / "events.jsonl").write_text("")
    with trio.fail_after(20):
        daemon: Daemon = await nursery.start(serve, config)
        while (config.state_dir / "runs" / old.id).exists():  # noqa: ASYNC110 - polls
            await trio.sleep(0.05)
    assert old.id not in daemon.registry.runs
    assert recent.id in daemon.registry.runs
    assert (config.state_dir / "runs" / recent.id / "run.json").exists()
    daemon.stop()
