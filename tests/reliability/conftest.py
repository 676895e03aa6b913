"""The report printed at the end of a run that included reliability tests (see harness.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .harness import REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT.empty():
        return
    terminalreporter.section("browserd reliability report")
    for line in REPORT.lines():
        terminalreporter.write_line(line)
    if path := os.environ.get("BROWSERD_REPORT"):
        Path(path).write_text(json.dumps(REPORT.to_json(), indent=2) + "\n")
