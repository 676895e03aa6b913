"""The local dashboard: runtimes with their status and live stats, their runs, a run's events
(following live), its artifacts to download, and buttons to stop a runtime or open a live view.

    GET /ui/<token>                          the page
    GET /ui/<token>/ws                       its WebSocket: everything it shows, pushed live
    GET /ui/<token>/artifact/<run>/<id>      an artifact's file, as a download

The token is made at the daemon's start and held in its memory (`UiAccess`); the RPC method
`daemon.ui` gives the URL only to a caller of the daemon's own uid (or root). The page asks
over its WebSocket (`select` a runtime, `follow` a run, `stop`, `view`) and the daemon pushes:
the runtime table when it changes (looked at every REFRESH_S; the stats are each runtime's
latest `resource.sample`), the runs of the selected runtime, a run's last REPLAY_EVENTS
events and then each new one as it is appended, its artifacts.
"""

from __future__ import annotations

import collections
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

import trio

from ..base.errors import ApiError
from ..base.model import RunRecord, hash_token
from ..control.view import Views
from ..core.registry import Registry
from ..core.runtime import Runtime
from ..store.eventlog import EventLog
from .wsock import PageSocket

__all__ = ["Dashboard", "UiAccess"]

log = logging.getLogger(__name__)

REFRESH_S = 0.5  # how often the runtime table (and the selected runtime's runs) is looked at
REPLAY_EVENTS = 500  # a followed run's events shown from before it was followed
LIVE_QUEUE = 5000  # events queued for a page that has not caught up (then it is told to reload)
VIEW_TTL_S = 600.0


class UiAccess:
    """The dashboard's token: made at start, kept hashed for checks and whole for `url()`."""

    def __init__(self, base_url: Callable[[], str]) -> None:
        self._token = secrets.token_urlsafe(32)
        self._hash = hash_token(self._token)
        self._base_url = base_url

    def url(self) -> str:
        return f"{self._base_url()}/ui/{self._token}"

    def check(self, token: str) -> bool:
        return hmac.compare_digest(self._hash, hash_token(token))


def _json(message: dict[str, Any]) -> str:
    return json.dumps(message, default=str, separators=(",", ":"))


class Dashboard:
    """Serves one dashboard page's WebSocket at a time per call of `serve`."""

    def __init__(self, registry: Registry, views: Views) -> None:
        self._registry = registry
        self._views = views
        self._stats: dict[str, dict[str, Any]] = {}  # runtime id -> its latest sample
        self.open_pages = 0

    async def serve(self, ws: PageSocket) -> None:
        self.open_pages += 1
        listening: dict[str, tuple[EventLog, Callable[[dict[str, Any]], None]]] = {}
        try:
            async with trio.open_nursery() as nursery:
                session = _Session(self, ws, nursery)
                nursery.start_soon(session.read)
                nursery.start_soon(self._follow_samples, listening)
                await session.push_runtimes()
        finally:
            self.open_pages -= 1
            for log_, listener in listening.values():
                log_.remove_listener(listener)

    async def _follow_samples(
            self, listening: dict[str, tuple[EventLog, Callable[[dict[str, Any]], None]]]
    ) -> None:
        """Keep each active runtime's latest `resource.sample` (the monitor's own, every
        `resources.sample_interval_s`: a dashboard measures nothing itself), by listening to
        the live logs."""
        while True:
            for rt in list(self._registry.runtimes.values()):
                held = listening.get(rt.id)
                if held is not None and held[0] is not rt.log:
                    held[0].remove_listener(held[1])
                    del listening[rt.id]
                    self._stats.pop(rt.id, None)
                if rt.log is not None and rt.id not in listening:
                    listener = self._sample_listener(rt.id)
                    rt.log.add_listener(listener)
                    listening[rt.id] = (rt.log, listener)
            await trio.sleep(REFRESH_S)

    def _sample_listener(self, runtime_id: str) -> Callable[[dict[str, Any]], None]:
        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "resource.sample":
                self._stats[runtime_id] = event["data"]
        return on_event

    def runtimes(self) -> list[dict[str, Any]]:
        out = []
        for rt in sorted(self._registry.runtimes.values(),
                         key=lambda r: (r.record.space, r.record.name)):
            stats = self._stats.get(rt.id) if rt.process is not None else None
            out.append({
                "id": rt.id, "space": rt.record.space, "name": rt.record.name,
                "status": rt.record.status, "active_run_id": rt.record.active_run_id,
                "profile": rt.record.profile, "viewers": self._views.watching(rt),
                "stats": None if stats is None else {
                    key: stats.get(key) for key in ("cpu_percent", "memory_bytes", "processes",
                                                    "targets")},
            })
        return out

    def runs(self, runtime_id: str, limit: int = 50) -> list[dict[str, Any]]:
        runs = sorted((run for run in self._registry.runs.values()
                       if run.runtime_id == runtime_id), key=lambda run: run.id, reverse=True)
        return [self._registry.live_counts(run).to_wire() for run in runs[:limit]]

    async def artifacts(self, run: RunRecord) -> list[dict[str, Any]]:
        store = self._registry.artifacts
        await store.load(run)
        return store.list(run)  # the page links each to <its path>/artifact/<run>/<id>


