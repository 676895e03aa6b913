"""The CDP proxy against a real Chromium: Playwright, raw handshakes, refusals, stats, close."""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
import h11
import pytest
import trio
from playwright.sync_api import sync_playwright
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage
from wsproto.frame_protocol import FrameProtocol

from browserd.daemon.cdp.http_front import Refused, Upstream, rewrite_discovery
from browserd.daemon.cdp.http_front import is_loopback_host as _is_loopback_host
from browserd.daemon.cdp.proxy import CdpProxy

CHROMIUM = "/usr/bin/chromium-headless-shell"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
]
DEVTOOLS_LINE = re.compile(r"DevTools listening on ws://([0-9.]+):([0-9]+)(/devtools/browser/\S+)")
PAGE_TITLE = "browserd proxy test page"
CID = "conn_test"
BIG = 20 * 1024 * 1024


@attrs.frozen
class Endpoint:
    host: str
    port: int
    browser_path: str


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """A real headless Chromium in its own process group, killed (group-wide) at teardown."""
    base = tmp_path_factory.mktemp("chromium")
    stderr_path = base / "stderr.log"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={base / 'profile'}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not (match := DEVTOOLS_LINE.search(stderr_path.read_text(errors="replace"))):
            tail = stderr_path.read_text(errors="replace")[-2000:]
            assert proc.poll() is None, f"chromium exited early ({proc.returncode}):\n{tail}"
            assert time.monotonic() < deadline, f"no DevTools line within 30 s:\n{tail}"
            time.sleep(0.05)
        yield Endpoint(match.group(1), int(match.group(2)), match.group(3))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    """A page served by the test on 127.0.0.1 (stdlib server in a thread)."""
    body = f"<html><head><title>{PAGE_TITLE}</title></head><body>hi</body></html>".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class LeaseHooks:
    """One lease (CID) over one browser; records every hook call."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.token = secrets.token_urlsafe(32)
        self.upstream = Upstream(
            runtime_id="rt_test",
            connection_id=CID,
            host=endpoint.host,
            port=endpoint.port,
            browser_path=endpoint.browser_path,
        )
        self.attached_calls: list[tuple[Upstream, str, dict[str, Any]]] = []
        self.detached_calls: list[tuple[Upstream, str, dict[str, Any]]] = []
        self.refused_calls: list[tuple[str | None, int, str, dict[str, Any]]] = []
        self.commands: list[dict[str, Any]] = []
        self.closes: list[tuple[str, str]] = []  # (socket_id, action)
        self.downloads: list[tuple[str, dict[str, Any]]] = []  # (method, params)
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait (the caller bounds it) until a hook call makes predicate true."""
        while not predicate():
            await self._changed.wait()

    def authorize(self, connection_id: str, token: str) -> Upstream:
        if connection_id != CID:
            raise Refused(404, "unknown connection")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise Refused(401, "bad token")
        return self.upstream

    def attached(self, upstream: Upstream, socket_id: str, peer: dict[str, Any]) -> None:
        self.attached_calls.append((upstream, socket_id, peer))
        self._notify()

    def detached(self, upstream: Upstream, socket_id: str, stats: dict[str, Any]) -> None:
        self.detached_calls.append((upstream, socket_id, stats))
        self._notify()

    def refused(
        self, connection_id: str | None, status: int, reason: str, peer: dict[str, Any]
    ) -> None:
        self.refused_calls.append((connection_id, status, reason, peer))
        self._notify()

    def command(self, upstream: Upstream, socket_id: str, record: dict[str, Any]) -> None:
        self.commands.append({"socket_id": socket_id, **record})
        self._notify()

    def browser_close(self, upstream: Upstream, socket_id: str, action: str) -> None:
        self.closes.append((socket_id, action))
        self._notify()

    def download_behavior(
        self, upstream: Upstream, socket_id: str, method: str, params: dict[str, Any]
    ) -> None:
        self.downloads.append((method, params))
        self._notify()


