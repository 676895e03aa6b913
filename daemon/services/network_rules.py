"""A runtime's `block` rules: matching requests fail, in every page, and the run counts them.

One CDP command does it, on the daemon's connection to the browser target (the run's
`BrowserLink`, cdp/browser_link.py): `Fetch.enable` there, with no session, intercepts the
requests of every target of every browser context, present and future, without attaching to
any target. Its `patterns` hold only what is blocked (one per resource type, one per URL
pattern), so no other request is ever paused: Chromium lets them through untouched. Each
paused request (a browser-level `Fetch.requestPaused`) is failed at once with
`BlockedByClient` (`net::ERR_BLOCKED_BY_CLIENT` in the page), by a task of the gate's: the
link's reader hands paused requests over without waiting.

Per target, the daemon does nothing at all: it never attaches, never resumes, never sends a
command to a page. Measured with Chromium 156, both builds: Playwright's `page.route()` and
the context options of a `new_context()` work as usual on top (its interception is its own,
per page; a blocked request never reaches it, every other one does).

The rules are in force before the run is reported active (a RunGate: the launch's reply, and
so any client, comes after `Fetch.enable` has answered). Every second that blocked something,
the run's log gets a `network.blocked` event with the counts.
"""

from __future__ import annotations

import collections
import logging
import math
from typing import Any

import trio

from ..base.errors import ApiError
from ..base.runtime_config import RESOURCE_TYPES, BlockRules
from ..cdp.browser_link import BrowserLink
from ..cdp.client import CdpConnection, CdpError, CdpEvent
from ..core.runtime import Runtime

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 1.0
SETUP_TIMEOUT_S = 15.0


def fetch_patterns(rules: BlockRules) -> list[dict[str, Any]]:
    """The `Fetch.enable` patterns of the rules: each one pauses only what it blocks."""
    patterns: list[dict[str, Any]] = [
        {"urlPattern": "*", "resourceType": RESOURCE_TYPES[name], "requestStage": "Request"}
        for name in rules.resource_types
    ]
    patterns += [{"urlPattern": pattern, "requestStage": "Request"}
                 for pattern in rules.url_patterns]
    return patterns


class NetworkRules:
    """The run gate that applies `config.block` to each run's browser."""

    async def guard(self, rt: Runtime, *,
                    task_status: trio.TaskStatus[ApiError | None]) -> None:
        rules = rt.record.config.runtime.block
        process, run = rt.process, rt.run
        if not rules or process is None or run is None:
            task_status.started()
            return
        started = False
        failure = None
        try:
            # Bounded: a browser that does not answer holds up its launch only so long.
            with trio.fail_after(SETUP_TIMEOUT_S):
                link = await rt.wait_link()
            if link is None:  # no connection to the browser: it went away, the run ends
                log.debug("network rules of %s: no connection to the browser", rt.id)
                return
            blocker = _Blocker(rt, run.id, link.cdp)
            stop = link.watch(blocker.on_event)  # before Fetch.enable: no request is missed
            try:
                await link.cdp.call("Fetch.enable", {"patterns": fetch_patterns(rules)},
                                    timeout_s=SETUP_TIMEOUT_S)
                task_status.started()
                started = True
                await blocker.run(link)
            finally:
                stop()
        except trio.TooSlowError:
            failure = f"the browser did not take the rules within {SETUP_TIMEOUT_S:g} s"
        except CdpError as exc:
            failure = f"the browser refused the rules: {exc.message}"
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("network rules of %s stopped: %r", rt.id, exc)  # the browser went away
        finally:
            refusal = None
            if failure is not None and not started:
                log.warning("network rules of %s/%s not applied: %s", rt.record.space,
                            rt.record.name, failure)
                rt.log_if_current(run.id, "network.rules_failed", {"message": failure})
                # A run without the blocking its config asked for is not launched: pages
                # would load what the user meant to keep out.
                refusal = ApiError(
                    "browser.launch_failed", f"The runtime's block rules are not in force: "
                    f"{failure}.", hint="Check config.block (its resource types and URL "
                    "patterns); the browser was stopped.",
                    data={"reason": "rules_failed", "block": rules.to_json()})
            if not started:
                task_status.started(refusal)


class _Blocker:
    """Fails each paused request. The link's reader hands them over through an unbounded
    queue: one dropped would leave its request hanging in the page."""

    def __init__(self, rt: Runtime, run_id: str, cdp: CdpConnection) -> None:
        self.rt = rt
        self.run_id = run_id
        self.cdp = cdp
        self.total = 0
        self.pending: collections.Counter[str] = collections.Counter()
        self._paused, self._to_fail = trio.open_memory_channel[Any](math.inf)

    def on_event(self, event: CdpEvent) -> None:
        if event.method == "Fetch.requestPaused":
            kind = str(event.params.get("resourceType", "Other")).lower()
            self.pending[kind] += 1
            self.total += 1
            self._paused.send_nowait(event.params.get("requestId"))

    async def run(self, link: BrowserLink) -> None:
        """Fail what is paused and report every second, until the browser goes away."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._report_every_second)
                nursery.start_soon(self._fail_paused)
                await link.wait_closed()
                nursery.cancel_scope.cancel()
        finally:
            self.report()  # what the last second blocked, if the run is still open

    async def _fail_paused(self) -> None:
        async for request_id in self._to_fail:
            try:
                await self.cdp.call("Fetch.failRequest", {"requestId": request_id,
                                                          "errorReason": "BlockedByClient"})
            except CdpError:
                pass  # the request went away meanwhile (its page closed)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                return  # the browser is going away

    async def _report_every_second(self) -> None:
        while True:
            await trio.sleep(REPORT_INTERVAL_S)
            self.report()

    def report(self) -> None:
        if not self.pending:
            return
        counts, self.pending = dict(self.pending), collections.Counter()
        self.rt.log_if_current(self.run_id, "network.blocked", {
            "blocked": sum(counts.values()), "total": self.total, "resource_types": counts,
        })
