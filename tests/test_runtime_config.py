"""Runtime config (issue 18), with real parts: a daemon as a subprocess, real Chromium (both
builds), Playwright attached through a lease, proxies and pages served by the test."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import socket
import socketserver
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from browserd.client import Client
from browserd.client.errors import (
    BrowserLaunchFailed,
    InvalidParams,
    LaunchWarning,
    RuntimeNotFound,
    RuntimeNotStopped,
)

from .conftest import DaemonProcess, assert_no_processes, finish_daemon, start_shell_daemon

HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"
USER, PASSWORD = "scraper", "s3cret-Pr0xy-pass"
REPORT = ("() => ({language: navigator.language, languages: navigator.languages, "
          "timezone: Intl.DateTimeFormat().resolvedOptions().timeZone, "
          "width: innerWidth, height: innerHeight, scale: devicePixelRatio, "
          "user_agent: navigator.userAgent})")


@pytest.fixture
def daemon(short_dir: Path) -> Iterator[DaemonProcess]:
    """`browserd` as a subprocess; its default browser is the headless shell (fast)."""
    running = start_shell_daemon(short_dir)
    yield running
    finish_daemon(running)


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def proxy_page(host: str) -> bytes:
    return (f"<!doctype html><title>via proxy</title><p id=host>{host}</p>"
            "<img src='/logo.png'>").encode()


class _AuthProxy(http.server.BaseHTTPRequestHandler):
    """An HTTP proxy that wants Basic credentials and answers every request itself, for any
    host: a page reached through it can have come from nowhere else. A CONNECT gets a TLS
    server with the certificate of `tls` (when set), which serves the same page."""

    seen: list[tuple[str, str | None]] = []
    tls: ssl.SSLContext | None = None

    def _authorised(self) -> bool:
        auth = self.headers.get("Proxy-Authorization")
        type(self).seen.append((self.path, auth))
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if auth != expected:
            self.send_response(407)
            self.send_header("Proxy-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        return True

    def do_CONNECT(self) -> None:
        if not self._authorised() or self.tls is None:
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.flush()
        host = self.path.rpartition(":")[0]
        with self.tls.wrap_socket(self.connection, server_side=True) as tls:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = tls.recv(4096)
                if not chunk:
                    return
                data += chunk
            body = proxy_page(f"https {host}")
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        self.close_connection = True

    def do_GET(self) -> None:
        if not self._authorised():
            return
        body = proxy_page(self.headers.get("Host", "?"))
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def socks5_server() -> Iterator[tuple[int, list[str]]]:
    """A SOCKS5 proxy that wants RFC 1929 username/password and, once a CONNECT stands,
    speaks HTTP itself: any host gets its page."""
    seen: list[str] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            conn = self.request
            conn.settimeout(10)
            header = conn.recv(2)
            methods = conn.recv(header[1])
            if 2 not in methods:
                conn.sendall(b"\x05\xff")
                return
            conn.sendall(b"\x05\x02")
            conn.recv(1)
            user = conn.recv(conn.recv(1)[0]).decode()
            password = conn.recv(conn.recv(1)[0]).decode()
            if (user, password) != (USER, PASSWORD):
                conn.sendall(b"\x01\x01")
                seen.append("refused")
                return
            conn.sendall(b"\x01\x00")
            request = conn.recv(4)
            assert request[3] == 3
            host = conn.recv(conn.recv(1)[0]).decode()
            conn.recv(2)
            seen.append(host)
            conn.sendall(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            body = proxy_page(host)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


class _Site(http.server.BaseHTTPRequestHandler):
    """A page that reports what the browser says about itself, with an image and a fetch."""

    seen: list[tuple[str, dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append((self.path, dict(self.headers)))
        if self.path == "/":
            body = (b"<!doctype html><title>site</title><img id=pic src='/pic.png'>"
                    b"<script>window.api = fetch('/api').then(r => r.text())</script>")
            kind = "text/html"
        elif self.path == "/pic.png":
            body = _PNG
            kind = "image/png"
        else:
            body, kind = b"from the server", "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJ"
    "RU5ErkJggg==")


def cdp_url(bd: Any, name: str) -> str:
    """A lease's CDP URL for runtime `name` of `bd` (a Client: the default space, or a
    Space)."""
    runtime = bd.runtimes.get(name)
    return runtime.connections.create(ttl_s=120).endpoint.url


def wait_for(condition: Any, what: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def all_cmdlines() -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return found


def tls_context(directory: Path) -> ssl.SSLContext:
    """A server context with a self-signed certificate made by openssl."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=secure.example.test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                if needle in path.read_bytes():
                    found.append(path)
    return found


