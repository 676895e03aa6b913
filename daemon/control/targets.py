"""The control link of each live runtime, and the runtime's pages (targets).

`Targets` is a run service: beside every run's browser it keeps one "control link" on the
daemon's connection to that browser (the run's `BrowserLink`, cdp/browser_link.py, shared
with the observer and the network rules). The link

- follows the browser link's target table, so the daemon always knows which pages exist and
  which one is *active*: the page last activated through `targets.activate`, else the one last
  created or navigated (by anyone), else the oldest page;
- attaches to a page (`BrowserLink.attach`, flatten) only when an invocation needs it, and
  keeps that session until the page goes; listing never attaches, so a page a client drives is
  left alone. The session is the control link's own, not the observer's: an invocation's
  `Page.enable`, `Runtime.enable` or navigation waits never change which events the observer
  gets (its console messages stay recorded once), and the observer's enables never feed an
  invocation events it did not ask for;
- owns a nursery in which the run's invocations execute: they belong to the daemon, not to
  the request that started them, and are cancelled when the run ends.

The `targets.*` methods call `list/create/activate/close` here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import trio

from ..base.errors import ApiError
from ..base.lifecycle import RuntimeStatus
from ..cdp.browser_link import BrowserLink, Target
from ..cdp.client import CdpConnection, CdpError, CdpEvent
from ..core.runtime import Runtime

__all__ = ["Link", "Targets", "require_url", "target_not_found"]

log = logging.getLogger(__name__)

LINK_WAIT_S = 10.0
ATTACH_TIMEOUT_S = 30.0
CLOSE_WAIT_S = 5.0  # how long a request waits for a just-launched runtime's link to come up
_LISTENER_QUEUE = 1000
_PAGE_TYPES = ("page",)


def require_url(url: str, field: str = "url") -> str:
    """An absolute URL (with a scheme), else `rpc.invalid_params` naming `field`."""
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url):
        raise ApiError("rpc.invalid_params", f"{field}: {url[:200]!r} is not an absolute URL",
                       hint="Give a URL with its scheme: https://..., http://..., data:..., "
                            "about:blank.",
                       data={"field": field})
    return url


def target_not_found(target_id: str) -> ApiError:
    return ApiError(
        "target.not_found",
        f"The runtime has no target {target_id!r}.",
        hint="List its pages with targets.list (`browserctl tabs NAME`).",
        data={"target_id": target_id},
    )


@attrs.define
class Link:
    """One run's control link: the active page, and the sessions invocations use."""

    runtime_id: str
    run_id: str
    browser: BrowserLink
    nursery: trio.Nursery  # the run's invocations run here
    active_id: str | None = None
    _sessions: dict[str, str] = attrs.Factory(dict)  # target id -> session id
    _attaching: dict[str, trio.Lock] = attrs.Factory(dict)
    _listeners: dict[str, set[trio.MemorySendChannel[CdpEvent]]] = attrs.Factory(dict)
    _gone: dict[str, trio.Event] = attrs.Factory(dict)  # target id -> set when destroyed
    _urls: dict[str, str] = attrs.Factory(dict)  # target id -> the URL last seen (navigations)

    @property
    def cdp(self) -> CdpConnection:
        return self.browser.cdp

    @property
    def targets(self) -> dict[str, Target]:
        """The browser's targets, oldest first (the browser link's table)."""
        return self.browser.targets

    # -------------------------------------------------------------- what the daemon knows

    def pages(self) -> list[str]:
        return [tid for tid, target in self.targets.items() if target.type in _PAGE_TYPES]

    def active_page(self) -> str | None:
        """The active page: last activated, else last created or navigated, else the oldest."""
        if self.active_id in self.targets:
            return self.active_id
        pages = self.pages()
        return pages[0] if pages else None

    def record(self, info: dict[str, Any]) -> dict[str, Any]:
        """A target as the API shows it: `{id, type, url, title, active}`."""
        target_id = str(info.get("targetId", ""))
        return {"id": target_id, "type": info.get("type", ""), "url": info.get("url", ""),
                "title": info.get("title", ""), "active": target_id == self.active_page()}

    # -------------------------------------------------------------- sessions and events

    def attached(self) -> set[str]:
        """The pages the daemon holds a session on: only those invocations have acted on."""
        return set(self._sessions)

    async def session(self, target_id: str) -> str:
        """A flat session attached to the page (made on first use, kept while it lives)."""
        lock = self._attaching.setdefault(target_id, trio.Lock())
        async with lock:  # two invocations on a new page attach once
            session_id = self._sessions.get(target_id)
            if session_id is None:
                try:
                    session_id = await self.browser.attach(target_id, self._on_session_event,
                                                           timeout_s=ATTACH_TIMEOUT_S)
                except CdpError:
                    raise target_not_found(target_id) from None
                self._sessions[target_id] = session_id
            return session_id

    async def wait_gone(self, target_id: str, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the browser to report the target destroyed."""
        if target_id not in self.targets:
            return
        gone = self._gone.setdefault(target_id, trio.Event())
        with trio.move_on_after(timeout_s):
            await gone.wait()

    @contextmanager
    def listen(self, session_id: str) -> Iterator[trio.MemoryReceiveChannel[CdpEvent]]:
        """Events of one session for the block's duration (a full queue drops, never blocks)."""
        send, receive = trio.open_memory_channel[CdpEvent](_LISTENER_QUEUE)
        self._listeners.setdefault(session_id, set()).add(send)
        try:
            yield receive
        finally:
            listeners = self._listeners.get(session_id, set())
            listeners.discard(send)
            if not listeners:
                self._listeners.pop(session_id, None)
            send.close()

    def _on_session_event(self, event: CdpEvent) -> None:
        """An event of one of the link's sessions, to the listeners of that session."""
        for send in list(self._listeners.get(event.session_id or "", ())):
            try:
                send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the listener has stopped reading or gone; never stall the reader

    def on_browser_event(self, event: CdpEvent) -> None:
        """A browser-level event, once the browser link's table has taken it in."""
        params = event.params
        if event.method in ("Target.targetCreated", "Target.targetInfoChanged"):
            info = params.get("targetInfo") or {}
            target_id = info.get("targetId")
            if not isinstance(target_id, str):
                return
            is_page = info.get("type") in _PAGE_TYPES
            before = self._urls.get(target_id)
            self._urls[target_id] = str(info.get("url", ""))
            navigated = before is not None and before != self._urls[target_id]
            if is_page and (before is None or navigated):
                self.active_id = target_id  # created or navigated: the daemon's active page
        elif event.method == "Target.targetDestroyed":
            target_id = params.get("targetId")
            self._urls.pop(str(target_id), None)
            if (gone := self._gone.pop(str(target_id), None)) is not None:
                gone.set()
            self._sessions.pop(str(target_id), None)
            self._attaching.pop(str(target_id), None)
            if self.active_id == target_id:
                self.active_id = None  # falls back to the oldest page
        elif event.method == "Target.detachedFromTarget":
            session_id = params.get("sessionId")
            for target_id, known in list(self._sessions.items()):
                if known == session_id:
                    del self._sessions[target_id]


class Targets:
    """The run service that keeps a control link per live runtime, and the targets.* verbs."""

    def __init__(self) -> None:
        self._links: dict[str, Link] = {}  # runtime id -> its live run's link
        self._changed = trio.Event()  # set (and replaced) whenever a link comes or goes

    async def attend(self, rt: Runtime) -> None:
        """Hold the run's control link until the run ends (or the browser goes away)."""
        assert rt.process is not None and rt.run is not None
        run_id = rt.run.id
        browser = await rt.wait_link()
        if browser is None:
            log.warning("runtime %s has no connection to its browser: no control link", rt.id)
            return
        try:
            async with trio.open_nursery() as nursery:
                link = Link(rt.id, run_id, browser, nursery)
                # The targets that exist come first, as targetCreated events.
                stop = browser.watch(link.on_browser_event)
                try:
                    self._links[rt.id] = link
                    self._signal()
                    await browser.wait_closed()  # until the browser goes away or the run ends
                finally:
                    stop()
                nursery.cancel_scope.cancel()
        finally:
            if (current := self._links.get(rt.id)) is not None and current.run_id == run_id:
                del self._links[rt.id]
                self._signal()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def link_nowait(self, rt: Runtime) -> Link | None:
        link = self._links.get(rt.id)
        if link is None or rt.run is None or link.run_id != rt.run.id:
            return None
        return link

    async def link(self, rt: Runtime) -> Link:
        """The runtime's live control link; waits briefly for one that is coming up."""
        with trio.move_on_after(LINK_WAIT_S):
            while True:
                _require_active(rt)
                link = self.link_nowait(rt)
                if link is not None and link.browser.is_open:
                    return link
                await self._changed.wait()
        _require_active(rt)
        raise ApiError(
            "runtime.not_active",
            f"The daemon has no connection to the browser of {rt.record.space}/"
            f"{rt.record.name}.",
            hint="The browser may be going away; check `browserctl ls` and launch it again.",
            data={"runtime_id": rt.id, "status": rt.record.status},
        )

    # -------------------------------------------------------------- targets.*

    async def list(self, rt: Runtime, *, all_types: bool = False) -> list[dict[str, Any]]:
        """The runtime's pages (every target with `all_types`), oldest first."""
        link = await self.link(rt)
        # Target.getTargets reads the browser's list: no page is attached to for it.
        infos = (await link.cdp.call("Target.getTargets"))["targetInfos"]
        order = {tid: n for n, tid in enumerate(link.targets)}
        infos.sort(key=lambda info: order.get(info.get("targetId"), len(order)))
        return [link.record(info) for info in infos
                if all_types or info.get("type") in _PAGE_TYPES]

    async def create(self, rt: Runtime, url: str) -> dict[str, Any]:
        """Open a new page on `url`; it becomes the active page."""
        require_url(url)
        link = await self.link(rt)
        try:
            reply = await link.cdp.call("Target.createTarget", {"url": url})
        except CdpError as exc:
            raise ApiError("rpc.invalid_params", f"url: the browser refused it: {exc.message}",
                           hint="Give an absolute URL (http:, https:, data:, about:blank).",
                           data={"field": "url"}) from None
        target_id = str(reply["targetId"])
        link.active_id = target_id
        return link.record(await self._info(link, target_id))

    async def activate(self, rt: Runtime, target_id: str) -> dict[str, Any]:
        """Bring the page to the front and make it the active page."""
        link = await self.link(rt)
        info = await self._info(link, target_id)
        await link.cdp.call("Target.activateTarget", {"targetId": target_id})
        link.active_id = target_id
        return link.record(info)

    async def close(self, rt: Runtime, target_id: str) -> dict[str, Any]:
        """Close the page; the active page falls back as described in the module docstring."""
        link = await self.link(rt)
        info = await self._info(link, target_id)
        await link.cdp.call("Target.closeTarget", {"targetId": target_id})
        # Closing is asynchronous in the browser: return once it is gone from its list.
        await link.wait_gone(target_id, CLOSE_WAIT_S)
        link.browser.forget(target_id)
        if link.active_id == target_id:
            link.active_id = None
        return {**link.record(info), "active": False, "closed": True}

    async def _info(self, link: Link, target_id: str) -> dict[str, Any]:
        try:
            reply = await link.cdp.call("Target.getTargetInfo", {"targetId": target_id})
        except CdpError:
            raise target_not_found(target_id) from None
        info: dict[str, Any] = reply["targetInfo"]
        return info


def _require_active(rt: Runtime) -> None:
    if rt.record.status != RuntimeStatus.ACTIVE or rt.run is None:
        raise ApiError(
            "runtime.not_active",
            f"Runtime {rt.record.space}/{rt.record.name} is {rt.record.status}.",
            hint="Launch it first: `browserctl launch NAME`.",
            data={"status": rt.record.status},
        )
