"""invocations.*: browser actions the daemon runs on a runtime's page (see invocations.py)."""

from __future__ import annotations

from typing import Any

from ...base.params import Params
from ...control.actions import ACTIONS, check_params
from ...control.invocations import FINISHED, IDEMPOTENCY_METHOD, Invocation, Status
from ...control.outputs import wire_size
from ..api import Api, Caller, method

_STATUSES = (Status.QUEUED, Status.RUNNING, *sorted(FINISHED))
# A page of invocations.list holds records up to this many encoded bytes (and at least one),
# half the RPC frame limit: a list never builds a reply it would have to refuse.
LIST_PAGE_BYTES = 8 * 1024 * 1024


@method("invocations.create")
async def invocations_create(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """Run `action` with `params` on the target (default: the active page).

    With wait=true (the default) the reply comes when the invocation has finished, and a
    failure is the error `invocation.failed|timed_out|cancelled` (the record in
    `data.invocation`); with wait=false the queued record comes back at once.
    """
    rt = api.runtime(p)
    action = p.choice("action", tuple(ACTIONS))
    params = check_params(action, p.mapping("params", {}))
    target_id = p.text("target_id", None, max_len=128)
    timeout_s = p.number("timeout_s", 30, low=0.01, high=3600)
    wait = p.flag("wait", True)
    key = p.text("idempotency_key", None, max_len=256)
    p.finish()
    invocations = api.control.invocations

    async def create() -> dict[str, Any]:
        inv = await invocations.create(rt, action, params, target_id, timeout_s, key,
                                       caller.actor())
        return inv.to_wire(with_params=False)  # what the idempotency store keeps

    if key is None:
        record = await create()
    else:
        # The fingerprint covers what the invocation does, not how the caller waits for it.
        fingerprint = {"runtime_id": rt.id, "action": action, "params": params,
                       "target_id": target_id}
        record, _ = await api.control.idempotency.run(IDEMPOTENCY_METHOD, key, fingerprint,
                                                      create)
    record = {**record, "params": params}  # the same as the first request's: same fingerprint
    inv = invocations.find(record["id"])
    if inv is None:
        # Replayed after a daemon restart: the stored record is all there is.
        if record.get("status") not in FINISHED:
            record = {**record, "status": Status.FAILED, "error": {
                "code": "invocation.failed",
                "message": "The daemon restarted before the invocation finished.",
                "hint": "Retry with a new idempotency key."}}
        return record
    if wait:
        await inv.done.wait()
        inv.raise_unless_succeeded()
    return inv.to_wire()


@method("invocations.get")
def invocations_get(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """One invocation by id."""
    invocation_id = p.text("id", max_len=64)
    p.finish()
    return api.control.invocations.get(invocation_id).to_wire()


@method("invocations.list")
def invocations_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """Invocations, newest first: of one runtime (by address) or all; `status` filters;
    `cursor` is the last id of the previous page. A page ends at `limit` records or at
    LIST_PAGE_BYTES of them, whichever comes first."""
    has_address = p.has("name") or p.has("runtime_id")
    rt = api.runtime(p, touch=False) if has_address else None
    space = None if has_address else p.name("space", None)
    status = p.choice("status", _STATUSES, None)
    cursor = p.text("cursor", None, max_len=64)
    limit = p.integer("limit", 100, low=1, high=1000)
    p.finish()
    items: list[Invocation] = [
        inv for inv in api.control.invocations.list(rt, status)
        if (cursor is None or inv.id < cursor) and (space is None or inv.space == space)
    ]
    chosen: list[dict[str, Any]] = []
    size = 0
    for inv in items[:limit]:
        record = inv.to_wire()
        # A finished record was measured when it finished; a live one changes: measure it.
        size += inv.kept_bytes if inv.status in FINISHED else wire_size(record)
        if chosen and size > LIST_PAGE_BYTES:
            break
        chosen.append(record)
    next_cursor = chosen[-1]["id"] if len(items) > len(chosen) else None
    return {"data": chosen, "next_cursor": next_cursor}


@method("invocations.cancel")
async def invocations_cancel(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """Cancel a queued or running invocation and return its record once it has stopped
    (a finished one is returned as it is)."""
    invocation_id = p.text("id", max_len=64)
    p.finish()
    inv = api.control.invocations.get(invocation_id)
    api.control.invocations.cancel(inv)
    await inv.done.wait()
    return inv.to_wire()