# ------------------------------------------------------------------ proxy


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_proxy_with_credentials_serves_every_page_and_keeps_them_secret(
        daemon: DaemonProcess, kind: str, short_dir: Path) -> None:
    _AuthProxy.seen = []
    _AuthProxy.tls = tls_context(short_dir)
    with contextlib.ExitStack() as stack:
        if kind == "http":
            port = stack.enter_context(http_server(_AuthProxy))
            socks_seen: list[str] = []
        else:
            port, socks_seen = stack.enter_context(socks5_server())
        server = f"{kind}://127.0.0.1:{port}"
        with Client(daemon.socket) as bd:
            bd.runtimes.browser.launch(
                name="crawler", config={"proxy": {"server": server, "username": USER,
                                                  "password": PASSWORD}})
            record = bd.runtimes.get("crawler")
            assert record.config["proxy"] == {"server": server, "bypass": [], "auth": True}
            with sync_playwright() as pw:
                browser = pw.chromium.connect_over_cdp(cdp_url(bd, "crawler"), timeout=20_000)
                # A page the daemon never heard of, in a context the client made itself.
                page = browser.new_context().new_page()
                page.goto("http://shop.example.test/", timeout=20_000)
                assert page.title() == "via proxy"
                assert page.inner_text("#host").startswith("shop.example.test")
                page2 = browser.contexts[0].new_page()
                page2.goto("http://other.example.test/x", timeout=20_000)
                assert page2.title() == "via proxy"
                if kind == "http":  # HTTPS: a CONNECT tunnel through the relay
                    secure = browser.new_context(ignore_https_errors=True).new_page()
                    secure.goto("https://secure.example.test/", timeout=20_000)
                    assert secure.inner_text("#host") == "https secure.example.test"
                browser.close()
            if kind == "http":
                assert _AuthProxy.seen and all(auth is not None for _, auth in _AuthProxy.seen)
                assert ("secure.example.test:443", _AuthProxy.seen[0][1]) in _AuthProxy.seen
            else:
                assert "shop.example.test" in socks_seen and "refused" not in socks_seen
            run = bd.runtimes.get("crawler").current_run()
            events = run.events.list()
            # While it runs: nowhere but the daemon's 0600 file.
            assert not [line for line in all_cmdlines() if PASSWORD in line or
                        base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() in line]
            assert not [line for line in all_cmdlines() if f"{USER}@" in line]
            secret_file = daemon.state_dir / "runtimes" / record.id / "proxy-credentials.json"
            assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
            holders = files_holding(daemon.base, PASSWORD.encode())
            assert holders == [secret_file], holders
            assert PASSWORD not in json.dumps(record.to_wire() if hasattr(record, "to_wire")
                                              else record.config)
            assert PASSWORD not in json.dumps([event.data for event in events], default=str)
            shown = daemon.ctl("inspect", "crawler").stdout
            assert server in shown and PASSWORD not in shown and USER not in shown
            bd.runtimes.get("crawler").stop()
    assert PASSWORD not in daemon.log.read_text()


def test_proxy_relay_is_gone_with_the_run(daemon: DaemonProcess) -> None:
    with http_server(_AuthProxy) as port, Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(
            name="relay", config={"proxy": {"server": f"http://127.0.0.1:{port}",
                                            "username": USER, "password": PASSWORD}})
        proc = next(p for p in all_cmdlines() if "--proxy-server=http://127.0.0.1:" in p)
        relay_port = int(proc.split("--proxy-server=http://127.0.0.1:")[1].split()[0])
        probe = socket.create_connection(("127.0.0.1", relay_port), timeout=5)
        probe.close()
        runtime.stop()

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", relay_port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_for(refused, "the relay's listener to close after the stop")


# ------------------------------------------------------------------ fingerprint


