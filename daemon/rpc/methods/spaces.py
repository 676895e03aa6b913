"""spaces.*: namespaces for runtimes."""

from __future__ import annotations

from typing import Any

from ...base.params import Params
from ..api import Api, Caller, method, page


@method("spaces.create")
def spaces_create(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    name = p.name("name")
    metadata = p.mapping("metadata", {})
    p.finish()
    return api.registry.create_space(name, metadata).to_wire()


@method("spaces.get")
def spaces_get(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    name = p.name("name")
    p.finish()
    return api.registry.get_space(name).to_wire()


@method("spaces.list")
def spaces_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    p.finish()
    return page([space.to_wire() for space in api.registry.spaces.values()])


@method("spaces.delete")
def spaces_delete(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    name = p.name("name")
    p.finish()
    api.registry.delete_space(name)
    return {"deleted": True}


