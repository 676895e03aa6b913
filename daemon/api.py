"""The method table: each RPC method reads its params and calls the registry.

A handler is `async def handler(api, caller, params) -> result`. Handlers validate everything
they read (through `Params`) before touching the model, so bad input never changes state.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import psutil

from . import __version__
from .errors import ApiError
from .params import Params, invalid
from .registry import LaunchOptions, Registry, Runtime
from .storage import now_rfc3339

API_LEVEL = 1
API_COMPATIBLE = 1  # the oldest level this daemon still serves
CAPABILITIES = ["cdp.proxy", "runs.events", "leases"]


@attrs.frozen
class Caller:
    """Who is calling: the peer process of the RPC connection (from SO_PEERCRED)."""

    pid: int
    uid: int
    name: str | None

    def actor(self) -> dict[str, Any]:
        return {"type": "client", "pid": self.pid, "uid": self.uid, "name": self.name}


Handler = Callable[["Api", Caller, Params], Awaitable[Any]]
METHODS: dict[str, Handler] = {}


def method(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        METHODS[name] = handler
        return handler

    return register


class Api:
    def __init__(self, registry: Registry, *, socket_path: str) -> None:
        self.registry = registry
        self.socket_path = socket_path
        self.started_at = time.time()
        self.started_at_text = now_rfc3339()
        self.clients = 0
        self._process = psutil.Process()
        self._process.cpu_percent()  # the first reading primes psutil's counter

    def hello_result(self, caller: Caller, params: Params) -> dict[str, Any]:
        params.mapping("client", {})
        api_range = params.mapping("api", {"min": API_LEVEL, "max": API_LEVEL})
        params.strings("want", [])
        params.finish()
        low, high = api_range.get("min", API_LEVEL), api_range.get("max", API_LEVEL)
        if not (isinstance(low, int) and isinstance(high, int)):
            raise invalid("api", "min and max must be integers")
        if high < API_COMPATIBLE or low > API_LEVEL:
            raise ApiError(
                "rpc.api_mismatch",
                f"This daemon serves API levels {API_COMPATIBLE}-{API_LEVEL}; the client asks "
                f"for {low}-{high}.",
                hint="Upgrade the older of the two (pip install -U browserd).",
                data={"supported": {"min": API_COMPATIBLE, "max": API_LEVEL}},
            )
        return {
            "api_level": min(high, API_LEVEL),
            "api_compatible": API_COMPATIBLE,
            "daemon": {"version": __version__, "pid": os.getpid(),
                       "started_at": self.started_at_text},
            "peer": {"pid": caller.pid, "uid": caller.uid},
            "capabilities": CAPABILITIES,
        }

    async def call(self, name: str, caller: Caller, raw: dict[str, Any]) -> Any:
        handler = METHODS.get(name)
        if handler is None:
            raise ApiError(
                "rpc.method_not_found",
                f"There is no method {name!r}.",
                hint="See the README's API section for the method list.",
                data={"method": name},
            )
        return await handler(self, caller, Params(raw))

    def runtime(self, params: Params, id_key: str = "runtime_id") -> Runtime:
        space, name, runtime_id = params.runtime_address(id_key)
        return self.registry.get_runtime(space=space, name=name, runtime_id=runtime_id)


def _page(items: list[Any]) -> dict[str, Any]:
    return {"data": items, "next_cursor": None}


# ---------------------------------------------------------------------------- daemon


@method("daemon.status")
async def daemon_status(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    p.finish()
    reg = api.registry
    with api._process.oneshot():
        rss = api._process.memory_info().rss
        cpu = api._process.cpu_percent()
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
            "connections": sum(1 for lease in reg.leases.values() if lease.status == "active"),
            "clients": api.clients,
        },
        "rss_bytes": rss,
        "cpu_percent": cpu,
        "limits": {"max_runtimes": reg.config.limits.max_runtimes},
        "state_dir": str(reg.state_dir),
        "socket": api.socket_path,
        "cdp_base_url": reg.proxy.base_url(),
    }


# ---------------------------------------------------------------------------- spaces


@method("spaces.create")
async def spaces_create(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    name = p.name("name")
    metadata = p.mapping("metadata", {})
    p.finish()
    return api.registry.create_space(name, metadata).to_wire()


@method("spaces.get")
async def spaces_get(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    name = p.name("name")
    p.finish()
    return api.registry.get_space(name).to_wire()


@method("spaces.list")
async def spaces_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    p.finish()
    return _page([space.to_wire() for space in api.registry.spaces.values()])


@method("spaces.delete")
async def spaces_delete(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    name = p.name("name")
    p.finish()
    api.registry.delete_space(name)
    return {"deleted": True}


# ---------------------------------------------------------------------------- runtimes


@method("runtimes.launch")
async def runtimes_launch(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    space = p.name("space", "default")
    name = p.name("name")
    options = LaunchOptions(
        profile=p.name("profile", None),
        metadata=p.mapping("metadata", {}),
        headless=p.flag("headless", True),
        restart=p.choice("restart", ("no", "on-failure"), "no"),
        idle_timeout_s=p.number("idle_timeout_s", None, low=1, high=7 * 86400),
        max_lifetime_s=p.number("max_lifetime_s", None, low=1, high=30 * 86400),
        args=tuple(p.strings("args", [])),
    )
    p.text("idempotency_key", None, max_len=256)  # accepted now, honoured from issue 5 on
    p.finish()
    for arg in options.args:
        if arg.split("=", 1)[0] in _RESERVED_ARGS:
            raise invalid("args", f"{arg!r} is set by the daemon and cannot be overridden",
                          "Use the launch params (profile, headless) instead.")
    rt, run, started = await api.registry.launch(space, name, options, caller.actor())
    return {"runtime": rt.record.to_wire(), "run": run.to_wire(), "started": started}


_RESERVED_ARGS = frozenset({"--user-data-dir", "--remote-debugging-port",
                            "--remote-debugging-pipe", "--remote-debugging-address"})


@method("runtimes.get")
async def runtimes_get(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    rt = api.runtime(p, "id")
    p.finish()
    return rt.record.to_wire()


@method("runtimes.list")
async def runtimes_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    space = p.name("space", None)
    status = p.choice("status", ("starting", "active", "stopping", "stopped", "failed"), None)
    p.finish()
    records = sorted((rt.record for rt in api.registry.runtimes.values()),
                     key=lambda r: (r.space, r.name))
    return _page([
        r.to_wire() for r in records
        if (space is None or r.space == space) and (status is None or r.status == status)
    ])


@method("runtimes.stop")
async def runtimes_stop(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    rt = api.runtime(p, "id")
    timeout_s = p.number("timeout_s", None, low=0, high=600)
    p.finish()
    run, stopped = await api.registry.stop(rt, "stopped", timeout_s, caller.actor())
    return {"runtime": rt.record.to_wire(), "run": run.to_wire() if run else None,
            "stopped": stopped}


@method("runtimes.delete")
async def runtimes_delete(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    rt = api.runtime(p, "id")
    force = p.flag("force", False)
    p.finish()
    await api.registry.delete(rt, force, caller.actor())
    return {"deleted": True, "runtime": rt.record.to_wire()}


@method("runtimes.update")
async def runtimes_update(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    rt = api.runtime(p, "id")
    metadata = p.mapping("metadata", None)
    idle_timeout_s = p.number("idle_timeout_s", None, low=1, high=7 * 86400)
    p.finish()
    if metadata is not None:
        rt.record.metadata = metadata
    if idle_timeout_s is not None:
        rt.record.config = {**rt.record.config, "idle_timeout_s": idle_timeout_s}
    api.registry.touch(rt)
    api.registry.save_runtime(rt)
    return rt.record.to_wire()


# ---------------------------------------------------------------------------- runs


@method("runs.get")
async def runs_get(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    run_id = p.text("run_id", max_len=64)
    p.finish()
    return api.registry.live_counts(api.registry.get_run(run_id)).to_wire()


@method("runs.list")
async def runs_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    space = p.name("space", None)
    name = p.name("name", None)
    runtime_id = p.text("runtime_id", None, max_len=64)
    status = p.choice("status", ("starting", "active", "stopping", "ended", "failed"), None)
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


# ---------------------------------------------------------------------------- connections


@method("connections.create")
async def connections_create(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    rt = api.runtime(p)
    protocol = p.choice("protocol", ("cdp",), "cdp")
    ttl_s = p.number("ttl_s", 600, low=1, high=86400)
    exclusive = p.flag("exclusive", False)
    label = p.text("label", None, max_len=200)
    p.finish()
    lease, token = api.registry.create_lease(rt, protocol=protocol, ttl_s=ttl_s,
                                             exclusive=exclusive, label=label,
                                             actor=caller.actor())
    return {**lease.to_wire(), "endpoint": api.registry.endpoint(lease, token)}


@method("connections.list")
async def connections_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    has_address = p.has("name") or p.has("runtime_id")
    rt = api.runtime(p) if has_address else None
    if not has_address:
        p.name("space", None)
    p.finish()
    leases = [lease for lease in api.registry.leases.values()
              if rt is None or lease.runtime_id == rt.id]
    return _page([lease.to_wire() for lease in leases])


@method("connections.delete")
async def connections_delete(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    lease_id = p.text("id", max_len=64)
    force = p.flag("force", False)
    p.finish()
    lease = api.registry.get_lease(lease_id)
    api.registry.revoke_lease(lease, force, caller.actor())
    return lease.to_wire()
