"""The daemon's records as attrs classes: the data half of every resource object.

Field names are the wire keys (docs/api.md, Records). Every field has a default so a
record from an older or newer daemon still loads; ``raw`` keeps the whole wire map,
including keys added after this client was written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, cast

import attrs

T = TypeVar("T")


@attrs.frozen
class Endpoint:
    """Where to attach a CDP client: ``url`` (ws://, for connect_over_cdp), ``http_url``
    (the same over http: /json discovery), and ``browser_url``, a bare origin for clients
    that resolve /json/version against the origin (Puppeteer's ``browserURL``)."""

    url: str
    http_url: str
    browser_url: str = ""


def _endpoint(value: Any) -> Endpoint | None:
    if isinstance(value, Endpoint) or value is None:
        return value
    if isinstance(value, dict):
        return Endpoint(url=str(value.get("url", "")), http_url=str(value.get("http_url", "")),
                        browser_url=str(value.get("browser_url", "")))
    return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@attrs.frozen
class Event:
    """One line of a run's event log (docs/api.md, Records)."""

    seq: int = 0
    time: str = ""
    type: str = ""
    run_id: str = ""
    runtime_id: str = ""
    space: str = ""
    source: str = ""
    status: str | None = None
    actor: dict[str, Any] | None = None
    target: dict[str, Any] | None = None
    data: dict[str, Any] = attrs.field(factory=dict, converter=_mapping)
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Event:
        return from_wire(cls, wire)


class Record:
    """Base of the mutable records; resources refresh themselves in place.

    Records and the resources built on them are ``@attrs.define(on_setattr=NO_OP)``: attrs'
    default hook on every assignment made building one cost more than the rest of its
    ``__init__`` (one is built per item of every list). Converters still run in
    ``__init__``, and :meth:`_update` runs them itself.
    """

    raw: dict[str, Any]

    def _update(self, wire: dict[str, Any]) -> None:
        fields = attrs.fields_dict(cast(Any, type(self)))
        for name, value in _known(type(self), wire).items():
            setattr(self, name, attrs.setters.convert(self, fields[name], value))
        self.raw = wire

    def to_dict(self) -> dict[str, Any]:
        """The record as the daemon sent it (all keys, including unknown ones)."""
        return dict(self.raw)


def _known(cls: type[Any], wire: dict[str, Any]) -> dict[str, Any]:
    return {name: wire[name] for name in _wire_names(cls) if name in wire}


_WIRE_NAMES: dict[type[Any], frozenset[str]] = {}


def _wire_names(cls: type[Any]) -> frozenset[str]:
    """The fields of ``cls`` that come from the wire (not ``raw``, not private ones); kept
    per class, since every refresh asks (``Record._update``), as does the builders' fallback."""
    names = _WIRE_NAMES.get(cls)
    if names is None:
        names = _WIRE_NAMES[cls] = frozenset(
            f.name for f in attrs.fields(cls) if f.name != "raw" and f.alias == f.name
        )
    return names


def from_wire(cls: type[T], wire: dict[str, Any], **private: Any) -> T:
    """Build a record (or a resource, passing its private fields) from a wire map: what
    ``cls(**fields, raw=wire, **private)`` builds, where ``fields`` are the wire's keys that
    are fields of ``cls``; a key that is none (a newer daemon's) stays in ``raw`` alone."""
    builders = _BUILDERS.get(cls) or _new_builders(cls)
    built: T = builders.one(wire, private)
    return built


def from_wire_list(cls: type[T], wires: list[dict[str, Any]], **private: Any) -> list[T]:
    """:func:`from_wire` for each map of a list (a page's ``data``), in one loop compiled
    for the class."""
    builders = _BUILDERS.get(cls) or _new_builders(cls)
    built: list[T] = builders.many(wires, private)
    return built


class _Builders(NamedTuple):
    one: Callable[[dict[str, Any], dict[str, Any]], Any]
    many: Callable[[list[dict[str, Any]], dict[str, Any]], list[Any]]


_BUILDERS: dict[type[Any], _Builders] = {}
_FACTORY: type[Any] = type(attrs.Factory(dict))  # a field's default made per instance


def _new_builders(cls: type[T]) -> _Builders:
    """The builders of ``cls``, compiled at its first use and kept."""
    builders = _BUILDERS[cls] = _compile_builders(cls)
    return builders


def _compile_builders(cls: type[T]) -> _Builders:
    """``from_wire`` and ``from_wire_list`` for one class, compiled at its first use: they
    set the fields straight from the wire map, as the ``__init__`` attrs writes for the
    class would, without the call through ``cls(**kwargs)``, whose keyword binding cost as
    much again as the rest (a record is built per item of every list a client reads: a page
    is up to 1000). The list's loop is compiled too, saving a call per item.

    Only what the records use is compiled: defaults, factories, converters, frozen or not.
    A class with anything more (a validator, a post-init hook, a field out of ``__init__``
    or without a default) gets the plain ``cls(**kwargs)`` instead."""
    fields = attrs.fields(cast(Any, cls))
    if any(f.validator is not None or not f.init
           or (f.default is attrs.NOTHING and f.alias == f.name)
           or (isinstance(f.default, _FACTORY) and f.default.takes_self)
           for f in fields) or hasattr(cls, "__attrs_post_init__"):
        init: Callable[..., T] = cls

        def one(wire: dict[str, Any], private: dict[str, Any]) -> Any:
            return init(**_known(cls, wire), raw=wire, **private)

        return _Builders(one, lambda wires, private: [one(wire, private) for wire in wires])
    env: dict[str, Any] = {"new": object.__new__, "cls": cls, "setattr": object.__setattr__}
    body = ["self = new(cls)"]
    for i, f in enumerate(fields):
        name = f.name
        if name == "raw":
            value = "wire"
        elif f.alias != name:  # a resource's private field (``_transport``): given, not sent
            value = f"private[{f.alias!r}]"
        elif f.converter is _mapping and _is_dict_factory(f.default):
            # The usual converter, written out: a call per record and field saved.
            body.append(f"value = wire.get({name!r})")
            value = "value if isinstance(value, dict) else {}"
        else:
            if isinstance(f.default, _FACTORY):
                env[f"factory_{i}"] = f.default.factory
                value = f"wire[{name!r}] if {name!r} in wire else factory_{i}()"
            else:
                env[f"default_{i}"] = f.default
                value = f"wire.get({name!r}, default_{i})"
            if f.converter is not None:
                env[f"convert_{i}"] = f.converter
                value = f"convert_{i}({value})"
        # A class with a __setattr__ of its own (frozen: it refuses) is set through
        # object.__setattr__, as its attrs __init__ does.
        body.append(f"self.{name} = {value}" if cls.__setattr__ is object.__setattr__
                    else f"setattr(self, {name!r}, {value})")
    source = "\n".join([
        "def one(wire, private):",
        *(f"    {line}" for line in body),
        "    return self",
        "def many(wires, private):",
        "    built = []",
        "    append = built.append",
        "    for wire in wires:",
        *(f"        {line}" for line in body),
        "        append(self)",
        "    return built",
    ])
    exec(source, env)  # our own source, written above from attrs.fields
    return _Builders(env["one"], env["many"])


def _is_dict_factory(default: Any) -> bool:
    return isinstance(default, _FACTORY) and default.factory is dict and not default.takes_self


@attrs.define(on_setattr=attrs.setters.NO_OP)
class SpaceRecord(Record):
    """Space ``{id, name, metadata, created_at}``."""

    id: str = ""
    name: str = ""
    metadata: dict[str, Any] = attrs.field(factory=dict, converter=_mapping)
    created_at: str = ""
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.define(on_setattr=attrs.setters.NO_OP)
class RuntimeRecord(Record):
    """Runtime; ``status`` is starting, active, stopping, stopped or failed."""

    id: str = ""
    space: str = ""
    name: str = ""
    type: str = "browser"
    status: str = ""
    active_run_id: str | None = None
    profile: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict, converter=_mapping)
    config: dict[str, Any] = attrs.field(factory=dict, converter=_mapping)
    created_at: str = ""
    updated_at: str = ""
    last_activity_at: str | None = None
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.define(on_setattr=attrs.setters.NO_OP)
class RunRecord(Record):
    """Run; ``status`` is starting, active, stopping, ended or failed."""

    id: str = ""
    runtime_id: str = ""
    space: str = ""
    status: str = ""
    started_at: str | None = None
    ended_at: str | None = None
    end_reason: str | None = None
    failure: dict[str, Any] | None = None
    counts: dict[str, Any] = attrs.field(factory=dict, converter=_mapping)
    degraded: bool = False  # a disk error hit the run's files; see degraded_reason
    degraded_reason: str | None = None
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.define(on_setattr=attrs.setters.NO_OP)
class ConnectionRecord(Record):
    """A CDP connection lease; ``endpoint`` is set only on the object ``create`` returned."""

    id: str = ""
    runtime_id: str = ""
    run_id: str | None = None
    protocol: str = "cdp"
    label: str | None = None
    exclusive: bool = False
    control: bool = False
    status: str = ""
    created_at: str = ""
    expires_at: str | None = None
    revoked_at: str | None = None
    closed_at: str | None = None
    open_sockets: int = 0
    endpoint: Endpoint | None = attrs.field(default=None, converter=_endpoint)
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    def _update(self, wire: dict[str, Any]) -> None:
        # The endpoint is shown once, by create; later reads of the lease must not drop it.
        endpoint = self.endpoint
        super()._update(wire)
        if self.endpoint is None:
            self.endpoint = endpoint


@attrs.define(on_setattr=attrs.setters.NO_OP)
class ProfileRecord(Record):
    """Profile: a persistent user-data-dir by name; ``in_use_by`` is its holder or None.

    The holder map names the runtime (``runtime_id``, ``space``, ``name``, ``run_id``,
    ``since``), or the daemon operation (``operation``) that has the profile now.
    """

    name: str = ""
    size_bytes: int = 0
    in_use_by: dict[str, Any] | None = None
    last_used_at: str | None = None
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.define(on_setattr=attrs.setters.NO_OP)
class InvocationRecord(Record):
    """Invocation: one browser action run by the daemon.

    ``status`` is queued, running, succeeded, failed, cancelled or timed_out. ``output`` is
    the action's result: ``{url, title}`` (navigate), ``{artifact}`` (screenshot, pdf), the
    value (evaluate), the text (content). ``error`` is ``{code, message, hint}`` unless it
    succeeded.

    An output over 64 KiB is kept by the daemon as an artifact of the run (kind
    ``output``): the record says ``output_truncated`` and its ``output`` is ``{artifact,
    truncated: true}``. The clients' ``create``, ``get``, ``refresh`` and ``cancel`` then
    read the value back into ``output`` for you (``raw`` keeps the record as sent);
    records from ``list`` do not, and ``read_output()`` reads it for any of them.
    """

    id: str = ""
    runtime_id: str = ""
    run_id: str = ""
    space: str = ""
    action: str = ""
    params: dict[str, Any] = attrs.field(factory=dict, converter=_mapping)
    target_id: str | None = None
    timeout_s: float = 0.0
    idempotency_key: str | None = None
    status: str = ""
    output: Any = None
    output_truncated: bool = False
    error: dict[str, Any] | None = None
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def output_artifact(self) -> dict[str, Any] | None:
        """The Artifact record (a map) holding the output when the daemon kept it as an
        artifact (``output_truncated``), else None."""
        stub = self.raw.get("output")
        if self.raw.get("output_truncated") and isinstance(stub, dict):
            artifact = stub.get("artifact")
            return artifact if isinstance(artifact, dict) else None
        return None

    @property
    def finished(self) -> bool:
        """True once the invocation has a final status."""
        return self.status in ("succeeded", "failed", "cancelled", "timed_out")


@attrs.frozen
class Target:
    """A page (or other target) of a runtime's browser; ``active`` marks the page that
    invocations act on by default."""

    id: str = ""
    type: str = ""
    url: str = ""
    title: str = ""
    active: bool = False
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Target:
        return from_wire(cls, wire)


@attrs.frozen
class RuntimeFile:
    """A file in a runtime's file area; ``path`` is relative to the area, ``local_path``
    is where the browser can read it (for ``<input type=file>``)."""

    path: str = ""
    size_bytes: int = 0
    modified_at: str = ""
    local_path: str = ""
    sha256: str | None = None
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> RuntimeFile:
        return from_wire(cls, wire)


@attrs.frozen
class CollectedFile:
    """What ``files.collect`` made: the file's record and the artifact (a record map)."""

    file: RuntimeFile
    artifact: dict[str, Any]


@attrs.frozen
class Artifact:
    """A file a run produced: ``kind`` is download, screenshot, pdf or file; ``name`` its
    real name; ``path`` where it is, relative to the run's directory on the daemon's side."""

    id: str = ""
    run_id: str = ""
    kind: str = ""
    name: str = ""
    path: str = ""
    content_type: str = ""
    size_bytes: int = 0
    sha256: str = ""
    created_at: str = ""
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Artifact:
        return from_wire(cls, wire)


@attrs.frozen
class ArtifactChunk:
    """Bytes of an artifact from ``runs.artifacts.read``; ``eof`` when they reach its end."""

    data: bytes = b""
    eof: bool = False


@attrs.frozen
class RuntimeStats:
    """One measurement of a runtime's whole browser process tree (``runtime.stats()``).

    ``cpu_percent`` is summed over the tree's processes since the previous sample (100 is
    one core); ``memory_bytes`` is the tree's PSS (a page shared by N processes counts 1/N in
    each; ``memory_limit_mb`` applies to it, and None from a daemon that predates it);
    ``rss_bytes`` is RSS summed over the processes, which counts shared pages once per
    process (several times what the tree holds); ``targets`` counts page targets and is None
    when the browser did not answer.
    """

    runtime_id: str = ""
    name: str = ""
    space: str = ""
    cpu_percent: float = 0.0
    memory_bytes: int | None = None
    rss_bytes: int = 0
    processes: int = 0
    targets: int | None = None
    sampled_at: str = ""
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> RuntimeStats:
        return from_wire(cls, wire)

    def to_dict(self) -> dict[str, Any]:
        """The measurement as the daemon sent it (all keys, including unknown ones)."""
        return dict(self.raw)
