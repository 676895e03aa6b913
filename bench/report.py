"""Result rows, their targets, the printed table and BENCHMARKS.md.

A row is one measured number, optionally beside a baseline (the floor it is compared to) and a
target (a bound on the ratio or on the value). The verdict is PASS or MISS when there is a
target, "info" when there is none, SKIP when the scenario could not run here, ERROR when it
crashed.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from pathlib import Path

import attrs

COLUMNS = ("scenario", "metric", "browserd", "baseline", "ratio", "target", "result")
VERDICTS = ("PASS", "MISS", "info", "SKIP", "ERROR")


@attrs.frozen
class Target:
    """A bound: on the ratio value/baseline (`of="ratio"`) or on the value itself."""

    op: str  # "<=", "<", ">=", ">"
    bound: float
    of: str = "ratio"  # "ratio" or "value"

    def met(self, number: float) -> bool:
        return {
            "<=": number <= self.bound,
            "<": number < self.bound,
            ">=": number >= self.bound,
            ">": number > self.bound,
        }[self.op]

    def text(self, unit: str) -> str:
        if self.of == "ratio":
            return f"{self.op} {self.bound:g}x"
        return f"{self.op} {format_number(self.bound, unit)}"


@attrs.frozen
class Row:
    scenario: str
    metric: str
    value: float | None
    unit: str
    baseline: float | None = None
    target: Target | None = None
    note: str = ""
    skipped: bool = False
    error: bool = False  # the scenario crashed: the metric says how
    # Set when the scenario pairs its samples round by round (launch): the median of the
    # per-round ratios, which a load that drifts during the run does not bias.
    paired_ratio: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> str:
        if self.error:
            return "ERROR"
        if self.skipped or self.value is None:
            return "SKIP"
        if self.target is None:
            return "info"
        number = self.ratio if self.target.of == "ratio" else self.value
        if number is None:
            return "SKIP"
        return "PASS" if self.target.met(number) else "MISS"

    def cells(self) -> tuple[str, ...]:
        ratio = self.ratio
        return (
            self.scenario,
            self.metric,
            ("error" if self.error else "skipped") if self.value is None
            else format_number(self.value, self.unit),
            "-" if self.baseline is None else format_number(self.baseline, self.unit),
            "-" if ratio is None else f"{ratio:.2f}x",
            "-" if self.target is None else self.target.text(self.unit),
            self.verdict,
        )


def skipped(scenario: str, metric: str, unit: str, note: str,
            target: Target | None = None) -> Row:
    return Row(scenario, metric, None, unit, target=target, note=note, skipped=True)


def format_number(value: float, unit: str) -> str:
    """A number with its unit, without thousands separators (the test parses them back)."""
    if unit in ("ms", "s", "MB", "MB/s", "%"):
        digits = 2 if abs(value) < 10 else 1
        text = f"{value:.{digits}f}"
    elif unit == "us":
        text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    else:
        text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}"


# ------------------------------------------------------------------ rendering


def table(rows: Sequence[Row]) -> list[str]:
    """The rows as a Markdown table (also what the terminal shows)."""
    cells = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return [line(COLUMNS), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(line(c) for c in cells[1:])]


def notes(rows: Sequence[Row]) -> list[str]:
    return [f"- {row.scenario} / {row.metric}: {row.note}" for row in rows if row.note]


def summary(rows: Sequence[Row]) -> str:
    counts = {v: sum(1 for r in rows if r.verdict == v) for v in VERDICTS}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def document(rows: Sequence[Row], *, machine: dict[str, str], versions: dict[str, str],
             quick: bool, elapsed_s: float, method: str, findings: str) -> str:
    """BENCHMARKS.md: machine, versions, the table, notes, method and findings."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "`python -m bench --quick` (smoke run: few repetitions)" if quick else "`make bench`"
    out = [
        "# browserd benchmarks",
        "",
        f"Written by {mode} on {now} in {elapsed_s:.0f} s. Every number is a median over "
        "repeated runs unless the metric says p99 or max; ratios are browserd / baseline "
        "(for launches, the median of each round's ratio).",
        "Targets apply to this 2-core machine. Regenerate with `make bench`; the Findings "
        "section comes from `bench/FINDINGS.md`.",
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
        "## Versions",
        "",
        *(f"- {key}: {value}" for key, value in versions.items()),
        "",
        "## Results",
        "",
        f"Summary: {summary(rows)}.",
        "",
        *table(rows),
        "",
    ]
    row_notes = notes(rows)
    if row_notes:
        out += ["### Notes", "", *row_notes, ""]
    out += [method.strip(), "", findings.strip(), ""]
    return "\n".join(out)


_ROW = re.compile(r"^\|(.*)\|$")


def parse_table(text: str) -> list[dict[str, str]]:
    """The results table of a BENCHMARKS.md back as dicts (for tests and tools)."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        match = _ROW.match(line.strip())
        if not match:
            if header is not None and rows:
                break
            continue
        cells = [c.strip() for c in match.group(1).split("|")]
        if header is None:
            if tuple(cells) == COLUMNS:
                header = cells
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
