"""Each run's life once its launch begins: start (or adopt) the browser, watch it, restart it
after a crash when asked to, end the run however it goes, and stop it.

The registry owns the model and the launching; for each run it starts `supervise` in its
nursery, which owns the run's browser until the run has ended. Every run ends in `_end_run`,
exactly once: crash, stop, failed launch or the daemon going down.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from ..base.config import Config
from ..base.errors import ApiError
from ..base.lifecycle import (
    FINISHED_RUN,
    LIVE_RUNTIME,
    RunStatus,
    RuntimeStatus,
    Trigger,
    run_transition,
    runtime_transition,
)
from ..base.model import RunRecord
from ..browser.process import BrowserProcess
from ..cdp.browser_link import LinkSlot
from ..cdp.proxy import CdpProxy
from ..store.durability import note_log_state
from ..store.state_writer import StateWriter
from ..store.storage import now_rfc3339
from .leases import LeaseBook
from .run_profiles import RunProfiles
from .runtime import Actor, RunGate, RunService, Runtime

__all__ = ["RunHost", "RunSupervisor"]

log = logging.getLogger(__name__)


class RunHost(Protocol):
    """What the supervision of runs uses of the registry that owns them (and nothing more)."""

    config: Config
    state: StateWriter
    proxy: CdpProxy
    lease_book: LeaseBook
    run_services: list[RunService]
    run_gates: list[RunGate]
    run_end_hooks: list[Callable[[Runtime], None]]
    runtimes: dict[str, Runtime]
    shutting_down: bool
    run_profiles: RunProfiles

    @property
    def nursery(self) -> trio.Nursery: ...
    def save_run(self, run: RunRecord) -> None: ...
    def save_runtime(self, rt: Runtime) -> None: ...
    def slot_freed(self) -> None: ...
    def touch(self, rt: Runtime) -> None: ...
    def check_quota(self) -> None: ...
    async def start_run(self, rt: Runtime, actor: Actor | None) -> RunRecord: ...


class RunSupervisor:
    """The registry's supervision of its runs (one per registry, sharing its nursery)."""

    def __init__(self, registry: RunHost) -> None:
        self.registry = registry

    async def supervise(
        self, rt: Runtime, start: Callable[[trio.Nursery], Awaitable[BrowserProcess]],
        *, adopting: bool = False, task_status: trio.TaskStatus[None],
    ) -> None:
        """Own one run's browser: start (or adopt) it, watch it, and end the run however it
        goes. A failed adoption ends nothing: the caller reconciles the run as lost."""
        assert rt.run is not None and rt.log is not None
        process: BrowserProcess | None = None
        launch_error: ApiError | None = None
        try:
            async with trio.open_nursery() as pumps:
                try:
                    process = await start(pumps)
                except ApiError as exc:
                    # Raised once the nursery has closed, so the caller gets the ApiError
                    # itself rather than an exception group.
                    launch_error = exc
                    if not adopting:
                        failure = {"code": exc.code, "message": exc.message, **exc.data}
                        if "stderr_tail" in failure:
                            failure["stderr_tail"] = failure["stderr_tail"][-20:]
                        self._plan_restart(rt)
                        self._end_run(rt, Trigger.LAUNCH_FAILED, "launch_failed", failure)
                else:
                    rt.process = process
                    # The daemon's one connection to the browser, for the gates and services;
                    # the launch waits for it only where a gate needs it.
                    rt.link = LinkSlot()
                    pumps.start_soon(_link_guarded, rt.link, process.endpoint.ws_url, rt)
                    # Before the run is active: no client can get a lease onto it yet.
                    launch_error = await self._pass_gates(rt, process, pumps)
                    if launch_error is None:
                        await self._serve_run(rt, process, pumps, task_status)
                pumps.cancel_scope.cancel()
        finally:
            ended_elsewhere = adopting and launch_error is not None
            if not ended_elsewhere and rt.run is not None and rt.run.status not in FINISHED_RUN:
                # Cancelled from outside (the daemon is going down hard): still leave nothing.
                with trio.CancelScope(shield=True):
                    if process is not None:
                        await process.stop(self.registry.config.browser.stop_grace_s)
                    self._end_run(rt, Trigger.ABORTED, "daemon_shutdown", None)
            rt.link = None
            rt.done.set()
        if launch_error is not None:
            raise launch_error

    async def _watch(self, rt: Runtime, process: BrowserProcess) -> None:
        """Wait for the browser's main process to exit, then end the run as it deserves."""
        assert rt.log is not None
        exit_status = await process.wait_exited()
        if rt.end_reason is not None:
            await process.stop(self.registry.config.browser.stop_grace_s)
            self._end_run(rt, Trigger.EXITED, rt.end_reason, None)
            return
        # Nobody asked: a crash. The rest of the tree follows the main process before the run
        # is closed.
        rt.end_reason = "crashed"
        failure = {
            "code": "browser.crashed",
            "message": _describe_exit(exit_status.exit_code, exit_status.signal),
            "exit_code": exit_status.exit_code,
            "signal": exit_status.signal,
            "stderr_tail": list(exit_status.stderr_tail[-20:]),
        }
        rt.log.append("alert", failure)
        self.registry.proxy.close_runtime(rt.id)
        await process.stop(self.registry.config.browser.stop_grace_s)
        self._plan_restart(rt)
        self._end_run(rt, Trigger.CRASHED, "crashed", failure)

    async def _serve_run(self, rt: Runtime, process: BrowserProcess, pumps: trio.Nursery,
                         task_status: trio.TaskStatus[None]) -> None:
        """The run is up: record it active (or adopted), start its services, let the launch
        return, and watch the browser until the run ends."""
        assert rt.log is not None
        if process.adopted:
            rt.log.append("runtime.lifecycle", {"adopted": True, "pid": process.pid,
                                                "cdp_port": process.endpoint.port},
                          status=RunStatus.ACTIVE)
        else:
            self._mark_ready(rt, process)
            if self.registry.config.live_restore:
                # The next daemon adopts the browser from runtime.json: it must be on disk
                # before a client is told the browser is up.
                await self.registry.state.flush()
        for service in self.registry.run_services:
            pumps.start_soon(_attend_guarded, service, rt)
        task_status.started()
        await self._watch(rt, process)

    async def _pass_gates(self, rt: Runtime, process: BrowserProcess,
                          pumps: trio.Nursery) -> ApiError | None:
        """Put the run's gates in force. One that cannot (the browser refused its rules) fails
        the launch: the browser is stopped and the run ends `launch_failed`, with no restart
        (the same config would fail the same way). An adopted browser is not stopped for it:
        its run was active already, and the gate has logged why its part is missing."""
        for gate in self.registry.run_gates:
            refusal: ApiError | None = await pumps.start(_guard_guarded, gate, rt)
            if refusal is not None and not process.adopted:
                await process.stop(self.registry.config.browser.stop_grace_s)
                self._end_run(rt, Trigger.LAUNCH_FAILED, "launch_failed",
                              {"code": refusal.code, "message": refusal.message, **refusal.data})
                return refusal
        return None

    def _plan_restart(self, rt: Runtime) -> None:
        """After a crash or failed launch: schedule the restart that `restart="on-failure"`
        asks for, or record why there will be none. Logged in the run that just failed."""
        if rt.record.config.restart != "on-failure" or self.registry.shutting_down:
            return
        assert rt.log is not None
        delay = rt.restart_policy.record_crash(trio.current_time())
        if delay is None:
            policy = rt.restart_policy
            rt.log.append("alert", {
                "reason": "crash_loop",
                "message": f"{policy.recent_crashes} crashes within {policy.window_s:g} s: "
                           "not restarting; launch it again to retry.",
                "crashes": policy.recent_crashes, "window_s": policy.window_s,
            })
            return
        rt.log.append("alert", {"reason": "restart_scheduled", "delay_s": delay,
                                "attempt": rt.restart_policy.recent_crashes})
        rt.restart_scope = trio.CancelScope()
        self.registry.nursery.start_soon(self._restart_after, rt, delay, rt.restart_scope)

    async def _restart_after(self, rt: Runtime, delay: float, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(delay)
            async with rt.lock:
                # A client may have launched, stopped or deleted it meanwhile.
                if rt.restart_scope is not scope or rt.record.status != RuntimeStatus.FAILED:
                    return
                if self.registry.runtimes.get(rt.id) is not rt:
                    return
                rt.restart_scope = None
                try:
                    self.registry.check_quota()
                    with trio.CancelScope(shield=True):
                        await self.registry.start_run(rt, {"type": "daemon", "reason": "restart"})
                except ApiError as exc:
                    log.warning("restart of %s/%s failed: %s", rt.record.space, rt.record.name,
                                exc.message)

    def cancel_restart(self, rt: Runtime) -> None:
        if rt.restart_scope is not None:
            rt.restart_scope.cancel()
            rt.restart_scope = None

    def _mark_ready(self, rt: Runtime, process: BrowserProcess) -> None:
        assert rt.run is not None and rt.log is not None
        rt.record.status = runtime_transition(rt.record.status, Trigger.READY)
        rt.run.status = run_transition(rt.run.status, Trigger.READY)
        endpoint = process.endpoint
        rt.record.process = {"pid": process.pid, "create_time": process.create_time,
                             "user_data_dir": str(process.user_data_dir),
                             "executable": process.spec.executable, "tag": process.spec.tag,
                             "ephemeral": rt.ephemeral, "host": endpoint.host,
                             "port": endpoint.port, "browser_path": endpoint.browser_path}
        self.registry.touch(rt)
        self.registry.save_runtime(rt)
        self.registry.save_run(rt.run)
        rt.log.append("runtime.lifecycle", {"pid": process.pid, "cdp_port": process.endpoint.port},
                      status=RunStatus.ACTIVE)

    def _end_run(self, rt: Runtime, trigger: Trigger, reason: str,
                 failure: dict[str, Any] | None) -> None:
        """Close the run and put the runtime at rest. Called exactly once per run."""
        run, event_log = rt.run, rt.log
        assert run is not None and event_log is not None
        run.status = run_transition(run.status, trigger)
        rt.record.status = runtime_transition(rt.record.status, trigger)
        run.ended_at, run.end_reason, run.failure = now_rfc3339(), reason, failure
        self.registry.lease_book.close_run(run.id)
        for hook in self.registry.run_end_hooks:
            # Last words of the run's services (a recording becomes an artifact), in its log
            # before its final event; a hook that fails must not keep the run open.
            try:
                hook(rt)
            except Exception:
                log.exception("run end hook %r failed for run %s", hook, run.id)
        event_log.append("runtime.lifecycle", {"end_reason": reason, "failure": failure},
                         status=run.status)
        run.counts["events"] = event_log.last_seq
        event_log.close()
        note_log_state(run, event_log)
        self.registry.save_run(run)
        self.registry.proxy.close_runtime(rt.id)
        self.registry.run_profiles.release(rt)
        rt.record.active_run_id = None
        rt.record.process = None
        rt.process, rt.log = None, None
        self.registry.save_runtime(rt)
        self.registry.slot_freed()
        log.info("runtime %s/%s: run %s %s (%s)", rt.record.space, rt.record.name, run.id,
                 run.status, reason)

    async def stop(self, rt: Runtime, reason: str = "stopped", timeout_s: float | None = None,
                   actor: Actor | None = None) -> tuple[RunRecord | None, bool]:
        """Stop the runtime's browser; returns once the whole process tree is gone."""
        outcome: tuple[RunRecord | None, bool] = (rt.run, False)
        # A stop runs to the end even if its caller goes away: a half-stopped browser is the
        # leak this daemon exists to prevent.
        with trio.CancelScope(shield=True):
            async with rt.lock:
                outcome = await self.stop_locked(rt, reason, timeout_s, actor)
        return outcome

    async def stop_locked(self, rt: Runtime, reason: str, timeout_s: float | None,
                          actor: Actor | None) -> tuple[RunRecord | None, bool]:
        """`stop`, for a caller that holds `rt.lock` (and shields the call)."""
        grace = self.registry.config.browser.stop_grace_s if timeout_s is None else timeout_s
        self.cancel_restart(rt)
        run = rt.run
        if rt.record.status not in LIVE_RUNTIME or rt.process is None or run is None:
            return run, False
        assert rt.log is not None
        rt.end_reason = reason
        rt.record.status = runtime_transition(rt.record.status, Trigger.STOP)
        run.status = run_transition(run.status, Trigger.STOP)
        self.registry.save_runtime(rt)
        rt.log.append("runtime.lifecycle", {"reason": reason}, status=run.status, actor=actor)
        await self._close_sockets(rt)
        await rt.process.stop(grace)
        with trio.move_on_after(grace + 10):
            await rt.done.wait()
        if (removal := self.registry.run_profiles.removal(rt.id)) is not None:
            with trio.move_on_after(grace + 10):
                await removal.wait()
        await self.registry.state.flush()  # the reply says the run ended: so does run.json
        return run, True

    async def _close_sockets(self, rt: Runtime) -> None:
        """Close every proxied CDP socket of the runtime and let their detach events land."""
        if rt.open_sockets == 0:
            return
        self.registry.proxy.close_runtime(rt.id)
        with trio.move_on_after(2):
            if rt.open_sockets:  # (none left already: their detach came with the close)
                await rt.last_socket_closed.park()


async def _attend_guarded(service: RunService, rt: Runtime) -> None:
    """A failing run service is logged and dropped; it never takes the run or daemon down."""
    try:
        await service.attend(rt)
    except* Exception:
        # except*: a failure that races with the run's end arrives grouped with trio's
        # Cancelled, which `except Exception` would let through to the daemon's nursery.
        log.exception("%s failed for runtime %s", type(service).__name__, rt.id)


async def _link_guarded(slot: LinkSlot, ws_url: str, rt: Runtime) -> None:
    """The run's browser link: a failure is logged, and the run goes on without it (the
    services that need it wait for it and find none)."""
    try:
        await slot.serve(ws_url)
    except* Exception:
        log.exception("the browser link of runtime %s failed", rt.id)


async def _guard_guarded(gate: RunGate, rt: Runtime, *,
                         task_status: trio.TaskStatus[ApiError | None]) -> None:
    """A gate that fails once started is logged and dropped, like a run service. (It reports
    a failure to set up by itself, through `task_status`: see RunGate.)"""
    try:
        await gate.guard(rt, task_status=task_status)
    except* Exception:
        log.exception("%s failed for runtime %s", type(gate).__name__, rt.id)


def _describe_exit(exit_code: int | None, signal: int | None) -> str:
    if signal is not None:
        return f"The browser was killed by signal {signal}."
    return f"The browser exited with code {exit_code} without being asked to."
