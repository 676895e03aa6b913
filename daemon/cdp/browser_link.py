"""The daemon's one CDP connection to a run's browser, shared by every part that needs one.

The run supervisor opens it once the browser is up, in a task of its own (`LinkSlot.serve`:
a launch does not wait for it), and keeps it in `Runtime.link` until the run ends; the
network rules, the observer (with its downloads) and the control link all use it:

    link = await rt.wait_link()            # None if the browser could not be reached
    link.watch(on_event)                   # browser-level events, from now on
    session_id = await link.attach(target_id, on_event)   # that session's events, to on_event
    await link.cdp.call(...)               # commands, as on any CdpConnection
    await link.wait_closed()               # the browser went away

The link discovers targets once (`Target.setDiscoverTargets`) and keeps the table of the
browser's targets, oldest first: `targets[id]` is a `Target` (type, url, title, opener,
browser context, the sessions the daemon holds on it). A new watcher is told first about the
targets that exist, as `Target.targetCreated` events, then gets every browser-level event
after the table has taken it in.

It never auto-attaches (`Target.setAutoAttach`) and never calls
`Runtime.runIfWaitingForDebugger`: on Chromium 156 a connection that auto-attaches at browser
level holds every `window.open` popup until it says run, and its run releases the popup for
every client, Playwright included (services/observer.py says more; tests/control/
test_transparency.py checks it). Every session is made by an explicit `attach`, and its events
go to the one handler that asked for it, never to the others: the observer's session on a page
and an invocation's session on the same page are separate sessions, so an invocation's
`Page.enable` or `Runtime.enable` never changes what the observer sees, nor the observer's
what an invocation waits for, and neither reads the other's console messages.

One reader task takes every event off the connection and hands it to the handlers at once.
Handlers are plain functions that must not wait: they note what they need, start a task, or
put the event in a queue of their own (a full one drops its own events only). So a slow
consumer never fills the connection's queue, and never makes another service lose events.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio_websocket

from .client import CdpConnection, CdpError, CdpEvent, open_cdp

__all__ = ["BrowserLink", "Handler", "LinkSlot", "Target", "open_link"]

log = logging.getLogger(__name__)

Handler = Callable[[CdpEvent], None]

# Events beyond this many unread are dropped (counted on the connection). The reader never
# waits on a handler, so this holds only what arrives while the daemon's loop is busy.
MAX_BUFFERED_EVENTS = 50_000
ATTACH_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
DISCOVER_TIMEOUT_S = 10.0  # a launch with block rules waits for the link: bounded


@attrs.define
class Target:
    """One of the browser's targets, as discovery last reported it."""

    id: str
    info: dict[str, Any]  # the latest targetInfo
    sessions: set[str] = attrs.Factory(set)  # the daemon's sessions attached to it

    @property
    def type(self) -> str:
        return str(self.info.get("type", ""))

    @property
    def url(self) -> str:
        return str(self.info.get("url", ""))

    @property
    def title(self) -> str:
        return str(self.info.get("title", ""))

    @property
    def opener_id(self) -> str | None:
        return self.info.get("openerId")

    @property
    def browser_context_id(self) -> str | None:
        return self.info.get("browserContextId")


