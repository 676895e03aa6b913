"""The daemon's pure rules, checked without a daemon, a browser or a socket: the lifecycle
tables, the name rule, params validation, reserved switches and the restart policy's
decisions. Each runs in microseconds, so a refactor of the core is quick to check."""

from __future__ import annotations

from typing import Any

import pytest

from browserd.daemon.base.errors import ApiError
from browserd.daemon.base.flags import reserved_switch
from browserd.daemon.base.lifecycle import (
    FINISHED_RUN,
    LIVE_RUNTIME,
    RUN_TRANSITIONS,
    RUNTIME_TRANSITIONS,
    InvalidTransition,
    RunStatus,
    RuntimeStatus,
    Trigger,
    run_transition,
    runtime_transition,
)
from browserd.daemon.base.names import component_problem, label_problem, name_problem
from browserd.daemon.base.params import Params
from browserd.daemon.core.restart import RestartPolicy

# ------------------------------------------------------------------------------ lifecycle


def test_a_run_ends_exactly_once_and_its_runtime_comes_to_rest() -> None:
    """From every live run status, every trigger that ends a run leads to a finished run,
    and the runtime to a resting status (stopped or failed) or to stopping."""
    for (_, trigger), after in RUN_TRANSITIONS.items():
        if after in FINISHED_RUN:
            with pytest.raises(InvalidTransition):  # nothing moves a finished run again
                run_transition(after, trigger)
    for (status, trigger), after in RUNTIME_TRANSITIONS.items():
        if trigger in (Trigger.LOST, Trigger.ABORTED, Trigger.EXITED):
            assert after == RuntimeStatus.STOPPED, (status, trigger)


def test_the_walks_users_meet() -> None:
    walks: list[tuple[list[Trigger], RuntimeStatus, RunStatus]] = [
        ([Trigger.READY, Trigger.STOP, Trigger.EXITED], RuntimeStatus.STOPPED, RunStatus.ENDED),
        ([Trigger.READY, Trigger.CRASHED], RuntimeStatus.FAILED, RunStatus.FAILED),
        ([Trigger.LAUNCH_FAILED], RuntimeStatus.FAILED, RunStatus.FAILED),
        # a crash while stopping is the stop completing, not a failure
        ([Trigger.READY, Trigger.STOP, Trigger.CRASHED], RuntimeStatus.STOPPED, RunStatus.ENDED),
        ([Trigger.READY, Trigger.LOST], RuntimeStatus.STOPPED, RunStatus.ENDED),
        ([Trigger.ABORTED], RuntimeStatus.STOPPED, RunStatus.ENDED),
        ([Trigger.READY, Trigger.ABORTED], RuntimeStatus.STOPPED, RunStatus.ENDED),
    ]
    for triggers, runtime_end, run_end in walks:
        runtime: str = runtime_transition(RuntimeStatus.STOPPED, Trigger.LAUNCH)
        run: str = RunStatus.STARTING
        for trigger in triggers:
            runtime = runtime_transition(runtime, trigger)
            run = run_transition(run, trigger)
        assert (runtime, run) == (runtime_end, run_end), triggers
        assert runtime not in LIVE_RUNTIME


def test_what_cannot_happen_is_refused() -> None:
    for status, trigger in [(RuntimeStatus.ACTIVE, Trigger.LAUNCH),
                            (RuntimeStatus.STOPPED, Trigger.READY),
                            (RuntimeStatus.FAILED, Trigger.STOP)]:
        with pytest.raises(InvalidTransition):
            runtime_transition(status, trigger)


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize("name", ["crm", "crm-bot", "a.b_c-1", "A" * 64, "x.", "-x"])
def test_good_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("name", [".", "..", "...", ".hidden", "a/b", "/", "a\0b", "a\nb",
                                  "a b", "é", "", "A" * 65, "a\\b"])
def test_bad_names(name: str) -> None:
    assert name_problem(name) is not None


def test_file_components_and_labels() -> None:
    assert component_problem("report (1).pdf") is None
    assert component_problem("naïve.txt") is None
    for bad in (".env", "..", ".", "a\x07", "x" * 256):
        assert component_problem(bad) is not None, bad
    assert label_problem("nightly run #3") is None
    for bad in ("", "two\nlines", "x" * 201, "nul\0"):
        assert label_problem(bad) is not None, bad


# ------------------------------------------------------------------------------ params


def refused(raw: dict[str, Any], read: Any) -> dict[str, Any]:
    with pytest.raises(ApiError) as caught:
        p = Params(raw)
        read(p)
        p.finish()
    assert caught.value.code == "rpc.invalid_params" and caught.value.hint
    data: dict[str, Any] = caught.value.data
    return data


def test_params_name_the_bad_field() -> None:
    assert refused({"name": ".."}, lambda p: p.name("name"))["field"] == "name"
    assert refused({"profile": 3}, lambda p: p.name("profile", None))["field"] == "profile"
    assert refused({"ttl_s": 0}, lambda p: p.number("ttl_s", 600, low=1, high=10))[
        "field"] == "ttl_s"
    assert refused({"ttl_s": float("nan")}, lambda p: p.number("ttl_s", 600))["field"] == "ttl_s"
    assert refused({"wait": 1}, lambda p: p.flag("wait", True))["field"] == "wait"
    assert refused({"name": "ok", "nmae": "typo"}, lambda p: p.name("name"))["field"] == "nmae"
    assert refused({"label": "a\nb"}, lambda p: p.label("label", None))["field"] == "label"
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"x": deep}
    assert refused({"metadata": deep}, lambda p: p.mapping("metadata", {}))["field"] == "metadata"


def test_params_defaults_and_nil() -> None:
    p = Params({"limit": None, "name": "crm"})
    assert p.integer("limit", 100, low=1) == 100  # nil means the default
    assert p.name("name") == "crm"
    p.finish()


# ------------------------------------------------------------------------------ switches


def test_reserved_switches_in_every_spelling() -> None:
    for arg in ("--user-data-dir=/x", "-user-data-dir=/x", "---USER-DATA-DIR",
                "--remote-debugging-port", "-Remote-Allow-Origins=*"):
        assert reserved_switch(arg) is not None, arg
    for arg in ("--lang=de", "user-data-dir=/x", "--user-data-directory=/x", "about:blank"):
        assert reserved_switch(arg) is None, arg


# ------------------------------------------------------------------------------ restarts


def test_restart_backoff_and_the_crash_loop_breaker() -> None:
    policy = RestartPolicy()
    delays = [policy.record_crash(float(t)) for t in range(4)]
    assert all(d is not None for d in delays) and delays == sorted(delays)
    assert policy.record_crash(4.0) is None  # the fifth crash within the window: no restart
    policy.reset()
    assert policy.record_crash(100.0) is not None
