"""The daemon's own log: one line per event on stderr, at the levels the config asks for.

In a terminal a line is ``<UTC time> <LEVEL> <area>: <message>``. When stderr is the journal
(``$JOURNAL_STREAM`` names the device and inode of our stderr, as systemd.exec(5) says to check)
the line is ``<N><area>: <message>``: the sd-daemon(3) priority prefix that journald turns into
the entry's PRIORITY, and no timestamp, since the journal stamps every entry itself.
A message or traceback with newlines stays one line (newlines are written as ``\\n``), so one
event is never split across entries or interleaved with another.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import TextIO

__all__ = ["AREAS", "LineFormatter", "Throttled", "journal_stream", "setup"]

# Config area (`log_levels.<area>`) -> the loggers it sets. Every module logs under its own
# name (`logging.getLogger(__name__)`, e.g. `browserd.daemon.services.observer`); an area is
# a layer package or a set of modules, and a logger name here covers its children too.
# Areas without an entry in the config follow `log_level`.
AREAS: dict[str, tuple[str, ...]] = {
    "rpc": ("browserd.daemon.rpc",),
    "registry": ("browserd.daemon.core", "browserd.daemon.store.state_writer",
                 "browserd.daemon.store.durability", "browserd.daemon.store.roots",
                 "browserd.daemon.store.lost_downloads", "browserd.daemon.services.retention"),
    "supervisor": ("browserd.daemon.browser",),
    "cdp_proxy": ("browserd.daemon.cdp.proxy", "browserd.daemon.cdp.http_front",
                  "browserd.daemon.cdp.peers"),
    "cdp_client": ("browserd.daemon.cdp.client", "browserd.daemon.cdp.browser_link"),
    "eventlog": ("browserd.daemon.store.eventlog",),
    "systemd": ("browserd.daemon.system.notify", "browserd.daemon.system.listen_fds",
                "browserd.daemon.health"),
    "control": ("browserd.daemon.control",),
    "services": ("browserd.daemon.services",),
    "web": ("browserd.daemon.web",),
}


# sd-daemon(3) / syslog priorities.
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def journal_stream(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `stream` is the journal stream systemd connected (``$JOURNAL_STREAM=dev:ino``)."""
    env = os.environ if environ is None else environ
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (ValueError, OSError):
        return False


class LineFormatter(logging.Formatter):
    """One line per record: journal style (priority prefix) or terminal style (timestamp)."""

    def __init__(self, *, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text = f"{text} | {self.formatException(record.exc_info)}"
        text = text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
        if self.journal:
            priority = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
            return f"<{priority}>{record.name}: {text}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z {record.levelname} {record.name}: {text}"


def setup(level: str, areas: Mapping[str, str | None] | None = None, *,
          stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Route every log record to `stream` (stderr) at `level`, areas at their own levels."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter(journal=journal_stream(stream, environ)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for area, loggers in AREAS.items():
        area_level = (areas or {}).get(area)
        for name in loggers:
            logging.getLogger(name).setLevel(area_level.upper() if area_level else logging.NOTSET)


class Throttled:
    """At most one line per `interval_s` through `logger`; the lines held back meanwhile are
    counted, and the next line that goes out says how many there were.

    For messages that a client can cause at will (refused requests, connections turned away):
    a flood must not become a flood of log lines, nor cost the daemon a write each.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 1.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._next_at = 0.0
        self._held = 0

    def log(self, level: int, message: str, *args: object) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = time.monotonic()
        if now < self._next_at:
            self._held += 1
            return
        self._next_at = now + self.interval_s
        if self._held:
            message += " (and %d more like it since the last such line)"
            args = (*args, self._held)
            self._held = 0
        self.logger.log(level, message, *args)
