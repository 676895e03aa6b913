"""Live views (issue #17): how fast a change reaches a viewer, and what watching costs.

One daemon on chromium-headless-shell; the viewers are pages of another chromium-headless-shell
that Playwright launches, at 1000x700, each on a view lease's URL.
- frame latency: the runtime's page changes its background colour (an `evaluate` invocation,
  which returns the page's `Date.now()` right after the change) and the viewer page records
  when it has decoded the next frame (`data-frame-shown-at`, the viewer page's `Date.now()`,
  the same machine clock): shown minus changed, p50 and p99, one change at a time;
- daemon CPU with one view open on an idle page, over a quiet window (baseline: the same
  runtime with no view);
- daemon CPU with 4 views open on 4 runtimes whose pages animate without pause (a canvas
  redrawn every animation frame), and the frames each view shows per second.
psutil on the daemon process only (not its browsers, not the viewers).
"""

from __future__ import annotations

import time
from urllib.parse import quote

from playwright.sync_api import Page, sync_playwright

from browserd.client import Client, Runtime

from .harness import HEADLESS_SHELL, DaemonUnderTest, median, percentile
from .report import Row

SCENARIO = "view"
QUIET_S = 10.0
WAIT_S = 10.0
BUSY_URL = "data:text/html," + quote("""<body style="margin:0"><canvas id=c></canvas><script>
const c = document.getElementById('c'); c.width = innerWidth; c.height = innerHeight;
const g = c.getContext('2d'); let n = 0;
function draw() { n++; g.fillStyle = `hsl(${n % 360},60%,50%)`; g.fillRect(0, 0, c.width, c.height);
  g.fillStyle = '#fff'; g.font = '48px sans-serif'; g.fillText(String(n), 40, 80);
  requestAnimationFrame(draw); }
draw();
</script></body>""")
SCREEN = '[data-browserd-view="screen"]'


def frame_seq(page: Page) -> int:
    return int(page.get_attribute(SCREEN, "data-frame-seq") or 0)


def wait_frame_after(page: Page, seq: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while frame_seq(page) <= seq:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no frame after #{seq} within {WAIT_S:g} s")
        time.sleep(0.005)


def open_view(page: Page, runtime: Runtime) -> None:
    lease = runtime.connections.create(protocol="view", ttl_s=3600)
    assert lease.endpoint is not None
    page.goto(lease.endpoint.url)
    wait_frame_after(page, 0)


def latencies(page: Page, runtime: Runtime, samples: int) -> list[float]:
    out = []
    for i in range(samples):
        before = frame_seq(page)
        changed_at = runtime.invocations.create("evaluate", {
            "expression": f"document.body.style.background = 'hsl({i * 37 % 360},70%,50%)', "
                          "Date.now()"}).output
        wait_frame_after(page, before)
        time.sleep(0.05)  # a later frame of the same change would move the mark: let it pass
        shown_at = float(page.get_attribute(SCREEN, "data-frame-shown-at") or 0)
        # The first frame after the change, not a later one: its seq is before + 1.
        if frame_seq(page) == before + 1:
            out.append(shown_at - float(changed_at))
    if not out:
        raise RuntimeError("no change was shown as a single frame")
    return out


def cpu_percent(daemon: DaemonUnderTest, seconds: float) -> float:
    before, start = daemon.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (daemon.cpu_seconds() - before) / (time.perf_counter() - start) * 100


def run(*, quick: bool) -> list[Row]:
    samples = 10 if quick else 100
    quiet_s = 2.0 if quick else QUIET_S
    settings = {"browser.executable": HEADLESS_SHELL}
    with DaemonUnderTest(settings, label="view") as daemon, Client(daemon.socket) as client, \
            sync_playwright() as pw:
        viewers = pw.chromium.launch(executable_path=HEADLESS_SHELL)
        try:
            idle = client.runtimes.browser.launch(name="view-idle")
            idle.invocations.create("navigate", {"url": "data:text/html,<body>idle</body>"})
            time.sleep(1.0)
            no_view = cpu_percent(daemon, quiet_s)
            page = viewers.new_page(viewport={"width": 1000, "height": 700})
            open_view(page, idle)
            time.sleep(0.5)
            one_view = cpu_percent(daemon, quiet_s)
            lat = latencies(page, idle, samples)
            page.close()
            idle.stop()

            busy = [client.runtimes.browser.launch(name=f"view-busy-{i}") for i in range(4)]
            pages = []
            for runtime in busy:
                runtime.invocations.create("navigate", {"url": BUSY_URL})
                pages.append(viewers.new_page(viewport={"width": 1000, "height": 700}))
                open_view(pages[-1], runtime)
            time.sleep(1.0)
            seqs = [frame_seq(p) for p in pages]
            start = time.perf_counter()
            four_views = cpu_percent(daemon, quiet_s)
            elapsed = time.perf_counter() - start
            fps = median([(frame_seq(p) - s) / elapsed for p, s in zip(pages, seqs, strict=True)])
            for runtime in busy:
                runtime.stop()
        finally:
            viewers.close()
    return [
        Row(SCENARIO, "frame latency, page change to frame shown (p50)", median(lat), "ms",
            note=f"{len(lat)} changes; one viewer at 1000x700"),
        Row(SCENARIO, "frame latency, page change to frame shown (p99)", percentile(lat, 99),
            "ms"),
        Row(SCENARIO, f"daemon CPU, 1 idle view open, {quiet_s:g} s", one_view, "%",
            baseline=no_view, note="baseline: the same idle runtime with no view"),
        Row(SCENARIO, f"daemon CPU, 4 views on 4 busy runtimes, {quiet_s:g} s", four_views,
            "%", note="each page redraws a canvas every animation frame"),
        Row(SCENARIO, "frames shown per view per second, 4 busy runtimes", fps, "fps"),
    ]
