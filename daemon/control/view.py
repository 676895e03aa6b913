"""Live views of a runtime's active page: one screencast per watched runtime, shared by every
viewer of it, and the input a viewer in control mode sends to the page.

Frames come from `Page.startScreencast` on the daemon's own session with the page: the
control link's (`Link.session`: `Target.attachToTarget` with flatten, on the daemon's own
connection to the browser). A session is private to the connection that made it, so a CDP
client of the endpoint sees nothing of it. The screencast runs only while someone watches:
started when the first viewer comes, stopped (`Page.stopScreencast`) when the last one goes,
and Chromium sends a frame only when the page's pixels change, so an idle view costs next to
nothing. The daemon never resumes a page waiting for its debugger and never auto-attaches; a
page is attached to only once it has been known for FRESH_PAGE_S, so a client that made it
(and holds it paused until it has set it up) has resumed it first.

The view follows the link's active page (the one last activated, created or navigated); a
viewer in control mode may switch, open and close tabs, which changes the active page as
`targets.*` does. Its mouse, wheel and keys go to the page with `Input.dispatch*Event` and
`Input.insertText` on the same session, at coordinates scaled from the viewer's screen element
to the frame's metadata.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ..base.errors import ApiError
from ..cdp.client import CdpError
from ..core.runtime import Runtime
from .targets import Link, Targets

__all__ = ["SCREENCAST", "Viewer", "Views"]

log = logging.getLogger(__name__)

FRESH_PAGE_S = 0.5  # a page is attached to once it has been known this long
FOLLOW_INTERVAL_S = 0.1  # how often a screencast looks for a new active page or tab list
STOP_TIMEOUT_S = 2.0
# JPEG frames at most 1920 px a side: what a viewer's window shows, at a size a loopback
# WebSocket carries at tens of frames a second.
SCREENCAST = {"format": "jpeg", "quality": 70, "maxWidth": 1920, "maxHeight": 1920,
              "everyNthFrame": 1}
_MOUSE_TYPES = {"down": "mousePressed", "up": "mouseReleased", "move": "mouseMoved"}
_BUTTONS = ("none", "left", "middle", "right", "back", "forward")
_CTRL, _ALT, _META = 2, 1, 4
# Keys whose keyDown carries text, beside the printable ones.
_KEY_TEXT = {"Enter": "\r", "Tab": "\t"}


class BadInput(ValueError):
    """A viewer's input message is malformed (it is dropped and counted)."""


