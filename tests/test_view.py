"""Live views: the view lease (protocol "view") and its page, driven in a real Chromium.

A real `browserd` subprocess on chromium-headless-shell runs the runtime; the viewer is
another Chromium that Playwright launches and points at the lease's URL. The page shows a
new frame within a second of the runtime's page changing; in control mode a click on the
screen element reaches a button of the runtime's page and typing fills an input (shortcuts
too), in watch mode neither happens; an expired or revoked lease closes the open page and a
new request gets 410; and a Playwright client attached through a CDP lease sees no
difference while a viewer watches.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Playwright

from browserd.client import Client, Runtime, errors

# The runtime's page: a button that counts clicks and an input, at known places.
APP = """<!doctype html><html><head><style>
body { margin: 0; background: #fff; }
#b { position: absolute; left: 100px; top: 80px; width: 200px; height: 80px; }
#i { position: absolute; left: 100px; top: 240px; width: 300px; height: 40px; font-size: 20px; }
</style></head><body>
<button id="b" onclick="this.dataset.n = (+this.dataset.n || 0) + 1">press</button>
<input id="i">
<div style="height: 3000px"></div>
</body></html>"""
APP_URL = "data:text/html," + quote(APP)
RED_URL = "data:text/html," + quote("<body style='margin:0;background:#f00'></body>")




def wait_for(what: str, check: Callable[[], Any], within_s: float = 10.0) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {within_s} s waiting for {what}"
        time.sleep(0.02)


def evaluate(runtime: Runtime, expression: str) -> Any:
    return runtime.invocations.create("evaluate", {"expression": expression}).output


def frame_seq(page: Page) -> int:
    value = page.get_attribute('[data-browserd-view="screen"]', "data-frame-seq")
    return int(value) if value else 0


def open_view(viewer: Browser, url: str, size: tuple[int, int] = (1000, 700)) -> Page:
    page = viewer.new_page(viewport={"width": size[0], "height": size[1]})
    page.goto(url)
    wait_for("the first frame", lambda: frame_seq(page) > 0)
    return page


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def upgrade(url: str, origin: str) -> bytes:
    """The first bytes of the answer to a WebSocket upgrade of `url` from `origin`."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                      f"Origin: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        return sock.recv(256)


def click_screen_at(page: Page, runtime_x: float, runtime_y: float) -> None:
    """Click the screen element where it shows the runtime page's CSS pixel (x, y)."""
    box = page.locator('[data-browserd-view="screen"]').bounding_box()
    assert box is not None
    width = evaluate_view_meta(page)["deviceWidth"]
    scale = box["width"] / width
    page.mouse.click(box["x"] + runtime_x * scale, box["y"] + runtime_y * scale)


def evaluate_view_meta(page: Page) -> dict[str, Any]:
    # The page keeps no metadata; its natural size against the runtime's viewport gives it.
    return page.evaluate("""() => {
        const img = document.querySelector('[data-browserd-view="screen"]');
        return {deviceWidth: img.naturalWidth, deviceHeight: img.naturalHeight};
    }""")


# -- the lease -------------------------------------------------------------------------------


def test_view_lease_rules(bd: Client) -> None:
    runtime = bd.runtimes.browser.launch("viewed")
    view = runtime.connections.create(protocol="view", ttl_s=60)
    assert view.protocol == "view" and view.control is False and view.status == "active"
    assert view.endpoint is not None
    url = urlsplit(view.endpoint.url)
    assert url.scheme == "http" and url.hostname == "127.0.0.1"
    _, kind, connection_id, token = url.path.split("/")
    assert (kind, connection_id) == ("view", view.id) and len(token) >= 40
    # Shown once: later reads have no URL.
    assert runtime.connections.get(view.id).to_dict().get("endpoint") is None

    # The page, with a strict CSP; its assets come from the daemon.
    status, headers, body = get(view.endpoint.url)
    assert status == 200 and b'data-browserd-view="screen"' in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "http" not in csp.replace("'self'", "")
    base = f"{url.scheme}://{url.netloc}"
    status, headers, _ = get(base + "/assets/view.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")

    # Checks: another origin, another Host, a bad token, the view token on the CDP path.
    assert get(view.endpoint.url, {"Origin": "http://evil.example"})[0] == 403
    assert get(view.endpoint.url, {"Host": "evil.example"})[0] == 403
    assert get(view.endpoint.url[:-4] + "AAAA")[0] == 401
    assert get(f"{base}/cdp/{view.id}/{token}/json/version")[0] == 401
    assert get(f"{base}/assets/nothing.js")[0] == 404
    assert get(f"{base}/assets/../view.html")[0] == 404
    # The page's WebSocket: refused to another origin before anything of the view is sent.
    assert upgrade(view.endpoint.url + "/ws", "http://evil.example").startswith(
        b"HTTP/1.1 403")
    assert upgrade(view.endpoint.url + "/ws", base).startswith(b"HTTP/1.1 101")

    # Controllers: a control view is refused beside an exclusive CDP lease, and blocks one;
    # a watching view is neither.
    exclusive = runtime.connections.create(ttl_s=60, exclusive=True)
    with pytest.raises(errors.ControllerBusy):
        runtime.connections.create(protocol="view", control=True)
    watcher = runtime.connections.create(protocol="view")
    exclusive.delete()
    controller = runtime.connections.create(protocol="view", control=True)
    assert controller.control is True
    with pytest.raises(errors.ControllerBusy):
        runtime.connections.create(exclusive=True)
    with pytest.raises(errors.InvalidParams):
        runtime.connections.create(protocol="view", exclusive=True)
    with pytest.raises(errors.InvalidParams):
        runtime.connections.create(control=True)

    created = [e.data for e in runtime.current_run().events.list(types=["connection.created"])]
    assert [(d["protocol"], d["control"]) for d in created][-4:] == [
        ("view", False), ("cdp", False), ("view", False), ("view", True)]
    assert watcher.id in {c.id for c in runtime.connections.list()}

    runtime.stop()
    # Closed at the run's end.
    assert runtime.connections.get(view.id).status == "closed"
    assert get(view.endpoint.url)[0] == 410


# -- the page --------------------------------------------------------------------------------


def test_watch_shows_changes_and_forwards_nothing(bd: Client, viewer: Browser) -> None:
    runtime = bd.runtimes.browser.launch("watched")
    runtime.invocations.create("navigate", {"url": APP_URL})
    view = runtime.connections.create(protocol="view")
    assert view.endpoint is not None
    page = open_view(viewer, view.endpoint.url)
    assert page.get_attribute("body", "data-mode") == "watch"
    assert "data:text/html" in page.inner_text('[data-browserd-view="url"]')

    # A new frame within a second of the page changing (navigated by an invocation), and it
    # shows the new page.
    before = frame_seq(page)
    runtime.invocations.create("navigate", {"url": RED_URL})
    changed_at = time.monotonic()
    wait_for("a frame of the red page", lambda: frame_seq(page) > before, within_s=1.0)
    assert time.monotonic() - changed_at < 1.0
    wait_for("the red page's pixels", lambda: page.evaluate(PIXEL) == [255, 0, 0], within_s=1.0)
    # An idle page sends nothing: no frame while it does not change.
    time.sleep(0.5)
    idle_from = frame_seq(page)
    time.sleep(1.5)
    assert frame_seq(page) == idle_from, "frames came from a page that did not change"

    # Watch mode: a click and keys on the screen element reach nothing.
    runtime.invocations.create("navigate", {"url": APP_URL})
    wait_for("the app's frame", lambda: page.evaluate(PIXEL) != [255, 0, 0])
    click_screen_at(page, 200, 120)
    click_screen_at(page, 200, 260)
    page.keyboard.type("hello")
    page.mouse.wheel(0, 400)
    time.sleep(0.5)
    assert evaluate(runtime, "document.getElementById('b').dataset.n || '0'") == "0"
    assert evaluate(runtime, "document.getElementById('i').value") == ""
    assert evaluate(runtime, "scrollY") == 0

    # The daemon refuses input on a watching lease whatever a page sends: a WebSocket of its
    # own (same origin, same token) sending a click on the button and text.
    page.evaluate("""(url) => new Promise((resolve) => {
        const ws = new WebSocket(url);
        ws.onopen = () => {
            for (const type of ["down", "up"])
                ws.send(JSON.stringify({t: "mouse", type, x: 0.25, y: 0.2, button: "left",
                                        buttons: 1, clicks: 1, modifiers: 0}));
            ws.send(JSON.stringify({t: "text", text: "sneaky"}));
            setTimeout(() => { ws.close(); resolve(); }, 300);
        };
    })""", view.endpoint.url.replace("http://", "ws://") + "/ws")
    detached = wait_for("the second socket's detach", lambda: runtime.current_run().events.list(
        types=["connection.detached"]))
    assert detached[0].data["inputs_refused"] == 3 and detached[0].data["inputs"] == 0
    assert evaluate(runtime, "document.getElementById('b').dataset.n || '0'") == "0"
    assert evaluate(runtime, "document.getElementById('i').value") == ""
    assert page.locator('[data-browserd-view="open-tab"]').count() == 0


# The red channel of the screen's centre pixel, through a canvas (data: images are readable).
PIXEL = """() => {
    const img = document.querySelector('[data-browserd-view="screen"]');
    if (!img.naturalWidth) return null;
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
    const d = g.getImageData(c.width / 2, c.height / 2, 1, 1).data;
    return [d[0] > 200 ? 255 : 0, d[1] > 200 ? 255 : 0, d[2] > 200 ? 255 : 0];
}"""


@pytest.mark.parametrize("size", [(1000, 700), (520, 400)])
def test_control_clicks_and_types(bd: Client, viewer: Browser, size: tuple[int, int]) -> None:
    runtime = bd.runtimes.browser.launch("driven")
    runtime.invocations.create("navigate", {"url": APP_URL})
    view = runtime.connections.create(protocol="view", control=True)
    assert view.endpoint is not None
    page = open_view(viewer, view.endpoint.url, size)
    assert page.get_attribute("body", "data-mode") == "control"

    click_screen_at(page, 200, 120)  # the button's middle, whatever the window's size
    wait_for("the click on the button", lambda: evaluate(
        runtime, "document.getElementById('b').dataset.n || '0'") == "1")
    click_screen_at(page, 120, 90)  # its top left corner: still on it
    wait_for("a second click", lambda: evaluate(
        runtime, "document.getElementById('b').dataset.n") == "2")
    click_screen_at(page, 60, 60)  # beside it: nothing
    time.sleep(0.3)
    assert evaluate(runtime, "document.getElementById('b').dataset.n") == "2"

    click_screen_at(page, 250, 260)
    page.keyboard.type("hello world")
    wait_for("typed text", lambda: evaluate(
        runtime, "document.getElementById('i').value") == "hello world")
    page.keyboard.press("Control+a")  # a shortcut: select all, then typing replaces it
    page.keyboard.type("X")
    page.keyboard.press("Backspace")
    page.keyboard.type("ok!")
    wait_for("the shortcut and the edit", lambda: evaluate(
        runtime, "document.getElementById('i').value") == "ok!")

    # The wheel scrolls the page.
    box = page.locator('[data-browserd-view="screen"]').bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 400)
    wait_for("the page scrolled", lambda: evaluate(runtime, "scrollY") > 100)