class BrowserLink:
    """One run's connection to its browser: the target table and the fan-out of its events."""

    def __init__(self, cdp: CdpConnection) -> None:
        self.cdp = cdp
        self.targets: dict[str, Target] = {}  # oldest first
        self._watchers: list[Handler] = []
        self._sessions: dict[str, Handler] = {}  # session id -> the handler that attached it
        self._session_targets: dict[str, str] = {}  # session id -> target id
        self._closed = trio.Event()

    @property
    def is_open(self) -> bool:
        return self.cdp.is_open and not self._closed.is_set()

    async def wait_closed(self) -> None:
        """Return once the connection has ended (the browser went away, or the run ended)."""
        await self._closed.wait()

    # -------------------------------------------------------------- the target table

    def learn(self, info: dict[str, Any]) -> Target | None:
        """Note a target the browser reported in a reply (its event may still be on its way)."""
        target_id = info.get("targetId")
        if not isinstance(target_id, str):
            return None
        target = self.targets.get(target_id)
        if target is None:
            target = self.targets[target_id] = Target(target_id, info)
        return target

    def forget(self, target_id: str) -> None:
        """Drop a target the daemon closed (its destroyed event may come late, or not)."""
        self.targets.pop(target_id, None)

    # -------------------------------------------------------------- subscribers

    def watch(self, handler: Handler) -> Callable[[], None]:
        """Give `handler` every browser-level event from now on, after a `targetCreated` for
        each known target. Returns the function that stops it."""
        for target in list(self.targets.values()):
            self._call(handler, CdpEvent("Target.targetCreated", {"targetInfo": target.info},
                                         None))
        self._watchers.append(handler)

        def stop() -> None:
            if handler in self._watchers:
                self._watchers.remove(handler)

        return stop

    async def attach(self, target_id: str, handler: Handler, *,
                     timeout_s: float = ATTACH_TIMEOUT_S) -> str:
        """Attach to the target in a new flat session whose events go to `handler` alone.

        Raises CdpError when the target is gone, trio.TooSlowError past `timeout_s`, and
        trio.BrokenResourceError / ClosedResourceError when the browser went away.
        """
        reply = await self.cdp.call("Target.attachToTarget",
                                    {"targetId": target_id, "flatten": True},
                                    timeout_s=timeout_s)
        session_id = str(reply["sessionId"])
        # Nothing is sent in a session before a domain is enabled in it: no event of this
        # session can have arrived before its handler is set here.
        self._sessions[session_id] = handler
        self._session_targets[session_id] = target_id
        target = self.targets.get(target_id)
        if target is not None:
            target.sessions.add(session_id)
        return session_id

    # -------------------------------------------------------------- the reader

    async def route(self) -> None:
        """Hand every event of the connection to its handlers until the connection ends."""
        try:
            async for event in self.cdp.events:
                if event.session_id is None:
                    self._on_browser_event(event)
                    for handler in list(self._watchers):
                        self._call(handler, event)
                elif (owner := self._sessions.get(event.session_id)) is not None:
                    self._call(owner, event)
        finally:
            self._closed.set()

    def _on_browser_event(self, event: CdpEvent) -> None:
        params = event.params
        if event.method in ("Target.targetCreated", "Target.targetInfoChanged"):
            info = params.get("targetInfo") or {}
            target = self.learn(info)
            if target is not None:
                target.info = info
        elif event.method == "Target.targetDestroyed":
            target = self.targets.pop(str(params.get("targetId", "")), None)
            for session_id in target.sessions if target is not None else ():
                self._forget_session(session_id)
        elif event.method == "Target.detachedFromTarget":
            self._forget_session(str(params.get("sessionId", "")))

    def _forget_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        target_id = self._session_targets.pop(session_id, None)
        if target_id is not None and (target := self.targets.get(target_id)) is not None:
            target.sessions.discard(session_id)

    def _call(self, handler: Handler, event: CdpEvent) -> None:
        try:
            handler(event)
        except Exception:
            # One service's bug must not cost the others their events.
            log.exception("handler %r failed on %s", handler, event.method)


@asynccontextmanager
async def open_link(ws_url: str) -> AsyncIterator[BrowserLink]:
    """Connect to the browser, start discovery, and route its events for the block."""
    async with open_cdp(ws_url, connect_timeout_s=CONNECT_TIMEOUT_S,
                        max_buffered_events=MAX_BUFFERED_EVENTS) as cdp:
        # The targets that exist come as targetCreated events before the reply; they wait in
        # the connection's queue until the router reads them.
        await cdp.call("Target.setDiscoverTargets", {"discover": True},
                       timeout_s=DISCOVER_TIMEOUT_S)
        link = BrowserLink(cdp)
        body_error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.route)
            try:
                yield link
            except BaseException as exc:
                # Re-raised below, outside the nursery, so the caller sees its own exception
                # rather than an exception group (as open_cdp does).
                body_error = exc
            finally:
                nursery.cancel_scope.cancel()
        if body_error is not None:
            raise body_error


class LinkSlot:
    """A run's link as it comes up: `wait` returns it once made (None if it could not be)."""

    def __init__(self) -> None:
        self.link: BrowserLink | None = None
        self._ready = trio.Event()

    async def wait(self) -> BrowserLink | None:
        await self._ready.wait()
        return self.link

    async def serve(self, ws_url: str) -> None:
        """Hold the link until the browser goes away (or the caller cancels)."""
        try:
            async with open_link(ws_url) as link:
                self.link = link
                self._ready.set()
                await link.wait_closed()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError,
                trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
            log.info("the daemon's connection to the browser at %s ended: %r", ws_url, exc)
        except CdpError as exc:  # discovery refused: a browser shutting down
            log.info("the daemon's connection to the browser at %s failed: %r", ws_url, exc)
        finally:
            self._ready.set()
