"""Recordings and replays: a run launched with record=True keeps its screencast as an artifact
of kind `recording`, bounded by its byte budget; `browserctl replay` prints the URL of a page
that plays the frames beside the run's events, seekable, a click on an event jumping to its
moment. A real daemon on chromium-headless-shell; the replay page in another Chromium.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page

from browserd.client import Client

from .conftest import DaemonProcess, finish_daemon, start_shell_daemon
from .test_view import APP_URL, PIXEL, RED_URL, get, wait_for

# Noise on a full-window canvas, redrawn every animation frame: every frame is new and
# compresses badly, so the budget is reached in seconds.
NOISE_URL = "data:text/html," + quote("""<body style="margin:0"><canvas id=c></canvas><script>
const c = document.getElementById('c'); c.width = innerWidth; c.height = innerHeight;
const g = c.getContext('2d'); const img = g.createImageData(c.width, c.height);
function draw() { const d = new Uint32Array(img.data.buffer);
  for (let i = 0; i < d.length; i++) d[i] = (Math.random() * 0xffffffff) | 0xff000000;
  g.putImageData(img, 0, 0); requestAnimationFrame(draw); }
draw();
</script></body>""")


@pytest.fixture
def shell_daemon(short_dir: Path) -> Iterator[DaemonProcess]:
    running = start_shell_daemon(short_dir, "[record]\nbudget_mb = 1\nmax_fps = 10\n")
    yield running
    finish_daemon(running)



def shown_frame(page: Page) -> int:
    return int(page.get_attribute('[data-browserd-replay="screen"]', "data-frame") or -1)


def test_record_and_replay(shell_daemon: DaemonProcess, viewer: Browser) -> None:
    with Client(shell_daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch("rec", record=True)
        assert runtime.config.get("record") is True
        run_id = runtime.active_run_id
        time.sleep(1)
        runtime.invocations.create("navigate", {"url": RED_URL})
        time.sleep(1.2)  # the red page stays on screen a while
        runtime.invocations.create("navigate", {"url": APP_URL})
        runtime.invocations.create("evaluate", {"expression": "console.error('boom'), 1"})
        time.sleep(1)
        runtime.stop()

        run = bd.runs.get(run_id)
        recordings = run.artifacts.list(kind="recording")
        assert len(recordings) == 1, run.artifacts.list()
        recording = recordings[0]
        assert recording.raw["frames"] >= 2 and not recording.raw["truncated"]
        assert 0 < recording.size_bytes <= 1024 * 1024
        # The artifact is made before the run's final event.
        types = [e.type for e in run.events.list()]
        assert types.index("artifact.created") < len(types) - 1

        url = shell_daemon.ctl("replay", "rec").stdout.strip()
        assert f"/replay/{run_id}/" in url
        assert get(url[:-4] + "AAAA")[0] == 401
        page = viewer.new_page()
        page.goto(url)
        wait_for("the replay loaded", lambda: page.get_attribute("body", "data-state")
                 == "ready")
        wait_for("the first frame shown", lambda: page.evaluate(
            "document.querySelector('[data-browserd-replay=\"screen\"]').naturalWidth") > 0)
        events = page.locator('[data-browserd-replay="events"] li')
        listed = [events.nth(i).get_attribute("data-type") for i in range(events.count())]
        assert "invocation.succeeded" in listed and "connection.created" not in listed
        assert "runtime.lifecycle" in listed and "resource.sample" not in listed

        # A click on an event jumps to its moment: the second navigation's start shows the
        # red page (on screen since the first one), the run's end shows the app (white).
        created = page.locator('[data-browserd-replay="events"] '
                               'li[data-type="invocation.created"]')
        created.nth(1).click()
        wait_for("the red frame", lambda: page.evaluate(PIXEL.replace(
            "data-browserd-view", "data-browserd-replay")) == [255, 0, 0])
        red_frame = shown_frame(page)
        page.locator('[data-browserd-replay="events"] li').last.click()
        wait_for("the last frame (white)", lambda: page.evaluate(PIXEL.replace(
            "data-browserd-view", "data-browserd-replay")) == [255, 255, 255])
        assert shown_frame(page) > red_frame
        # Seekable: the slider moves to any frame.
        page.locator('[data-browserd-replay="timeline"]').fill("0")
        wait_for("frame 0", lambda: shown_frame(page) == 0)


def test_recording_keeps_to_its_budget_and_is_off_by_default(
        shell_daemon: DaemonProcess) -> None:
    with Client(shell_daemon.socket) as bd:
        plain = bd.runtimes.browser.launch("plain")
        noisy = bd.runtimes.browser.launch("noisy", record=True)
        for runtime in (plain, noisy):
            runtime.invocations.create("navigate", {"url": NOISE_URL})
        run = noisy.current_run()
        wait_for("the budget reached", lambda: run.events.list(
            types=["recording.budget_reached"]), within_s=20)
        noisy.stop()
        plain_run = plain.current_run()
        plain.stop()
        (recording,) = run.artifacts.list(kind="recording")
        assert recording.raw["truncated"] is True
        assert 0.5 * 1024 * 1024 < recording.size_bytes <= 1024 * 1024
        assert plain_run.artifacts.list(kind="recording") == []
