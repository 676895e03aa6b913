"""The descriptor budget: caps derived from RLIMIT_NOFILE, config overrides, pools and slots."""

from __future__ import annotations

import resource

import pytest

from browserd.daemon.base.config import LimitsConfig
from browserd.daemon.system.fd_budget import FdBudget, Pool, raise_nofile_limit

COST = {"rpc_connections": 1, "cdp_sockets": 2, "cdp_pending": 2, "lease_ports": 1,
        "relay_connections": 2}


def cost(budget: FdBudget) -> int:
    return sum(COST[pool.name] * pool.limit for pool in budget.pools())


@pytest.mark.parametrize("nofile", [1024, 4096, 524_288])
def test_caps_leave_the_reserve_for_the_daemon_itself(nofile: int) -> None:
    budget = FdBudget.derive(nofile, LimitsConfig())
    reserve = 64 + 16 * LimitsConfig().max_runtimes
    assert cost(budget) <= nofile - reserve
    assert cost(budget) >= 0.95 * (nofile - reserve)  # and share out the rest
    status = budget.status()
    assert set(status) == set(COST)
    assert all(entry["in_use"] == 0 and entry["limit"] >= 4 for entry in status.values())


def test_configured_caps_win_and_a_tiny_limit_still_leaves_a_few() -> None:
    budget = FdBudget.derive(128, LimitsConfig(cdp_sockets=3, lease_ports=500))
    assert budget.cdp_sockets.limit == 3 and budget.lease_ports.limit == 500
    assert budget.rpc_connections.limit >= 4 and budget.cdp_pending.limit >= 4


def test_an_unlimited_hard_limit_makes_reachable_caps() -> None:
    budget = FdBudget.derive(1 << 40, LimitsConfig())
    assert cost(budget) <= 1 << 20


def test_a_pool_turns_away_at_its_cap_and_slots_go_back_once() -> None:
    pool = Pool("lease_ports", 2)
    first, second = pool.take(), pool.take()
    assert pool.take_nowait() is None and pool.turned_away == 1
    error = pool.exhausted()
    assert error.code == "daemon.resources_exhausted" and error.hint
    assert error.data == {"budget": "lease_ports", "limit": 2, "in_use": 2}
    first.release()
    first.release()  # idempotent
    assert pool.in_use == 1
    third = pool.take()
    with pytest.raises(Exception) as refused:
        pool.take()
    assert getattr(refused.value, "code", None) == "daemon.resources_exhausted"
    second.release()
    third.release()
    assert pool.in_use == 0


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        raised = raise_nofile_limit()
        now = resource.getrlimit(resource.RLIMIT_NOFILE)
        expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
        assert raised == now[0] == expected
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