@pytest.mark.parametrize("build", ["headless-shell", "chromium"])
def test_viewport_locale_timezone_user_agent(daemon: DaemonProcess, build: str) -> None:
    _Site.seen = []
    config = {"viewport": {"width": 900, "height": 700, "device_scale_factor": 2},
              "locale": "de-DE", "timezone": "Asia/Tokyo", "user_agent": "browserd-test/1.0",
              "browser": build}
    with http_server(_Site) as port, Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="fp", config=config)
        shown = bd.runtimes.get("fp").config
        assert {key: shown[key] for key in config} == config | {
            "viewport": {"width": 900, "height": 700, "device_scale_factor": 2.0}}
        with sync_playwright() as pw:
            browser = pw.chromium.connect_over_cdp(cdp_url(bd, "fp"), timeout=20_000)
            start_page = browser.contexts[0].pages[0]  # the tab the browser started with
            first = start_page.evaluate("[innerWidth, innerHeight]")
            page = browser.contexts[0].new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            report = page.evaluate(REPORT)
            browser.close()
        assert first == [900, 700]
        assert report["language"] == "de-DE"
        assert report["languages"][0] == "de-DE"
        assert report["timezone"] == "Asia/Tokyo"
        assert (report["width"], report["height"], report["scale"]) == (900, 700, 2)
        assert report["user_agent"] == "browserd-test/1.0"
        headers = next(h for path, h in _Site.seen if path == "/")
        assert headers["Accept-Language"].startswith("de-DE")
        assert headers["User-Agent"] == "browserd-test/1.0"
        lifecycle = runtime.current_run().events.list(types=["runtime.lifecycle"])
        executable = lifecycle[0].data["executable"]
        assert ("headless-shell" in executable) == (build == "headless-shell")
        runtime.stop()


# ------------------------------------------------------------------ block and clients


def test_block_fails_images_counts_them_and_leaves_playwright_alone(
        daemon: DaemonProcess) -> None:
    _Site.seen = []
    with http_server(_Site) as port, Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(
            name="lean", config={"block": {"resource_types": ["image"],
                                           "url_patterns": ["*://ads.example.test/*"]},
                                 "locale": "de-DE"})
        with sync_playwright() as pw:
            browser = pw.chromium.connect_over_cdp(cdp_url(bd, "lean"), timeout=20_000)
            # Playwright's own context options and routing, on the configured runtime.
            context = browser.new_context(locale="ja-JP", viewport={"width": 500, "height": 400})
            page = context.new_page()
            routed: list[str] = []

            def fulfil(route: Any) -> None:
                routed.append(route.request.url)
                route.fulfill(body="from page.route")

            page.route("**/api", fulfil)
            page.goto(f"http://127.0.0.1:{port}/")
            assert page.evaluate("window.api") == "from page.route"
            assert routed == [f"http://127.0.0.1:{port}/api"]
            assert page.evaluate("[navigator.language, innerWidth, innerHeight]") == [
                "ja-JP", 500, 400]
            assert page.evaluate("document.getElementById('pic').naturalWidth") == 0
            failed = page.evaluate("""() => new Promise(resolve => {
                const img = new Image(); img.onload = () => resolve('loaded');
                img.onerror = () => resolve('failed'); img.src = '/pic.png?again'; })""")
            assert failed == "failed"
            blocked_ad = page.evaluate("""() => fetch('http://ads.example.test/x.js')
                .then(() => 'fetched', e => 'failed: ' + e.message)""")
            assert blocked_ad.startswith("failed")
            # The default context follows the runtime's config.
            plain = browser.contexts[0].new_page()
            plain.goto(f"http://127.0.0.1:{port}/")
            assert plain.evaluate("navigator.language") == "de-DE"
            assert plain.evaluate("window.api") == "from the server"
            assert plain.evaluate("document.getElementById('pic').naturalWidth") == 0
            browser.close()
        assert not [path for path, _ in _Site.seen if path.startswith("/pic.png")]
        run = runtime.current_run()

        def blocked_total() -> int:
            events = run.events.list(types=["network.blocked"])
            return max((event.data["total"] for event in events), default=0)

        wait_for(lambda: blocked_total() >= 4, "network.blocked events counting 4 requests")
        events = run.events.list(types=["network.blocked"])
        by_type: dict[str, int] = {}
        for event in events:
            for kind, count in event.data["resource_types"].items():
                by_type[kind] = by_type.get(kind, 0) + count
        assert by_type.get("image", 0) >= 3
        runtime.stop()


