"""The model: spaces, runtimes, runs and connection leases, and every change to them.

The registry (with its state writer, state_writer.py) is the only writer of state files and
run logs. A launch opens a run and hands it to a supervising task in the registry's nursery
(run_supervisor.py), which owns its browser until the run has ended; operations that change a
runtime's lifecycle hold that runtime's lock, so a launch, a stop and a delete of one runtime
never interleave.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from ..base.config import Config
from ..base.errors import ApiError, resource_shortage
from ..base.lifecycle import (
    LIVE_RUNTIME,
    RunStatus,
    RuntimeStatus,
    Trigger,
    runtime_transition,
)
from ..base.model import (
    DEFAULT_SPACE,
    Lease,
    RunRecord,
    RuntimeRecord,
    Space,
)
from ..base.runtime_config import RuntimeConfig
from ..browser.discovery import find_browser
from ..browser.pool import WarmPool
from ..browser.process import BrowserProcess, LaunchSpec
from ..browser.profiles import ProfileStore
from ..browser.proxy_relay import ProxyRelay
from ..browser.runtime_switches import browser_for, runtime_switches
from ..browser.spawn_tags import make_tag
from ..cdp.proxy import CdpProxy
from ..store import storage
from ..store.durability import LiveLogSyncer, degrade, describe_os_error, note_log_state
from ..store.eventlog import EventLog, read_events
from ..store.roots import remove_tree
from ..store.state_writer import StateWriter
from ..system.fd_budget import FdBudget
from .artifacts import ArtifactStore
from .leases import LeaseBook
from .proxy_credentials import ProxyCredentialStore
from .reconcile import Reconciler
from .run_profiles import RunProfiles
from .run_supervisor import RunSupervisor
from .runtime import Actor, LaunchOptions, RunGate, RunService, Runtime

log = logging.getLogger(__name__)

def _now() -> str:
    return storage.now_rfc3339()


class Registry:
    def __init__(self, config: Config, budget: FdBudget | None = None, *,
                 spawn_key: str) -> None:
        """`budget` shares out the daemon's file descriptors (fd_budget.py); `spawn_key`
        names the state dir in the environment of every browser started here (state_lock.py,
        spawn_tags.py)."""
        self.config = config
        self.state_dir = config.state_dir
        self.spawn_key = spawn_key
        self.spaces: dict[str, Space] = {}
        self.runtimes: dict[str, Runtime] = {}
        self.runs: dict[str, RunRecord] = {}
        self.shutting_down = False
        self.run_services: list[RunService] = []
        # Started before a run is reported active, each waited for (RunGate): what must be in
        # force before any client can attach (the network rules).
        self.run_gates: list[RunGate] = []
        # Called (synchronously) as each run ends, before its final event: see _end_run.
        self.run_end_hooks: list[Callable[[Runtime], None]] = []
        self.artifacts = ArtifactStore(config.state_dir)
        # runtime id -> the params of the last Browser.setDownloadBehavior a CDP client sent
        # for the default context (no browserContextId), reported by the proxy; downloads.py
        # reads it (see the findings there) and drops it when the daemon takes downloads back.
        self.download_behaviors: dict[str, dict[str, Any]] = {}
        self.lease_book = LeaseBook(self.runtimes, config, request_stop=self.request_stop,
                                    download_behaviors=self.download_behaviors)
        # The proxy asks the lease book (its hooks) who may attach; the registry tells the
        # proxy which sockets to close.
        self.proxy = CdpProxy(self.lease_book, host=config.cdp.host, port=config.cdp.port,
                              allowed_origins=config.cdp.allowed_origins,
                              record_commands=config.events.record_commands,
                              close_policy=config.cdp.close_policy,
                              budget=budget,
                              head_timeout_s=config.limits.cdp_header_timeout_s)
        self.budget = self.proxy.budget  # the daemon's one descriptor budget (fd_budget.py)
        self.lease_book.proxy = self.proxy
        self._slot_freed = trio.Event()  # set (and replaced) whenever a run ends
        self.pool: WarmPool | None = None
        self.profiles = ProfileStore(config.state_dir / "profiles")
        self.run_profiles = RunProfiles(config.state_dir, self.profiles, lambda: self.nursery)
        self.proxy_credentials = ProxyCredentialStore(config.state_dir / "runtimes")
        # The only writer of runtime.json and run.json once `run` hosts it.
        self.state = StateWriter()
        self.log_syncer = LiveLogSyncer(self._live_logs)
        self._nursery: trio.Nursery | None = None
        self.supervisor = RunSupervisor(self)

    # ------------------------------------------------------------------ paths and persistence

    def _runtime_dir(self, runtime_id: str) -> Path:
        return self.state_dir / "runtimes" / runtime_id

    def _run_dir(self, run_id: str) -> Path:
        return self.state_dir / "runs" / run_id

    def save_runtime(self, rt: Runtime) -> None:
        """Queue runtime.json for the state writer (state_writer.py). A disk that refuses it
        stops nothing: a stop must finish and a crash must be recorded even on a full disk.
        The record stays right in memory, the next save writes it whole, and a restart
        reconciles a stale file."""
        rt.record.updated_at = _now()
        self.state.save(self._runtime_dir(rt.id) / "runtime.json", rt.record.to_json(),
                        partial(_runtime_unsaved, rt.id))

    async def write_runtime(self, rt: Runtime) -> None:
        """runtime.json on disk before this returns (raises OSError): for a client's change."""
        rt.record.updated_at = _now()
        await self.state.write(self._runtime_dir(rt.id) / "runtime.json", rt.record.to_json())

    def save_run(self, run: RunRecord) -> None:
        """Queue run.json; a failure marks the run degraded (durability.py) and it goes on with
        its record in memory."""
        self.state.save(self._run_dir(run.id) / "run.json", run.to_json(),
                        partial(self._run_unsaved, run))

    def _run_unsaved(self, run: RunRecord, exc: OSError) -> None:
        if degrade(run, f"run.json: {describe_os_error(exc)}"):
            # The record now says so too; the writer keeps trying until the disk takes it.
            self.save_run(run)

    @property
    def nursery(self) -> trio.Nursery:
        """Where supervising tasks live (exists once `run` has started)."""
        assert self._nursery is not None
        return self._nursery

    @property
    def leases(self) -> dict[str, Lease]:
        return self.lease_book.leases

    def save_spaces(self) -> None:
        spaces = [space.to_json() for space in self.spaces.values()]
        storage.write_json_atomic(self.state_dir / "spaces.json", {"spaces": spaces})

    # ------------------------------------------------------------------ start and shutdown

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the state, reconcile it with /proc, then host the supervising tasks."""
        for sub in ("runtimes", "runs", "profiles", "ephemeral"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        reconciler = Reconciler(self)
        orphans = reconciler.load()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.state.run)
            await reconciler.reconcile_all(orphans)
            reconciler.remove_leftover_ephemeral()
            nursery.start_soon(self.lease_book.expire_loop)
            nursery.start_soon(self.log_syncer.run)
            if self.config.pool.size > 0:
                self.pool = WarmPool(
                    size=self.config.pool.size, directory=self.state_dir / "ephemeral",
                    spec_for=self._pool_spec,
                    free_slots=self._free_slots_for_pool,
                    stop_grace_s=self.config.browser.stop_grace_s,
                )
                await nursery.start(self.pool.run)
            task_status.started()
            await trio.sleep_forever()

    async def shutdown(self) -> None:
        """Stop every live runtime in parallel; each run ends with `daemon_shutdown`."""
        self.shutting_down = True
        async with trio.open_nursery() as nursery:
            for rt in list(self.runtimes.values()):
                if rt.record.status in LIVE_RUNTIME:
                    nursery.start_soon(self.stop, rt, "daemon_shutdown", None, None)
        await self.state.flush()

    # ------------------------------------------------------------------ spaces

    def get_space(self, name: str) -> Space:
        try:
            return self.spaces[name]
        except KeyError:
            raise ApiError(
                "space.not_found",
                f"There is no space named {name!r}.",
                hint="List spaces with spaces.list, or create it with spaces.create.",
                data={"space": name},
            ) from None

    def create_space(self, name: str, metadata: dict[str, Any]) -> Space:
        if name in self.spaces:
            return self.spaces[name]
        space = Space(storage.make_id("sp"), name, metadata, _now())
        self.spaces[name] = space
        self.save_spaces()
        return space

    def delete_space(self, name: str) -> None:
        space = self.get_space(name)
        if name == DEFAULT_SPACE:
            raise ApiError("space.not_empty", "The default space always exists.",
                           hint="Delete its runtimes instead.")
        members = [rt.record.name for rt in self.runtimes.values() if rt.record.space == name]
        if members:
            raise ApiError(
                "space.not_empty",
                f"Space {name!r} still holds {len(members)} runtime(s).",
                hint="Stop and delete its runtimes first.",
                data={"runtimes": members},
            )
        del self.spaces[space.name]
        self.save_spaces()

    # ------------------------------------------------------------------ runtimes

    def find_runtime(self, space: str, name: str) -> Runtime | None:
        for rt in self.runtimes.values():
            if rt.record.space == space and rt.record.name == name:
                return rt
        return None

    def get_runtime(self, *, space: str = DEFAULT_SPACE, name: str | None = None,
                    runtime_id: str | None = None) -> Runtime:
        rt = self.runtimes.get(runtime_id) if runtime_id else self.find_runtime(space, name or "")
        if rt is None:
            what = runtime_id or f"{space}/{name}"
            raise ApiError(
                "runtime.not_found",
                f"There is no runtime {what}.",
                hint="List runtimes with `browserctl ls`, or launch one with `browserctl launch`.",
                data={"space": space, "name": name, "id": runtime_id},
            )
        return rt

    def touch(self, rt: Runtime) -> None:
        rt.touch()

    def idle_for(self, rt: Runtime) -> float:
        """Seconds since the last client left; 0 while a socket is open or a lease is live."""
        if rt.open_sockets > 0 or any(True for _ in self.lease_book.live(rt)):
            return 0.0
        return trio.current_time() - rt.last_activity

    def request_stop(self, rt: Runtime, reason: str, actor: Actor | None = None) -> None:
        """Stop the runtime from a task of its own (for run services, which a stop cancels)."""
        assert self._nursery is not None
        actor = actor or {"type": "daemon", "reason": reason}
        self._nursery.start_soon(self.stop, rt, reason, None, actor)

    async def launch(
        self, space: str, name: str, options: LaunchOptions, actor: Actor | None
    ) -> tuple[Runtime, RunRecord, bool]:
        self._refuse_if_shutting_down()
        self.get_space(space)
        if options.runtime is None and self.find_runtime(space, name) is None:
            options = attrs.evolve(options, runtime=self.config.spaces.get(space))
        while True:
            rt = self._runtime_for_launch(space, name, options)
            async with rt.lock:
                if self.runtimes.get(rt.id) is not rt:
                    continue  # deleted while this launch waited for its lock: make it anew
                return await self._launch_locked(rt, options, actor)

    def _runtime_for_launch(self, space: str, name: str, options: LaunchOptions) -> Runtime:
        """The runtime {space, name}, made (stopped, and saved) when there is none."""
        rt = self.find_runtime(space, name)
        if rt is None:
            now = _now()
            record = RuntimeRecord(
                id=storage.make_id("rt"), space=space, name=name,
                status=RuntimeStatus.STOPPED, active_run_id=None, profile=options.profile,
                metadata=dict(options.metadata), config=options.config(), created_at=now,
                updated_at=now, last_activity_at=now,
            )
            self._runtime_dir(record.id).mkdir(mode=0o700)
            rt = Runtime(record)
            self.runtimes[record.id] = rt
            self.save_runtime(rt)
        return rt

    async def _launch_locked(self, rt: Runtime, options: LaunchOptions, actor: Actor | None
                             ) -> tuple[Runtime, RunRecord, bool]:
        space, name = rt.record.space, rt.record.name
        if rt.record.status in LIVE_RUNTIME:
            if options.profile != rt.record.profile:
                raise ApiError(
                    "runtime.name_conflict",
                    f"Runtime {space}/{name} is already running with profile "
                    f"{rt.record.profile!r}, not {options.profile!r}.",
                    hint="Stop it first, or launch under another name.",
                    data={"runtime_id": rt.id, "profile": rt.record.profile},
                )
            assert rt.run is not None
            return rt, rt.run, False
        await self._wait_for_slot(options.wait_s)
        self.supervisor.cancel_restart(rt)
        rt.restart_policy.reset()
        rt.record.profile = options.profile
        rt.record.config = options.config(rt.record.config.runtime)
        if options.runtime is not None:
            await self.proxy_credentials.set(rt.id, options.runtime.credentials)
        if options.metadata:
            rt.record.metadata = dict(options.metadata)
        # The launch runs to its own deadline even if the asking client goes away, so the
        # runtime never stays half-started.
        with trio.CancelScope(shield=True):
            run = await self.start_run(rt, actor)
        return rt, run, True

    async def _wait_for_slot(self, wait_s: float) -> None:
        """Queue up to `wait_s` for a runtime slot; then `check_quota` has the last word.

        Pooled browsers hold slots too; one is given back when only that frees room (the
        launch may still take another pooled browser, which changes nothing in the count)."""
        limit = self.config.limits.max_runtimes
        while (self.pool is not None and self._live_count() + len(self.pool) >= limit
               and self._live_count() < limit):
            if not await self.pool.give_back_one():
                break
        with trio.move_on_after(wait_s):
            while self._live_count() >= self.config.limits.max_runtimes:
                await self._slot_freed.wait()
        self.check_quota()

    def _live_count(self) -> int:
        return sum(1 for rt in self.runtimes.values() if rt.record.status in LIVE_RUNTIME)

    def check_quota(self) -> None:
        live = [rt for rt in self.runtimes.values() if rt.record.status in LIVE_RUNTIME]
        limit = self.config.limits.max_runtimes
        if len(live) >= limit:
            raise ApiError(
                "browser.concurrent_quota_exceeded",
                f"{len(live)} runtimes are already running; the limit is {limit}.",
                hint="Stop a runtime, or raise limits.max_runtimes in the config.",
                data={
                    "limit": limit,
                    "holders": [{"id": r.id, "space": r.record.space, "name": r.record.name}
                                for r in live],
                },
            )

    def _refuse_if_shutting_down(self) -> None:
        if self.shutting_down:
            raise ApiError("daemon.shutting_down", "The daemon is shutting down.",
                           hint="Retry once it has restarted.")

    def _executable(self, config: RuntimeConfig) -> str:
        """The executable a runtime of this config runs (its own build, else the default)."""
        if config.browser is not None and os.path.isabs(config.browser):
            return browser_for(config.browser, config.browser)
        return browser_for(config.browser, find_browser(self.config.browser.executable))

    async def start_run(self, rt: Runtime, actor: Actor | None) -> RunRecord:
        """Open a run and start the browser; returns when it is active or raises."""
        wanted = rt.record.config.runtime
        executable = self._executable(wanted)
        # What the build cannot do (extensions in a headless shell, a manifest gone) is
        # refused before anything is held.
        runtime_switches(wanted, executable=executable, headless=rt.record.config.headless,
                         relay_port=None)
        run = RunRecord(id=storage.make_id("run"), runtime_id=rt.id, space=rt.record.space,
                        status=RunStatus.STARTING, started_at=_now())
        pooled = self.pool.take() if self.pool is not None and self._poolable(rt) else None
        if pooled is not None:
            rt.user_data_dir, rt.ephemeral = pooled.user_data_dir, True
        else:
            self.run_profiles.acquire(rt, run)
        directory = self._run_dir(run.id)
        try:
            # The run's first record is written at once, so that a disk that cannot take the
            # run refuses the launch (ENOSPC shows at the write) instead of leaving it half
            # done; its fsyncs are left to the state writer (save_run below, which also makes
            # the log's directory entry durable), done while the browser starts.
            directory.mkdir(mode=0o700)
            storage.write_json_atomic(directory / "run.json", run.to_json(), durable=False)
            event_log = self.open_log(run, sync_dir=False)
        except OSError as exc:
            # The state dir refused the run (disk full, permissions), or the daemon is out of
            # descriptors: leave nothing held.
            self.run_profiles.release(rt)
            remove_tree(directory, self.state_dir / "runs")
            if pooled is not None:  # taken from the pool, and now nobody's
                await pooled.stop(self.config.browser.stop_grace_s)
            if (shortage := resource_shortage(exc, "starting a run")) is not None:
                raise shortage from None
            raise ApiError(
                "state.unwritable",
                f"The state directory cannot take a new run: {describe_os_error(exc)}.",
                hint=f"Free space on the disk holding {self.state_dir} (or fix its "
                     "permissions), then launch again.",
                data={"state_dir": str(self.state_dir)},
            ) from None
        rt.run, rt.log = run, event_log
        self.save_run(run)
        self.runs[run.id] = run
        rt.end_reason, rt.done = None, trio.Event()
        rt.record.status = runtime_transition(rt.record.status, Trigger.LAUNCH)
        rt.record.active_run_id = run.id
        self.save_runtime(rt)
        rt.log.append("runtime.lifecycle", {"executable": executable,
                                            "profile": rt.record.profile,
                                            "from_pool": pooled is not None},
                      status=run.status, actor=actor)
        if rt.held_profile is not None:
            cleared = self.profiles.clear_stale_singleton(rt.held_profile.user_data_dir)
            if cleared is not None:
                rt.log.append("profile.lock_cleared", {"profile": rt.held_profile.name, **cleared})
        supervise = self.supervisor.supervise
        if pooled is not None:
            await self.nursery.start(supervise, rt, partial(_already_started, pooled))
            return run
        relay = None
        if wanted.proxy is not None:
            relay = ProxyRelay(wanted.proxy, self.proxy_credentials.get(rt.id),
                               self.budget.relay_connections)
            relay.bind()
        try:
            switches, env = runtime_switches(wanted, executable=executable,
                                             headless=rt.record.config.headless,
                                             relay_port=relay.port if relay else None)
            spec = attrs.evolve(self._launch_spec(
                executable, rt.user_data_dir or Path(), spawn_id=run.id,
                headless=rt.record.config.headless, args=(*switches, *rt.record.config.args),
            ), env=tuple(env.items()))
        except BaseException:
            if relay is not None:
                relay.close()
            raise
        await self.nursery.start(supervise, rt, partial(_launch_browser, spec, relay))
        return run

    def _launch_spec(self, executable: str, user_data_dir: Path, *, spawn_id: str,
                     headless: bool = True, args: tuple[str, ...] = ()) -> LaunchSpec:
        return LaunchSpec(
            tag=make_tag(self.spawn_key, spawn_id),
            executable=executable,
            user_data_dir=user_data_dir,
            headless=headless,
            extra_args=(*self.config.browser.args, *args),
            startup_timeout_s=self.config.browser.startup_timeout_s,
            die_with_daemon=not self.config.live_restore,
        )

    def _free_slots_for_pool(self) -> int:
        if self.shutting_down:
            return 0
        return self.config.limits.max_runtimes - self._live_count()

    def _poolable(self, rt: Runtime) -> bool:
        """Can a pooled browser serve this launch? Only one started exactly as it would be."""
        options = rt.record.config
        return (rt.record.profile is None and options.headless and not options.args
                and not options.runtime)

    def _pool_spec(self, user_data_dir: Path) -> LaunchSpec:
        return self._launch_spec(find_browser(self.config.browser.executable), user_data_dir,
                                 spawn_id=user_data_dir.name)

    async def stop(self, rt: Runtime, reason: str = "stopped", timeout_s: float | None = None,
                   actor: Actor | None = None) -> tuple[RunRecord | None, bool]:
        """Stop the runtime's browser; returns once the whole process tree is gone (and the
        run's end is on disk). (run, True) when this call stopped it."""
        return await self.supervisor.stop(rt, reason, timeout_s, actor)

    def slot_freed(self) -> None:
        """A run has ended: wake launches queued for a slot, and the pool's refill."""
        self._slot_freed.set()
        self._slot_freed = trio.Event()
        if self.pool is not None:
            self.pool.poke()

    async def delete(self, rt: Runtime, force: bool, actor: Actor | None) -> None:
        """Forget the runtime and remove its directory (runtime.json, the file area).

        Under the runtime's lock, like launch and stop: a launch that got the lock first has
        finished starting its browser when the delete looks (and a forced delete then stops
        it); a launch that comes after finds the runtime gone and makes a new one. Shielded:
        a delete begun is finished, whoever goes away.
        """
        with trio.CancelScope(shield=True):
            async with rt.lock:
                if self.runtimes.get(rt.id) is not rt:
                    return  # deleted meanwhile by another call
                if rt.record.status in LIVE_RUNTIME:
                    if not force:
                        raise ApiError(
                            "runtime.not_stopped",
                            f"Runtime {rt.record.space}/{rt.record.name} is "
                            f"{rt.record.status}.",
                            hint="Stop it first, or pass force=true to stop and delete it.",
                            data={"status": rt.record.status},
                        )
                    await self.supervisor.stop_locked(rt, "stopped", None, actor)
                self.supervisor.cancel_restart(rt)
                self.runtimes.pop(rt.id, None)
                await self.state.flush()  # no queued write of it may land after the removal
                # A file area may hold thousands of files: not on the event loop.
                await trio.to_thread.run_sync(remove_tree, self._runtime_dir(rt.id),
                                              self.state_dir / "runtimes")

    # ------------------------------------------------------------------ runs and events

    def get_run(self, run_id: str) -> RunRecord:
        run = self.runs.get(run_id)
        if run is None:
            raise ApiError("run.not_found", f"There is no run {run_id!r}.",
                           hint="List runs with runs.list.", data={"run_id": run_id})
        return run

    def live_counts(self, run: RunRecord) -> RunRecord:
        """The run with its event count (and disk health) brought up to date."""
        rt = self.runtimes.get(run.runtime_id)
        if rt is not None and rt.run is run and rt.log is not None:
            run.counts["events"] = rt.log.last_seq
            note_log_state(run, rt.log)
        return run

    def _live_logs(self) -> Iterator[tuple[RunRecord, EventLog]]:
        for rt in self.runtimes.values():
            if rt.run is not None and rt.log is not None:
                yield rt.run, rt.log

    async def list_events(self, run: RunRecord, after_seq: int, limit: int,
                          types: list[str] | None) -> list[dict[str, Any]]:
        path = self._run_dir(run.id) / "events.jsonl"
        return await trio.to_thread.run_sync(
            lambda: read_events(path, after_seq=after_seq, limit=limit, types=types)
        )

    def open_log(self, run: RunRecord, *, sync_dir: bool = True) -> EventLog:
        event_log = EventLog.open(self._run_dir(run.id) / "events.jsonl", run_id=run.id,
                                  runtime_id=run.runtime_id, space=run.space,
                                  fsync=self.config.events.fsync,  # type: ignore[arg-type]
                                  sync_dir=sync_dir)
        self.log_syncer.adopt(event_log)
        return event_log


def _runtime_unsaved(runtime_id: str, exc: OSError) -> None:
    log.error("runtime %s: could not save runtime.json (%s); going on with the record in memory",
              runtime_id, describe_os_error(exc))


async def _already_started(process: BrowserProcess, _pumps: trio.Nursery) -> BrowserProcess:
    return process


async def _launch_browser(spec: LaunchSpec, relay: ProxyRelay | None,
                          nursery: trio.Nursery) -> BrowserProcess:
    """Start the browser, its proxy relay first: both in the run's nursery, so the relay
    serves exactly as long as the run (and closes with a failed start)."""
    if relay is not None:
        await nursery.start(relay.serve)
    return await BrowserProcess.launch(spec, nursery)
