"""The daemon's health loop, and what it tells the service manager.

Each round checks that the daemon can still do its job, end to end, within a time budget:
a client's round trip (connect to our own socket, `hello`, answer: the event loop, the accept
loop and the dispatcher all work) and a worker-thread round trip to the state dir (event-log
reads and file work go through those threads). Only after a round passes does the daemon send
``WATCHDOG=1``, so a wedged daemon stops pinging and systemd restarts it; a bare timer would
ping from a daemon that no longer serves anyone. Each round also refreshes ``STATUS=`` with the
runtime and client counts.

During shutdown, ``EXTEND_TIMEOUT_USEC=`` is sent every few seconds while browsers are still
being stopped, so a slow but progressing shutdown is not cut short by ``TimeoutStopSec=``.
The shutdown itself stays bounded (service.serve gives it a deadline).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from browserd.client import wire

from . import __version__
from .core.registry import Registry
from .rpc.api import API_LEVEL, Api
from .system.notify import Notifier

__all__ = ["STATUS_PERIOD_S", "extending_stop_timeout", "status_line", "watch"]

log = logging.getLogger(__name__)

STATUS_PERIOD_S = 10.0  # how often STATUS= is refreshed when no watchdog is asked for
STOP_EXTEND_STEP_S = 5.0


def status_line(registry: Registry, api: Api) -> str:
    """What `systemctl status` shows: runtime and client counts."""
    live = sum(1 for rt in registry.runtimes.values() if rt.process is not None)
    return (f"serving {api.socket_path}: {live} runtime(s) active of {len(registry.runtimes)}, "
            f"{api.clients} client(s)")


async def watch(registry: Registry, api: Api, notifier: Notifier) -> None:
    """Run health rounds forever: every half watchdog interval, else every STATUS_PERIOD_S."""
    if not notifier.enabled:
        return
    interval = notifier.watchdog_interval_s
    period = interval / 2 if interval else STATUS_PERIOD_S
    budget = period / 2  # a round that takes longer than this counts as failed
    next_round = trio.current_time()
    unhealthy = False
    while True:
        status = status_line(registry, api)  # before the probe, which is a client too
        problem = await check(Path(api.socket_path), registry.state_dir, budget)
        if problem is None:
            if unhealthy:
                log.warning("health check passes again")
            unhealthy = False
            if interval:
                notifier.watchdog(status)
            else:
                notifier.status(status)
        else:
            unhealthy = True
            # No ping: if this lasts a whole watchdog interval, systemd restarts the daemon.
            log.error("health check failed: %s", problem)
            notifier.status(f"unhealthy: {problem}")
        next_round = max(next_round + period, trio.current_time())
        await trio.sleep_until(next_round)


async def check(socket_path: Path, state_dir: Path, budget_s: float) -> str | None:
    """One health round; None when healthy, else what failed."""
    with trio.move_on_after(budget_s) as scope:
        try:
            await _probe_rpc(socket_path)
        except (OSError, trio.BrokenResourceError, wire.ProtocolError) as exc:
            return f"the RPC socket {socket_path} does not serve: {exc}"
        except _BadAnswer as exc:
            return f"the RPC socket {socket_path} answered hello with {exc}"
    if scope.cancelled_caught:
        return f"the RPC socket {socket_path} did not answer hello within {budget_s:g} s"
    with trio.move_on_after(budget_s) as scope:
        try:
            await trio.to_thread.run_sync(os.stat, state_dir, abandon_on_cancel=True)
        except OSError as exc:
            return f"the state dir is not reachable: {exc}"
    if scope.cancelled_caught:
        return f"no worker thread reached the state dir within {budget_s:g} s"
    return None


class _BadAnswer(Exception):
    pass


async def _probe_rpc(socket_path: Path) -> None:
    """Connect to our own socket and get an answer to hello, as any client would."""
    conn = wire.Connection()
    stream = await trio.open_unix_socket(str(socket_path))
    async with stream:
        hello = {"client": {"name": "browserd-health", "version": __version__},
                 "api": {"min": API_LEVEL, "max": API_LEVEL}}
        await stream.send_all(conn.send_request(1, "hello", hello))
        while True:
            event = conn.next_event()
            if event is wire.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif event is wire.CLOSED:
                raise _BadAnswer("a closed connection")
            elif isinstance(event, wire.Response):
                if event.error is not None:
                    raise _BadAnswer(f"error {event.error.get('code')}")
                return


@asynccontextmanager
async def extending_stop_timeout(registry: Registry, notifier: Notifier,
                                 step_s: float = STOP_EXTEND_STEP_S) -> AsyncIterator[None]:
    """While the body runs, keep asking the manager for more stop time, runtime counts in
    STATUS=; each extension covers three steps, so one late wake-up loses nothing."""
    if not notifier.enabled:
        yield
        return
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_extend_stop, registry, notifier, step_s)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


async def _extend_stop(registry: Registry, notifier: Notifier, step_s: float) -> None:
    while True:
        live = sum(1 for rt in registry.runtimes.values() if rt.process is not None)
        notifier.extend_timeout(3 * step_s, f"stopping: {live} runtime(s) still running")
        await trio.sleep(step_s)