@pytest.fixture
def hooks(chromium: Endpoint) -> LeaseHooks:
    return LeaseHooks(chromium)


async def start_proxy(nursery: trio.Nursery, hooks: Any, **kwargs: Any) -> CdpProxy:
    proxy = CdpProxy(hooks, **kwargs)
    with trio.fail_after(5):
        port = await nursery.start(proxy.serve)
    assert port == proxy.port > 0
    assert proxy.base_url() == f"http://127.0.0.1:{port}"
    return proxy


@pytest.fixture
async def proxy(nursery: trio.Nursery, hooks: LeaseHooks) -> CdpProxy:
    return await start_proxy(nursery, hooks)


def lease_url(proxy: CdpProxy, hooks: LeaseHooks, scheme: str = "ws", rest: str = "") -> str:
    return f"{scheme}://127.0.0.1:{proxy.port}/cdp/{CID}/{hooks.token}{rest}"


def ws_headers() -> list[tuple[str, str]]:
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    return [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]


async def http_request(
    port: int, target: str, headers: list[tuple[str, str]] | None = None, host: str | None = None
) -> tuple[int, bytes]:
    """One HTTP/1.1 request; (status, body). A 101 returns (101, b"")."""
    conn = h11.Connection(h11.CLIENT)
    all_headers = [("Host", host or f"127.0.0.1:{port}"), *(headers or [])]
    with trio.fail_after(15):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                conn.send(h11.Request(method="GET", target=target, headers=all_headers))
                + conn.send(h11.EndOfMessage())
            )
            status, body = 0, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                    return 101, b""
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return status, body


