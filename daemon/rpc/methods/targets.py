"""targets.*: a runtime's pages, on the daemon's own connection to its browser."""

from __future__ import annotations

from typing import Any

from ...base.errors import ApiError
from ...base.params import Params
from ...core.runtime import Runtime
from ..api import Api, Caller, method, page


def _refuse_if_controlled(api: Api, rt: Runtime) -> None:
    # Opening, closing or switching pages is controlling the browser: an exclusive lease
    # holder has that to itself.
    holder = api.registry.lease_book.exclusive(rt)
    if holder is not None:
        raise ApiError(
            "runtime.controller_busy",
            "An exclusive lease holds this runtime: pages can be listed, not changed.",
            hint="Wait for the lease to expire, or delete it with connections.delete.",
            data={"connection_id": holder.id, "expires_at": holder.expires_at},
        )


@method("targets.list")
async def targets_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """The runtime's pages `{id, type, url, title, active}`, oldest first (`all`: every
    target type). Never attaches to a page."""
    rt = api.runtime(p, touch=False)
    all_types = p.flag("all", False)
    p.finish()
    return page(await api.control.targets.list(rt, all_types=all_types))


@method("targets.create")
async def targets_create(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """Open a page on `url` (default about:blank); it becomes the active page."""
    rt = api.runtime(p)
    url = p.text("url", "about:blank", max_len=8192)
    p.finish()
    _refuse_if_controlled(api, rt)
    return await api.control.targets.create(rt, url)


@method("targets.activate")
async def targets_activate(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """Bring a page to the front; invocations without a target_id then act on it."""
    rt = api.runtime(p)
    target_id = p.text("target_id", max_len=128)
    p.finish()
    _refuse_if_controlled(api, rt)
    return await api.control.targets.activate(rt, target_id)


@method("targets.close")
async def targets_close(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """Close a page."""
    rt = api.runtime(p)
    target_id = p.text("target_id", max_len=128)
    p.finish()
    _refuse_if_controlled(api, rt)
    return await api.control.targets.close(rt, target_id)