# ------------------------------------------------------------------ extensions


def test_extension_content_script_marks_the_page(daemon: DaemonProcess,
                                                  short_dir: Path) -> None:
    extension = short_dir / "marker"
    extension.mkdir()
    (extension / "manifest.json").write_text(json.dumps({
        "manifest_version": 3, "name": "browserd marker", "version": "1.0",
        "content_scripts": [{"matches": ["<all_urls>"], "js": ["mark.js"],
                             "run_at": "document_end"}],
    }))
    (extension / "mark.js").write_text("document.documentElement.dataset.marked = 'yes';")
    with http_server(_Site) as port, Client(daemon.socket) as bd:
        with pytest.raises(BrowserLaunchFailed) as refused:
            bd.runtimes.browser.launch(name="ext-shell",
                                       config={"extensions": [str(extension)]})
        assert refused.value.data["reason"] == "extensions_unsupported"
        runtime = bd.runtimes.browser.launch(
            name="ext", config={"extensions": [str(extension)], "browser": "chromium"})
        with sync_playwright() as pw:
            browser = pw.chromium.connect_over_cdp(cdp_url(bd, "ext"), timeout=20_000)
            page = browser.contexts[0].new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.documentElement.dataset.marked === 'yes'",
                                   timeout=10_000)
            browser.close()
        runtime.stop()
        # Gone between two starts: a clear error at launch, nothing started.
        (extension / "manifest.json").unlink()
        with pytest.raises(BrowserLaunchFailed) as missing:
            bd.runtimes.browser.launch(name="ext")
        assert missing.value.data["reason"] == "extension_missing"
        assert bd.runtimes.get("ext").status in ("stopped", "failed")


# ------------------------------------------------------------------ validation and update


@pytest.mark.parametrize(("config", "field"), [
    ({"proxy": {"server": "ftp://127.0.0.1:21"}}, "config.proxy.server"),
    ({"proxy": {"server": "http://user:pw@127.0.0.1:8080"}}, "config.proxy.server"),
    ({"proxy": {"server": "http://127.0.0.1"}}, "config.proxy.server"),
    ({"proxy": {"server": "http://127.0.0.1:1", "password": "x"}}, "config.proxy.username"),
    ({"timezone": "../../etc/passwd"}, "config.timezone"),
    ({"timezone": "/etc/localtime"}, "config.timezone"),
    ({"timezone": "Mars/Olympus"}, "config.timezone"),
    ({"viewport": {"width": -1, "height": 600}}, "config.viewport.width"),
    ({"viewport": {"width": 800}}, "config.viewport.height"),
    ({"extensions": ["relative/dir"]}, "config.extensions[0]"),
    ({"extensions": ["/nonexistent/extension"]}, "config.extensions[0]"),
    ({"extensions": ["/tmp"]}, "config.extensions[0]"),
    ({"browser": "firefox"}, "config.browser"),
    ({"browser": "/etc/passwd"}, "config.browser"),
    ({"block": {"resource_types": ["pictures"]}}, "config.block.resource_types[0]"),
    ({"locale": "de DE"}, "config.locale"),
    ({"colour": "blue"}, "config.colour"),
])
def test_bad_config_is_refused_naming_the_field(daemon: DaemonProcess, config: dict[str, Any],
                                                field: str) -> None:
    with Client(daemon.socket) as bd:
        with pytest.raises(InvalidParams) as refused:
            bd.runtimes.browser.launch(name="bad", config=config)
        assert refused.value.data["field"] == field, refused.value
        with pytest.raises(RuntimeNotFound):  # refused before anything was made
            bd.runtimes.get("bad")


