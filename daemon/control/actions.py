"""What each invocation action does, in a CDP session attached to one page.

An action is two functions: `check(params)` validates the caller's params when the invocation is
created (bad params never make an invocation), and `run(step)` does the work once the
invocation's turn comes, returning its JSON output. Failures are `ActionFailed` (the page or
browser said no), which the invocation records as `invocation.failed`.

    navigate    {url, wait_until: load|domcontentloaded}   -> {url, title}
    screenshot  {full_page: false}                         -> {artifact}  (PNG)
    pdf         {landscape: false, print_background: true} -> {artifact}  (headless only)
    evaluate    {expression, await_promise: true}          -> the value, as JSON
    content     {format: html|text}                        -> the page's HTML or text
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ..base.errors import ApiError
from ..base.params import Params
from ..cdp.client import CdpError
from ..core.registry import Registry
from ..core.runtime import Runtime
from .targets import Link, require_url

__all__ = ["ACTIONS", "Action", "ActionFailed", "Step", "check_params"]

MAX_EXPRESSION = 1024 * 1024


class ActionFailed(Exception):
    """The action could not be done (a navigation error, a script exception, ...)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@attrs.frozen
class Step:
    """Everything an action's `run` needs."""

    registry: Registry
    rt: Runtime
    link: Link
    invocation_id: str
    target_id: str
    session_id: str
    params: dict[str, Any]

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A CDP command in the page's session; a browser error becomes ActionFailed."""
        try:
            return await self.link.cdp.call(method, params, session_id=self.session_id,
                                            timeout_s=None)  # the invocation has the deadline
        except CdpError as exc:
            raise ActionFailed(f"{method} failed: {exc.message}") from None

    async def store(self, kind: str, name: str, data: bytes, content_type: str
                    ) -> dict[str, Any]:
        """Keep `data` as an artifact of the run; returns its record. (A disk that refuses
        it fails the invocation as `state.unwritable`: invocations.py.)"""
        record: dict[str, Any] = await self.registry.artifacts.add(
            self.rt, kind=kind, name=name, data=data, content_type=content_type,
            target={"kind": "page", "id": self.target_id},
        )
        return record


@attrs.frozen
class Action:
    check: Callable[[Params], dict[str, Any]]
    run: Callable[[Step], Awaitable[Any]]