def test_control_tabs(bd: Client, viewer: Browser) -> None:
    runtime = bd.runtimes.browser.launch("tabbed")
    runtime.invocations.create("navigate", {"url": RED_URL})
    view = runtime.connections.create(protocol="view", control=True)
    assert view.endpoint is not None
    page = open_view(viewer, view.endpoint.url)
    tabs = page.locator(".tab")
    wait_for("one tab listed", lambda: tabs.count() == 1)

    # Open a tab from the page: it becomes the one shown.
    page.click('[data-browserd-view="open-tab"]')
    wait_for("two tabs", lambda: len(runtime.targets.list()) == 2 and tabs.count() == 2)
    wait_for("the new tab shown (white)", lambda: page.evaluate(PIXEL) == [255, 255, 255])
    # Follows a tab switch made elsewhere (by the API), then closes the blank one.
    red = next(t for t in runtime.targets.list() if t.url.startswith("data:"))
    runtime.targets.activate(red.id)
    wait_for("the red tab shown again", lambda: page.evaluate(PIXEL) == [255, 0, 0])
    blank = next(t for t in runtime.targets.list() if not t.url.startswith("data:"))
    page.click(f'.tab[data-target-id="{blank.id}"] [data-browserd-view="close-tab"]')
    wait_for("the blank tab closed", lambda: [t.id for t in runtime.targets.list()] == [red.id])


