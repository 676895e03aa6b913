"""Invocations: one browser action (navigate, screenshot, pdf, evaluate, content) run by the
daemon on a runtime's page, with a status, a deadline, and a place in the run's log.

    queued -> running -> succeeded | failed | cancelled | timed_out
    queued -> cancelled | timed_out | failed        (cancelled, or out of time, before its turn)

An invocation runs in a task of the run's control link (`targets.Link.nursery`), never in the
request that created it, so `wait=false` returns at once and a client that goes away does not
stop it; the run's end does. A runtime runs its invocations one at a time, in the order they
were created (a trio.Lock is fair), because two actions on one page interfere. `timeout_s`
counts from creation, so time spent queued counts too.

The target is the one asked for, else the link's active page; a runtime without a page gets one
(about:blank). Each invocation is recorded as `invocation.created` and one of
`invocation.succeeded|failed|cancelled|timed_out` in its run's log, and counts in
`run.counts["invocations"]`.

Records are kept in memory for get and list: the newest MAX_KEPT, within MAX_KEPT_BYTES of
encoded records (finished ones go oldest first). An output over outputs.MAX_INLINE_BYTES is
kept as an artifact of the run instead (see outputs.py), and an error message is cut at
MAX_ERROR_MESSAGE characters, so one record stays small whatever the page returned.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import attrs
import trio

from ..base.errors import ApiError, resource_error
from ..cdp.client import CdpError
from ..core.registry import Registry
from ..core.runtime import Actor, Runtime
from ..store import storage
from . import outputs
from .actions import ACTIONS, ActionFailed, Step
from .idempotency import IdempotencyStore
from .targets import Link, Targets, target_not_found

__all__ = ["FINISHED", "Invocation", "Invocations", "Status"]

log = logging.getLogger(__name__)

MAX_KEPT = 10_000  # finished invocations kept for get/list (oldest dropped first)
MAX_KEPT_BYTES = 32 * 1024 * 1024  # ... and within this many bytes of encoded records
MAX_ERROR_MESSAGE = 4096  # characters: a thrown Error's message can be megabytes
IDEMPOTENCY_METHOD = "invocations.create"


class Status:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


# Every allowed status change. Invariant: a finished status (no entry here) never changes, so
# an invocation ends exactly once and writes exactly one terminal event.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED, Status.CANCELLED,
                              Status.TIMED_OUT}),
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED,
                               Status.TIMED_OUT}),
}
FINISHED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT})
_ERROR_CODES = {Status.FAILED: "invocation.failed", Status.CANCELLED: "invocation.cancelled",
                Status.TIMED_OUT: "invocation.timed_out"}


@attrs.define
class Invocation:
    id: str
    runtime_id: str
    run_id: str
    space: str
    action: str
    params: dict[str, Any]
    target_id: str | None
    timeout_s: float
    idempotency_key: str | None
    created_at: str
    status: str = Status.QUEUED
    output: Any = None
    output_truncated: bool = False  # output is {artifact, truncated}: the value is the file
    error: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope, repr=False)
    done: trio.Event = attrs.field(factory=trio.Event, repr=False)
    cancel_requested: bool = False
    kept_bytes: int = 0  # the record's encoded size when last measured (the kept budget)
    _started_clock: float = 0.0

    def to_wire(self, *, with_params: bool = True) -> dict[str, Any]:
        """The record as the API shows it (`with_params=False`: without `params`, which the
        idempotency store need not keep: a replay has the same params)."""
        record = {
            "id": self.id, "runtime_id": self.runtime_id, "run_id": self.run_id,
            "space": self.space, "action": self.action, "params": self.params,
            "target_id": self.target_id, "timeout_s": self.timeout_s,
            "idempotency_key": self.idempotency_key, "status": self.status,
            "output": self.output, "output_truncated": self.output_truncated,
            "error": self.error, "created_at": self.created_at,
            "started_at": self.started_at, "finished_at": self.finished_at,
        }
        if not with_params:
            del record["params"]
        return record

    def move(self, status: str) -> None:
        if status not in TRANSITIONS.get(self.status, frozenset()):
            raise AssertionError(f"invocation {self.id}: {self.status} -> {status}")
        self.status = status

    def raise_unless_succeeded(self) -> None:
        """For a caller that waited: the invocation's failure as an ApiError."""
        if self.status == Status.SUCCEEDED or self.status not in FINISHED:
            return
        error = self.error or {}
        raise ApiError(
            _ERROR_CODES[self.status], str(error.get("message", self.status)),
            hint=str(error.get("hint", "")), data={"invocation": self.to_wire()},
        )


