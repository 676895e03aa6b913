"""Time to first page: what a user compares browserd with is Playwright launching Chromium itself.

Three ways from nothing to a page showing content, with the same executable, in alternated
rounds (the ratio is of the medians; the paired ratio, the median of each round's ratio):

- playwright: `chromium.launch(executable_path=...)`, `browser.new_page()`, `set_content`.
- browserd cold: `runtimes.launch` (fresh ephemeral profile) on a daemon with no pool, a lease
  (`connections.create`), `connect_over_cdp(endpoint.url)`, `contexts[0].new_page()`,
  `set_content`: the README's way.
- browserd pooled: the same on a daemon with `pool.size = 2`, its pool full before each round.

Closing is not timed (the browsers are stopped after each round).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from playwright.sync_api import Playwright, sync_playwright

from browserd.client import Client

from .harness import CHROMIUM, DaemonUnderTest, median
from .pool import wait_warm
from .report import Row, Target

SCENARIO = "first_page"
COLD_TARGET = Target("<=", 1.0)
POOLED_TARGET = Target("<=", 0.3)
POOL_SIZE = 2
CONTENT = "<title>first</title><p>first page</p>"


def playwright_first_page(pw: Playwright) -> float:
    start = time.perf_counter()
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
    page = browser.new_page()
    page.set_content(CONTENT)
    elapsed = time.perf_counter() - start
    assert page.title() == "first"
    browser.close()
    return elapsed


def browserd_first_page(pw: Playwright, client: Client, name: str) -> float:
    start = time.perf_counter()
    runtime = client.runtimes.browser.launch(name=name)
    conn = runtime.connections.create(ttl_s=60)
    assert conn.endpoint is not None
    browser = pw.chromium.connect_over_cdp(conn.endpoint.url)
    page = browser.contexts[0].new_page()
    page.set_content(CONTENT)
    elapsed = time.perf_counter() - start
    assert page.title() == "first"
    browser.close()
    runtime.stop()
    runtime.delete()
    return elapsed


def run(*, quick: bool) -> list[Row]:
    rounds = 2 if quick else 21
    settings = {"browser.executable": CHROMIUM}
    with sync_playwright() as pw, \
            DaemonUnderTest(settings, label="first-page-cold") as cold_daemon, \
            DaemonUnderTest({**settings, "pool.size": POOL_SIZE},
                            label="first-page-pooled") as pool_daemon, \
            Client(cold_daemon.socket) as cold, Client(pool_daemon.socket) as pooled:

        def from_pool(i: int) -> float:
            wait_warm(pooled, settle_s=1.0)  # untimed: the pool refills between launches
            return browserd_first_page(pw, pooled, f"pooled-{i}")

        ways: dict[str, Callable[[int], float]] = {
            "playwright": lambda i: playwright_first_page(pw),
            "cold": lambda i: browserd_first_page(pw, cold, f"cold-{i}"),
            "pooled": from_pool,
        }
        names = list(ways)
        times: dict[str, list[float]] = {name: [] for name in names}
        for name in names:  # warm-up: page cache, first-run files; not counted
            ways[name](-1)
        for i in range(rounds):
            for name in names[i % 3:] + names[:i % 3]:
                times[name].append(ways[name](i) * 1000)

    floor = median(times["playwright"])

    def paired(name: str) -> float:
        return median([a / b for a, b in zip(times[name], times["playwright"], strict=True)])

    note = ("baseline: Playwright chromium.launch + new_page + set_content with the same "
            "executable, alternated rounds; the ratio is of the medians")
    return [
        Row(SCENARIO, "Playwright launch -> first page, chromium", floor, "ms",
            note="what users run instead of a daemon"),
        Row(SCENARIO, "browserd launch + lease + connect_over_cdp -> first page, cold",
            median(times["cold"]), "ms", baseline=floor, target=COLD_TARGET,
            note=f"{note} (paired by round: {paired('cold'):.2f}x)"),
        Row(SCENARIO, f"the same from a warm pool (size {POOL_SIZE})", median(times["pooled"]),
            "ms", baseline=floor, target=POOLED_TARGET,
            note=f"paired by round: {paired('pooled'):.2f}x"),
    ]