async def cdp_call(
    ws: WebSocketConnection, msg_id: int, method: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    await ws.send_message(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
    while True:
        reply = json.loads(await ws.get_message())
        if reply.get("id") == msg_id:
            return reply  # type: ignore[no-any-return]


async def page_ws_url(proxy: CdpProxy, hooks: LeaseHooks) -> str:
    status, body = await http_request(proxy.port, f"/cdp/{CID}/{hooks.token}/json/list")
    assert status == 200, body
    pages = [t for t in json.loads(body) if t["type"] == "page"]
    assert pages, body
    return str(pages[0]["webSocketDebuggerUrl"])


def playwright_title(cdp_url: str, page_url: str) -> str:
    """Runs in a thread: attach over CDP, open a page, navigate, read its title."""
    with sync_playwright() as p:
        browser = p.chromium.connect_over_cdp(cdp_url, timeout=20_000)
        try:
            page = browser.contexts[0].new_page()
            page.goto(page_url, timeout=20_000)
            title = page.title()
            assert page.evaluate("1 + 1") == 2
            page.close()
        finally:
            browser.close()
    return title


# -- Playwright ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ws", "http"])
async def test_playwright_connect_over_cdp(
    proxy: CdpProxy, hooks: LeaseHooks, page_url: str, scheme: str
) -> None:
    url = lease_url(proxy, hooks, scheme)
    with trio.fail_after(60):
        title = await trio.to_thread.run_sync(
            playwright_title, url, page_url, abandon_on_cancel=True
        )
    assert title == PAGE_TITLE
    assert hooks.refused_calls == []
    with trio.fail_after(5):
        await hooks.wait_for(lambda: len(hooks.detached_calls) == 1)
    ((upstream, socket_id, peer),) = hooks.attached_calls
    assert upstream == hooks.upstream and socket_id == hooks.detached_calls[0][1]
    # The socket was opened by Playwright's driver, a node child process of this test.
    assert peer["name"].startswith("node") and peer["uid"] == os.getuid()
    assert peer["pid"] != os.getpid() and peer["addr"].startswith("127.0.0.1:")
    stats = hooks.detached_calls[0][2]
    assert stats["messages_in"] > 5 and stats["messages_out"] > stats["messages_in"]
    assert stats["bytes_in"] > 0 and stats["bytes_out"] > 0
    assert stats["ended_by"] in ("client_closed", "browser_closed")
    assert proxy.open_sockets() == 0


# -- discovery ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rest", ["/json/version", "/json/version/"])
async def test_json_version_points_at_the_lease(
    proxy: CdpProxy, hooks: LeaseHooks, chromium: Endpoint, rest: str
) -> None:
    status, body = await http_request(proxy.port, f"/cdp/{CID}/{hooks.token}{rest}")
    assert status == 200
    doc = json.loads(body)
    assert doc["webSocketDebuggerUrl"] == lease_url(proxy, hooks)
    assert "Browser" in doc and "Protocol-Version" in doc
    assert f"{chromium.host}:{chromium.port}" not in body.decode()


@pytest.mark.parametrize("rest", ["/json", "/json/", "/json/list", "/json/list/"])
async def test_json_list_rewrites_every_target(
    proxy: CdpProxy, hooks: LeaseHooks, chromium: Endpoint, rest: str
) -> None:
    status, body = await http_request(proxy.port, f"/cdp/{CID}/{hooks.token}{rest}")
    assert status == 200
    targets = json.loads(body)
    assert any(t["type"] == "page" for t in targets)
    prefix = lease_url(proxy, hooks, rest="/devtools/page/")
    for target in targets:
        assert target["webSocketDebuggerUrl"] == prefix + target["id"]
    assert f"{chromium.host}:{chromium.port}" not in body.decode()


async def test_discovery_answers_in_the_host_the_client_used(
    proxy: CdpProxy, hooks: LeaseHooks
) -> None:
    target = f"/cdp/{CID}/{hooks.token}/json/version"
    _, body = await http_request(proxy.port, target, host=f"localhost:{proxy.port}")
    url = json.loads(body)["webSocketDebuggerUrl"]
    assert url == f"ws://localhost:{proxy.port}/cdp/{CID}/{hooks.token}"


async def test_keep_alive_serves_several_requests_on_one_connection(
    proxy: CdpProxy, hooks: LeaseHooks
) -> None:
    conn = h11.Connection(h11.CLIENT)
    with trio.fail_after(15):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            for rest in ("/json/version", "/json/list"):
                request = h11.Request(
                    method="GET",
                    target=f"/cdp/{CID}/{hooks.token}{rest}",
                    headers=[("Host", f"127.0.0.1:{proxy.port}")],
                )
                await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
                body = b""
                while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Response):
                        assert event.status_code == 200
                    elif isinstance(event, h11.Data):
                        body += event.data
                assert "webSocketDebuggerUrl" in body.decode()
                conn.start_next_cycle()


def test_rewrite_discovery_frontend_url() -> None:
    upstream = Upstream("rt_1", "conn_1", "127.0.0.1", 9222, "/devtools/browser/abc")
    doc = [
        {
            "id": "P1",
            "type": "page",
            "webSocketDebuggerUrl": "ws://127.0.0.1:9222/devtools/page/P1",
            "devtoolsFrontendUrl": "/devtools/inspector.html?ws=127.0.0.1:9222/devtools/page/P1",
        },
        {"id": "P2", "devtoolsFrontendUrl": "https://x/inspector.html?a=1&ws=elsewhere:1/p"},
    ]
    out = rewrite_discovery(doc, upstream, "127.0.0.1:5000/cdp/conn_1/tok")
    assert out[0]["webSocketDebuggerUrl"] == "ws://127.0.0.1:5000/cdp/conn_1/tok/devtools/page/P1"
    assert out[0]["devtoolsFrontendUrl"] == (
        "/devtools/inspector.html?ws=127.0.0.1:5000/cdp/conn_1/tok/devtools/page/P1"
    )
    assert out[1]["devtoolsFrontendUrl"] == "https://x/inspector.html?a=1&ws=elsewhere:1/p"


# -- WebSocket forwarding -----------------------------------------------------------------------


async def test_page_target_and_browser_alias(proxy: CdpProxy, hooks: LeaseHooks) -> None:
    with trio.fail_after(20):
        async with open_websocket_url(await page_ws_url(proxy, hooks)) as ws:
            reply = await cdp_call(ws, 1, "Runtime.evaluate", {"expression": "6 * 7"})
            assert reply["result"]["result"]["value"] == 42
        # /devtools/browser/<any id> is this lease's browser target.
        async with open_websocket_url(
            lease_url(proxy, hooks, rest="/devtools/browser/whatever")
        ) as ws:
            reply = await cdp_call(ws, 1, "Browser.getVersion")
            assert "product" in reply["result"]
    ((_, _, peer), _) = hooks.attached_calls
    assert peer["pid"] == os.getpid()  # trio-websocket ran in this process


async def test_20_mib_round_trip(proxy: CdpProxy, hooks: LeaseHooks) -> None:
    text = "abcdefgh" * (BIG // 8)
    with trio.fail_after(60):
        async with open_websocket_url(
            await page_ws_url(proxy, hooks), max_message_size=4 * BIG
        ) as ws:
            expression = f"'{text}'.toUpperCase()"
            reply = await cdp_call(ws, 1, "Runtime.evaluate", {"expression": expression})
            assert reply["result"]["result"]["value"] == text.upper()
            live = proxy.socket_stats(CID)
            assert len(live) == 1 and live[0]["bytes_in"] > BIG and live[0]["bytes_out"] > BIG
    with trio.fail_after(5):
        await hooks.wait_for(lambda: len(hooks.detached_calls) == 1)
    stats = hooks.detached_calls[0][2]
    assert stats["messages_in"] == 1 and stats["messages_out"] == 1
    assert stats["bytes_in"] > BIG and stats["bytes_out"] > BIG


async def test_stats_count_messages(proxy: CdpProxy, hooks: LeaseHooks) -> None:
    calls = 25
    with trio.fail_after(20):
        async with open_websocket_url(await page_ws_url(proxy, hooks)) as ws:
            for i in range(1, calls + 1):
                await cdp_call(ws, i, "Runtime.evaluate", {"expression": str(i)})
            (live,) = proxy.socket_stats()
            assert live["messages_in"] == calls and live["messages_out"] == calls
    with trio.fail_after(5):
        await hooks.wait_for(lambda: len(hooks.detached_calls) == 1)
    stats = hooks.detached_calls[0][2]
    # The closing handshake is control frames, which are not messages.
    assert (stats["messages_in"], stats["messages_out"]) == (calls, calls)
    assert stats["ended_by"] == "client_closed"  # trio-websocket sent the first Close frame


async def test_frames_sent_with_the_handshake_are_forwarded(
    proxy: CdpProxy, hooks: LeaseHooks
) -> None:
    client = WSConnection(ConnectionType.CLIENT)
    handshake = client.send(
        Request(host=f"127.0.0.1:{proxy.port}", target=f"/cdp/{CID}/{hooks.token}")
    )
    command = json.dumps({"id": 7, "method": "Browser.getVersion"})
    early = FrameProtocol(client=True, extensions=[]).send_data(command)
    with trio.fail_after(15):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await stream.send_all(handshake + early)  # one segment: request head + a frame
            events: list[object] = []
            while not any(isinstance(e, TextMessage) for e in events):
                data = await stream.receive_some(65536)
                assert data, "proxy closed the connection"
                client.receive_data(data)
                events.extend(client.events())
    assert isinstance(events[0], AcceptConnection)  # Chromium's 101 was valid for our key
    reply = json.loads(next(e for e in events if isinstance(e, TextMessage)).data)
    assert reply["id"] == 7 and "product" in reply["result"]


async def test_browser_close_is_cut_out_of_a_chunk(proxy: CdpProxy, hooks: LeaseHooks) -> None:
    """Three commands in one segment (with the handshake): the one before Browser.close
    reaches the browser, Browser.close is answered by the proxy, nothing after it is sent."""
    client = WSConnection(ConnectionType.CLIENT)
    handshake = client.send(
        Request(host=f"127.0.0.1:{proxy.port}", target=f"/cdp/{CID}/{hooks.token}")
    )
    frames = FrameProtocol(client=True, extensions=[])
    early = b"".join(
        frames.send_data(json.dumps(doc))
        for doc in (
            {"id": 1, "method": "Target.createTarget", "params": {"url": "about:blank"}},
            {"id": 2, "method": "Browser.close"},
            {"id": 3, "method": "Target.createTarget", "params": {"url": "about:blank"}},
        )
    )
    with trio.fail_after(15):
        async with open_websocket_url(lease_url(proxy, hooks)) as watcher:
            before = await cdp_call(watcher, 1, "Target.getTargets", {})
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            async with stream:
                await stream.send_all(handshake + early)
                events: list[object] = []
                while not any(isinstance(e, CloseConnection) for e in events):
                    data = await stream.receive_some(65536)
                    assert data, "proxy closed the connection without a Close frame"
                    client.receive_data(data)
                    events.extend(client.events())
            replies = [json.loads(e.data) for e in events if isinstance(e, TextMessage)]
            assert {"id": 2, "result": {}} in replies
            await hooks.wait_for(lambda: len(hooks.detached_calls) == 1)
            after = await cdp_call(watcher, 2, "Target.getTargets", {})
            new = [t for t in after["result"]["targetInfos"]
                   if t not in before["result"]["targetInfos"] and t["type"] == "page"]
            assert len(new) == 1  # the first createTarget went through, the third did not
            await cdp_call(watcher, 3, "Target.closeTarget", {"targetId": new[0]["targetId"]})
    assert [action for _, action in hooks.closes] == ["detached"]
    assert hooks.detached_calls[0][2]["ended_by"] == "detached"
    detached_socket = hooks.detached_calls[0][1]
    outcomes = {c["method"]: c["outcome"] for c in hooks.commands
                if c["socket_id"] == detached_socket}
    assert outcomes["Browser.close"] == "detached"


@pytest.mark.parametrize("scope", ["connection", "runtime"])
async def test_close_ends_open_sockets_promptly(
    proxy: CdpProxy, hooks: LeaseHooks, scope: str
) -> None:
    with trio.fail_after(20):
        async with open_websocket_url(lease_url(proxy, hooks)) as ws:
            await cdp_call(ws, 1, "Browser.getVersion")
            assert proxy.open_sockets() == proxy.open_sockets(CID) == 1
            assert proxy.open_sockets("conn_other") == 0
            proxy.close_runtime("rt_other")
            proxy.close_connection("conn_other")
            assert proxy.open_sockets(CID) == 1
            if scope == "connection":
                proxy.close_connection(CID)
            else:
                proxy.close_runtime("rt_test")
            with trio.fail_after(2), pytest.raises(ConnectionClosed):
                await ws.get_message()
    with trio.fail_after(2):
        await hooks.wait_for(lambda: len(hooks.detached_calls) == 1)
    assert hooks.detached_calls[0][2]["ended_by"] == f"{scope}_closed"
    assert proxy.open_sockets() == 0


# -- refusals -----------------------------------------------------------------------------------


async def test_bad_token_is_refused(proxy: CdpProxy, hooks: LeaseHooks) -> None:
    bad = f"ws://127.0.0.1:{proxy.port}/cdp/{CID}/{secrets.token_urlsafe(32)}"
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(bad):
            pass
    assert info.value.status_code == 401
    assert json.loads(info.value.body or b"")["code"] == "auth.unauthorized"
    ((cid, status, reason, peer),) = hooks.refused_calls
    assert (cid, status, reason) == (CID, 401, "bad token")
    # A refusal names the client's uid and address (one sock_diag lookup), never its pid: that
    # would take a walk of every process's descriptors per refused request.
    assert peer["uid"] == os.getuid() and peer["pid"] is None
    assert peer["addr"].startswith("127.0.0.1:")
    status, _ = await http_request(proxy.port, f"/cdp/conn_nope/{hooks.token}/json/version")
    assert status == 404 and hooks.refused_calls[-1][:2] == ("conn_nope", 404)
    assert hooks.attached_calls == []


@pytest.mark.parametrize("rest", ["", "/json/version"])
async def test_origin_is_refused(proxy: CdpProxy, hooks: LeaseHooks, rest: str) -> None:
    headers = [*ws_headers(), ("Origin", "http://127.0.0.1:8000")]
    status, body = await http_request(proxy.port, f"/cdp/{CID}/{hooks.token}{rest}", headers)
    assert status == 403
    assert json.loads(body)["code"] == "auth.forbidden"
    assert hooks.refused_calls[-1][:2] == (CID, 403)
    assert hooks.attached_calls == []


async def test_allow_listed_origin_is_served(nursery: trio.Nursery, hooks: LeaseHooks) -> None:
    proxy = await start_proxy(nursery, hooks, allowed_origins=["https://devtools.example"])
    target = f"/cdp/{CID}/{hooks.token}"
    ok = [*ws_headers(), ("Origin", "https://devtools.example")]
    assert (await http_request(proxy.port, target, ok))[0] == 101  # no Origin reaches Chromium
    other = [*ws_headers(), ("Origin", "https://evil.example")]
    assert (await http_request(proxy.port, target, other))[0] == 403


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io", "localhost.evil", "10.0.0.1"]
)
async def test_foreign_host_is_refused(proxy: CdpProxy, hooks: LeaseHooks, host: str) -> None:
    for rest in ("", "/json/version"):
        status, body = await http_request(
            proxy.port, f"/cdp/{CID}/{hooks.token}{rest}", ws_headers(), host=host
        )
        assert status == 403 and json.loads(body)["code"] == "auth.forbidden"
    assert [c[1] for c in hooks.refused_calls] == [403, 403]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"127.0.0.1", True),
        (b"127.0.0.1:9", True),
        (b"LOCALHOST:65535", True),
        (b"[::1]", True),
        (b"[::1]:80", True),
        (b"127.0.0.2", False),
        (b"localhost:", False),
        (b"localhost:80:80", False),
        (b"[::1]x", False),
        (b"", False),
        (b"\xff", False),
    ],
)
def test_loopback_host_check(value: bytes, ok: bool) -> None:
    assert _is_loopback_host(value) is ok