def check_params(action: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The action's params, validated and with defaults; `rpc.invalid_params` names the field
    as `params.<name>`."""
    p = Params(raw)
    try:
        checked = ACTIONS[action].check(p)
        p.finish()
    except ApiError as exc:
        if exc.code != "rpc.invalid_params":
            raise
        field = f"params.{exc.data.get('field', '')}"
        raise ApiError(exc.code, f"params.{exc.message}", hint=exc.hint,
                       data={**exc.data, "field": field}) from None
    return checked


# -- navigate -----------------------------------------------------------------------------

_WAIT_UNTIL = {"load": "load", "domcontentloaded": "DOMContentLoaded"}


def _check_navigate(p: Params) -> dict[str, Any]:
    return {"url": require_url(p.text("url", max_len=8192)),
            "wait_until": p.choice("wait_until", tuple(_WAIT_UNTIL), "load")}


async def _navigate(step: Step) -> dict[str, Any]:
    await step.call("Page.enable")
    await step.call("Page.setLifecycleEventsEnabled", {"enabled": True})
    step.link.active_id = step.target_id  # navigated by the daemon: the active page
    wanted = _WAIT_UNTIL[step.params["wait_until"]]
    with step.link.listen(step.session_id) as events:
        reply = await step.call("Page.navigate", {"url": step.params["url"]})
        if reply.get("errorText"):
            raise ActionFailed(f"navigation to {step.params['url']} failed: {reply['errorText']}",
                               "Check the URL, and that the site is reachable from here.")
        loader_id, frame_id = reply.get("loaderId"), reply.get("frameId")
        # No loaderId: a same-document navigation (a #fragment), which is complete already.
        if loader_id:
            async for event in events:
                params = event.params
                if (event.method == "Page.lifecycleEvent" and params.get("name") == wanted
                        and params.get("loaderId") == loader_id
                        and params.get("frameId") == frame_id):
                    break
    where = await _evaluate_value(step, "({url: location.href, title: document.title})")
    return where if isinstance(where, dict) else {}


# -- screenshot and pdf -------------------------------------------------------------------


def _check_screenshot(p: Params) -> dict[str, Any]:
    p.choice("format", ("png",), "png")
    return {"full_page": p.flag("full_page", False)}


async def _screenshot(step: Step) -> dict[str, Any]:
    args: dict[str, Any] = {"format": "png"}
    if step.params["full_page"]:
        metrics = await step.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
        viewport = metrics.get("cssLayoutViewport") or {}
        width = max(1, int(size.get("width", 0)), int(viewport.get("clientWidth", 0)))
        height = max(1, int(size.get("height", 0)), int(viewport.get("clientHeight", 0)))
        args |= {"captureBeyondViewport": True,
                 "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}
    reply = await step.call("Page.captureScreenshot", args)
    png = base64.b64decode(reply["data"])
    artifact = await step.store("screenshot", f"screenshot-{step.invocation_id}.png", png,
                                "image/png")
    return {"artifact": artifact}


def _check_pdf(p: Params) -> dict[str, Any]:
    return {"landscape": p.flag("landscape", False),
            "print_background": p.flag("print_background", True)}


async def _pdf(step: Step) -> dict[str, Any]:
    try:
        reply = await step.call("Page.printToPDF", {
            "landscape": step.params["landscape"],
            "printBackground": step.params["print_background"],
        })
    except ActionFailed as exc:
        raise ActionFailed(exc.message, "PDF printing works in headless runtimes only: launch "
                                        "it with headless=true.") from None
    data = base64.b64decode(reply["data"])
    artifact = await step.store("pdf", f"page-{step.invocation_id}.pdf", data, "application/pdf")
    return {"artifact": artifact}


# -- evaluate and content -----------------------------------------------------------------


def _check_evaluate(p: Params) -> dict[str, Any]:
    return {"expression": p.text("expression", max_len=MAX_EXPRESSION),
            "await_promise": p.flag("await_promise", True)}


async def _evaluate(step: Step) -> Any:
    try:
        return await _evaluate_value(step, step.params["expression"],
                                     await_promise=step.params["await_promise"])
    except trio.Cancelled:
        # Timed out or cancelled: stop the script too, or a busy loop keeps the page hung.
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await step.link.cdp.call("Runtime.terminateExecution",
                                         session_id=step.session_id, timeout_s=1)
            except (CdpError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        raise


async def _evaluate_value(step: Step, expression: str, *, await_promise: bool = True) -> Any:
    reply = await step.call("Runtime.evaluate", {
        "expression": expression, "returnByValue": True, "awaitPromise": await_promise,
    })
    details = reply.get("exceptionDetails")
    if details is not None:
        exception = details.get("exception") or {}
        text = exception.get("description") or details.get("text") or "exception"
        raise ActionFailed(f"the expression threw: {str(text).splitlines()[0]}",
                           "Check the expression in the browser's console.")
    result = reply.get("result") or {}
    return result.get("value")  # absent for undefined (and for values JSON cannot hold)


def _check_content(p: Params) -> dict[str, Any]:
    return {"format": p.choice("format", ("html", "text"), "html")}


async def _content(step: Step) -> str:
    expression = {
        "html": "document.documentElement ? document.documentElement.outerHTML : ''",
        "text": "document.body ? document.body.innerText : ''",
    }[step.params["format"]]
    value = await _evaluate_value(step, expression, await_promise=False)
    return value if isinstance(value, str) else ""


ACTIONS: dict[str, Action] = {
    "navigate": Action(_check_navigate, _navigate),
    "screenshot": Action(_check_screenshot, _screenshot),
    "pdf": Action(_check_pdf, _pdf),
    "evaluate": Action(_check_evaluate, _evaluate),
    "content": Action(_check_content, _content),
}
