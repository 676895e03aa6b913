"""profiles.*: named persistent user-data-dirs, held by one runtime at a time."""

from __future__ import annotations

from typing import Any

import trio

from ...base.params import Params
from ..api import Api, Caller, method, page


@method("profiles.list")
async def profiles_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    p.finish()
    store = api.registry.profiles
    # Sizes come from walking the directories: off the event loop.
    records = await trio.to_thread.run_sync(
        lambda: [store.describe(name) for name in store.names()]
    )
    return page(records)


@method("profiles.get")
async def profiles_get(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    name = p.name("name")
    p.finish()
    store = api.registry.profiles
    record: dict[str, Any] = await trio.to_thread.run_sync(store.describe, name)
    return record


@method("profiles.delete")
async def profiles_delete(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    name = p.name("name")
    p.finish()
    await trio.to_thread.run_sync(api.registry.profiles.delete, name)
    return {"deleted": True, "name": name}


@method("profiles.clone")
async def profiles_clone(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    name = p.name("name")
    to = p.name("to")
    p.finish()
    store = api.registry.profiles
    await trio.to_thread.run_sync(store.clone, name, to)
    record: dict[str, Any] = await trio.to_thread.run_sync(store.describe, to)
    return record
