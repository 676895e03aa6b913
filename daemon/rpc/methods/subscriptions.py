"""runs.events.follow and subscriptions.cancel: server-pushed event streams (follow.py)."""

from __future__ import annotations

from typing import Any

from ...base.errors import ApiError
from ...base.params import Params
from ..api import Api, Caller, method
from ..follow import MAX_PER_SESSION, Follow


@method("runs.events.follow")
def runs_events_follow(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """Stream a run's events after `after_seq`: the log first, then live, until the run ends.

    Returns `{subscription}`; the events follow as `runs.event` notifications.
    """
    run_id = p.text("run_id", max_len=64)
    after_seq = p.integer("after_seq", 0, low=0)
    types = p.strings("types", None)
    p.finish()
    run = api.registry.get_run(run_id)
    session = caller.session
    if session is None:
        raise ApiError("rpc.invalid_request", "Following needs an RPC connection to push to.",
                       hint="Call runs.events.follow over the daemon's socket.")
    if len(session.subscriptions) >= MAX_PER_SESSION:
        raise ApiError(
            "subscription.limit",
            f"This connection already holds {MAX_PER_SESSION} subscriptions.",
            hint="Cancel some with subscriptions.cancel, or open another connection.",
            data={"limit": MAX_PER_SESSION},
        )
    follow = Follow(api.registry, session, run, after_seq, types)
    follow.start()
    return {"subscription": follow.id}


@method("subscriptions.cancel")
def subscriptions_cancel(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """End a subscription of this connection with `cancelled`; idempotent (an unknown or
    finished one gives `cancelled: false`)."""
    subscription = p.text("subscription", max_len=64)
    p.finish()
    follow = caller.session.subscriptions.get(subscription) if caller.session else None
    if follow is None:
        return {"subscription": subscription, "cancelled": False}
    follow.cancel()
    return {"subscription": subscription, "cancelled": True}
