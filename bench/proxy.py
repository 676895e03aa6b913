"""The CDP proxy's cost: Playwright through the daemon's endpoint against a direct connection.

One runtime, one Chromium. Its direct DevTools URL comes from DevToolsActivePort in the run's
user-data-dir (what the daemon itself connects to); the proxied URL is a connection lease.
Playwright attaches over CDP to one, then the other, alternating rounds, and measures:

- `page.evaluate("1")` round trips (each timed; the median per call),
- full-page screenshots of a big page (4000x4000 viewport, 2000x2000 with --quick; every cell
  a different colour so the PNG is megabytes), as megabytes of PNG per second.

Playwright's WebSocket client offers permessage-deflate and Chromium accepts it on a direct
connection; the proxy does not pass `Sec-WebSocket-Extensions` upstream (it reads the frames),
so through it both legs are plain. The screenshot row therefore compares a compressed direct
connection with a plain proxied one, which is what users get but not the cost of the hop. The
hop alone is the last row: one big CDP response (about 13 MB of text) read by the daemon's own
client (trio-websocket, which never compresses) directly and through the lease, alternated.

With command recording (config `events.record_commands = "commands"`, the default) the proxy
parses client frames and logs every command; "off" is measured with the key set to "off".
When the daemon has no such key, only "off" is measured.
"""

from __future__ import annotations

import random
import time
from typing import Any

import trio
from playwright.sync_api import Page, Playwright, sync_playwright

from browserd.client import Client
from browserd.daemon.browser.process import read_devtools_active_port
from browserd.daemon.cdp.client import open_cdp

from .harness import CHROMIUM, DaemonUnderTest, config_key_known, median
from .report import Row, Target, skipped

SCENARIO = "proxy"
ROUND_TRIP_TARGET = Target("<=", 1.10)
SCREENSHOT_TARGET = Target(">=", 0.90)
RECORD_KEY = "events.record_commands"


def big_page(size: int, cell: int = 50, seed: int = 7) -> str:
    """A size x size page of coloured, labelled cells: a screenshot of it is megabytes."""
    rng = random.Random(seed)
    per_row = size // cell
    cells = "".join(
        f'<div style="background:hsl({rng.randrange(360)},{rng.randrange(40, 90)}%,'
        f'{rng.randrange(30, 80)}%)">{i}</div>'
        for i in range(per_row * per_row)
    )
    return (
        "<!doctype html><style>html,body{margin:0}"
        f"#g{{display:grid;grid-template-columns:repeat({per_row},{cell}px);"
        f"grid-auto-rows:{cell}px;width:{size}px;height:{size}px;font:11px monospace}}</style>"
        f'<div id="g">{cells}</div>'
    )


def measure(pw: Playwright, url: str, *, evaluates: int, shots: int, html: str,
            size: int) -> tuple[list[float], list[float]]:
    """(seconds per evaluate, PNG bytes per second per screenshot) over one attach."""
    browser = pw.chromium.connect_over_cdp(url, timeout=30_000)
    try:
        page: Page = browser.contexts[0].new_page()
        for _ in range(20):  # warm-up: JIT on both ends, socket buffers
            page.evaluate("1")
        round_trips = []
        for _ in range(evaluates):
            start = time.perf_counter()
            page.evaluate("1")
            round_trips.append(time.perf_counter() - start)
        page.set_viewport_size({"width": size, "height": size})
        page.set_content(html)
        page.screenshot(full_page=True)  # warm-up: raster tiles, encoder
        rates = []
        for _ in range(shots):
            start = time.perf_counter()
            png = page.screenshot(full_page=True)
            rates.append(len(png) / (time.perf_counter() - start))
        page.close()
        return round_trips, rates
    finally:
        browser.close()  # over CDP this only drops the connection


# About 13 MB of text, built once in the page, returned by value on each call.
BIG_TEXT = ("window.big = window.big || Array.from({length: 2000000}, "
            "(_, i) => (i * 2654435761 % 4294967296).toString(36)).join(''); window.big.length")