class Invocations:
    """Every invocation the daemon knows (newest kept), and the work of running them."""

    def __init__(self, registry: Registry, targets: Targets,
                 idempotency: IdempotencyStore) -> None:
        self.registry = registry
        self.targets = targets
        self.idempotency = idempotency
        self._items: collections.OrderedDict[str, Invocation] = collections.OrderedDict()
        self._kept_bytes = 0  # the sum of the kept records' kept_bytes
        self._turns: dict[str, trio.Lock] = {}  # runtime id -> one invocation at a time

    def get(self, invocation_id: str) -> Invocation:
        inv = self._items.get(invocation_id)
        if inv is None:
            raise ApiError("invocation.not_found", f"There is no invocation {invocation_id!r}.",
                           hint="List invocations with invocations.list; the daemon keeps the "
                                f"last {MAX_KEPT} and forgets them when it restarts.",
                           data={"invocation_id": invocation_id})
        return inv

    def find(self, invocation_id: str) -> Invocation | None:
        return self._items.get(invocation_id)

    def list(self, rt: Runtime | None, status: str | None) -> list[Invocation]:
        """Newest first."""
        return [inv for inv in reversed(self._items.values())
                if (rt is None or inv.runtime_id == rt.id)
                and (status is None or inv.status == status)]

    async def create(self, rt: Runtime, action: str, params: dict[str, Any],
                     target_id: str | None, timeout_s: float, idempotency_key: str | None,
                     actor: Actor | None) -> Invocation:
        """Queue an invocation (params already checked); it starts in the run's link."""
        self._refuse_if_controlled(rt)
        link = await self.targets.link(rt)
        if target_id is not None and target_id not in link.targets:
            raise target_not_found(target_id)
        assert rt.run is not None and rt.log is not None
        inv = Invocation(
            id=storage.make_id("inv"), runtime_id=rt.id, run_id=rt.run.id,
            space=rt.record.space, action=action, params=params, target_id=target_id,
            timeout_s=timeout_s, idempotency_key=idempotency_key, created_at=storage.now_rfc3339(),
        )
        inv.scope.deadline = trio.current_time() + timeout_s
        self._keep(inv)
        rt.run.counts["invocations"] = rt.run.counts.get("invocations", 0) + 1
        rt.log.append("invocation.created",
                      {"invocation_id": inv.id, "action": action, "target_id": target_id,
                       "timeout_s": timeout_s, "idempotency_key": idempotency_key},
                      actor=actor)
        link.nursery.start_soon(self._execute, link, rt, inv)
        return inv

    def cancel(self, inv: Invocation) -> None:
        """Ask a queued or running invocation to stop; a finished one is left as it is."""
        if inv.status not in FINISHED:
            inv.cancel_requested = True
            inv.scope.cancel()

    def _refuse_if_controlled(self, rt: Runtime) -> None:
        holder = self.registry.lease_book.exclusive(rt)
        if holder is not None:
            raise ApiError(
                "runtime.controller_busy",
                "An exclusive lease holds this runtime: invocations wait until it ends.",
                hint="Wait for the lease to expire, or delete it with connections.delete.",
                data={"connection_id": holder.id, "expires_at": holder.expires_at},
            )

    def _keep(self, inv: Invocation) -> None:
        self._items[inv.id] = inv
        self._measure(inv)

    def _measure(self, inv: Invocation) -> None:
        """Account for the record's size now, and drop the oldest finished records while the
        kept ones are over their count or their byte budget."""
        size = outputs.wire_size(inv.to_wire())
        self._kept_bytes += size - inv.kept_bytes
        inv.kept_bytes = size
        if len(self._items) <= MAX_KEPT and self._kept_bytes <= MAX_KEPT_BYTES:
            return
        for old_id, old in list(self._items.items()):
            if len(self._items) <= MAX_KEPT and self._kept_bytes <= MAX_KEPT_BYTES:
                break
            if old.status in FINISHED:
                del self._items[old_id]
                self._kept_bytes -= old.kept_bytes

    @property
    def kept_bytes(self) -> int:
        """The encoded size of every kept record together."""
        return self._kept_bytes

    # -------------------------------------------------------------- running one

    async def _execute(self, link: Link, rt: Runtime, inv: Invocation) -> None:
        try:
            with inv.scope:
                turn = self._turns.setdefault(rt.id, trio.Lock())
                async with turn:
                    inv.move(Status.RUNNING)
                    inv.started_at = storage.now_rfc3339()
                    inv._started_clock = trio.current_time()
                    output, truncated = await self._run_action(link, rt, inv)
                self._finish(rt, inv, Status.SUCCEEDED, output=output, truncated=truncated)
        except ActionFailed as exc:
            self._finish(rt, inv, Status.FAILED, message=exc.message, hint=exc.hint)
        except ApiError as exc:
            self._finish(rt, inv, Status.FAILED, message=exc.message, hint=exc.hint,
                         data={"cause": exc.code, **exc.data})
        except (CdpError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._finish(rt, inv, Status.FAILED, message=f"the browser connection failed: {exc}",
                         hint="The browser may have crashed or stopped; check the run's events.")
        except Exception as exc:
            # Anything else (a full disk under a screenshot's artifact, say) fails this
            # invocation only: the run's link, and every other invocation on it, go on.
            error = resource_error(exc, f"running {inv.action}")
            if error is not None:
                log.warning("invocation %s failed: %s", inv.id, error.message)
            else:
                log.exception("invocation %s failed unexpectedly", inv.id)
                error = ApiError("rpc.internal_error", f"{inv.action} failed unexpectedly: {exc!r}",
                                 hint="This is a bug in browserd; the daemon log has details.")
            self._finish(rt, inv, Status.FAILED, message=error.message, hint=error.hint,
                         data={"cause": error.code, **error.data})
        finally:
            if inv.status not in FINISHED:
                if inv.scope.cancelled_caught and not inv.cancel_requested:
                    self._finish(rt, inv, Status.TIMED_OUT,
                                 message=f"{inv.action} did not finish within {inv.timeout_s} s.",
                                 hint="Give it a longer timeout_s.")
                elif inv.cancel_requested:
                    self._finish(rt, inv, Status.CANCELLED, message="Cancelled on request.")
                else:  # the run's link went down around it: the run ended
                    self._finish(rt, inv, Status.CANCELLED,
                                 message="The runtime's run ended before the invocation did.",
                                 hint="Launch the runtime again and retry.")
            if inv.idempotency_key is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self.idempotency.update(IDEMPOTENCY_METHOD, inv.idempotency_key,
                                                  inv.to_wire(with_params=False))

    async def _run_action(self, link: Link, rt: Runtime, inv: Invocation) -> tuple[Any, bool]:
        """The action's output as kept (see outputs.keep), and whether it is an artifact."""
        target_id = inv.target_id or await self._active_page(link)
        if target_id not in link.targets:
            raise ActionFailed(f"the page {target_id} is gone",
                               "List pages with targets.list and pick another.")
        inv.target_id = target_id
        session_id = await link.session(target_id)
        step = Step(self.registry, rt, link, inv.id, target_id, session_id, inv.params)
        output = await ACTIONS[inv.action].run(step)
        return await outputs.keep(step, inv.action, output)

    async def _active_page(self, link: Link) -> str:
        target_id = link.active_page()
        if target_id is None:
            # The events of discovery may still be in flight: ask the browser before deciding
            # that there is no page, and open one only then.
            infos = (await link.cdp.call("Target.getTargets"))["targetInfos"]
            for info in infos:
                link.browser.learn(info)
            target_id = link.active_page()
        if target_id is None:
            reply = await link.cdp.call("Target.createTarget", {"url": "about:blank"})
            target_id = str(reply["targetId"])
            link.browser.learn({"targetId": target_id, "type": "page", "url": "about:blank",
                                "title": ""})
            link.active_id = target_id
        return target_id

    def _finish(self, rt: Runtime, inv: Invocation, status: str, *, output: Any = None,
                truncated: bool = False, message: str = "", hint: str = "",
                data: dict[str, Any] | None = None) -> None:
        inv.move(status)
        inv.finished_at = storage.now_rfc3339()
        inv.output, inv.output_truncated = output, truncated
        if status != Status.SUCCEEDED:
            if len(message) > MAX_ERROR_MESSAGE:
                message = message[:MAX_ERROR_MESSAGE] + " [cut]"
            inv.error = {"code": _ERROR_CODES[status], "message": message, "hint": hint,
                         **({"data": data} if data else {})}
        self._measure(inv)
        inv.done.set()
        duration_ms = (round((trio.current_time() - inv._started_clock) * 1000, 3)
                       if inv.started_at else None)
        event: dict[str, Any] = {"invocation_id": inv.id, "action": inv.action,
                                 "duration_ms": duration_ms}
        if inv.error is not None:
            event["error"] = inv.error
        if isinstance(output, dict) and isinstance(output.get("artifact"), dict):
            event["artifact_id"] = output["artifact"].get("id")
        target = {"kind": "page", "id": inv.target_id} if inv.target_id else None
        # Only into the invocation's own run, and only while its log is open.
        if rt.run is not None and rt.run.id == inv.run_id and rt.log is not None:
            rt.log.append(f"invocation.{status}", event, target=target)