@pytest.mark.parametrize(
    "target", ["/", "/cdp", f"/cdp/{CID}", "/cdp/{cid}/{token}/nope", "/cdp/{cid}/{token}/json/new"]
)
async def test_unknown_path_is_404(proxy: CdpProxy, hooks: LeaseHooks, target: str) -> None:
    target = target.format(cid=CID, token=hooks.token)
    status, body = await http_request(proxy.port, target)
    assert status == 404 and json.loads(body)["code"] == "http.not_found"
    assert hooks.refused_calls[-1][1] == 404
    assert hooks.token not in hooks.refused_calls[-1][2]  # reasons end up in logs


async def test_unknown_page_target_is_chromiums_404(proxy: CdpProxy, hooks: LeaseHooks) -> None:
    status, body = await http_request(
        proxy.port, f"/cdp/{CID}/{hooks.token}/devtools/page/NO-SUCH-TARGET", ws_headers()
    )
    assert status == 404 and "refused the WebSocket" in json.loads(body)["message"]
    assert hooks.refused_calls[-1][:2] == (CID, 404) and hooks.attached_calls == []
    assert proxy.open_sockets() == 0


async def test_plain_get_on_the_websocket_route_is_426(proxy: CdpProxy, hooks: LeaseHooks) -> None:
    status, _ = await http_request(proxy.port, f"/cdp/{CID}/{hooks.token}")
    assert status == 426


