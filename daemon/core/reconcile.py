"""Start-up: load the state files and reconcile them with what is really running.

A runtime the state files call live was left by a daemon that is gone. With `live_restore` its
browser is adopted when it is still there (same pid, start time and spawn tag); otherwise the
run ends as `daemon_lost`. Then one sweep kills whatever earlier daemons of this state dir left
running, and nothing else: the processes carrying the state dir's spawn key (spawn_tags.py),
and recorded browsers whose pid and start time still match; adopted browsers are kept.
Downloads a lost run left in flight are recorded as failed and their partial files removed
(lost_downloads.py).
Ephemeral profiles that no live run uses are removed. Every action is logged, and written into
the run's event log.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from ..base.config import Config
from ..base.errors import ApiError
from ..base.lifecycle import FINISHED_RUN, LIVE_RUNTIME, Trigger, run_transition, runtime_transition
from ..base.model import DEFAULT_SPACE, RunRecord, RuntimeRecord, Space
from ..browser.process import BrowserProcess, DevToolsEndpoint, LaunchSpec
from ..browser.profiles import ProfileStore
from ..browser.proxy_relay import ProxyRelay, relay_port_of
from ..browser.spawn_tags import sweep_leftovers
from ..store import lost_downloads, storage
from ..store.eventlog import EventLog
from ..store.roots import remove_tree
from ..system.fd_budget import FdBudget
from .artifacts import ArtifactStore
from .proxy_credentials import ProxyCredentialStore
from .run_supervisor import RunSupervisor
from .runtime import Runtime

log = logging.getLogger(__name__)


class ReconcileHost(Protocol):
    """What start-up reconciliation uses of the registry it fills."""

    config: Config
    state_dir: Path
    spawn_key: str
    spaces: dict[str, Space]
    runtimes: dict[str, Runtime]
    runs: dict[str, RunRecord]
    profiles: ProfileStore
    artifacts: ArtifactStore
    supervisor: RunSupervisor
    budget: FdBudget
    proxy_credentials: ProxyCredentialStore

    @property
    def nursery(self) -> trio.Nursery: ...
    def save_spaces(self) -> None: ...
    def save_run(self, run: RunRecord) -> None: ...
    def save_runtime(self, rt: Runtime) -> None: ...
    def open_log(self, run: RunRecord, *, sync_dir: bool = True) -> EventLog: ...


class Reconciler:
    def __init__(self, registry: ReconcileHost) -> None:
        self.registry = registry

    def load(self) -> list[Runtime]:
        """Read the state files; return the runtimes they say are live (to reconcile)."""
        orphans: list[Runtime] = []
        spaces = storage.read_json(self.registry.state_dir / "spaces.json") or {"spaces": []}
        for obj in spaces["spaces"]:
            space = Space.from_json(obj)
            self.registry.spaces[space.name] = space
        if DEFAULT_SPACE not in self.registry.spaces:
            self.registry.spaces[DEFAULT_SPACE] = Space(
                storage.make_id("sp"), DEFAULT_SPACE, {}, storage.now_rfc3339()
            )
            self.registry.save_spaces()
        for path in sorted((self.registry.state_dir / "runs").glob("*/run.json")):
            with _logged_skip(path):
                run = RunRecord.from_json(storage.read_json(path) or {})
                self.registry.runs[run.id] = run
        for path in sorted((self.registry.state_dir / "runtimes").glob("*/runtime.json")):
            with _logged_skip(path):
                record = RuntimeRecord.from_json(storage.read_json(path) or {})
                rt = Runtime(record)
                self.registry.runtimes[record.id] = rt
                if record.status in LIVE_RUNTIME:
                    orphans.append(rt)
        return orphans

    def remove_leftover_ephemeral(self) -> None:
        """Every ephemeral profile that no live (or adopted) run uses is a leftover (its
        browser, if one was left, died in the sweep)."""
        root = self.registry.state_dir / "ephemeral"
        in_use = {rt.user_data_dir for rt in self.registry.runtimes.values() if rt.ephemeral}
        for leftover in root.iterdir():
            if leftover not in in_use:
                remove_tree(leftover, root)

    async def reconcile_all(self, orphans: list[Runtime]) -> None:
        """Adopt what can be adopted (live_restore), kill every other leftover of earlier
        daemons, and end the runs of the runtimes that were not adopted as lost."""
        lost = [rt for rt in orphans if not await self._adopted(rt)]
        keep = [rt.process.spec.tag for rt in orphans if rt.process is not None]
        recorded = [pair for rt in lost if (pair := _recorded_browser(rt)) is not None]
        key = self.registry.spawn_key
        killed = await trio.to_thread.run_sync(
            lambda: sweep_leftovers(key, keep=keep, recorded=recorded))
        ended = set()
        for rt in lost:
            tags = {(rt.record.process or {}).get("tag"),
                    f"{key}.{rt.record.active_run_id}"}
            pids = sorted(pid for tag in tags if tag for pid in killed.get(tag, ()))
            ended.update(tags)
            await self.reconcile_lost(rt, pids)
        # A run whose runtime's record never said it was live (a daemon killed between the
        # run's first record and the runtime's): lost all the same, never left `starting`.
        live_runs = {rt.record.active_run_id for rt in orphans}
        for run in list(self.registry.runs.values()):
            if run.status not in FINISHED_RUN and run.id not in live_runs:
                tag = f"{key}.{run.id}"
                ended.add(tag)
                await self._end_lost_run(run, sorted(killed.get(tag, ())))
        others = sorted(pid for tag, pids in killed.items() if tag not in ended for pid in pids)
        if others:
            log.warning("killed %d processes left by an earlier daemon: %s", len(others), others)

    async def _adopted(self, rt: Runtime) -> bool:
        """Adopt the runtime's browser when live_restore is on and it is still there."""
        info = rt.record.process or {}
        run = self.registry.runs.get(rt.record.active_run_id or "")
        if not (self.registry.config.live_restore and run is not None and "port" in info):
            return False
        try:
            await self.adopt(rt, run, info)
        except (ApiError, LookupError, OSError, KeyError, TypeError) as exc:
            log.warning("cannot adopt %s/%s: %s", rt.record.space, rt.record.name, exc)
            return False
        return True

    async def adopt(self, rt: Runtime, run: RunRecord, info: dict[str, Any]) -> None:
        user_data_dir = Path(info["user_data_dir"])
        endpoint = DevToolsEndpoint(info["host"], info["port"], info["browser_path"])
        if not isinstance(info.get("tag"), str):
            raise LookupError("the record names no spawn tag (a browser of an older browserd)")
        spec = LaunchSpec(executable=info["executable"], user_data_dir=user_data_dir,
                          die_with_daemon=False, tag=info["tag"])
        # Check before taking anything: a browser that is gone is reconciled as lost.
        adopt_recorded = partial(BrowserProcess.adopt, spec, pid=info["pid"],
                                 create_time=info["create_time"], endpoint=endpoint)
        relay = self._relay_for(rt, info["pid"])
        if rt.record.profile is not None:
            rt.held_profile = self.registry.profiles.acquire(rt.record.profile, {
                "runtime_id": rt.id, "space": rt.record.space, "name": rt.record.name,
                "run_id": run.id, "daemon_pid": os.getpid(), "adopted": True,
            })
        rt.user_data_dir, rt.ephemeral = user_data_dir, bool(info.get("ephemeral"))
        rt.run, rt.log = run, self.registry.open_log(run)
        rt.end_reason, rt.done = None, trio.Event()

        async def start(pumps: trio.Nursery) -> BrowserProcess:
            try:
                if relay is not None:
                    await pumps.start(relay.serve)
                return await adopt_recorded(nursery=pumps)
            except LookupError as exc:
                raise ApiError("browser.adopt_failed", str(exc)) from None

        try:
            supervise = partial(self.registry.supervisor.supervise, rt, start, adopting=True)
            await self.registry.nursery.start(supervise)
        except ApiError:
            # Nothing was ended: give back what was taken; the caller reconciles it as lost.
            if relay is not None:
                relay.close()
            if rt.log is not None:
                rt.log.close()
            if rt.held_profile is not None:
                self.registry.profiles.release(rt.held_profile)
                rt.held_profile = None
            rt.user_data_dir, rt.ephemeral, rt.log = None, False, None
            raise
        log.info("adopted %s/%s (browser pid %s)", rt.record.space, rt.record.name, info["pid"])

    def _relay_for(self, rt: Runtime, pid: int) -> ProxyRelay | None:
        """The proxy relay an adopted browser needs, bound again on its port; raises
        LookupError when that cannot be (the browser would have no way out)."""
        proxy = rt.record.config.runtime.proxy
        if proxy is None:
            return None
        port = relay_port_of(pid)
        if port is None:
            raise LookupError("the browser's command line names no proxy relay port")
        relay = ProxyRelay(proxy, self.registry.proxy_credentials.get(rt.id),
                           self.registry.budget.relay_connections)
        relay.bind(port)  # OSError (the port was taken meanwhile): not adopted
        return relay

    async def reconcile_lost(self, rt: Runtime, killed: list[int]) -> None:
        """A runtime the state says is live, but whose daemon is gone: end it as `daemon_lost`,
        its downloads in flight as failed (`killed`: the pids of its browser that the sweep
        killed)."""
        record = rt.record
        run = self.registry.runs.get(record.active_run_id or "")
        if run is not None and run.status not in FINISHED_RUN:
            await self._end_lost_run(run, killed)
        record.status = runtime_transition(record.status, Trigger.LOST)
        record.active_run_id = None
        record.process = None
        self.registry.save_runtime(rt)
        log.info("runtime %s/%s was live under a lost daemon; killed %s", record.space,
                 record.name, killed or "nothing")


    async def _end_lost_run(self, run: RunRecord, killed: list[int]) -> None:
        """End a run its dead daemon left live as `daemon_lost`, its downloads in flight as
        failed."""
        # After the sweep: no browser writes into the staging folder any more. A whole log
        # to read and files to remove: in a worker thread.
        downloads = await trio.to_thread.run_sync(
            _lost_downloads, self.registry.artifacts.run_dir(run))
        event_log = self.registry.open_log(run)
        for download in downloads:
            event_log.append("download", {**download["data"], "reason": "daemon_lost"},
                             status="failed", target=download["target"])
        run.status = run_transition(run.status, Trigger.LOST)
        event_log.append("runtime.lifecycle", {"end_reason": "daemon_lost", "killed_pids": killed},
                         status=run.status)
        run.ended_at = storage.now_rfc3339()
        run.end_reason = "daemon_lost"
        run.counts["events"] = event_log.last_seq
        event_log.close()
        self.registry.save_run(run)


