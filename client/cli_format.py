"""What `browserctl` prints: aligned tables, short times and sizes, and ``--json`` documents.

Pure functions from records to text, so the look of every command is tested without a
daemon. ``cli.py`` owns the commands and decides what to show; this module only how.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .records import Event, ProfileRecord, Record, RuntimeRecord, RuntimeStats

STATS_HEADERS = ("NAME", "SPACE", "CPU %", "MEM", "PROCS", "TARGETS")


def table(headers: Sequence[str] | None, rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns, two spaces apart; None shows as "-"."""
    cells = [list(headers)] if headers else []
    cells += [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))] if cells else []
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def short_time(rfc3339: str | None) -> str | None:
    """``2026-11-28T09:44:51.123456Z`` -> ``2026-11-28 09:44:51.123``."""
    if not rfc3339:
        return None
    return rfc3339.replace("T", " ").rstrip("Z")[:23]


def short_data(data: dict[str, Any], width: int = 80) -> str:
    """``k=v`` pairs on one line, cut to ``width`` characters."""
    text = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in data.items())
    return text if len(text) <= width else text[: width - 3] + "..."


def human_bytes(size: int | None) -> str | None:
    """A byte count in binary units, as ``docker stats`` shows memory: ``143.2 MiB``."""
    if size is None:
        return None
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def runtime_table(runtimes: Sequence[RuntimeRecord]) -> str:
    rows = [
        (r.space, r.name, r.status, r.profile, r.active_run_id, short_time(r.last_activity_at))
        for r in runtimes
    ]
    return table(("SPACE", "NAME", "STATUS", "PROFILE", "ACTIVE RUN", "LAST ACTIVITY"), rows)


def event_table(events: Sequence[Event]) -> str:
    rows = [(short_time(e.time), e.seq, e.type, e.status, short_data(e.data)) for e in events]
    return table(("TIME", "SEQ", "TYPE", "STATUS", "DATA"), rows)


def holder_text(holder: dict[str, Any] | None) -> str | None:
    """Who holds a profile: ``space/name`` of the runtime, or ``(clone)`` for a daemon job."""
    if holder is None:
        return None
    if holder.get("name") is not None:
        return f"{holder.get('space', '?')}/{holder['name']}"
    if holder.get("operation") is not None:
        return f"({holder['operation']})"
    return "?"  # held by a process that left no note (an older daemon)


def profile_table(profiles: Sequence[ProfileRecord]) -> str:
    rows = [
        (p.name, human_bytes(p.size_bytes), holder_text(p.in_use_by), short_time(p.last_used_at))
        for p in profiles
    ]
    return table(("NAME", "SIZE", "IN-USE-BY", "LAST-USED"), rows)


def profile_details(profile: ProfileRecord) -> str:
    holder = profile.in_use_by or {}
    rows = [
        ("name", profile.name),
        ("size", f"{human_bytes(profile.size_bytes)} ({profile.size_bytes} bytes)"),
        ("in use by", holder_text(profile.in_use_by)),
        ("runtime id", holder.get("runtime_id")),
        ("run id", holder.get("run_id")),
        ("held since", short_time(holder.get("since"))),
        ("last used", short_time(profile.last_used_at)),
    ]
    return table(None, rows)


StatsRow = tuple[RuntimeRecord, RuntimeStats | None]
"""A runtime and its measurement (None: it is not running)."""


def stats_table(rows: Sequence[StatsRow]) -> str:
    """One line per runtime; a runtime that is not running shows "-" for its figures."""
    lines: list[tuple[object, ...]] = []
    for runtime, stats in rows:
        figures: tuple[object, ...] = (None,) * 4
        if stats is not None:
            # MEM is the tree's PSS (summed RSS from a daemon that predates memory_bytes)
            memory = stats.rss_bytes if stats.memory_bytes is None else stats.memory_bytes
            cpu, mem = f"{stats.cpu_percent:.1f}%", human_bytes(memory)
            figures = (cpu, mem, stats.processes, stats.targets)
        lines.append((runtime.name, runtime.space, *figures))
    return table(STATS_HEADERS, lines)


def stats_document(rows: Sequence[StatsRow]) -> list[dict[str, Any]]:
    """The ``--json`` list: each measurement plus the runtime's ``status``; nulls if none."""
    empty = dict.fromkeys(("cpu_percent", "memory_bytes", "rss_bytes", "processes", "targets",
                           "sampled_at"))
    return [
        {"runtime_id": runtime.id, "name": runtime.name, "space": runtime.space,
         **(empty if stats is None else stats.to_dict()), "status": runtime.status}
        for runtime, stats in rows
    ]  # fmt: skip


def to_json(value: Any) -> str:
    def plain(obj: Any) -> Any:
        if isinstance(obj, Record | RuntimeStats):
            return obj.to_dict()
        if isinstance(obj, Event):
            return obj.raw
        if isinstance(obj, bytes):
            return obj.hex()
        raise TypeError(f"cannot show {type(obj).__name__} as JSON")

    return json.dumps(value, indent=2, ensure_ascii=False, default=plain)