@attrs.define(eq=False)
class Viewer:
    """One open view page: what it has yet to be sent, and what it did."""

    control: bool
    frame: str | None = None  # the newest frame message not yet sent (older ones are dropped)
    tabs: str | None = None  # the tab list message, when it changed since it was last sent
    ended: str | None = None  # why the screencast ended under the viewer, if it did
    frames_sent: int = 0
    inputs: int = 0
    inputs_refused: int = 0
    _news: trio.Event = attrs.Factory(trio.Event)

    def notify(self) -> None:
        self._news.set()

    async def wait_news(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for a frame, a tab list or the end."""
        with trio.move_on_after(timeout_s):
            await self._news.wait()
        self._news = trio.Event()

    def take(self) -> list[str]:
        """The messages to send now, in order (a viewer that falls behind skips frames)."""
        out = [m for m in (self.tabs, self.frame) if m is not None]
        if self.frame is not None:
            self.frames_sent += 1
        self.tabs = self.frame = None
        return out

    def stats(self) -> dict[str, int]:
        return {"frames_sent": self.frames_sent, "inputs": self.inputs,
                "inputs_refused": self.inputs_refused}


class Screencast:
    """The screencast of one runtime's active page, while it has viewers."""

    def __init__(self, link: Link, settings: dict[str, Any]) -> None:
        self.link = link
        self.settings = settings  # Page.startScreencast's params
        self.viewers: set[Viewer] = set()
        self.target_id: str | None = None
        self.session_id: str | None = None
        self.metadata: dict[str, Any] | None = None  # of the newest frame
        # The newest frame, for a viewer who joins while nothing changes (no frame comes).
        self.last_frame: str | None = None
        self.ending = False
        self.done = trio.Event()
        self.frames = 0
        self._seen: dict[str, float] = {}  # target id -> when this screencast first saw it
        self._tabs_key: Any = None
        self._listener: trio.CancelScope | None = None

    async def run(self) -> None:
        """Follow the active page until the last viewer leaves, then stop the screencast."""
        try:
            async with trio.open_nursery() as nursery:
                while self.viewers:
                    self._publish_tabs()
                    wanted = self._wanted_target()
                    if wanted != self.target_id:
                        await self._switch(nursery, wanted)
                    await trio.sleep(FOLLOW_INTERVAL_S)
                nursery.cancel_scope.cancel()
        finally:
            self.ending = True  # from here on a new viewer waits for `done` and starts anew
            with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT_S):
                await self._stop()
            self.done.set()

    def _wanted_target(self) -> str | None:
        now = trio.current_time()
        for target_id in self.link.pages():
            self._seen.setdefault(target_id, now)
        active = self.link.active_page()
        if active is None or now - self._seen.get(active, now) < FRESH_PAGE_S:
            # Not yet: keep what is shown (a page just made may still wait for its client).
            return self.target_id if self.target_id in self.link.targets else None
        return active

    async def _switch(self, nursery: trio.Nursery, target_id: str | None) -> None:
        await self._stop()
        self.target_id, self.metadata, self.last_frame = target_id, None, None
        if target_id is None:
            return
        try:
            session_id = await self.link.session(target_id)
        except ApiError:  # gone meanwhile: the next round picks another page
            self.target_id = None
            return
        self.session_id = session_id
        self._listener = await nursery.start(self._receive_frames, session_id)
        try:
            await self.link.cdp.call("Page.startScreencast", self.settings,
                                     session_id=session_id)
        except CdpError as exc:
            log.info("screencast of %s refused: %s", target_id, exc)
        self._publish_tabs(force=True)

    async def _stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None
        session_id, self.session_id = self.session_id, None
        if session_id is not None and self.link.cdp.is_open:
            try:
                await self.link.cdp.call("Page.stopScreencast", session_id=session_id,
                                         timeout_s=STOP_TIMEOUT_S)
            except (CdpError, trio.TooSlowError, trio.BrokenResourceError,
                    trio.ClosedResourceError):
                pass  # the page (or the browser) went: nothing is casting any more

    async def _receive_frames(self, session_id: str, *,
                              task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope, self.link.listen(session_id) as events:
            task_status.started(scope)
            async for event in events:
                if event.method != "Page.screencastFrame":
                    continue
                params = event.params
                # Acked at once: Chromium sends the next frame only after the ack, and a
                # viewer that falls behind skips frames rather than slowing the cast.
                self.link.nursery.start_soon(self._ack, session_id, params.get("sessionId"))
                self.metadata = params.get("metadata") or {}
                self.frames += 1
                message = json.dumps({"t": "frame", "seq": self.frames,
                                      "target": self.target_id, "data": params.get("data", ""),
                                      "meta": self.metadata})
                self.last_frame = message
                for viewer in self.viewers:
                    viewer.frame = message
                    viewer.notify()

    async def _ack(self, session_id: str, frame_session: Any) -> None:
        try:
            await self.link.cdp.call("Page.screencastFrameAck", {"sessionId": frame_session},
                                     session_id=session_id, timeout_s=STOP_TIMEOUT_S)
        except (CdpError, trio.TooSlowError, trio.BrokenResourceError,
                trio.ClosedResourceError):
            pass

    def _publish_tabs(self, force: bool = False) -> None:
        tabs = [{"id": tid, "url": target.url, "title": target.title}
                for tid, target in self.link.targets.items() if target.type == "page"]
        key = (tuple(tuple(t.values()) for t in tabs), self.target_id)
        if key == self._tabs_key and not force:
            return
        self._tabs_key = key
        message = json.dumps({"t": "tabs", "tabs": tabs, "shown": self.target_id})
        for viewer in self.viewers:
            viewer.tabs = message
            viewer.notify()

    def join(self, viewer: Viewer) -> None:
        """A viewer joins a running screencast: it gets the tab list and the newest frame."""
        self.viewers.add(viewer)
        self._tabs_key = None
        self._publish_tabs()
        viewer.frame = self.last_frame
        viewer.notify()


class Views:
    """Every runtime's screencast (while watched) and the viewers' input."""

    def __init__(self, targets: Targets) -> None:
        self.targets = targets
        self._casts: dict[str, Screencast] = {}  # runtime id -> its screencast
        # A recorded runtime's screencast has the recording's caps (recording.py), whoever
        # starts it: runtime id -> its params.
        self.settings: dict[str, dict[str, Any]] = {}

    def watching(self, rt: Runtime) -> int:
        cast = self._casts.get(rt.id)
        return len(cast.viewers) if cast is not None else 0

    @asynccontextmanager
    async def watch(self, rt: Runtime, control: bool) -> AsyncIterator[Viewer]:
        """Watch the runtime's active page for the block's duration."""
        link = await self.targets.link(rt)
        while (cast := self._casts.get(rt.id)) is not None and (cast.ending
                                                                or cast.link is not link):
            await cast.done.wait()  # the last viewer just left it (or its run): start anew
        viewer = Viewer(control)
        if cast is None:
            cast = self._casts[rt.id] = Screencast(link, self.settings.get(rt.id, SCREENCAST))
            cast.viewers.add(viewer)
            link.nursery.start_soon(self._run, rt.id, cast)
        else:
            cast.join(viewer)
        try:
            yield viewer
        finally:
            cast.viewers.discard(viewer)

    async def _run(self, runtime_id: str, cast: Screencast) -> None:
        # A task of the link's nursery (where the run's invocations run): whatever happens to
        # the screencast stays here, and its viewers are told it ended.
        try:
            await cast.run()
        except* (trio.BrokenResourceError, trio.ClosedResourceError) as group:
            log.info("screencast of runtime %s ended: %s", runtime_id, group.exceptions[0])
        except* Exception:
            log.exception("screencast of runtime %s failed", runtime_id)
        finally:
            if self._casts.get(runtime_id) is cast:
                del self._casts[runtime_id]
            for viewer in cast.viewers:  # none, unless it ended under them
                viewer.ended = viewer.ended or "closed"
                viewer.notify()

    async def input(self, rt: Runtime, viewer: Viewer, message: dict[str, Any]) -> None:
        """Send one input message of a viewer to the page (refused in watch mode)."""
        if not viewer.control:
            viewer.inputs_refused += 1
            return
        cast = self._casts.get(rt.id)
        if cast is None or cast.session_id is None:
            return
        kind = message.get("t")
        try:
            if kind == "tab":
                await self._tab(rt, message)
            elif kind in ("mouse", "wheel"):
                if cast.metadata is None:
                    return  # nothing shown yet: no coordinates to scale to
                await cast.link.cdp.call("Input.dispatchMouseEvent",
                                         mouse_params(message, cast.metadata),
                                         session_id=cast.session_id)
            elif kind == "key":
                await cast.link.cdp.call("Input.dispatchKeyEvent", key_params(message),
                                         session_id=cast.session_id)
            elif kind == "text":
                await cast.link.cdp.call("Input.insertText",
                                         {"text": _text(message, "text", 10_000)},
                                         session_id=cast.session_id)
            else:
                raise BadInput(f"unknown message {kind!r}")
            viewer.inputs += 1
        except (BadInput, ApiError, CdpError) as exc:
            viewer.inputs_refused += 1
            log.debug("view input dropped: %s", exc)

    async def _tab(self, rt: Runtime, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "open":
            await self.targets.create(rt, _text(message, "url", 8192) or "about:blank")
        elif op == "activate":
            await self.targets.activate(rt, _text(message, "id", 128))
        elif op == "close":
            await self.targets.close(rt, _text(message, "id", 128))
        else:
            raise BadInput(f"unknown tab operation {op!r}")


# -- input messages to CDP parameters (pure) -----------------------------------------------


def mouse_params(message: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """`Input.dispatchMouseEvent` params of a viewer's mouse or wheel message.

    The viewer sends where it happened as fractions of its screen element (`x`, `y` in 0..1),
    whatever that element's size; the frame shows the page's viewport of `deviceWidth` x
    `deviceHeight` CSS pixels below `offsetTop`, zoomed by `pageScaleFactor`."""
    fx, fy = _number(message, "x", 0, 1), _number(message, "y", 0, 1)
    width = float(metadata.get("deviceWidth") or 0)
    height = float(metadata.get("deviceHeight") or 0)
    scale = float(metadata.get("pageScaleFactor") or 1) or 1.0
    offset_top = float(metadata.get("offsetTop") or 0)
    params: dict[str, Any] = {
        "x": round(fx * width / scale, 2),
        "y": round(max(0.0, fy * height - offset_top) / scale, 2),
        "modifiers": int(_number(message, "modifiers", 0, 15)),
    }
    if message.get("t") == "wheel":
        params.update(type="mouseWheel", deltaX=_number(message, "dx", -1e5, 1e5),
                      deltaY=_number(message, "dy", -1e5, 1e5))
        return params
    kind = _MOUSE_TYPES.get(str(message.get("type")))
    button = message.get("button", "none")
    if kind is None or button not in _BUTTONS:
        raise BadInput("mouse: bad type or button")
    params.update(type=kind, button=button, buttons=int(_number(message, "buttons", 0, 31)),
                  clickCount=int(_number(message, "clicks", 0, 3)))
    return params


def key_params(message: dict[str, Any]) -> dict[str, Any]:
    """`Input.dispatchKeyEvent` params of a viewer's key message (a DOM KeyboardEvent's
    `key`, `code`, `keyCode` and modifiers): a key that types text carries it, unless Ctrl,
    Alt or Meta is held (then it is a shortcut)."""
    down = message.get("type")
    if down not in ("down", "up"):
        raise BadInput("key: type must be down or up")
    key, code = _text(message, "key", 32), _text(message, "code", 32)
    modifiers = int(_number(message, "modifiers", 0, 15))
    params: dict[str, Any] = {"key": key, "code": code, "modifiers": modifiers,
                              "windowsVirtualKeyCode": int(_number(message, "keyCode", 0, 255))}
    params["nativeVirtualKeyCode"] = params["windowsVirtualKeyCode"]
    text = key if len(key) == 1 else _KEY_TEXT.get(key, "")
    if down == "up":
        params["type"] = "keyUp"
    elif text and not modifiers & (_CTRL | _ALT | _META):
        params.update(type="keyDown", text=text, unmodifiedText=text)
    else:
        params["type"] = "rawKeyDown"
    return params


def _number(message: dict[str, Any], key: str, low: float, high: float) -> float:
    value = message.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInput(f"{key}: not a number")
    return min(max(float(value), low), high)


def _text(message: dict[str, Any], key: str, max_len: int) -> str:
    value = message.get(key, "")
    if not isinstance(value, str) or len(value) > max_len:
        raise BadInput(f"{key}: not a string of at most {max_len} characters")
    return value