def _recorded_browser(rt: Runtime) -> tuple[int, float] | None:
    """The (pid, start time) of the browser the runtime's record names, if it names one."""
    info = rt.record.process or {}
    pid, create_time = info.get("pid"), info.get("create_time")
    if isinstance(pid, int) and isinstance(create_time, int | float):
        return pid, float(create_time)
    return None


def _lost_downloads(run_dir: Path) -> list[dict[str, Any]]:
    """The run's downloads its dead daemon left in flight; their partial files removed from
    the run's staging folder (before the failures are logged: a daemon that dies in between
    leaves the run live, and the next reconcile finds the same downloads)."""
    try:
        downloads = lost_downloads.unfinished_downloads(run_dir / "events.jsonl")
    except OSError as exc:  # the run still ends; its log said what it could
        log.warning("run %s: could not read its log for lost downloads: %s", run_dir.name, exc)
        downloads = []
    removed = lost_downloads.clear_staging(run_dir)
    if downloads or removed:
        log.info("run %s: %d download(s) lost with the daemon; removed %s from its staging "
                 "folder", run_dir.name, len(downloads), removed or "nothing")
    return downloads


@contextlib.contextmanager
def _logged_skip(path: Path) -> Iterator[None]:
    """Skip one unreadable state file with a log line instead of refusing to start."""
    try:
        yield
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.error("skipping unreadable state file %s: %s", path, exc)
