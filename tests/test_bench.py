"""`python -m bench --quick` runs end to end and writes a well-formed report.

Benchmarks are not timed tests: nothing here checks a number against a target. It checks that
every scenario runs on this machine (real daemon, real Chromium, real Playwright), that every
row is in the table with numbers that parse, and that nothing is left running or on disk.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.report import COLUMNS, VERDICTS, parse_table

from .conftest import REPO, processes_using

SCENARIOS = ("launch", "proxy", "rpc", "client", "eventlog", "scale", "idle", "pool",
             "first_page", "ssh", "view")
NUMBER = re.compile(r"^-?\d+(\.\d+)? \S+$")
RATIO = re.compile(r"^\d+\.\d\dx$")
QUICK_BUDGET_S = 240  # the quick mode takes about a minute; a hang must not stall CI


@pytest.fixture
def bench_tmp() -> Iterator[Path]:
    """The bench's own temp root (short: sockets live there), so leftovers are ours alone."""
    path = Path(tempfile.mkdtemp(prefix="bdt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_quick_bench_writes_a_complete_table(tmp_path: Path, bench_tmp: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=QUICK_BUDGET_S,
        env={**os.environ, "BROWSERD_BENCH_TMPDIR": str(bench_tmp)},
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-5000:]}"
    text = output.read_text()

    for section in ("## Machine", "## Versions", "## Results", "## Method"):
        assert section in text, section
    for key in ("cpu", "cores", "memory", "kernel", "python", "chromium", "playwright", "trio",
                "msgpack"):
        assert re.search(rf"^- {key}: \S", text, re.MULTILINE), f"{key} missing"

    rows = parse_table(text)
    assert rows, "no results table"
    assert all(tuple(row) == COLUMNS for row in rows)
    assert {row["scenario"] for row in rows} == set(SCENARIOS)
    for row in rows:
        where = f"{row['scenario']} / {row['metric']}"
        assert row["result"] in VERDICTS and row["result"] != "ERROR", where
        if row["result"] == "SKIP":
            assert row["browserd"] == "skipped", where
            continue
        assert NUMBER.match(row["browserd"]), where
        float(row["browserd"].split()[0])
        assert row["baseline"] == "-" or NUMBER.match(row["baseline"]), where
        assert row["ratio"] == "-" or RATIO.match(row["ratio"]), where
        if row["target"] != "-":
            assert row["result"] in ("PASS", "MISS"), where
    # Rows that the issue names, by metric: a renamed or lost scenario fails here.
    metrics = " | ".join(row["metric"] for row in rows)
    for expected in ("runtimes.launch -> active, chromium", "raw exec -> DevToolsActivePort",
                     "Playwright chromium.launch", "evaluate('1') round trip",
                     "full-page screenshot", "sequential latency p99", "concurrent clients",
                     "spaces.list via Client", "spaces.list via AsyncClient on asyncio",
                     "EventLog.append, fsync=never", "EventLog.append, fsync=batch",
                     "daemon RSS", "leftover processes", "daemon CPU, 1 idle runtime",
                     "RPC round trip over ssh", "CDP evaluate('1') round trip through the ssh",
                     "frame latency, page change to frame shown (p50)",
                     "frame latency, page change to frame shown (p99)",
                     "daemon CPU, 1 idle view open", "daemon CPU, 4 views on 4 busy runtimes"):
        assert expected in metrics, expected
    leftovers = [row for row in rows if "leftover processes" in row["metric"]]
    assert all(row["browserd"] == "0 procs" for row in leftovers), leftovers

    # The table printed on stdout is the same table.
    assert "| scenario" in result.stdout and str(output) in result.stdout
    # Every daemon and scratch dir the bench made is gone, and nothing names them.
    assert list(bench_tmp.iterdir()) == []
    assert processes_using(bench_tmp) == []