def test_update_only_while_stopped_and_args_do_not_fight_config(
        daemon: DaemonProcess) -> None:
    with Client(daemon.socket) as bd:
        with pytest.raises(InvalidParams) as clash:
            bd.runtimes.browser.launch(name="u", config={"user_agent": "a"},
                                       args=["--user-agent=b"])
        assert clash.value.data["field"] == "args"
        runtime = bd.runtimes.browser.launch(name="u", config={"locale": "fr-FR"})
        with pytest.raises(RuntimeNotStopped):
            runtime.update(config={"locale": "de-DE"})
        runtime.stop()
        runtime.update(config={"timezone": "Europe/Paris", "locale": None})
        shown = bd.runtimes.get("u").config
        assert (shown["timezone"], shown["locale"]) == ("Europe/Paris", None)
        # A launch without config keeps the runtime's own.
        bd.runtimes.browser.launch(name="u")
        assert bd.runtimes.get("u").config["timezone"] == "Europe/Paris"
        inspected = daemon.ctl("inspect", "u").stdout
        assert "Europe/Paris" in inspected
        # A running runtime keeps its config; the launch says what it did not apply.
        with pytest.warns(LaunchWarning, match="timezone"):
            bd.runtimes.browser.launch(name="u", config={"timezone": "Asia/Tokyo"})
        assert bd.runtimes.get("u").config["timezone"] == "Europe/Paris"
        bd.runtimes.get("u").stop()
        # Args that fight the config the runtime keeps are refused too.
        runtime = bd.runtimes.get("u")
        runtime.update(config={"user_agent": "kept/1"})
        with pytest.raises(InvalidParams) as kept:
            bd.runtimes.browser.launch(name="u", args=["-User-Agent=other"])
        assert kept.value.data["field"] == "args"


# ------------------------------------------------------------------ browserctl and config.toml


def test_browserctl_launch_flags_and_inspect(daemon: DaemonProcess) -> None:
    _AuthProxy.seen = []
    with http_server(_AuthProxy) as port:
        refused = daemon.ctl("launch", "web", "--proxy", f"http://{USER}:{PASSWORD}@h:1",
                             check=False)
        assert refused.returncode == 2 and "BROWSERD_PROXY_PASSWORD" in refused.stderr
        daemon.env["BROWSERD_PROXY_PASSWORD"] = PASSWORD
        daemon.ctl("launch", "web", "--proxy", f"http://{USER}@127.0.0.1:{port}",
                   "--proxy-bypass", "*.internal.test", "--viewport", "1280x720@2",
                   "--locale", "de-DE", "--timezone", "Europe/Berlin", "--user-agent", "ctl/1",
                   "--block", "image,font", "--block-url", "*://ads.*/*",
                   "--browser", "headless-shell")
        shown = json.loads(daemon.ctl("inspect", "web", "--json").stdout)["config"]
        assert shown["proxy"] == {"server": f"http://127.0.0.1:{port}",
                                  "bypass": ["*.internal.test"], "auth": True}
        assert shown["viewport"] == {"width": 1280, "height": 720, "device_scale_factor": 2.0}
        assert (shown["locale"], shown["timezone"], shown["user_agent"], shown["browser"]) == (
            "de-DE", "Europe/Berlin", "ctl/1", "headless-shell")
        assert shown["block"] == {"resource_types": ["image", "font"],
                                  "url_patterns": ["*://ads.*/*"]}
        text = daemon.ctl("inspect", "web").stdout
        assert "timezone: Europe/Berlin" in text and PASSWORD not in text
        with Client(daemon.socket) as bd, sync_playwright() as pw:
            browser = pw.chromium.connect_over_cdp(cdp_url(bd, "web"), timeout=20_000)
            page = browser.contexts[0].new_page()
            page.goto("http://anywhere.example.test/", timeout=20_000)
            assert page.title() == "via proxy"
            browser.close()
        daemon.ctl("stop", "web")


