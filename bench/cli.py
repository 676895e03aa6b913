"""`python -m bench`: run the scenarios, print the table, write BENCHMARKS.md.

    python -m bench                   every scenario, full repetitions -> BENCHMARKS.md
    python -m bench --quick           the same rows with few repetitions (CI smoke, < 2 min)
    python -m bench --only rpc,proxy  some scenarios
    python -m bench --pool            the warm-pool scenario alone
    python -m bench --profile DIR     also sample every daemon with py-spy into DIR

Targets that are missed do not fail the run (benchmarks are not tests); a scenario that
crashes does: its row says ERROR and the exit code is 1.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from . import client, events, first_page, launch, machine, pool, proxy, rpc, scale, ssh, view
from .harness import DaemonUnderTest
from .profile import summary
from .report import Row, document, notes, table, write

REPO = Path(__file__).resolve().parent.parent
SCENARIOS: dict[str, ModuleType] = {
    "launch": launch,
    "proxy": proxy,
    "rpc": rpc,
    "client": client,
    "eventlog": events,
    "scale": scale,  # also the idle row
    "pool": pool,
    "first_page": first_page,
    "ssh": ssh,  # a daemon through OpenSSH against its local socket and CDP port
    "view": view,
}
QUICK_OUTPUT = Path("/tmp/browserd-bench-quick.md")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="few repetitions: a smoke run for CI (well under 2 minutes)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated scenarios (of {', '.join(SCENARIOS)})")
    parser.add_argument("--pool", action="store_true", help="run the warm-pool scenario alone")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"where to write the report (default: BENCHMARKS.md; with --quick "
                        f"{QUICK_OUTPUT}, so smoke numbers never replace real ones)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="sample each daemon under test with py-spy into DIR")
    return parser


def selected(args: argparse.Namespace) -> list[str]:
    if args.pool:
        return ["pool"]
    if not args.only:
        return list(SCENARIOS)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(SCENARIOS)}")
    return names


def run_scenario(name: str, runner: Callable[..., list[Row]],
                 quick: bool) -> tuple[list[Row], bool]:
    started = time.perf_counter()
    print(f"== {name} ...", file=sys.stderr, flush=True)
    try:
        rows = runner(quick=quick)
        ok = True
    except Exception as exc:
        traceback.print_exc()
        first_line = (str(exc).strip().splitlines() or [""])[0].replace("|", "/")
        rows = [Row(name, f"scenario failed: {type(exc).__name__}: {first_line}"[:160], None,
                    "", error=True, note="see the traceback on stderr")]
        ok = False
    print(f"== {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return rows, ok


def method_text(names: list[str]) -> str:
    parts = ["## Method", ""]
    for name in names:
        doc = inspect.getdoc(SCENARIOS[name]) or ""
        parts += [f"### {name}", "", doc, ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = selected(args)
    output = args.output or (QUICK_OUTPUT if args.quick else REPO / "BENCHMARKS.md")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        DaemonUnderTest.profile_dir = args.profile.resolve()
    host = machine.machine()
    host["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.perf_counter()
    rows: list[Row] = []
    failed = []
    for name in names:
        got, ok = run_scenario(name, SCENARIOS[name].run, args.quick)
        rows += got
        if not ok:
            failed.append(name)
    elapsed = time.perf_counter() - started
    host["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    findings_path = REPO / "bench" / "FINDINGS.md"
    findings = findings_path.read_text() if findings_path.exists() else ""
    text = document(rows, machine=host, versions=machine.versions(), quick=args.quick,
                    elapsed_s=elapsed, method=method_text(names), findings=findings)
    write(output, text)
    print("\n".join(table(rows)))
    row_notes = notes(rows)
    if row_notes:
        print("\n" + "\n".join(row_notes))
    print(f"\nwritten to {output} ({elapsed:.0f} s)")
    if args.profile is not None:
        for collapsed in sorted(args.profile.glob("*.txt")):
            print("\n" + summary(collapsed, 15))
    if failed:
        print(f"scenario(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
