"""The daemon subprocesses the fault tests start, and the report printed at the end of a run
that included reliability tests (see harness.py)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
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


@pytest.fixture
def small_state_fs(short_dir: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs as the state dir (room for a headless profile, then filled up; at
    16 MiB the browser itself once filled it before the test did)."""
    state = short_dir / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(state)],
                   check=True)
    try:
        yield state
    finally:
        for proc in psutil.process_iter():
            try:
                if any(str(state) in part for part in proc.cmdline()):
                    proc.kill()
            except psutil.Error:
                continue
        subprocess.run(["umount", "-l", str(state)], check=False)


def fill(filler: Path) -> Path:
    """Write ``filler`` until its filesystem is full. Make it (``touch()``) before the test's
    browser starts: a browser that filled the disk first leaves no room to make it then."""
    with open(filler, "ab") as sink:
        try:
            while True:
                sink.write(b"\0" * 65536)
                sink.flush()
        except OSError:
            pass
    return filler


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT.empty():
        return
    terminalreporter.section("browserd reliability report")
    for line in REPORT.lines():
        terminalreporter.write_line(line)
    if path := os.environ.get("BROWSERD_REPORT"):
        Path(path).write_text(json.dumps(REPORT.to_json(), indent=2) + "\n")
