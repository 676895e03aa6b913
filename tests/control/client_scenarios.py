"""What Playwright does in a browser, written once and run twice: straight at the runtime's
Chromium and through a browserd lease. tests/control/test_transparency.py compares the two.

`Site` serves the pages and records each request's headers. Every scenario takes a connected
Playwright `Browser`, works in a browser context of its own (closed at the end), and returns
what it saw as plain data; a popup scenario returns `(ok, detail)`.

The popup scenarios follow Playwright's own popup tests: a context's user agent, extra headers,
viewport, touch, offline mode, credentials and routes must already be in force when the popup's
first request leaves and its first script runs (the popup's inline script records what it saw
at that moment), and a dialog opened in a popup must reach the listener.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, Dialog, Page, Route

# What a popup's first script saw, before anything could change it afterwards.
POPUP = (b"<!doctype html><title>popup</title><script>"
         b"window.initial = {ua: navigator.userAgent, width: innerWidth,"
         b" touch: 'ontouchstart' in window, online: navigator.onLine};"
         b"</script><p>popup</p>")
ALERTING_POPUP = b"<!doctype html><title>alerting</title><script>alert('from popup')</script>"
FORM = (b"<!doctype html><title>form</title><input id=name>"
        b"<button id=go onclick=\"document.title = 'clicked ' + document.getElementById('name')"
        b".value\" style='position:absolute;left:40px;top:60px;width:100px;height:40px'>go"
        b"</button><script>window.keys = [];"
        b"addEventListener('keydown', e => keys.push(e.key));</script>")
FRAMES = (b"<!doctype html><title>frames</title>"
          b"<iframe name=inline srcdoc='<p id=x>inline</p>'></iframe>"
          b"<iframe name=other src='/plain'></iframe>")
PLAIN = b"<!doctype html><title>plain</title><p>plain</p><img src='/pixel.png'>"
DOWNLOAD = b"report body\n"
CREDENTIALS = ("user", "secret")


class Site:
    """A small site on 127.0.0.1 that records the headers of every request by path."""

    def __init__(self) -> None:
        self.headers: dict[str, dict[str, str]] = {}
        self.base = ""

    def respond(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes, dict[str, str]]:
        if path.startswith("/auth"):
            expected = "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()
            if headers.get("Authorization") != expected:
                return 401, "text/plain", b"", {"WWW-Authenticate": 'Basic realm="browserd"'}
            return 200, "text/html", POPUP, {}
        if path.startswith("/popup"):
            return 200, "text/html", POPUP, {}
        if path.startswith("/alerting"):
            return 200, "text/html", ALERTING_POPUP, {}
        pages = {"/form": FORM, "/frames": FRAMES, "/plain": PLAIN}
        if path in pages:
            return 200, "text/html", pages[path], {}
        if path == "/pixel.png":
            return 200, "image/png", _PIXEL, {}
        if path == "/download":
            return 200, "application/octet-stream", DOWNLOAD, {
                "Content-Disposition": 'attachment; filename="report.txt"'}
        return 200, "text/html", b"<!doctype html><title>empty</title>", {}

    @contextlib.contextmanager
    def serving(self) -> Iterator[Site]:
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.headers[self.path] = dict(self.headers)
                status, kind, body, extra = site.respond(self.path, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(OSError):  # a closed popup may hang up first
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


_PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")

Outcome = tuple[bool, Any]
Scenario = Callable[[Browser, Site, str], Outcome]


@contextlib.contextmanager
def _context(browser: Browser, **options: Any) -> Iterator[tuple[BrowserContext, Page]]:
    context = browser.new_context(**options)
    try:
        page = context.new_page()
        yield context, page
    finally:
        context.close()


def _popup(page: Page, site: Site, expression: str) -> Page:
    page.goto(site.base + "/empty")
    with page.expect_popup(timeout=10_000) as info:
        page.evaluate(expression)
    popup = info.value
    popup.wait_for_load_state()
    return popup


def _initial(popup: Page) -> dict[str, Any]:
    return dict(popup.evaluate("window.initial"))


def user_agent(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser, user_agent="hey") as (_, page):
        popup = _popup(page, site, f"window.open('/popup/ua{tag}')")
        seen = (_initial(popup)["ua"], site.headers[f"/popup/ua{tag}"].get("User-Agent"))
        return seen == ("hey", "hey"), seen


def extra_headers(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser, extra_http_headers={"foo": "bar"}) as (_, page):
        _popup(page, site, f"window.open('/popup/h{tag}')")
        seen = site.headers[f"/popup/h{tag}"].get("foo")
        return seen == "bar", seen


def viewport(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser, viewport={"width": 400, "height": 500}) as (_, page):
        width = _initial(_popup(page, site, f"window.open('/popup/v{tag}')"))["width"]
        return width == 400, width


def touch(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser, has_touch=True) as (_, page):
        seen = _initial(_popup(page, site, f"window.open('/popup/t{tag}')"))["touch"]
        return seen is True, seen


def offline(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser, offline=True) as (_, page):
        with page.expect_popup(timeout=10_000) as info:
            page.evaluate("window.open('about:blank')")
        seen = info.value.evaluate("navigator.onLine")
        return seen is False, seen


def credentials(browser: Browser, site: Site, tag: str) -> Outcome:
    user, password = CREDENTIALS
    with _context(browser, http_credentials={"username": user, "password": password}) as (
            _, page):
        popup = _popup(page, site, f"window.open('/auth{tag}')")
        text = popup.evaluate("document.body ? document.body.innerText : ''")
        return text == "popup", text


def routes(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser) as (context, page):
        routed: list[str] = []

        def handle(route: Route) -> None:
            routed.append(route.request.url)
            route.continue_()

        context.route("**/popup/r*", handle)
        _popup(page, site, f"window.open('/popup/r{tag}')")
        return len(routed) == 1, routed


def _dialogs(context: BrowserContext) -> list[tuple[str, Page | None]]:
    seen: list[tuple[str, Page | None]] = []

    def on_dialog(dialog: Dialog) -> None:
        seen.append((dialog.message, dialog.page))
        dialog.dismiss()

    # On the context, registered before the popup exists: a listener added to the popup
    # after its "popup" event can lose the race with a dialog opened at once (Playwright
    # dismisses dialogs nobody listens to), directly as through a lease.
    context.on("dialog", on_dialog)
    return seen


def alert_from_opener(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser) as (context, page):
        dialogs = _dialogs(context)
        page.goto(site.base + "/empty")
        with page.expect_popup(timeout=10_000) as info:
            page.evaluate("() => { const win = window.open(''); win.alert('hello'); }")
        popup = info.value
        return dialogs == [("hello", popup)], [message for message, _ in dialogs]


def alert_in_popup(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser) as (context, page):
        dialogs = _dialogs(context)
        popup = _popup(page, site, f"window.open('/alerting{tag}')")
        return dialogs == [("from popup", popup)], [message for message, _ in dialogs]


def window_features(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser) as (_, page):
        popup = _popup(page, site, f"window.open('/popup/f{tag}', 'name', "
                                   "'toolbar=no,width=600,height=300,left=0,top=0')")
        width = _initial(popup)["width"]
        return width == 600, width


def noopener(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser) as (_, page):
        popup = _popup(page, site, f"window.open('/popup/n{tag}', null, 'noopener')")
        return popup.url.endswith(f"/popup/n{tag}"), popup.url


def empty_url(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser) as (_, page):
        page.goto(site.base + "/empty")
        with page.expect_popup(timeout=10_000) as info:
            page.evaluate("window.__popup = window.open('')")
        return info.value.url == "about:blank", info.value.url


def closed_at_once(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser) as (_, page):
        page.goto(site.base + "/empty")
        with page.expect_popup(timeout=10_000):
            page.evaluate("window.open('about:blank').close()")
        return True, None


def link_target_blank(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser, user_agent="clicky") as (_, page):
        page.goto(site.base + "/empty")
        page.set_content(f"<a target=_blank rel=noopener href='{site.base}/popup/c{tag}'>go</a>")
        with page.expect_popup(timeout=10_000) as info:
            page.click("a")
        popup = info.value
        popup.wait_for_load_state()
        seen = _initial(popup)["ua"]
        return seen == "clicky", seen


def from_iframe(browser: Browser, site: Site, tag: str) -> Outcome:
    with _context(browser) as (_, page):
        page.goto(site.base + "/frames")
        frame = page.frame(name="other")
        assert frame is not None
        with page.expect_popup(timeout=10_000) as info:
            frame.evaluate(f"window.open('/popup/i{tag}')")
        info.value.wait_for_load_state()
        return info.value.url.endswith(f"/popup/i{tag}"), info.value.url


POPUP_SCENARIOS: list[Scenario] = [
    user_agent, extra_headers, viewport, touch, offline, credentials, routes,
    alert_from_opener, alert_in_popup, window_features, noopener, empty_url, closed_at_once,
    link_target_blank, from_iframe,
]


def run_popups(browser: Browser, site: Site, rounds: int) -> dict[str, list[Any]]:
    """Every popup scenario `rounds` times; returns what failed, by scenario name."""
    failed: dict[str, list[Any]] = {}
    for round_ in range(rounds):
        for scenario in POPUP_SCENARIOS:
            try:
                ok, detail = scenario(browser, site, f"{round_}-{id(browser)}")
            except Exception as exc:  # a timeout or a closed target: a failure, with its words
                ok, detail = False, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            if not ok:
                failed.setdefault(scenario.__name__, []).append(detail)
    return failed


def behaviour(browser: Browser, site: Site, downloads: Path) -> dict[str, Any]:
    """Navigation, frames, dialogs, downloads, interception, CDP sessions and input, as data
    that must come out the same directly and through a lease."""
    seen: dict[str, Any] = {}
    with _context(browser, accept_downloads=True) as (context, page):
        # navigation and history
        response = page.goto(site.base + "/plain")
        assert response is not None
        page.goto(site.base + "/form")
        page.go_back()
        seen["navigation"] = [response.status, page.title(), page.url.removeprefix(site.base)]

        # frames
        page.goto(site.base + "/frames")
        page.frame(name="other").wait_for_load_state()  # type: ignore[union-attr]
        seen["frames"] = sorted(
            (frame.name, frame.url.removeprefix(site.base),
             frame.evaluate("document.body.innerText")) for frame in page.frames)

        # dialogs: alert, confirm, prompt, answered by the client
        answers: list[tuple[str, str]] = []

        def answer(dialog: Dialog) -> None:
            answers.append((dialog.type, dialog.message))
            if dialog.type == "prompt":
                dialog.accept("typed")
            else:
                dialog.accept()

        page.on("dialog", answer)
        results = page.evaluate("[alert('a'), confirm('c'), prompt('p', 'default')]")
        page.remove_listener("dialog", answer)
        seen["dialogs"] = [answers, results]

        # downloads, into the client's folder
        page.set_content(f"<a href='{site.base}/download' download>get</a>")
        with page.expect_download(timeout=10_000) as info:
            page.click("a")
        download = info.value
        target = downloads / download.suggested_filename
        download.save_as(target)
        seen["download"] = [download.suggested_filename, target.read_bytes().decode()]

        # network interception: fulfil, abort, and the requests the page saw
        page.route("**/pixel.png", lambda route: route.abort())
        page.route("**/intercepted", lambda route: route.fulfill(
            status=201, content_type="text/html", body="<title>fulfilled</title>"))
        failed: list[str] = []
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.goto(site.base + "/plain")
        response = page.goto(site.base + "/intercepted")
        assert response is not None
        seen["interception"] = [response.status, page.title(),
                                [url.removeprefix(site.base) for url in failed]]
        page.unroute_all()

        # a CDP session of the client's own
        session = context.new_cdp_session(page)
        reply = session.send("Runtime.evaluate", {"expression": "6 * 7", "returnByValue": True})
        metrics = session.send("Page.getLayoutMetrics")
        seen["cdp_session"] = [reply["result"]["value"], sorted(metrics)]
        session.detach()

        # input: typing, keys and a click at coordinates
        page.goto(site.base + "/form")
        page.click("#name")
        page.keyboard.type("abc")
        page.keyboard.press("Backspace")
        page.mouse.click(90, 80)  # the middle of the button
        seen["input"] = [page.title(), page.evaluate("window.keys")]
    return seen
