"""The daemon subprocesses the fault tests start, and the report printed at the end of a run
that included reliability tests (see harness.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import REPORT, Daemon, assert_no_orphans


@pytest.fixture
def make_daemon(short_dir: Path) -> Iterator[Any]:
    """A factory of daemon subprocesses in `short_dir`; every one is stopped (or killed)."""
    started: list[Daemon] = []

    def make(**kwargs: Any) -> Daemon:
        daemon = Daemon(short_dir, **kwargs)
        daemon.start()
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.alive():
            daemon.kill()
    assert_no_orphans(short_dir / "state")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT.empty():
        return
    terminalreporter.section("browserd reliability report")
    for line in REPORT.lines():
        terminalreporter.write_line(line)
    if path := os.environ.get("BROWSERD_REPORT"):
        Path(path).write_text(json.dumps(REPORT.to_json(), indent=2) + "\n")
