"""The daemon's file descriptors: the limit it runs under, and the budget it shares out.

Every client costs descriptors: an RPC connection one, a proxied CDP socket two (the client's
and the one to Chromium), a CDP request still in its HTTP phase one (two while it fetches a
/json document), a lease's `browser_url` origin one (its listener), a browser's connection
through its runtime's proxy relay two (the browser's and the one to the upstream proxy).
Without a budget, a thousand idle connections from anyone on the machine used the last
descriptor, and whichever part of the daemon opened a file next failed, however important
(the orphan reaper's /proc read once took the daemon down that way).

So, as nginx's worker_connections and HAProxy's maxconn do, the daemon raises its soft
RLIMIT_NOFILE to the hard limit at start and gives each kind of client a cap (`Pool`) derived
from it, after a reserve for its own work (state files, run logs, the browsers' pipes and
pidfds, the daemon's own CDP connections, worker threads reading /proc). At a cap new clients
of that kind are turned away cheaply and at once (`accept_loop.py`), or their request fails
with `daemon.resources_exhausted` naming the budget; the other kinds, and the daemon's own
work, never notice. `limits.*` in the config may set each cap.
"""

from __future__ import annotations

import logging
import resource
import sys

import attrs

from ..base.config import LimitsConfig
from ..base.errors import ApiError

__all__ = ["FdBudget", "Pool", "Slot", "raise_nofile_limit"]

log = logging.getLogger(__name__)

# The reserve kept for the daemon's own work, out of the budget's reach. Measured: an idle
# daemon holds 11 descriptors and each running browser 5 more (its pidfd, its output pipe, the
# run's event log, the daemon's two CDP connections); transient ones (state writes, /proc
# reads in worker threads, a spawn's pipes, /json fetches, artifacts) come on top.
_RESERVE_BASE = 64
_RESERVE_PER_RUNTIME = 16
# What is left goes to the client budgets in these shares (of descriptors, not of clients).
_SHARES = {"rpc_connections": 0.20, "cdp_sockets": 0.30, "cdp_pending": 0.20,
           "lease_ports": 0.20, "relay_connections": 0.10}
_COST = {"rpc_connections": 1, "cdp_sockets": 2, "cdp_pending": 2, "lease_ports": 1,
         "relay_connections": 2}
_FLOOR = 4  # however low the limit, each kind of client may have a few
# Budgets are computed from at most this many descriptors (the kernel's default nr_open):
# a hard limit of "unlimited" must not make caps nobody could reach.
_NOFILE_CEILING = 1 << 20

_WHAT = {
    "rpc_connections": "RPC connections",
    "cdp_sockets": "proxied CDP sockets",
    "cdp_pending": "CDP requests in their HTTP phase",
    "lease_ports": "leases with a browser_url port",
    "relay_connections": "browser connections through proxy relays",
}
_HINT = {
    "rpc_connections": "Close idle clients, or raise limits.rpc_connections (and the daemon's "
                       "RLIMIT_NOFILE: LimitNOFILE= for the service).",
    "cdp_sockets": "Close CDP connections no longer used, or raise limits.cdp_sockets (and the "
                   "daemon's RLIMIT_NOFILE: LimitNOFILE= for the service).",
    "cdp_pending": "Retry in a moment: a client that sends no complete request head within "
                   "limits.cdp_header_timeout_s is closed. Or raise limits.cdp_pending.",
    "lease_ports": "Delete leases no longer needed (connections.delete) or let them expire; "
                   "or raise limits.lease_ports (and the daemon's RLIMIT_NOFILE).",
    "relay_connections": "Fewer pages loading at once through proxied runtimes, or raise "
                         "limits.relay_connections (and the daemon's RLIMIT_NOFILE).",
}


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.

    The soft limit is usually 1024 (kept low for programs that still use select()); the daemon
    uses epoll only, and the hard limit is what the administrator allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else _NOFILE_CEILING
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:  # a hard limit above fs.nr_open, say
            log.debug("could not raise RLIMIT_NOFILE from %d to %d: %s", soft, wanted, exc)
        else:
            log.debug("RLIMIT_NOFILE soft limit raised from %d to %d", soft, wanted)
            soft = wanted
    return soft if soft != resource.RLIM_INFINITY else _NOFILE_CEILING


