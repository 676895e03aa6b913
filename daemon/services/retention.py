"""Retention: old runs are removed in the background, by count and by age.

Config `retention.max_runs` keeps that many finished runs per runtime (the newest; 0 keeps
all) and `retention.max_age_days` removes finished runs that ended longer ago (0 keeps them
forever). A run that is not finished, or is a runtime's live run, is never removed. A removed
run leaves `registry.runs` first (so no new read starts on it), then its directory (run.json,
events.jsonl, artifacts) is deleted in a worker thread.

The sweep runs shortly after the daemon starts and then every SWEEP_INTERVAL_S.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import trio

from ..base.config import RetentionConfig
from ..base.lifecycle import FINISHED_RUN
from ..base.model import RunRecord, parse_time
from ..core.registry import Registry
from ..store.roots import remove_tree

__all__ = ["SWEEP_INTERVAL_S", "Retention", "expired_runs"]

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 600.0
FIRST_SWEEP_DELAY_S = 5.0  # after start: reconciliation and the first launches come first


def expired_runs(runs: list[RunRecord], live: set[str], policy: RetentionConfig,
                 now: datetime) -> list[RunRecord]:
    """The runs the policy removes (pure): finished, not live, and past the count or age."""
    by_runtime: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.status in FINISHED_RUN and run.id not in live:
            by_runtime[run.runtime_id].append(run)
    cutoff = now - timedelta(days=policy.max_age_days) if policy.max_age_days > 0 else None
    expired: list[RunRecord] = []
    for finished in by_runtime.values():
        finished.sort(key=lambda run: run.id, reverse=True)  # ids sort by start time
        for index, run in enumerate(finished):
            too_many = 0 < policy.max_runs <= index
            ended = _ended_at(run)
            too_old = cutoff is not None and ended is not None and ended < cutoff
            if too_many or too_old:
                expired.append(run)
    return expired


def _ended_at(run: RunRecord) -> datetime | None:
    for text in (run.ended_at, run.started_at):
        if text:
            try:
                return parse_time(text)
            except ValueError:
                continue
    return None


class Retention:
    """The background sweeper of one daemon's runs."""

    def __init__(self, registry: Registry, policy: RetentionConfig) -> None:
        self.registry = registry
        self.policy = policy
        self.removed = 0  # runs removed since the daemon started

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Sweep now and then, until cancelled."""
        task_status.started()
        await trio.sleep(FIRST_SWEEP_DELAY_S)
        while True:
            try:
                await self.sweep()
            except Exception:  # a bad record must not end retention, nor the daemon
                log.exception("retention sweep failed")
            await trio.sleep(SWEEP_INTERVAL_S)

    async def sweep(self) -> list[str]:
        """Remove the runs the policy no longer keeps; returns their ids."""
        if self.policy.max_runs <= 0 and self.policy.max_age_days <= 0:
            return []
        registry = self.registry
        live = {rt.run.id for rt in registry.runtimes.values() if rt.run is not None}
        expired = expired_runs(list(registry.runs.values()), live, self.policy,
                               datetime.now(UTC))
        for run in expired:
            registry.runs.pop(run.id, None)
        if expired:
            await registry.state.flush()  # no queued write of them may land after the removal
        for run in expired:
            directory = registry.state_dir / "runs" / run.id
            await trio.to_thread.run_sync(remove_tree, directory, registry.state_dir / "runs")
        if expired:
            self.removed += len(expired)
            log.info("retention: removed %d runs (keeping %s per runtime, %s days)",
                     len(expired), self.policy.max_runs or "all", self.policy.max_age_days or "all")
        return [run.id for run in expired]