def test_revoked_and_expired_views_close(bd: Client, viewer: Browser) -> None:
    runtime = bd.runtimes.browser.launch("ending")
    revoked = runtime.connections.create(protocol="view", ttl_s=120)
    expiring = runtime.connections.create(protocol="view", ttl_s=3)
    assert revoked.endpoint is not None and expiring.endpoint is not None
    first = open_view(viewer, revoked.endpoint.url)
    second = open_view(viewer, expiring.endpoint.url)

    revoked.delete()
    wait_for("the revoked view closed", lambda: first.get_attribute("body", "data-state")
             == "ended", within_s=3)
    assert "revoked" in first.inner_text('[data-browserd-view="status"]')
    assert not first.locator('[data-browserd-view="screen"]').is_visible()
    assert get(revoked.endpoint.url)[0] == 410

    wait_for("the expired view closed", lambda: second.get_attribute("body", "data-state")
             == "ended", within_s=6)
    assert "expired" in second.inner_text('[data-browserd-view="status"]')
    status, _, body = get(expiring.endpoint.url)
    assert status == 410 and json.loads(body)["code"] == "connection.expired"

    types = [e.type for e in runtime.current_run().events.list()]
    assert types.count("connection.attached") == 2 and types.count("connection.detached") == 2
    detached = runtime.current_run().events.list(types=["connection.detached"])
    assert {e.data["ended_by"] for e in detached} == {"lease_revoked", "lease_expired"}

    # The run's end closes the open page too.
    last = runtime.connections.create(protocol="view", ttl_s=120)
    assert last.endpoint is not None
    third = open_view(viewer, last.endpoint.url)
    runtime.stop()
    wait_for("the view closed at the run's end", lambda: third.get_attribute(
        "body", "data-state") == "ended", within_s=5)
    assert get(last.endpoint.url)[0] == 410


