"""runtimes.*: launch, inspect, stop and delete browser runtimes."""

from __future__ import annotations

import hashlib
from typing import Any

import attrs

from ...base.config import IDLE_TIMEOUT_S, MAX_LIFETIME_S, MEMORY_LIMIT_MB
from ...base.errors import ApiError
from ...base.flags import reserved_switch
from ...base.lifecycle import LIVE_RUNTIME, RuntimeStatus
from ...base.model import RunConfig
from ...base.params import Params, invalid
from ...base.runtime_config import ParsedConfig, RuntimeConfig, parse_runtime_config
from ...browser.runtime_switches import CONFIG_SWITCHES
from ...core.runtime import LaunchOptions
from ..api import Api, Caller, method, page


@method("runtimes.launch")
async def runtimes_launch(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    space = p.name("space", "default")
    name = p.name("name")
    options = LaunchOptions(
        profile=p.name("profile", None),
        metadata=p.mapping("metadata", {}),
        headless=p.flag("headless", True),
        restart=p.choice("restart", ("no", "on-failure"), "no"),
        idle_timeout_s=p.number("idle_timeout_s", None, low=IDLE_TIMEOUT_S[0],
                                high=IDLE_TIMEOUT_S[1]),
        max_lifetime_s=p.number("max_lifetime_s", None, low=MAX_LIFETIME_S[0],
                                high=MAX_LIFETIME_S[1]),
        args=tuple(p.strings("args", [])),
        memory_limit_mb=p.integer("memory_limit_mb", None, low=MEMORY_LIMIT_MB[0],
                                  high=MEMORY_LIMIT_MB[1]),
        wait_s=p.number("wait_s", 0.0, low=0, high=3600),
        record=p.flag("record", None),
    )
    raw_config = p.mapping("config", None)
    key = p.text("idempotency_key", None, max_len=256)
    p.finish()
    for arg in options.args:
        if (switch := reserved_switch(arg)) is not None:
            raise invalid("args", f"{arg!r} sets {switch}, which the daemon sets and a launch "
                          "cannot override",
                          "Use the launch params (profile, headless) instead.")
    if raw_config is not None:
        parsed = parse_runtime_config(raw_config)
        _check_args_against(options.args, parsed.config)
        options = attrs.evolve(options, runtime=parsed)
    elif options.args:
        # The config this launch will run with: the runtime's own, or its space's defaults.
        existing = api.registry.find_runtime(space, name)
        defaults = api.registry.config.spaces.get(space)
        _check_args_against(options.args, existing.record.config.runtime if existing else
                            defaults.config if defaults else RuntimeConfig())

    given = {key for key in _CONFIG_KEYS if p.has(key)} | ({"metadata"} if options.metadata
                                                           else set())
    if raw_config is not None:
        given |= set(raw_config)

    async def launch() -> dict[str, Any]:
        rt, run, started = await api.registry.launch(space, name, options, caller.actor())
        warnings = [] if started else _not_applied(rt.record.config, rt.record.metadata,
                                                   options, given)
        return {"runtime": rt.record.to_wire(), "run": run.to_wire(), "started": started,
                "warnings": warnings}

    if key is None:
        return await launch()
    # The same key with the same params replays the first result for 24 h (idempotency.py).
    fingerprint = {"space": space, "name": name, **_fingerprint(options)}
    result, _ = await api.control.idempotency.run("runtimes.launch", key, fingerprint, launch)
    return dict(result)


_CONFIG_KEYS = ("headless", "restart", "idle_timeout_s", "max_lifetime_s", "memory_limit_mb",
                "args", "record")


def _fingerprint(options: LaunchOptions) -> dict[str, Any]:
    """The launch as the idempotency store keeps it: the proxy's credentials only hashed (the
    store is a file that must never hold them)."""
    found = attrs.asdict(options, filter=lambda field, _: field.name != "runtime")
    if options.runtime is not None:
        found["config"] = options.runtime.config.to_json()
        credentials = options.runtime.credentials
        if credentials is not None:
            digest = hashlib.sha256(
                f"{credentials.username}\0{credentials.password}".encode()).hexdigest()
            found["config"]["proxy_credentials_sha256"] = digest
    return found


def _check_args_against(args: tuple[str, ...], runtime: RuntimeConfig) -> None:
    """Refuse a raw switch that a config key in force with it also sets."""
    config = runtime.to_json()
    for key, switches in CONFIG_SWITCHES.items():
        if not config.get(key):
            continue
        for arg in args:
            name = arg.lstrip("-").partition("=")[0].strip().lower()
            if arg.startswith("-") and name in switches:
                raise invalid("args", f"{arg!r} sets --{name}, which config.{key} sets too",
                              f"Set it once: through config.{key}, or drop config.{key} and "
                              "keep the switch in args.")


def _not_applied(running: RunConfig, metadata: dict[str, Any], options: LaunchOptions,
                 given: set[str]) -> list[str]:
    """What a launch of a runtime that is already running asked for and did not get: the
    options it gave that differ from the running ones (they take effect at the next start)."""
    wanted, now = options.config(running.runtime).to_json(), running.to_json()
    keys = (*_CONFIG_KEYS, *RuntimeConfig.KEYS)
    warnings = [
        f"{key}={wanted[key]!r} was not applied: the runtime is running with "
        f"{now[key]!r}; stop it and launch again to change it"
        for key in keys if key in given and wanted[key] != now[key]
    ]
    if "metadata" in given and dict(options.metadata) != metadata:
        warnings.append("metadata was not applied: the runtime is running; change it with "
                        "runtimes.update")
    return warnings


@method("runtimes.stats")
async def runtimes_stats(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    rt = api.runtime(p, "id", touch=False)
    p.finish()
    sample = await api.monitor.sample(rt) if api.monitor is not None else None
    if sample is None:
        raise ApiError(
            "runtime.not_active",
            f"Runtime {rt.record.space}/{rt.record.name} is {rt.record.status}: no browser to "
            "measure.",
            hint="Launch it first.", data={"status": rt.record.status},
        )
    return {"runtime_id": rt.id, "name": rt.record.name, "space": rt.record.space, **sample}


@method("runtimes.get")
def runtimes_get(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    rt = api.runtime(p, "id", touch=False)
    p.finish()
    return rt.record.to_wire()


@method("runtimes.list")
def runtimes_list(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    space = p.name("space", None)
    status = p.choice("status", tuple(RuntimeStatus), None)
    p.finish()
    records = sorted((rt.record for rt in api.registry.runtimes.values()),
                     key=lambda r: (r.space, r.name))
    return page([
        r.to_wire() for r in records
        if (space is None or r.space == space) and (status is None or r.status == status)
    ])


@method("runtimes.stop")
async def runtimes_stop(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    rt = api.runtime(p, "id", touch=False)
    timeout_s = p.number("timeout_s", None, low=0, high=600)
    p.finish()
    run, stopped = await api.registry.stop(rt, "stopped", timeout_s, caller.actor())
    return {"runtime": rt.record.to_wire(), "run": run.to_wire() if run else None,
            "stopped": stopped}


@method("runtimes.delete")
async def runtimes_delete(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    rt = api.runtime(p, "id", touch=False)
    force = p.flag("force", False)
    p.finish()
    await api.registry.delete(rt, force, caller.actor())
    return {"deleted": True, "runtime": rt.record.to_wire()}


@method("runtimes.update")
async def runtimes_update(api: Api, caller: Caller, p: Params) -> dict[str, Any]:
    rt = api.runtime(p, "id")
    metadata = p.mapping("metadata", None)
    idle_timeout_s = p.number("idle_timeout_s", None, low=IDLE_TIMEOUT_S[0],
                              high=IDLE_TIMEOUT_S[1])
    raw_config = p.mapping("config", None)
    p.finish()
    if raw_config is not None:
        # Under the runtime's lock: no launch starts a browser with half of it.
        async with rt.lock:
            if rt.record.status in LIVE_RUNTIME:
                raise ApiError(
                    "runtime.not_stopped",
                    f"Runtime {rt.record.space}/{rt.record.name} is {rt.record.status}: its "
                    "config applies when its browser starts, so it changes only while stopped.",
                    hint="Stop it (`browserctl stop NAME`), update, then launch it again.",
                    data={"status": rt.record.status, "field": "config"},
                )
            current = ParsedConfig(rt.record.config.runtime,
                                   api.registry.proxy_credentials.get(rt.id))
            parsed = parse_runtime_config(raw_config, base=current)
            _check_args_against(rt.record.config.args, parsed.config)
            rt.record.config = attrs.evolve(rt.record.config, runtime=parsed.config)
            await api.registry.proxy_credentials.set(rt.id, parsed.credentials)
    if metadata is not None:
        rt.record.metadata = metadata
    if idle_timeout_s is not None:
        rt.record.config = attrs.evolve(rt.record.config, idle_timeout_s=idle_timeout_s)
    api.registry.touch(rt)
    await api.registry.write_runtime(rt)
    return rt.record.to_wire()
