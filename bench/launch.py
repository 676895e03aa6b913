"""Cold launch: `runtimes.launch` until the endpoint is ready, against the physical floor.

Three ways to get a headless browser with a fresh profile, interleaved round-robin so drift
(page cache, CPU frequency) hits all of them alike; ratios pair each round's launches:

- raw: exec Chromium with exactly the daemon's flags (`supervisor.browser_args`) and wait for
  DevToolsActivePort to appear in its user-data-dir: the floor, nothing can be faster.
- browserd: `runtimes.launch` over the RPC socket, which returns once the runtime is active
  (then `runtimes.stop`, untimed; the next launch starts a new run with a fresh profile).
- playwright: `chromium.launch(executable_path=...)`, what users run instead of a daemon.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Playwright, sync_playwright

from browserd.client import Client
from browserd.daemon.browser.process import (
    LaunchSpec,
    browser_args,
    read_devtools_active_port,
    scrubbed_env,
)

from .harness import CHROMIUM, HEADLESS_SHELL, DaemonUnderTest, kill_group, median, scratch_dir
from .report import Row, Target

SCENARIO = "launch"
TARGET = Target("<=", 1.15)
POLL_S = 0.001  # DevToolsActivePort polling step: at most 1 ms added to the floor
TIMEOUT_S = 30.0


def raw_launch(executable: str, base: Path, index: int) -> float:
    """Seconds from exec to a valid DevToolsActivePort, with the daemon's own flags."""
    user_data_dir = base / f"raw-{index}"
    user_data_dir.mkdir(mode=0o700)
    argv = browser_args(LaunchSpec(executable, user_data_dir), user_data_dir)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=scrubbed_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while read_devtools_active_port(user_data_dir) is None:
            if proc.poll() is not None:
                raise RuntimeError(f"{executable} exited with {proc.returncode} during startup")
            if time.perf_counter() - start > TIMEOUT_S:
                raise RuntimeError(f"{executable} wrote no DevToolsActivePort in {TIMEOUT_S} s")
            time.sleep(POLL_S)
        return time.perf_counter() - start
    finally:
        kill_group(proc, user_data_dir)


def daemon_launch(client: Client, index: int) -> float:
    start = time.perf_counter()
    runtime = client.runtimes.browser.launch(name="launch-bench")
    elapsed = time.perf_counter() - start
    assert runtime.status == "active", runtime.status
    runtime.stop()
    return elapsed


def playwright_launch(pw: Playwright, executable: str) -> float:
    start = time.perf_counter()
    browser = pw.chromium.launch(executable_path=executable, headless=True)
    elapsed = time.perf_counter() - start
    browser.close()
    return elapsed


def paired_ratio(subject: list[float], floor: list[float]) -> float:
    """The median over rounds of subject / floor. A browser's start varies by +-30 % from one
    launch to the next on a shared 2-core VM, and the load drifts during a run; a round's
    launches run back to back, so pairing them cancels the drift."""
    return median([s / f for s, f in zip(subject, floor, strict=True)])


def run(*, quick: bool) -> list[Row]:
    repetitions = 2 if quick else 31
    rows: list[Row] = []
    with sync_playwright() as pw:
        for label, executable in (("chromium", CHROMIUM),
                                  ("chromium-headless-shell", HEADLESS_SHELL)):
            settings = {"browser.executable": executable}
            with DaemonUnderTest(settings, label=f"launch-{label}") as daemon, \
                    Client(daemon.socket) as client, scratch_dir("bdb-raw-") as base:
                ways: dict[str, Callable[[int], float]] = {
                    "raw": lambda i, e=executable: raw_launch(e, base, i),  # type: ignore[misc]
                    "browserd": lambda i: daemon_launch(client, i),
                    "playwright": lambda i, e=executable: playwright_launch(pw, e),  # type: ignore[misc]
                }
                names = list(ways)
                times: dict[str, list[float]] = {name: [] for name in names}
                for name in names:  # warm-up: page cache, first-run files; not counted
                    ways[name](-1)
                for i in range(repetitions):
                    rotation = names[i % 3:] + names[:i % 3]
                    for name in rotation:
                        times[name].append(ways[name](i) * 1000)
            raw = median(times["raw"])
            rows += [
                Row(SCENARIO, f"raw exec -> DevToolsActivePort, {label}", raw, "ms",
                    note="the floor: the daemon's flags (supervisor.browser_args), fresh "
                    "profile, 1 ms polling" if label == "chromium" else ""),
                Row(SCENARIO, f"runtimes.launch -> active, {label}", median(times["browserd"]),
                    "ms", baseline=raw, target=TARGET,
                    paired_ratio=paired_ratio(times["browserd"], times["raw"]),
                    note="ratios: the median of each round's ratio to that round's raw launch"
                    if label == "chromium" else ""),
                Row(SCENARIO, f"Playwright chromium.launch, {label}",
                    median(times["playwright"]), "ms", baseline=raw,
                    paired_ratio=paired_ratio(times["playwright"], times["raw"]),
                    note="Playwright's own flags and pipe transport; for comparison"
                    if label == "chromium" else ""),
            ]
    return rows
