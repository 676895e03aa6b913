"""What happened in each run's browser, as run events, seen on the daemon's own CDP connection.

A run service (registry.RunService). For the life of a run it listens on the daemon's
connection to the browser (the run's `BrowserLink`, cdp/browser_link.py, shared with the
network rules and the control link), whether or not a client is attached, and records:

    target.created | target.navigated | target.destroyed | target.crashed (+ an `alert`)
    console.message (from `events.console_level` up) | page.error (every uncaught exception)
    dialog (opened, closed; left to clients to answer) | download (see downloads.py)

Events carry `source: "browser"` and `target: {kind, id, url}`.

It never gets in a client's way: Chromium serves many CDP connections at once, and the observer
only listens. It learns of targets from the link's discovery (Target.setDiscoverTargets) and
attaches to each one it wants explicitly (`BrowserLink.attach`, in sessions of its own whose
events only it gets), never by auto-attach, and it never calls
Runtime.runIfWaitingForDebugger. Measured on Chromium 156 (tests/control/test_transparency.py): a
connection that auto-attaches at browser level holds every window.open popup paused, even
with waitForDebuggerOnStart=false and even though its attach event says the target is not
waiting, until that connection says run; and its run releases the popup for every client,
including Playwright, which pauses new targets to apply a context's user agent, headers,
viewport and routes first. An auto-attaching observer therefore either hung popups (no run)
or let them start before the client's settings (run): Playwright then saw the default user
agent or missed a route now and then. An explicit attach holds nothing, and the V8 inspector
replays the console messages and exceptions a target logged before Runtime.enable.

It enables only Runtime (console, exceptions) and Page (dialogs, frames) in its own sessions:
no Emulation, no lifecycle events, no interception. One consequence, measured: while any CDP
session has the Page domain enabled, a JavaScript dialog waits for a CDP client to answer it
(Page.handleJavaScriptDialog) instead of being dismissed at once; chromium behaves so anyway,
chromium-headless-shell does so only under observation. Clients such as Playwright answer
dialogs themselves.

Its handlers never wait (the link's reader calls them): what needs a command starts a task.
When the browser goes away the connection breaks and the observer returns quietly: the
registry ends the run.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import trio

from ..base.config import Config
from ..cdp.browser_link import BrowserLink
from ..cdp.client import CdpError, CdpEvent
from ..core.runtime import Runtime
from .downloads import DownloadHost, DownloadTracker

log = logging.getLogger(__name__)

# console.message types recorded at each `events.console_level` (each level includes those above).
_CONSOLE_LEVELS: dict[str, frozenset[str]] = {
    "error": frozenset({"error", "assert"}),
    "warning": frozenset({"warning"}),
    "info": frozenset({"log", "info", "dir", "dirxml", "table", "count", "timeEnd", "trace",
                       "startGroup", "startGroupCollapsed"}),
    "debug": frozenset({"debug", "clear", "endGroup", "profile", "profileEnd"}),
}
_LEVEL_ORDER = ("error", "warning", "info", "debug")
_TEXT_LIMIT = 4096  # console text and error messages are cut here
_STACK_FRAMES = 10
# Attached to on discovery; dedicated workers are discovered too (Chromium 156).
_ATTACH_TYPES = frozenset({"page", "iframe", "worker", "shared_worker", "service_worker"})
_PAGE_TYPES = frozenset({"page", "iframe"})
_IGNORED_TYPES = frozenset({"browser", "tab", "browser_ui"})  # Chromium's own UI, not content


def console_types(level: str) -> frozenset[str]:
    """The console API call types recorded at `level` ("off": none)."""
    if level not in _LEVEL_ORDER:
        return frozenset()
    chosen = _LEVEL_ORDER[: _LEVEL_ORDER.index(level) + 1]
    return frozenset().union(*(_CONSOLE_LEVELS[name] for name in chosen))


@attrs.define
class _Target:
    id: str
    type: str
    url: str
    title: str
    titled: bool = False  # a title was recorded since the last navigation

    def ref(self) -> dict[str, Any]:
        return {"kind": self.type, "id": self.id, "url": self.url}


class Observer:
    """The run service: one `_RunObserver` per run."""

    def __init__(self, registry: DownloadHost, config: Config) -> None:
        self.registry = registry
        self.config = config

    async def attend(self, rt: Runtime) -> None:
        link = await rt.wait_link()
        if link is None or rt.run is None:
            return  # no connection to the browser: it went away, and the run ends
        await _RunObserver(self.registry, self.config, rt, link).run()


class _RunObserver:
    def __init__(self, registry: DownloadHost, config: Config, rt: Runtime,
                 link: BrowserLink) -> None:
        assert rt.run is not None
        self.registry = registry
        self.rt = rt
        self.run_id = rt.run.id
        self.link = link
        self.cdp = link.cdp
        self.console = console_types(config.events.console_level)
        self.targets: dict[str, _Target] = {}
        self.sessions: dict[str, str] = {}  # CDP session id -> target id
        self.frames: dict[str, str] = {}  # frame id -> target id (main frame id = target id)

    def emit(self, type: str, data: dict[str, Any], *, status: str | None = None,
             target: dict[str, Any] | None = None) -> None:
        """Append to the run's log, if the run is still the live one."""
        rt = self.rt
        if rt.log is None or rt.run is None or rt.run.id != self.run_id or rt.log.closed:
            return
        rt.log.append(type, data, source="browser", status=status, target=target)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self.downloads = DownloadTracker(self.registry, self.rt, self.cdp, self.emit,
                                             nursery)
            # The targets that exist come first, as targetCreated events.
            stop = self.link.watch(self.dispatch)
            try:
                try:
                    await self.downloads.claim()
                except CdpError as exc:
                    # Seen while a browser shuts down ("Browser context management is not
                    # supported"): observe anyway; downloads stay as the browser has them.
                    log.info("observer of %s: no download behaviour: %s", self.rt.id, exc)
                nursery.start_soon(self.downloads.watch_clients)
                await self.link.wait_closed()
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError,
                    CdpError) as exc:
                # Caught here, inside the nursery, so it never arrives as an exception group.
                log.debug("observer of %s: the browser went away: %r", self.rt.id, exc)
            finally:
                stop()
                # A client's download behaviour dies with this browser.
                self.registry.download_behaviors.pop(self.rt.id, None)
                with trio.CancelScope(shield=True):
                    await self.downloads.cleanup()
            nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, event: CdpEvent) -> None:
        handler = _HANDLERS.get(event.method)
        if handler is not None:
            handler(self, event.params, event.session_id)

    def _target_of(self, session_id: str | None) -> _Target | None:
        if session_id is None:
            return None
        return self.targets.get(self.sessions.get(session_id, ""))

    def _ref(self, session_id: str | None) -> dict[str, Any] | None:
        target = self._target_of(session_id)
        return target.ref() if target is not None else None

    # -- targets

    def on_target_created(self, params: dict[str, Any], session_id: str | None) -> None:
        info = params.get("targetInfo") or {}
        target = _Target(str(info.get("targetId", "")), str(info.get("type", "")),
                         str(info.get("url", "")), str(info.get("title", "")))
        if target.type in _IGNORED_TYPES:
            return
        self.targets[target.id] = target
        self.emit("target.created", {
            "type": target.type, "url": target.url, "title": target.title,
            "opener_id": info.get("openerId"), "browser_context_id": info.get("browserContextId"),
        }, target=target.ref())
        if target.type in _ATTACH_TYPES:
            self.nursery.start_soon(self._attach, target.id)

    async def _attach(self, target_id: str) -> None:
        """Attach to a discovered target in a session of the observer's own."""
        try:
            session_id = await self.link.attach(target_id, self.dispatch, timeout_s=10)
        except (CdpError, trio.TooSlowError) as exc:
            log.debug("observer: cannot attach to %s: %s", target_id, exc)  # gone meanwhile
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        target = self.targets.get(target_id)
        if target is None:  # destroyed meanwhile
            return
        self.sessions[session_id] = target_id
        if target.type == "page":
            self.frames[target_id] = target_id
        await self._instrument(session_id, target.type)

    def on_target_info_changed(self, params: dict[str, Any], session_id: str | None) -> None:
        info = params.get("targetInfo") or {}
        target = self.targets.get(str(info.get("targetId", "")))
        if target is None:
            return
        url, title = str(info.get("url", "")), str(info.get("title", ""))
        if url != target.url:
            previous, target.url, target.title = target.url, url, title
            # Until the document has a title Chromium shows the URL; the first real title is
            # recorded later (`titled`: targetInfoChanged does not report title changes).
            target.titled = not _placeholder_title(title, url)
            if previous == "" and url == "about:blank":
                return  # a new tab's initial empty document: target.created said it all
            self.emit("target.navigated", {"url": url, "title": title, "previous_url": previous},
                      status="committed", target=target.ref())
        else:
            self._note_title(target, title)

    def _note_title(self, target: _Target, title: str) -> None:
        if title != target.title:
            target.title = title
        if not target.titled and not _placeholder_title(title, target.url):
            target.titled = True
            self.emit("target.navigated", {"url": target.url, "title": title}, status="titled",
                      target=target.ref())

    def on_document_ready(self, params: dict[str, Any], session_id: str | None) -> None:
        # Asked whether titled or not: this news can come before the targetInfoChanged of
        # its navigation, while `titled` still describes the page before (seen in CI: the
        # new page's title was then never recorded). Two calls per page load at most.
        target = self._target_of(session_id)
        if target is not None and target.type == "page":
            self.nursery.start_soon(self._fetch_title, target)

    async def _fetch_title(self, target: _Target) -> None:
        try:
            info = await self.cdp.call("Target.getTargetInfo", {"targetId": target.id},
                                       timeout_s=10)
        except (CdpError, trio.TooSlowError, trio.BrokenResourceError,
                trio.ClosedResourceError):
            return  # closed meanwhile, or the browser is going away
        # The same as a targetInfoChanged: it may even be the first news of the navigation.
        self.on_target_info_changed(info, None)

    def on_target_destroyed(self, params: dict[str, Any], session_id: str | None) -> None:
        target = self.targets.pop(str(params.get("targetId", "")), None)
        if target is not None:
            self.emit("target.destroyed", {"type": target.type}, target=target.ref())

    def on_target_crashed(self, params: dict[str, Any], session_id: str | None) -> None:
        target = self.targets.get(str(params.get("targetId", "")))
        if target is None:
            return
        data = {"status": params.get("status"), "error_code": params.get("errorCode")}
        self.emit("target.crashed", data, target=target.ref())
        # Only the page crashed: the browser and the run live on.
        self.emit("alert", {"reason": "target_crashed",
                            "message": f"A {target.type} crashed ({data['status']}): "
                                       f"{target.url}", **data},
                  target=target.ref())

    async def _instrument(self, session_id: str, kind: str) -> None:
        """Turn on the events the observer needs in a new session. Nothing else: a target a
        client holds paused stays paused until that client lets it run."""
        calls: list[tuple[str, dict[str, Any]]] = [("Runtime.enable", {})]
        if kind in _PAGE_TYPES:
            calls.append(("Page.enable", {}))
        for method, params in calls:
            try:
                await self.cdp.call(method, params, session_id=session_id, timeout_s=10)
            except (CdpError, trio.TooSlowError) as exc:
                # The target went away meanwhile, or is not of a kind that has the domain.
                log.debug("observer: %s on %s: %s", method, session_id, exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
        target = self._target_of(session_id)
        if target is not None and kind in _PAGE_TYPES:
            # Frames attached before this session existed (downloads are matched by frame).
            await self._note_frames(session_id, target)
        if target is not None and target.type == "page" and not target.titled:
            # The document may have loaded before Page.enable took effect.
            await self._fetch_title(target)

    async def _note_frames(self, session_id: str, target: _Target) -> None:
        try:
            reply = await self.cdp.call("Page.getFrameTree", {}, session_id=session_id,
                                        timeout_s=10)
        except (CdpError, trio.TooSlowError, trio.BrokenResourceError,
                trio.ClosedResourceError):
            return
        trees = [reply.get("frameTree") or {}]
        while trees:
            tree = trees.pop()
            frame_id = (tree.get("frame") or {}).get("id")
            if isinstance(frame_id, str):
                self.frames.setdefault(frame_id, target.id)
            trees.extend(tree.get("childFrames") or [])

    def on_detached(self, params: dict[str, Any], session_id: str | None) -> None:
        target_id = self.sessions.pop(str(params.get("sessionId", "")), None)
        target = self.targets.get(target_id or "")
        if target is not None and target.type not in ("page", "iframe", "service_worker",
                                                       "shared_worker"):
            # A dedicated worker's session ends with the worker.
            del self.targets[target.id]

    def on_frame(self, params: dict[str, Any], session_id: str | None) -> None:
        target = self._target_of(session_id)
        frame = params.get("frame") or {}
        frame_id = params.get("frameId") or frame.get("id")
        if target is not None and isinstance(frame_id, str):
            self.frames[frame_id] = target.id

    def on_frame_detached(self, params: dict[str, Any], session_id: str | None) -> None:
        self.frames.pop(str(params.get("frameId", "")), None)

    # -- console, errors, dialogs

    def on_console(self, params: dict[str, Any], session_id: str | None) -> None:
        level = str(params.get("type", "log"))
        if level not in self.console:
            return
        args = params.get("args") or []
        text = " ".join(_describe(arg) for arg in args if isinstance(arg, dict))
        data: dict[str, Any] = {"level": level, "text": _cut(text)}
        data.update(_location(params.get("stackTrace")))
        self.emit("console.message", data, target=self._ref(session_id))

    def on_exception(self, params: dict[str, Any], session_id: str | None) -> None:
        details = params.get("exceptionDetails") or {}
        exception = details.get("exception") or {}
        message = exception.get("description") or details.get("text") or "uncaught exception"
        data: dict[str, Any] = {"message": _cut(str(message)), "url": details.get("url"),
                                "line": details.get("lineNumber"),
                                "column": details.get("columnNumber")}
        stack = _stack(details.get("stackTrace"))
        if stack:
            data["stack"] = stack
        self.emit("page.error", data, target=self._ref(session_id))

    def on_dialog_opening(self, params: dict[str, Any], session_id: str | None) -> None:
        self.emit("dialog", {
            "type": params.get("type"), "message": _cut(str(params.get("message", ""))),
            "url": params.get("url"), "default_prompt": params.get("defaultPrompt"),
        }, status="opened", target=self._ref(session_id))

    def on_dialog_closed(self, params: dict[str, Any], session_id: str | None) -> None:
        self.emit("dialog", {"accepted": params.get("result"),
                             "user_input": params.get("userInput")},
                  status="closed", target=self._ref(session_id))

    # -- downloads

    def on_download_will_begin(self, params: dict[str, Any], session_id: str | None) -> None:
        target = self.targets.get(self.frames.get(str(params.get("frameId", "")), ""))
        self.downloads.will_begin(params, target.ref() if target is not None else None)

    def on_download_progress(self, params: dict[str, Any], session_id: str | None) -> None:
        self.downloads.progress(params)


_HANDLERS = {
    "Target.targetCreated": _RunObserver.on_target_created,
    "Target.targetInfoChanged": _RunObserver.on_target_info_changed,
    "Target.targetDestroyed": _RunObserver.on_target_destroyed,
    "Target.targetCrashed": _RunObserver.on_target_crashed,
    "Target.detachedFromTarget": _RunObserver.on_detached,
    "Page.frameAttached": _RunObserver.on_frame,
    "Page.frameNavigated": _RunObserver.on_frame,
    "Page.frameDetached": _RunObserver.on_frame_detached,
    "Page.domContentEventFired": _RunObserver.on_document_ready,
    "Page.loadEventFired": _RunObserver.on_document_ready,
    "Runtime.consoleAPICalled": _RunObserver.on_console,
    "Runtime.exceptionThrown": _RunObserver.on_exception,
    "Page.javascriptDialogOpening": _RunObserver.on_dialog_opening,
    "Page.javascriptDialogClosed": _RunObserver.on_dialog_closed,
    # Browser-level, not Page.download*: they cover every context and say where the file is.
    "Browser.downloadWillBegin": _RunObserver.on_download_will_begin,
    "Browser.downloadProgress": _RunObserver.on_download_progress,
}


def _placeholder_title(title: str, url: str) -> bool:
    """Whether `title` is what Chromium shows for a page without one (empty, or the URL)."""
    return title in ("", url, "about:blank") or title == url.split("://", 1)[-1]


def _cut(text: str) -> str:
    return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT] + "…"


def _describe(arg: dict[str, Any]) -> str:
    """A console argument as the DevTools console would print it, briefly."""
    if "value" in arg:
        value = arg["value"]
        return value if isinstance(value, str) else json.dumps(value)
    if "unserializableValue" in arg:
        return str(arg["unserializableValue"])
    if arg.get("type") == "undefined":
        return "undefined"
    return str(arg.get("description") or arg.get("className") or arg.get("type", ""))


def _stack(trace: Any) -> list[dict[str, Any]]:
    if not isinstance(trace, dict):
        return []
    frames = trace.get("callFrames") or []
    return [{"function": f.get("functionName") or "", "url": f.get("url"),
             "line": f.get("lineNumber"), "column": f.get("columnNumber")}
            for f in frames[:_STACK_FRAMES] if isinstance(f, dict)]


def _location(trace: Any) -> dict[str, Any]:
    frames = _stack(trace)
    if not frames:
        return {}
    top = frames[0]
    return {"url": top["url"], "line": top["line"], "column": top["column"]}