@attrs.define(eq=False)
class Slot:
    """One unit of a pool, held by one client; `release` gives it back (once, idempotent)."""

    _pool: Pool | None

    def release(self) -> None:
        if self._pool is not None:
            self._pool.in_use -= 1
            self._pool = None


@attrs.define(eq=False)
class Pool:
    """One kind of client: at most `limit` of them at once."""

    name: str
    limit: int
    in_use: int = 0
    turned_away: int = 0  # since start: clients refused at the cap

    def take_nowait(self) -> Slot | None:
        """A slot, or None at the cap (counted in `turned_away`)."""
        if self.in_use >= self.limit:
            self.turned_away += 1
            return None
        self.in_use += 1
        return Slot(self)

    def take(self) -> Slot:
        """A slot; raises `daemon.resources_exhausted` at the cap."""
        slot = self.take_nowait()
        if slot is None:
            raise self.exhausted()
        return slot

    def exhausted(self) -> ApiError:
        return ApiError(
            "daemon.resources_exhausted",
            f"The daemon is at its limit of {self.limit} {_WHAT.get(self.name, self.name)}.",
            hint=_HINT.get(self.name, "Retry later."),
            data={"budget": self.name, "limit": self.limit, "in_use": self.in_use},
        )


@attrs.frozen
class FdBudget:
    """The caps on each kind of client, from the descriptor limit `nofile`."""

    nofile: int
    rpc_connections: Pool
    cdp_sockets: Pool
    cdp_pending: Pool  # the CDP port's and the lease origins' requests, until upgraded
    lease_ports: Pool
    relay_connections: Pool  # shared by every runtime's proxy relay

    @classmethod
    def derive(cls, nofile: int, limits: LimitsConfig) -> FdBudget:
        """Caps for a daemon allowed `nofile` descriptors; `limits.<cap>` wins where set."""
        reserve = _RESERVE_BASE + _RESERVE_PER_RUNTIME * limits.max_runtimes
        spare = min(nofile, _NOFILE_CEILING) - reserve
        if spare < 64:
            log.warning(
                "RLIMIT_NOFILE is %d: too low for limits.max_runtimes = %d (the daemon keeps "
                "%d descriptors for itself); clients get only a few each. Raise LimitNOFILE= "
                "(or ulimit -n) or lower limits.max_runtimes.", nofile, limits.max_runtimes,
                reserve)
        caps = {}
        for name, share in _SHARES.items():
            configured = getattr(limits, name)
            computed = max(_FLOOR, int(spare * share) // _COST[name])
            caps[name] = configured if configured is not None else computed
        budget = cls(nofile, **{name: Pool(name, cap) for name, cap in caps.items()})
        log.debug("descriptor budget for RLIMIT_NOFILE %d: %s", nofile,
                  ", ".join(f"{name} {cap}" for name, cap in caps.items()))
        return budget

    @classmethod
    def unlimited(cls) -> FdBudget:
        """No caps: for parts run on their own (a proxy in a test)."""
        return cls(sys.maxsize, **{name: Pool(name, sys.maxsize) for name in _SHARES})

    def pools(self) -> tuple[Pool, ...]:
        return (self.rpc_connections, self.cdp_sockets, self.cdp_pending, self.lease_ports,
                self.relay_connections)

    def status(self) -> dict[str, dict[str, int]]:
        """For daemon.status: each budget's limit, use, and the clients it turned away."""
        return {pool.name: {"limit": pool.limit, "in_use": pool.in_use,
                            "turned_away": pool.turned_away} for pool in self.pools()}
