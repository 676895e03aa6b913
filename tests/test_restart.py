"""The restart policy's arithmetic: backoff doubles, the breaker trips, old crashes age out."""

from __future__ import annotations

from browserd.daemon.core.restart import RestartPolicy


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RestartPolicy(max_crashes=10, window_s=1000, base_delay_s=1, max_delay_s=5)
    delays = [policy.record_crash(float(t)) for t in range(6)]
    assert delays == [1, 2, 4, 5, 5, 5]


def test_breaker_trips_after_max_crashes_in_the_window() -> None:
    policy = RestartPolicy(max_crashes=3, window_s=10)
    assert policy.record_crash(0.0) is not None
    assert policy.record_crash(1.0) is not None
    assert policy.record_crash(2.0) is None
    assert policy.recent_crashes == 3


def test_crashes_outside_the_window_are_forgotten() -> None:
    policy = RestartPolicy(max_crashes=3, window_s=10, base_delay_s=1)
    policy.record_crash(0.0)
    policy.record_crash(1.0)
    assert policy.record_crash(30.0) == 1  # the first two aged out
    policy.reset()
    assert policy.recent_crashes == 0