def test_viewer_does_not_disturb_a_cdp_client(bd: Client, pw: Playwright,
                                              viewer: Browser) -> None:
    """What a Playwright client sees through a CDP lease is the same with viewers watching:
    its pages, evaluate results, events, and new pages (which it holds paused at first)."""
    runtime = bd.runtimes.browser.launch("shared")
    cdp = runtime.connections.create(ttl_s=120)
    assert cdp.endpoint is not None
    client = pw.chromium.connect_over_cdp(cdp.endpoint.url, timeout=20_000)
    context = client.contexts[0]
    app = context.pages[0]
    app.goto(APP_URL)

    def observe(page: Page) -> list[Any]:
        seen: list[Any] = []
        page.on("console", lambda m: seen.append(("console", m.text)))
        page.evaluate("console.log('ping')")
        seen.append(page.evaluate("() => [innerWidth, innerHeight, document.title, "
                                  "document.visibilityState, devicePixelRatio]"))
        page.click("#b")
        seen.append(page.evaluate("document.getElementById('b').dataset.n"))
        page.wait_for_timeout(100)
        return seen

    alone = observe(app)
    pages_alone = len(context.pages)
    views = [runtime.connections.create(protocol="view") for _ in range(2)]
    watching = [open_view(viewer, v.endpoint.url) for v in views if v.endpoint]
    watched = observe(app)
    assert watched[0] == alone[0]  # console event
    assert watched[1] == alone[1]  # viewport, title, visibility, DPR
    assert (alone[2], watched[2]) == ("1", "2")
    assert len(context.pages) == pages_alone, "no page appeared for the client"

    # A page the client opens while viewers watch works as usual (auto-attach holds it
    # until the client resumes it; the view never does).
    fresh = context.new_page()
    fresh.goto(APP_URL)
    assert fresh.evaluate("1 + 1") == 2
    assert len(context.pages) == pages_alone + 1
    wait_for("the view follows the new page", lambda: all(
        p.locator(".tab").count() == 2 for p in watching))
    client.close()
