"""The records of the model (spaces, runtimes, runs, connection leases) and their wire shapes.

These are plain holders; the registry owns every change to them. `to_wire()` is the record as
docs/api.md (Records) shows it to clients; `to_json()`/`from_json()` is the state-file form.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import attrs

from .lifecycle import LeaseStatus
from .runtime_config import NO_CONFIG, RuntimeConfig

DEFAULT_SPACE = "default"


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record_dict(record: Any, skip: str | None = None) -> dict[str, Any]:
    """The record's fields as a dict, dict values copied (a caller may keep the result while
    the record changes). attrs.asdict does the same, several times slower: this is on the path
    of every read request."""
    out = {}
    for field in attrs.fields(type(record)):
        if field.name != skip:
            value = getattr(record, field.name)
            out[field.name] = dict(value) if type(value) is dict else value
    return out


@attrs.define
class Space:
    id: str
    name: str
    metadata: dict[str, Any]
    created_at: str

    def to_wire(self) -> dict[str, Any]:
        return _record_dict(self)

    to_json = to_wire

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Space:
        return cls(**obj)


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value)


@attrs.frozen
class RunConfig:
    """The launch options that stay with a runtime and apply to each of its runs (a restart
    reuses them). None means the daemon's default from the config."""

    headless: bool = True
    restart: str = "no"  # "no" | "on-failure"
    idle_timeout_s: float | None = None
    max_lifetime_s: float | None = None
    memory_limit_mb: int | None = None
    args: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    # How the browser looks to the web (proxy, viewport, ...): its keys sit beside the others
    # in the wire and state maps.
    runtime: RuntimeConfig = NO_CONFIG
    record: bool | None = None  # keep a recording of each run (None: config record.default)

    def to_json(self) -> dict[str, Any]:
        return {"headless": self.headless, "restart": self.restart,
                "idle_timeout_s": self.idle_timeout_s, "max_lifetime_s": self.max_lifetime_s,
                "memory_limit_mb": self.memory_limit_mb, "args": list(self.args),
                "record": self.record, **self.runtime.to_json()}

    @classmethod
    def from_json(cls, obj: Any) -> RunConfig:
        """From a state file's map (keys it does not know are left out)."""
        if isinstance(obj, RunConfig):
            return obj
        obj = obj or {}
        known = {field.name for field in attrs.fields(cls)} - {"runtime"}
        runtime = RuntimeConfig.from_json({k: obj[k] for k in RuntimeConfig.KEYS if k in obj})
        return cls(**{k: v for k, v in obj.items() if k in known and v is not None},
                   runtime=runtime)


def _run_config(obj: Any) -> RunConfig:
    return RunConfig.from_json(obj)


@attrs.define
class RuntimeRecord:
    id: str
    space: str
    name: str
    status: str
    active_run_id: str | None
    profile: str | None
    metadata: dict[str, Any]
    config: RunConfig = attrs.field(converter=_run_config)
    created_at: str
    updated_at: str
    last_activity_at: str
    # Where the live browser is, for startup reconciliation after a daemon crash.
    process: dict[str, Any] | None = None  # {pid, create_time, user_data_dir}
    type: str = "browser"

    def to_wire(self) -> dict[str, Any]:
        return {**_record_dict(self, skip="process"), "config": self.config.to_json()}

    def to_json(self) -> dict[str, Any]:
        return {**_record_dict(self), "config": self.config.to_json()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RuntimeRecord:
        known = {field.name for field in attrs.fields(cls)}
        return cls(**{key: value for key, value in obj.items() if key in known})


@attrs.define
class RunRecord:
    id: str
    runtime_id: str
    space: str
    status: str
    started_at: str
    ended_at: str | None = None
    end_reason: str | None = None
    failure: dict[str, Any] | None = None
    counts: dict[str, int] = attrs.Factory(
        lambda: {"events": 0, "artifacts": 0, "connections": 0, "invocations": 0}
    )
    # A disk error hit the run's files (ENOSPC, EIO): its log or record may be incomplete on
    # disk, while the browser and the live stream went on. The first reason is kept.
    degraded: bool = False
    degraded_reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _record_dict(self)

    to_json = to_wire

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RunRecord:
        known = {field.name for field in attrs.fields(cls)}
        return cls(**{key: value for key, value in obj.items() if key in known})


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@attrs.define
class Lease:
    """A connection lease: an attach window onto one run of one runtime, for a CDP client
    (`protocol` "cdp") or a live view page ("view"; `control` lets it drive the page)."""

    id: str
    runtime_id: str
    run_id: str
    space: str
    protocol: str
    label: str | None
    exclusive: bool
    token_hash: bytes = attrs.field(repr=False)
    created_at: str
    expires_at: str
    status: str = LeaseStatus.ACTIVE
    revoked_at: str | None = None
    closed_at: str | None = None
    open_sockets: int = 0
    control: bool = False

    @property
    def controller(self) -> bool:
        """Does it drive the browser (a CDP client, a view in control mode), or only watch?"""
        return self.protocol == "cdp" or self.control

    def to_wire(self) -> dict[str, Any]:
        return _record_dict(self, skip="token_hash")
