"""`browserctl events NAME -f`: a run's events as a live, readable timeline.

One line per event: time, seq, type, status and a short summary picked for the type (a CDP
command shows its method, outcome and duration). Colour only when writing to a terminal (and
not when NO_COLOR is set); ``--json`` prints each event as one JSON line instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import TextIO

from .cli_format import short_data, short_time
from .records import Event

_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"
_RED = "\x1b[31m"
_GREEN = "\x1b[32m"
_YELLOW = "\x1b[33m"
_BLUE = "\x1b[34m"
_MAGENTA = "\x1b[35m"
_CYAN = "\x1b[36m"

# The colour of a type, by its family (the part before the first dot) or its full name.
_TYPE_COLOURS = {
    "runtime.lifecycle": _BOLD,
    "alert": _RED + _BOLD,
    "connection.command": _DIM,
    "connection": _CYAN,
    "target": _BLUE,
    "download": _MAGENTA,
    "artifact": _MAGENTA,
    "file": _MAGENTA,
    "invocation": _GREEN,
    "console": _YELLOW,
    "page": _RED,
    "dialog": _YELLOW,
    "resource": _DIM,
}
_STATUS_COLOURS = {"active": _GREEN, "ended": _GREEN, "finished": _GREEN, "succeeded": _GREEN,
                   "failed": _RED, "error": _RED, "stopping": _YELLOW, "starting": _YELLOW}


def use_colour(stream: TextIO) -> bool:
    """Colour for a terminal, unless NO_COLOR is set (https://no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def summary(event: Event) -> str:
    """The part of an event's data worth a glance, on one line."""
    data = event.data
    if event.type == "connection.command":
        text = f"{data.get('method')} {data.get('outcome')} {data.get('duration_ms')} ms"
        error = data.get("error")
        if isinstance(error, dict):
            text += f" ({error.get('code')}: {error.get('message')})"
        return text
    if event.type == "runtime.lifecycle" and data.get("end_reason"):
        return f"end_reason={data['end_reason']}"
    return short_data(data)


def timeline_line(event: Event, *, colour: bool) -> str:
    """One event as a timeline line."""
    when = (short_time(event.time) or "")[11:]  # the time of day; the run gives the date
    status = event.status or ""
    text = summary(event)
    if not colour:
        return f"{when}  {event.seq:>5}  {event.type:<22} {status:<9} {text}".rstrip()
    family = event.type.partition(".")[0]
    type_colour = _TYPE_COLOURS.get(event.type, _TYPE_COLOURS.get(family, ""))
    status_colour = _STATUS_COLOURS.get(status, "")
    if event.type == "connection.command" and event.data.get("outcome") == "error":
        type_colour = _RED
    return (f"{_DIM}{when}  {event.seq:>5}{_RESET}  {type_colour}{event.type:<22}{_RESET} "
            f"{status_colour}{status:<9}{_RESET} {text}").rstrip()


def print_timeline(events: Iterable[Event], out: TextIO, *, as_json: bool) -> int:
    """Print events as they come (flushing each); returns how many were printed."""
    colour = not as_json and use_colour(out)
    count = 0
    for event in events:
        line = json.dumps(event.raw, ensure_ascii=False) if as_json else timeline_line(
            event, colour=colour)
        out.write(line + "\n")
        out.flush()
        count += 1
    return count