async def test_unreachable_browser_is_502(nursery: trio.Nursery, hooks: LeaseHooks) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    hooks.upstream = attrs.evolve(hooks.upstream, port=dead_port)
    proxy = await start_proxy(nursery, hooks)
    for rest, headers in (("", ws_headers()), ("/json/version", [])):
        status, body = await http_request(proxy.port, f"/cdp/{CID}/{hooks.token}{rest}", headers)
        assert status == 502 and json.loads(body)["code"] == "browser.unreachable"
    assert proxy.open_sockets() == 0 and hooks.attached_calls == []


async def test_listener_survives_failures(nursery: trio.Nursery, chromium: Endpoint) -> None:
    class Broken(LeaseHooks):
        def authorize(self, connection_id: str, token: str) -> Upstream:
            raise RuntimeError("registry bug")

        def refused(
            self, connection_id: str | None, status: int, reason: str, peer: dict[str, Any]
        ) -> None:
            super().refused(connection_id, status, reason, peer)
            raise RuntimeError("hook bug")

    broken = Broken(chromium)
    proxy = await start_proxy(nursery, broken)
    status, _ = await http_request(proxy.port, f"/cdp/{CID}/{broken.token}/json/version")
    assert status == 500
    with trio.fail_after(10):
        # Garbage instead of HTTP, then a client that leaves mid-request.
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        async with stream:
            await stream.send_all(b"\x16\x03\x01 not http at all\r\n\r\n")
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 400 ")
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        await stream.send_all(b"GET /cdp/x/y HTTP/1.1\r\nHo")
        await stream.aclose()
    status, _ = await http_request(proxy.port, "/nope")
    assert status == 404
    assert [c[1] for c in broken.refused_calls] == [500, 400, 404]


