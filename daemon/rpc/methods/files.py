"""files.*: the runtime's file area (`<state>/runtimes/<runtime_id>/files/`), see files.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from ...base.errors import ApiError
from ...base.params import Params, invalid
from ...core.runtime import Runtime
from ..api import Api, Caller, method, page

MAX_DATA = 64 * 1024 * 1024  # the RPC frame limit (16 MiB by default) is the real bound


@method("files.stage")
async def files_stage(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """Put a file at `path` in the area: `data` (bytes), or a copy of the daemon-local file
    `source_path` (only for a caller with the daemon's own uid). Returns its record."""
    rt = api.runtime(p)
    path = p.text("path", max_len=4096)
    data = p.binary("data", None, max_len=MAX_DATA)
    source_path = p.text("source_path", None)
    p.finish()
    if (data is None) == (source_path is None):
        raise invalid("data", "give exactly one of data and source_path")
    source = None
    if source_path is not None:
        if caller.uid != os.getuid():
            raise ApiError(
                "auth.forbidden",
                "Only a caller with the daemon's own uid may stage a daemon-local file.",
                hint="Send the file's bytes as data instead.",
                data={"uid": caller.uid},
            )
        source = Path(source_path)
        if not source.is_absolute():
            raise invalid("source_path", "must be an absolute path")
    area = api.control.file_area(rt)
    record: dict[str, Any] = await trio.to_thread.run_sync(area.stage, path, data, source)
    _log(rt, "file.staged", {**record, "source": "local" if source else "data"},
         caller.actor())
    return record


@method("files.list")
async def files_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """Regular files in the area (or under `path`), sorted by path; `sha256=true` hashes
    each one."""
    rt = api.runtime(p, touch=False)
    path = p.text("path", "", max_len=4096)
    with_hash = p.flag("sha256", False)
    p.finish()
    area = api.control.file_area(rt)
    records = await trio.to_thread.run_sync(
        lambda: area.list_files(path, with_hash=with_hash)
    )
    return page(records)


@method("files.collect")
async def files_collect(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """Copy the file at `path` into the active run's artifacts (kind "file").

    Returns `{file, artifact}`.
    """
    rt = api.runtime(p)
    path = p.text("path", max_len=4096)
    p.finish()
    if rt.run is None or rt.log is None:
        raise ApiError(
            "runtime.no_active_run",
            f"Runtime {rt.record.space}/{rt.record.name} has no active run to collect into.",
            hint="Launch it first; collected files become artifacts of the active run.",
            data={"runtime_id": rt.id, "status": rt.record.status},
        )
    area = api.control.file_area(rt)
    fd, record = await trio.to_thread.run_sync(area.open_file, path)
    try:
        # /proc/self/fd names the descriptor opened without following symlinks: the copy
        # reads the very file that was checked.
        artifact = await api.registry.artifacts.add(
            rt, kind="file", name=Path(record["path"]).name,
            source=Path(f"/proc/self/fd/{fd}"), max_bytes=record["size_bytes"],
        )
    finally:
        os.close(fd)
    _log(rt, "file.collected", {"path": record["path"], "size_bytes": record["size_bytes"],
                                "sha256": record.get("sha256"), "artifact_id": artifact["id"]},
         caller.actor())
    return {"file": record, "artifact": artifact}


def _log(rt: Runtime, type: str, data: dict[str, Any], actor: dict[str, Any]) -> None:
    # The file area outlives runs: a stage while the runtime is stopped has no log to go in.
    if rt.log is not None:
        rt.log.append(type, data, actor=actor)
