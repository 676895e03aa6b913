"""connections.*: connection leases (CDP attach windows and live views, with a secret token)."""

from __future__ import annotations

from typing import Any

from ...base.errors import ApiError
from ...base.params import Params
from ..api import Api, Caller, method, page


@method("connections.create")
async def connections_create(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """A CDP lease (`protocol="cdp"`) or a live view page (`"view"`, watching, or driving the
    page with `control=true`); the endpoint's URLs carry the token and are shown only here."""
    protocol = p.choice("protocol", ("cdp", "view"), "cdp")
    ttl_s = p.number("ttl_s", 600, low=1, high=86400)
    exclusive = p.flag("exclusive", False)
    control = p.flag("control", False)
    label = p.label("label", None)
    # The port the client reaches the CDP proxy at, when that is a forward of its own (SSH):
    # the lease's origin names it in its discovery documents instead of the proxy's port.
    proxy_port = p.integer("proxy_port", None, low=1, high=65535)
    rt = api.runtime(p)
    p.finish()
    if exclusive and protocol != "cdp":
        raise ApiError("rpc.invalid_params", "exclusive: only a CDP lease can be exclusive",
                       hint="A view in control mode (control=true) is a controller already.",
                       data={"field": "exclusive"})
    if control and protocol != "view":
        raise ApiError("rpc.invalid_params", "control: only a view lease has a control mode",
                       hint="A CDP lease always drives the browser; leave control out.",
                       data={"field": "control"})
    # A bare origin for clients that drop the URL's path (Puppeteer's browserURL). Its port is
    # bound first: at the budget's cap (or out of descriptors) no lease is made at all.
    bound = await api.control.origins.bind() if protocol == "cdp" else None
    try:
        lease, token = api.registry.lease_book.create(rt, protocol=protocol, ttl_s=ttl_s,
                                                      exclusive=exclusive, label=label,
                                                      actor=caller.actor(), control=control)
    except BaseException:
        if bound is not None:
            bound.close()
        raise
    endpoint = api.registry.lease_book.endpoint(lease, token)
    if bound is not None:
        endpoint["browser_url"] = api.control.origins.open(lease, token, caller.uid, bound,
                                                            proxy_port)
    return {**lease.to_wire(), "endpoint": endpoint}


@method("connections.list")
def connections_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    has_address = p.has("name") or p.has("runtime_id")
    rt = api.runtime(p, touch=False) if has_address else None
    if not has_address:
        p.name("space", None)
    p.finish()
    leases = [lease for lease in api.registry.leases.values()
              if rt is None or lease.runtime_id == rt.id]
    return page([lease.to_wire() for lease in leases])


@method("connections.get")
def connections_get(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """One lease's metadata (never its URL)."""
    lease_id = p.text("id", max_len=64)
    p.finish()
    return api.registry.lease_book.get(lease_id).to_wire()


@method("connections.delete")
def connections_delete(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    lease_id = p.text("id", max_len=64)
    force = p.flag("force", False)
    p.finish()
    lease = api.registry.lease_book.get(lease_id)
    api.registry.lease_book.revoke(lease, force, caller.actor())
    return lease.to_wire()