def test_space_defaults_from_config_toml(short_dir: Path) -> None:
    (short_dir / "config.toml").write_text(
        f'[browser]\nexecutable = "{HEADLESS_SHELL}"\n'
        '[spaces.shop]\nlocale = "fr-FR"\ntimezone = "Europe/Paris"\n'
        '[spaces.shop.viewport]\nwidth = 800\nheight = 600\n')
    running = DaemonProcess(short_dir)
    running.start()
    try:
        with Client(running.socket) as bd:
            bd.spaces.create("shop")
            runtime = bd.space("shop").runtimes.browser.launch(name="a")
            assert (runtime.config["locale"], runtime.config["timezone"]) == (
                "fr-FR", "Europe/Paris")
            assert runtime.config["viewport"]["width"] == 800
            # A launch's own config replaces the defaults; another space has none.
            other = bd.space("shop").runtimes.browser.launch(name="b",
                                                            config={"locale": "it-IT"})
            assert (other.config["locale"], other.config["timezone"]) == ("it-IT", None)
            plain = bd.runtimes.browser.launch(name="c")
            assert plain.config["locale"] is None
            with sync_playwright() as pw:
                browser = pw.chromium.connect_over_cdp(cdp_url(bd.space("shop"), "a"),
                                                       timeout=20_000)
                page = browser.contexts[0].new_page()
                assert page.evaluate(REPORT)["timezone"] == "Europe/Paris"
                browser.close()
            for space, name in (("shop", "a"), ("shop", "b"), ("default", "c")):
                bd.space(space).runtimes.get(name).stop()
    finally:
        assert running.stop() == 0, running.log.read_text()
    assert_no_processes(running.state_dir)
    bad = short_dir / "bad"
    bad.mkdir()
    (bad / "config.toml").write_text('[spaces.shop]\ntimezone = "../etc"\n')
    done = DaemonProcess(bad)
    with pytest.raises(AssertionError, match=r"spaces\.shop\.timezone"):
        done.start(timeout_s=10)


def _goto_title(bd: Client, name: str, url: str) -> str:
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(cdp_url(bd, name), timeout=20_000)
        page = browser.contexts[0].new_page()
        try:
            page.goto(url, timeout=20_000)
            return page.title()
        finally:
            page.close()
            browser.close()


def test_live_restore_binds_the_relay_again(short_dir: Path) -> None:
    (short_dir / "config.toml").write_text(
        f'live_restore = true\n[browser]\nexecutable = "{HEADLESS_SHELL}"\n')
    with http_server(_AuthProxy) as port:
        first = DaemonProcess(short_dir)
        first.start()
        with Client(first.socket) as bd:
            bd.runtimes.browser.launch(name="kept", config={
                "proxy": {"server": f"http://127.0.0.1:{port}", "username": USER,
                          "password": PASSWORD},
                "block": {"resource_types": ["image"]}})
            assert _goto_title(bd, "kept", "http://before.example.test/") == "via proxy"
        first.kill()
        second = DaemonProcess(short_dir)
        second.start()
        try:
            with Client(second.socket) as bd:
                runtime = bd.runtimes.get("kept")
                assert runtime.status == "active", second.log.read_text()[-3000:]
                events = runtime.current_run().events.list(types=["runtime.lifecycle"])
                assert events[-1].data.get("adopted") is True
                assert _goto_title(bd, "kept", "http://after.example.test/") == "via proxy"
                runtime.stop()
        finally:
            assert second.stop() == 0, second.log.read_text()
    assert_no_processes(short_dir / "state")


def test_a_configured_runtime_never_gets_a_pooled_browser(short_dir: Path) -> None:
    (short_dir / "config.toml").write_text(
        f'[browser]\nexecutable = "{HEADLESS_SHELL}"\n[pool]\nsize = 1\n')
    running = DaemonProcess(short_dir)
    running.start()
    try:
        with Client(running.socket) as bd:
            def pool_ready() -> bool:
                return bool(bd.status()["pool"]["ready"] == 1)

            wait_for(pool_ready, "the pool to pre-start its browser", 30)
            plain = bd.runtimes.browser.launch(name="plain")
            first = plain.current_run().events.list(types=["runtime.lifecycle"])[0]
            assert first.data["from_pool"] is True  # the pool works at all
            wait_for(pool_ready, "the pool to refill", 30)
            shaped = bd.runtimes.browser.launch(name="shaped",
                                                config={"user_agent": "shaped/1"})
            first = shaped.current_run().events.list(types=["runtime.lifecycle"])[0]
            assert first.data["from_pool"] is False
            assert bd.status()["pool"]["ready"] == 1, "the pooled browser was left in the pool"
            assert any("--user-agent=shaped/1" in line for line in all_cmdlines())
            plain.stop()
            shaped.stop()
    finally:
        assert running.stop() == 0, running.log.read_text()
    assert_no_processes(running.state_dir)