async def test_serve_cancelled_ends_sockets(nursery: trio.Nursery, hooks: LeaseHooks) -> None:
    proxy = CdpProxy(hooks)
    serve_scope = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with serve_scope:
            await proxy.serve(task_status=task_status)

    with trio.fail_after(20):
        await nursery.start(serve)
        async with open_websocket_url(lease_url(proxy, hooks)) as ws:
            await cdp_call(ws, 1, "Browser.getVersion")
            serve_scope.cancel()
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
        await hooks.wait_for(lambda: len(hooks.detached_calls) == 1)
    assert hooks.detached_calls[0][2]["ended_by"] == "proxy_shutdown"
    assert proxy.open_sockets() == 0


PROXY_WITH_FEW_FDS = """
import logging, resource, trio
from browserd.daemon.cdp.http_front import Refused
from browserd.daemon.cdp.proxy import CdpProxy

class Hooks:
    def authorize(self, cid, token): raise Refused(401, "no leases here")
    def attached(self, *args): pass
    def detached(self, *args): pass
    def refused(self, *args): pass
    def command(self, *args): pass
    def browser_close(self, *args): pass
    def download_behavior(self, *args): pass

async def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
    async with trio.open_nursery() as nursery:
        print(await nursery.start(CdpProxy(Hooks()).serve), flush=True)

logging.basicConfig(level=logging.INFO)
trio.run(main)
"""


async def test_accept_loop_survives_running_out_of_file_descriptors() -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", PROXY_WITH_FEW_FDS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        with trio.fail_after(15):
            port = int(await proc.stdout.receive_some(64))
            # More idle connections than the proxy has descriptors: accept() fails with EMFILE.
            clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(80)]
            log = b""
            while b"accept failed (EMFILE)" not in log:
                chunk = await proc.stderr.receive_some(65536)
                assert chunk, log
                log += chunk
            for client in clients:
                await client.aclose()
            status, body = await http_request(port, f"/cdp/{CID}/tok/json/version")
        assert status == 401 and json.loads(body)["message"] == "no leases here"
        assert proc.returncode is None
    finally:
        proc.kill()
        with trio.move_on_after(5):
            await proc.wait()