class _Session:
    """One open dashboard page."""

    def __init__(self, dashboard: Dashboard, ws: PageSocket, nursery: trio.Nursery) -> None:
        self.dashboard = dashboard
        self.ws = ws
        self.nursery = nursery
        self.selected: str | None = None
        self._follow: trio.CancelScope | None = None

    async def push_runtimes(self) -> None:
        """Send the runtime table (and the selected runtime's runs) whenever it changes."""
        sent_runtimes = sent_runs = ""
        while True:
            text = _json({"t": "runtimes", "runtimes": self.dashboard.runtimes()})
            if text != sent_runtimes:
                await self.ws.send(text)
                sent_runtimes = text
            if self.selected is not None:
                text = _json({"t": "runs", "runtime_id": self.selected,
                              "runs": self.dashboard.runs(self.selected)})
                if text != sent_runs:
                    await self.ws.send(text)
                    sent_runs = text
            await trio.sleep(REFRESH_S)

    async def read(self) -> None:
        while (text := await self.ws.receive()) is not None:
            try:
                message = json.loads(text)
                if isinstance(message, dict):
                    await self.handle(message)
            except ValueError:
                continue
            except ApiError as exc:
                await self.ws.send(_json({"t": "error", "code": exc.code,
                                          "message": exc.message}))
        self.nursery.cancel_scope.cancel()  # the page went

    async def handle(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        registry = self.dashboard._registry
        if kind == "select":
            self.selected = str(message.get("runtime_id"))
            registry.get_runtime(runtime_id=self.selected)
        elif kind == "follow":
            run = registry.get_run(str(message.get("run_id")))
            if self._follow is not None:
                self._follow.cancel()
            self._follow = await self.nursery.start(self._follow_run, run)
        elif kind == "stop":
            rt = registry.get_runtime(runtime_id=str(message.get("runtime_id")))
            registry.nursery.start_soon(self._stop, rt)
        elif kind == "view":
            rt = registry.get_runtime(runtime_id=str(message.get("runtime_id")))
            control = message.get("control") is True
            book = registry.lease_book
            lease, token = book.create(rt, protocol="view", ttl_s=VIEW_TTL_S, exclusive=False,
                                       label="dashboard", actor={"type": "dashboard"},
                                       control=control)
            await self.ws.send(_json({"t": "view", "runtime_id": rt.id, "control": control,
                                      "url": book.endpoint(lease, token)["url"]}))

    async def _stop(self, rt: Runtime) -> None:
        try:
            await self.dashboard._registry.stop(rt, "stopped", None, {"type": "dashboard"})
        except ApiError as exc:
            log.info("dashboard stop of %s refused: %s", rt.id, exc.message)

    async def _follow_run(self, run: RunRecord, *,
                          task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        """The run's last events, then each new one live (until another run is followed)."""
        registry = self.dashboard._registry
        queue: collections.deque[dict[str, Any]] = collections.deque()
        wake = trio.Event()

        def on_event(event: dict[str, Any]) -> None:
            nonlocal wake
            queue.append(event)
            wake.set()

        rt = registry.runtimes.get(run.runtime_id)
        live = rt.log if rt is not None and rt.run is run else None
        with trio.CancelScope() as scope:
            task_status.started(scope)
            # Listen first, then read the file up to where listening began: no gap, no twice.
            live_from = None
            if live is not None:
                live_from = live.last_seq + 1
                live.add_listener(on_event)
            try:
                last = registry.live_counts(run).counts.get("events", 0)
                past = await registry.list_events(run, max(0, last - REPLAY_EVENTS),
                                                  REPLAY_EVENTS + 1000, None)
                past = [e for e in past if live_from is None or e["seq"] < live_from]
                await self.ws.send(_json({"t": "events", "run_id": run.id, "reset": True,
                                          "events": past, "live": live is not None}))
                await self._send_artifacts(run)
                while live is not None:
                    await wake.wait()
                    wake = trio.Event()
                    if len(queue) > LIVE_QUEUE:
                        queue.clear()  # the page fell far behind: it asks again
                        await self.ws.send(_json({"t": "events_lost", "run_id": run.id}))
                        continue
                    batch = list(queue)
                    queue.clear()
                    await self.ws.send(_json({"t": "events", "run_id": run.id,
                                              "events": batch}))
                    if any(e["type"].startswith("artifact.") for e in batch):
                        await self._send_artifacts(run)
            finally:
                if live is not None:
                    live.remove_listener(on_event)

    async def _send_artifacts(self, run: RunRecord) -> None:
        await self.ws.send(_json({"t": "artifacts", "run_id": run.id,
                                  "artifacts": await self.dashboard.artifacts(run)}))
