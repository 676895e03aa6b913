"""The method table and what every handler gets: the Api (daemon-wide state) and the Caller.

Handlers live in `browserd.daemon.methods`, one module per resource, and register themselves
with `@method(name)`. A handler is `def handler(api, caller, params) -> result`, or `async def`
when it has to wait for something (a browser, a file, another task). It validates everything it
reads (through `Params`) before touching the model, so bad input never changes state.

A plain `def` handler is served inline by the connection's read loop, with no task of its own
and its reply batched with the others of the same read: most calls are such reads and small
updates, and a task per call was most of the daemon's cost per request (see BENCHMARKS.md). Such
a handler must not block: anything slow belongs in an `async def` handler.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import psutil

from .. import __version__
from ..base.errors import ApiError
from ..base.params import Params, invalid
from ..control.surface import Control
from ..core.registry import Registry
from ..core.runtime import Runtime
from ..services.monitor import ResourceMonitor
from ..store.storage import now_rfc3339

API_LEVEL = 1
API_COMPATIBLE = 1  # the oldest level this daemon still serves
CAPABILITIES = ["cdp.proxy", "runs.events", "leases", "subscriptions"]


class CallerSession(Protocol):
    """The RPC connection a call came in on, for methods that push notifications
    (`*.follow`): its tasks end when the connection closes."""

    subscriptions: dict[str, Any]  # subscription id -> the stream's handle (see follow.py)

    async def notify(self, method: str, payload: dict[str, Any]) -> None: ...

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None: ...


@attrs.frozen
class Caller:
    """Who is calling: the peer process of the RPC connection (from SO_PEERCRED), and that
    connection (None for calls made without one)."""

    pid: int
    uid: int
    name: str | None
    session: CallerSession | None = attrs.field(default=None, eq=False, repr=False)

    def actor(self) -> dict[str, Any]:
        return {"type": "client", "pid": self.pid, "uid": self.uid, "name": self.name}


Handler = Callable[["Api", Caller, Params], Any]  # returns the result, or an awaitable of it


@attrs.frozen
class Method:
    name: str
    handler: Handler
    inline: bool  # a plain function: the read loop calls it directly (see the module doc)


METHODS: dict[str, Method] = {}


def method(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        METHODS[name] = Method(name, handler, not inspect.iscoroutinefunction(handler))
        return handler

    return register


class Api:
    def __init__(self, registry: Registry, *, socket_path: str) -> None:
        self.registry = registry
        self.socket_path = socket_path
        self.started_at = time.time()
        self.started_at_text = now_rfc3339()
        self.clients = 0
        self.monitor: ResourceMonitor | None = None  # set by the service
        self.ui_url: Callable[[], str] | None = None  # the dashboard's URL (set by the service)
        self.replay_url: Callable[[str], str] | None = None  # a run's replay URL (likewise)
        # targets, invocations, files and idempotency keys (the control surface)
        self.control = Control.build(registry)
        self.own_process = psutil.Process()
        self.own_process.cpu_percent()  # the first reading primes psutil's counter

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
        """Serve one call in-process, as the RPC session does (which runs plain handlers in
        its read loop and awaits the others in a task)."""
        found = self.method(name)
        result = found.handler(self, caller, Params(raw))
        return result if found.inline else await result

    def method(self, name: str) -> Method:
        found = METHODS.get(name)
        if found is None:
            raise ApiError(
                "rpc.method_not_found",
                f"There is no method {name!r}.",
                hint="See docs/api.md for the method list.",
                data={"method": name},
            )
        return found

    def runtime(self, params: Params, id_key: str = "runtime_id", *, touch: bool = True
                ) -> Runtime:
        """The runtime a request addresses. A request that uses it (touch) restarts its idle
        clock; reads such as get, list or stats do not, so watching a runtime never keeps it
        alive."""
        space, name, runtime_id = params.runtime_address(id_key)
        rt = self.registry.get_runtime(space=space, name=name, runtime_id=runtime_id)
        if touch:
            self.registry.touch(rt)
        return rt


def page(items: list[Any]) -> dict[str, Any]:
    return {"data": items, "next_cursor": None}
