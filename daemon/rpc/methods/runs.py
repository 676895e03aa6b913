"""runs.*: one activation of a runtime each, and its event log."""

from __future__ import annotations

from typing import Any

from ...base.lifecycle import RunStatus
from ...base.params import Params
from ..api import Api, Caller, method


@method("runs.get")
def runs_get(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    run_id = p.text("run_id", max_len=64)
    p.finish()
    return api.registry.live_counts(api.registry.get_run(run_id)).to_wire()


@method("runs.list")
def runs_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    space = p.name("space", None)
    name = p.name("name", None)
    runtime_id = p.text("runtime_id", None, max_len=64)
    status = p.choice("status", tuple(RunStatus), None)
    cursor = p.text("cursor", None, max_len=64)
    limit = p.integer("limit", 100, low=1, high=1000)
    p.finish()
    reg = api.registry
    if name is not None or runtime_id is not None:
        runtime_id = reg.get_runtime(space=space or "default", name=name,
                                     runtime_id=runtime_id).id
    runs = sorted(reg.runs.values(), key=lambda run: run.id, reverse=True)  # ids sort by time
    chosen = [
        run for run in runs
        if (runtime_id is None or run.runtime_id == runtime_id)
        and (space is None or run.space == space)
        and (status is None or run.status == status)
        and (cursor is None or run.id < cursor)
    ]
    page = chosen[:limit]
    next_cursor = page[-1].id if len(chosen) > limit else None
    return {"data": [reg.live_counts(run).to_wire() for run in page], "next_cursor": next_cursor}


@method("runs.events.list")
async def runs_events_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    run_id = p.text("run_id", max_len=64)
    after_seq = p.integer("after_seq", 0, low=0)
    limit = p.integer("limit", 1000, low=1, high=10_000)
    types = p.strings("types", None)
    p.finish()
    run = api.registry.get_run(run_id)
    events = await api.registry.list_events(run, after_seq, limit + 1, types)
    more = len(events) > limit
    events = events[:limit]
    return {"data": events, "next_cursor": str(events[-1]["seq"]) if more else None}




@method("runs.replay")
def runs_replay(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """The URL of the run's replay page: its recorded frames (if it was recorded) beside its
    events. Valid until the daemon restarts."""
    run_id = p.text("run_id", max_len=64)
    p.finish()
    run = api.registry.get_run(run_id)
    assert api.replay_url is not None  # the service sets it before serving
    return {"url": api.replay_url(run.id), "run_id": run.id}
