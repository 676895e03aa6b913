"""runs.artifacts.*: the files a run produced (downloads, screenshots, PDFs, collected files)."""

from __future__ import annotations

from typing import Any

from ...base.params import Params
from ..api import Api, Caller, method, page

MIB = 1024 * 1024
DEFAULT_READ = 1 * MIB
MAX_READ = 8 * MIB  # half the RPC frame limit (16 MiB), leaving room for the envelope


@method("runs.artifacts.list")
async def runs_artifacts_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """The run's artifacts, newest first; `kind` keeps one kind (download, screenshot, ...)."""
    run_id = p.text("run_id", max_len=64)
    kind = p.text("kind", None, max_len=64)
    p.finish()
    run = api.registry.get_run(run_id)
    store = api.registry.artifacts
    await store.load(run)  # the index comes from the run's log: read it off the event loop
    return page(store.list(run, kind))


@method("runs.artifacts.read")
async def runs_artifacts_read(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """`length` bytes of an artifact from `offset`: `{data: bin, eof}`."""
    run_id = p.text("run_id", max_len=64)
    artifact_id = p.text("artifact_id", max_len=64)
    offset = p.integer("offset", 0, low=0, high=2**62)
    length = p.integer("length", DEFAULT_READ, low=1, high=MAX_READ)
    p.finish()
    run = api.registry.get_run(run_id)
    data, eof = await api.registry.artifacts.read(run, artifact_id, offset, length)
    return {"data": data, "eof": eof}
