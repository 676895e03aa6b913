"""daemon.status: what the daemon is doing and what it costs; daemon.ui: the dashboard URL."""

from __future__ import annotations

import os
import time
from typing import Any

from ... import __version__
from ...base.errors import ApiError
from ...base.lifecycle import LeaseStatus
from ...base.params import Params
from ..api import Api, Caller, method


@method("daemon.status")
def daemon_status(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    p.finish()
    reg = api.registry
    with api.own_process.oneshot():
        rss = api.own_process.memory_info().rss
        cpu = api.own_process.cpu_percent()
    live = [rt for rt in reg.runtimes.values() if rt.process is not None]
    return {
        "version": __version__,
        "pid": os.getpid(),
        "started_at": api.started_at_text,
        "uptime_s": round(time.time() - api.started_at, 3),
        "counts": {
            "spaces": len(reg.spaces),
            "runtimes": len(reg.runtimes),
            "active_runtimes": len(live),
            "connections": sum(1 for lease in reg.leases.values()
                               if lease.status == LeaseStatus.ACTIVE),
            "clients": api.clients,
        },
        "rss_bytes": rss,
        "cpu_percent": cpu,
        "limits": {"max_runtimes": reg.config.limits.max_runtimes,
                   "nofile": reg.budget.nofile},
        "budgets": reg.budget.status(),
        "pool": reg.pool.status() if reg.pool is not None else
        {"size": 0, "ready": 0, "starting": 0},
        "state_dir": str(reg.state_dir),
        "socket": api.socket_path,
        "cdp_base_url": reg.proxy.base_url(),
    }



@method("daemon.ui")
def daemon_ui(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    """The local dashboard's URL, with its token: only for the daemon's own uid (or root)."""
    p.finish()
    if caller.uid not in (os.getuid(), 0):
        raise ApiError("auth.forbidden",
                       "Only the daemon's own user gets the dashboard's URL.",
                       hint="Run `browserctl ui` as the user the daemon runs as.",
                       data={"uid": caller.uid})
    assert api.ui_url is not None  # the service sets it before serving
    return {"url": api.ui_url()}