async def plain_transfer(url: str, calls: int) -> list[float]:
    """Bytes per second of a big CDP response over plain frames (no compression)."""
    async with open_cdp(url) as cdp:
        targets = (await cdp.call("Target.getTargets"))["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        session = (await cdp.call("Target.attachToTarget", {"targetId": page["targetId"],
                                                            "flatten": True}))["sessionId"]
        size = (await cdp.call("Runtime.evaluate", {"expression": BIG_TEXT,
                                                    "returnByValue": True},
                               session_id=session))["result"]["value"]
        rates = []
        for _ in range(calls):
            start = time.perf_counter()
            await cdp.call("Runtime.evaluate", {"expression": "window.big",
                                                "returnByValue": True}, session_id=session)
            rates.append(size / (time.perf_counter() - start))
        await cdp.call("Target.detachFromTarget", {"sessionId": session})
        return rates


def one_daemon(pw: Playwright, *, record: str | None, quick: bool) -> dict[str, Any]:
    settings: dict[str, Any] = {"browser.executable": CHROMIUM}
    if record is not None:
        settings[RECORD_KEY] = record
    rounds, evaluates, shots = (2, 100, 1) if quick else (3, 300, 2)
    size = 2000 if quick else 4000
    html = big_page(size)
    results: dict[str, dict[str, list[float]]] = {
        way: {"rtt": [], "rate": [], "plain": []} for way in ("direct", "proxy")
    }
    with DaemonUnderTest(settings, label="proxy") as daemon, Client(daemon.socket) as client:
        runtime = client.runtimes.browser.launch(name="proxy-bench")
        assert runtime.active_run_id is not None
        user_data_dir = daemon.state_dir / "ephemeral" / runtime.active_run_id
        # The daemon answers on Chromium's stderr line; the file may land a moment later.
        deadline = time.monotonic() + 10
        while (endpoint := read_devtools_active_port(user_data_dir)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no DevToolsActivePort in {user_data_dir} after 10 s")
            time.sleep(0.01)
        lease = runtime.connections.create(ttl_s=3600)
        assert lease.endpoint is not None
        urls = {"direct": endpoint.ws_url, "proxy": lease.endpoint.url}
        for i in range(rounds):
            order = ("direct", "proxy") if i % 2 == 0 else ("proxy", "direct")
            for way in order:
                rtt, rate = measure(pw, urls[way], evaluates=evaluates, shots=shots,
                                    html=html, size=size)
                results[way]["rtt"] += rtt
                results[way]["rate"] += rate
                results[way]["plain"] += trio.run(plain_transfer, urls[way], 3)
        runtime.stop()
    got: dict[str, Any] = {way: {"rtt_us": median(r["rtt"]) * 1e6,
                                 "mb_s": median(r["rate"]) / 1e6,
                                 "plain_mb_s": median(r["plain"]) / 1e6}
                           for way, r in results.items()}
    got["size"] = size
    return got


def run(*, quick: bool) -> list[Row]:
    rows: list[Row] = []
    recording_known = config_key_known(RECORD_KEY, "commands")
    modes: list[str | None] = ["off", "commands"] if recording_known else [None]
    with sync_playwright() as pw:
        for record in modes:
            label = "recording on" if record == "commands" else "recording off"
            got = one_daemon(pw, record=record, quick=quick)
            shot = f"{got['size']}x{got['size']} full-page screenshot"
            rows += [
                Row(SCENARIO, f"evaluate('1') round trip, {label}", got["proxy"]["rtt_us"],
                    "us", baseline=got["direct"]["rtt_us"], target=ROUND_TRIP_TARGET),
                Row(SCENARIO, f"{shot}, {label}",
                    got["proxy"]["mb_s"], "MB/s", baseline=got["direct"]["mb_s"],
                    target=SCREENSHOT_TARGET,
                    note="direct: Playwright and Chromium negotiate permessage-deflate; "
                    "through the proxy frames are plain (bench/FINDINGS.md)"
                    if record != "commands" else ""),
                Row(SCENARIO, f"13 MB CDP response, plain frames both ways, {label}",
                    got["proxy"]["plain_mb_s"], "MB/s",
                    baseline=got["direct"]["plain_mb_s"], target=SCREENSHOT_TARGET,
                    note="the hop alone: the daemon's CDP client (no compression) directly "
                    "and through the lease, alternated" if record != "commands" else ""),
            ]
    if not recording_known:
        note = f"config key {RECORD_KEY} is unknown to this daemon: measured 'off' only"
        rows += [
            skipped(SCENARIO, "evaluate('1') round trip, recording on", "us", note,
                    ROUND_TRIP_TARGET),
            skipped(SCENARIO, "full-page screenshot, recording on", "MB/s", note,
                    SCREENSHOT_TARGET),
        ]
    return rows
