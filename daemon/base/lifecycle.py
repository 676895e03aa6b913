"""The runtime and run lifecycles as transition tables (pure code, no I/O).

Every status change in the registry goes through `runtime_transition` / `run_transition`, so the
tables below are the whole truth about which changes can happen.
"""

from __future__ import annotations

from enum import StrEnum


class RuntimeStatus(StrEnum):
    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class RunStatus(StrEnum):
    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"
    ENDED = "ended"
    FAILED = "failed"


class LeaseStatus(StrEnum):
    """A connection lease: live, then ended one way (and never live again)."""

    ACTIVE = "active"
    EXPIRED = "expired"  # its expires_at passed
    REVOKED = "revoked"  # deleted
    CLOSED = "closed"  # its run ended


class Trigger(StrEnum):
    LAUNCH = "launch"  # a client asked to start it
    READY = "ready"  # the browser's DevTools endpoint is up
    LAUNCH_FAILED = "launch_failed"  # the browser never became ready
    STOP = "stop"  # a client, a timeout or the daemon asked it to end
    EXITED = "exited"  # the process tree is gone after a stop
    CRASHED = "crashed"  # the browser exited without being asked
    LOST = "lost"  # found active in the state files at start: the daemon that ran it is gone
    ABORTED = "aborted"  # its supervision was cancelled from outside (the daemon going down
    #                      hard): the browser was taken down in place of an orderly stop


class InvalidTransition(Exception):
    def __init__(self, kind: str, status: str, trigger: Trigger) -> None:
        super().__init__(f"{kind} cannot go from {status!r} on {trigger.value!r}")
        self.status = status
        self.trigger = trigger


# Invariants:
# - a runtime has an active run exactly while it is starting, active or stopping;
# - stopped and failed are the only resting states, and both may be launched again;
# - a crash while stopping is just the stop completing (EXITED), never a failure.
_R = RuntimeStatus
RUNTIME_TRANSITIONS: dict[tuple[RuntimeStatus, Trigger], RuntimeStatus] = {
    (_R.STOPPED, Trigger.LAUNCH): _R.STARTING,
    (_R.FAILED, Trigger.LAUNCH): _R.STARTING,
    (_R.STARTING, Trigger.READY): _R.ACTIVE,
    (_R.STARTING, Trigger.LAUNCH_FAILED): _R.FAILED,
    (_R.STARTING, Trigger.STOP): _R.STOPPING,
    (_R.ACTIVE, Trigger.STOP): _R.STOPPING,
    (_R.ACTIVE, Trigger.CRASHED): _R.FAILED,
    (_R.STOPPING, Trigger.EXITED): _R.STOPPED,
    (_R.STOPPING, Trigger.CRASHED): _R.STOPPED,
    (_R.STARTING, Trigger.LOST): _R.STOPPED,
    (_R.ACTIVE, Trigger.LOST): _R.STOPPED,
    (_R.STOPPING, Trigger.LOST): _R.STOPPED,
    (_R.STARTING, Trigger.ABORTED): _R.STOPPED,
    (_R.ACTIVE, Trigger.ABORTED): _R.STOPPED,
    (_R.STOPPING, Trigger.ABORTED): _R.STOPPED,
}

# A run is opened by LAUNCH (in `starting`) and ends exactly once: `ended` after a requested stop
# or a lost daemon, `failed` after a crash or a launch that never came up.
_S = RunStatus
RUN_TRANSITIONS: dict[tuple[RunStatus, Trigger], RunStatus] = {
    (_S.STARTING, Trigger.READY): _S.ACTIVE,
    (_S.STARTING, Trigger.LAUNCH_FAILED): _S.FAILED,
    (_S.STARTING, Trigger.STOP): _S.STOPPING,
    (_S.ACTIVE, Trigger.STOP): _S.STOPPING,
    (_S.ACTIVE, Trigger.CRASHED): _S.FAILED,
    (_S.STOPPING, Trigger.EXITED): _S.ENDED,
    (_S.STOPPING, Trigger.CRASHED): _S.ENDED,
    (_S.STARTING, Trigger.LOST): _S.ENDED,
    (_S.ACTIVE, Trigger.LOST): _S.ENDED,
    (_S.STOPPING, Trigger.LOST): _S.ENDED,
    (_S.STARTING, Trigger.ABORTED): _S.ENDED,
    (_S.ACTIVE, Trigger.ABORTED): _S.ENDED,
    (_S.STOPPING, Trigger.ABORTED): _S.ENDED,
}

LIVE_RUNTIME = frozenset({_R.STARTING, _R.ACTIVE, _R.STOPPING})
FINISHED_RUN = frozenset({_S.ENDED, _S.FAILED})


def runtime_transition(status: str, trigger: Trigger) -> RuntimeStatus:
    try:
        return RUNTIME_TRANSITIONS[RuntimeStatus(status), trigger]
    except KeyError:
        raise InvalidTransition("runtime", status, trigger) from None


def run_transition(status: str, trigger: Trigger) -> RunStatus:
    try:
        return RUN_TRANSITIONS[RunStatus(status), trigger]
    except KeyError:
        raise InvalidTransition("run", status, trigger) from None
