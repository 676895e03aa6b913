"""The composition root: config in, a serving daemon out (proxy, registry, RPC server).

`serve()` is what `browserd` runs and what tests start in-process with `nursery.start`.
"""

from __future__ import annotations

import logging
import signal

import attrs
import trio

from . import health
from .base.config import Config
from .browser.procutil import run_orphan_reaper, set_child_subreaper
from .cdp.peers import PeerLookup
from .control.recording import Recorder
from .core.registry import Registry
from .rpc import methods  # noqa: F401 - importing registers every RPC method
from .rpc.api import Api
from .rpc.server import RpcServer
from .services.monitor import ResourceMonitor
from .services.network_rules import NetworkRules
from .services.observer import Observer
from .services.retention import Retention
from .services.timeouts import Timeouts
from .store.state_lock import StateLock
from .system.fd_budget import FdBudget, raise_nofile_limit
from .system.memory import release_free_memory
from .system.notify import Notifier
from .web.dashboard import Dashboard, UiAccess
from .web.front import WebFront
from .web.replay import ReplayAccess, Replays

log = logging.getLogger(__name__)


@attrs.define
class Daemon:
    """A running daemon: its parts, and `stop()` for an orderly shutdown."""

    config: Config
    registry: Registry
    api: Api
    server: RpcServer
    _stop_requested: trio.Event = attrs.field(factory=trio.Event, alias="_stop_requested")

    def stop(self) -> None:
        self._stop_requested.set()

    async def wait_stop_requested(self) -> None:
        await self._stop_requested.wait()


async def serve(config: Config, *, handle_signals: bool = False,
                listener: trio.socket.SocketType | None = None,
                notifier: Notifier | None = None,
                task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the daemon until `Daemon.stop()` (or SIGTERM/SIGINT when handle_signals).

    Shutdown is orderly: stop accepting clients, stop every runtime in parallel (each run ends
    with `daemon_shutdown`), then return. `listener` is a socket-activated listener (else the
    daemon binds config.socket); `notifier` tells systemd READY/STATUS/WATCHDOG/STOPPING.
    """
    notifier = notifier or Notifier()
    # Before anything reads or changes the state dir: a second daemon on it would kill the
    # first one's browsers as "lost" and write into its run logs (state_lock.py).
    state_lock = StateLock.acquire(config.state_dir, socket=str(config.socket))
    try:
        await _serve_locked(config, state_lock, handle_signals=handle_signals,
                            listener=listener, notifier=notifier, task_status=task_status)
    finally:
        state_lock.release()


async def _serve_locked(config: Config, state_lock: StateLock, *, handle_signals: bool,
                        listener: trio.socket.SocketType | None, notifier: Notifier,
                        task_status: trio.TaskStatus[Daemon]) -> None:
    # Browser helpers that lose their parent get reparented to us, not to init, so nothing of
    # a browser tree escapes supervision.
    set_child_subreaper()
    # Descriptors: as many as the hard limit allows, shared out among clients so that no
    # flood of them leaves the daemon without one for its own work (fd_budget.py).
    budget = FdBudget.derive(raise_nofile_limit(), config.limits)
    registry = Registry(config, budget, spawn_key=state_lock.spawn_key)
    monitor = ResourceMonitor(registry, config)
    registry.run_services += [Timeouts(registry, config), monitor]
    registry.run_services.append(Observer(registry, config))
    registry.run_gates.append(NetworkRules())
    api = Api(registry, socket_path=str(config.socket))
    api.monitor = monitor
    # The control link (targets, invocations) is a run service too; keys survive restarts.
    registry.run_services.append(api.control.targets)
    # Recorded runs keep their screencast as an artifact, made as the run ends.
    recorder = Recorder(api.control.views, registry.artifacts, config.record)
    registry.run_services.append(recorder)
    registry.run_end_hooks.append(recorder.run_ending)
    api.control.idempotency.load()
    server = RpcServer(api, socket_path=config.socket,
                       requests_in_flight=config.limits.requests_in_flight,
                       allowed_group=config.allowed_group, listener=listener,
                       connections=budget.rpc_connections,
                       hello_timeout_s=config.limits.hello_timeout_s)
    # The web pages (live views) share the CDP port: requests outside /cdp/ go to them.
    ui = UiAccess(registry.proxy.base_url)
    replay_access = ReplayAccess(registry.proxy.base_url)
    web = WebFront(registry.lease_book, api.control.views, sockets=budget.cdp_sockets,
                   peer_of=PeerLookup().quick, ui=ui, registry=registry,
                   dashboard=Dashboard(registry, api.control.views),
                   replay_access=replay_access, replays=Replays(registry, recorder))
    registry.proxy.serve_web(web.handle)
    api.ui_url, api.replay_url = ui.url, replay_access.url
    daemon = Daemon(config, registry, api, server)
    async with trio.open_nursery() as nursery:
        if handle_signals:
            # Installed first, so a SIGTERM that arrives during start-up is still orderly.
            await nursery.start(_stop_on_signal, daemon)
        await nursery.start(registry.proxy.serve)
        # As subreaper we inherit orphaned browser helpers; this collects their exit statuses.
        await nursery.start(run_orphan_reaper)
        await nursery.start(release_free_memory)  # RSS comes back down after a burst
        await nursery.start(registry.run)
        # Old runs go by count and age (config retention.*), in the background.
        await nursery.start(Retention(registry, config.retention).run)
        await nursery.start(api.control.origins.serve)  # endpoint.browser_url listeners
        async with trio.open_nursery() as front:
            await front.start(server.serve)
            log.info("browserd serving on %s (CDP endpoint %s, state %s)", config.socket,
                     registry.proxy.base_url(), config.state_dir)
            task_status.started(daemon)
            # Ready only now: the socket is bound and the state reconciled.
            notifier.ready(health.status_line(registry, api))
            front.start_soon(health.watch, registry, api, notifier)
            await daemon.wait_stop_requested()
            front.cancel_scope.cancel()  # no new clients, no new requests
        log.info("shutting down: stopping every runtime")
        notifier.stopping("stopping every runtime")
        async with health.extending_stop_timeout(registry, notifier):
            with trio.move_on_after(config.browser.stop_grace_s + 20) as scope:
                await registry.shutdown()
        if scope.cancelled_caught:
            log.error("some runtimes did not stop in time; their supervisors force them down")
        nursery.cancel_scope.cancel()
    log.info("browserd stopped")


async def _stop_on_signal(daemon: Daemon, *,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            daemon.stop()
            return
