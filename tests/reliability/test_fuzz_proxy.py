"""Fuzzing the CDP proxy's HTTP front: garbage heads, huge headers, bad upgrade requests.

A real runtime with a real lease sits behind the proxy, and a CDP WebSocket stays open through
the whole run. Whatever the fuzzer sends, the proxy must answer with an HTTP error or close —
never 101 or 200 to a request without the lease's token, a loopback Host and no Origin — and
the real lease must keep working: the open WebSocket answers, new attaches and /json succeed.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from browserd.client import Client

from .harness import (
    REPORT,
    CdpSocket,
    Daemon,
    assert_no_orphans,
    check_run_logs,
    exchange,
    fuzz_settings,
    status_of,
)


@attrs.frozen
class Target:
    daemon: Daemon
    port: int
    cid: str
    token: str
    url: str
    live: CdpSocket  # open all along

    @property
    def path(self) -> str:
        return f"/cdp/{self.cid}/{self.token}"


@pytest.fixture(scope="module")
def proxy_target() -> Iterator[Target]:
    base = Path(tempfile.mkdtemp(prefix="bd-fp-", dir="/tmp"))
    daemon = Daemon(base)
    daemon.start()
    try:
        with Client(daemon.socket) as bd:
            runtime = bd.runtimes.browser.launch(name="fuzzed")
            conn = runtime.connections.create(ttl_s=3600, label="fuzz")
            assert conn.endpoint is not None
            url = conn.endpoint.url
            cid, token = url.rsplit("/", 2)[1:]
            port = int(url.split(":")[2].split("/")[0])
            with CdpSocket(url) as live:
                assert "product" in live.call("Browser.getVersion")["result"]
                yield Target(daemon, port, cid, token, url, live)
                assert "product" in live.call("Browser.getVersion")["result"]
            # The lease still attaches after everything the fuzzer sent.
            with CdpSocket(url) as again:
                assert again.call("Target.getTargets")["result"]["targetInfos"]
            run = runtime.stop()
            assert run is not None and run.status == "ended"
        assert daemon.alive()
        assert daemon.tracebacks() == [], daemon.tracebacks()[0]
        REPORT.events_checked += check_run_logs(daemon.state_dir).events
        assert daemon.stop() == 0
        assert_no_orphans(daemon.state_dir)
    finally:
        if daemon.alive():
            daemon.kill()
        shutil.rmtree(base, ignore_errors=True)


def check_lease_works(target: Target) -> None:
    reply = exchange(target.port, (
        f"GET {target.path}/json/version HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n"
        "Connection: close\r\n\r\n").encode())
    assert status_of(reply) == 200, reply[:300]
    body = reply.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body)["webSocketDebuggerUrl"].startswith(f"ws://127.0.0.1:{target.port}/")
    assert "product" in target.live.call("Browser.getVersion")["result"]


# ------------------------------------------------------------------------------ strategies

_header_names = st.sampled_from([
    "Host", "Origin", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", "Content-Length", "Transfer-Encoding",
    "X-Forwarded-For", "Cookie",
]) | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
             max_size=30)
_header_values = st.sampled_from([
    "127.0.0.1", "localhost:1", "[::1]", "evil.example", "127.0.0.1.nip.io", "127.0.0.1:99999",
    "http://evil.example", "null", "websocket", "Upgrade", "keep-alive, Upgrade", "13", "8",
    "dGhlIHNhbXBsZSBub25jZQ==", "not-a-key", "permessage-deflate", "chunked", "-1", "999999999",
    "0",
]) | st.text(max_size=60) | st.builds(lambda n: "x" * n, st.integers(1000, 40_000))


@st.composite
def request_heads(draw: st.DrawFn, target: Target) -> tuple[bytes, bool]:
    """(bytes of an HTTP request, whether it carries the lease's real token)."""
    method = draw(st.sampled_from(["GET", "GET", "POST", "PUT", "OPTIONS", "CONNECT", "G\0T"])
                  | st.text(max_size=8))
    real = draw(st.booleans())
    token = target.token if real else draw(st.sampled_from([
        target.token[:-1] + ("A" if target.token[-1] != "A" else "B"), "", "x" * 43,
        target.token + "x"]) | st.text(max_size=50))
    cid = target.cid if draw(st.booleans()) else draw(st.text(max_size=30))
    suffix = draw(st.sampled_from(["", "/", "/json/version", "/json", "/json/list",
                                   "/devtools/page/XYZ", "/devtools/browser/x", "/../../etc"])
                  | st.text(max_size=40))
    path = draw(st.sampled_from([f"/cdp/{cid}/{token}{suffix}", f"/cdp/{cid}/{token}{suffix}",
                                 "*", "/", "http://evil.example/", "/" + "a" * 20_000])
                | st.text(max_size=100))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/9.9",
                                    ""]))
    headers = draw(st.lists(st.tuples(_header_names, _header_values), max_size=12))
    if draw(st.booleans()):
        headers.insert(0, ("Host", f"127.0.0.1:{target.port}"))
    if draw(st.booleans()):
        headers += [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Version", draw(st.sampled_from(["13", "8", ""]))),
                    ("Sec-WebSocket-Key", draw(st.sampled_from(
                        ["dGhlIHNhbXBsZSBub25jZQ==", "short", ""])))]
    if draw(st.integers(0, 20)) == 0:
        headers += [(f"X-{i}", "y" * 100) for i in range(draw(st.integers(100, 2000)))]
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    body = draw(st.binary(max_size=100))
    data = (head + "\r\n").encode("utf-8", "surrogateescape") + body
    return data, real and cid == target.cid and path.startswith(f"/cdp/{cid}/{token}")


def _authorized(data: bytes, target: Target) -> bool:
    """Whether the proxy may grant this request: the real token, a loopback Host, no Origin."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
    hosts = [line.split(":", 1)[1].strip() for line in head[1:]
             if line.lower().startswith("host:")]
    origins = [line for line in head[1:] if line.lower().startswith("origin:")]
    return (len(hosts) == 1 and hosts[0].split(":")[0] in ("127.0.0.1", "localhost", "[")
            and not origins)


# ------------------------------------------------------------------------------ the fuzzers


@pytest.fixture
def target(proxy_target: Target) -> Target:
    return proxy_target


@fuzz_settings(250)
@given(data=st.data())
def test_generated_requests(target: Target, data: st.DataObject) -> None:
    raw, real = data.draw(request_heads(target))
    reply = exchange(target.port, raw)
    status = status_of(reply)
    if status in (101, 200):
        assert real and _authorized(raw, target), f"granted without a lease: {raw[:300]!r}"
    else:
        assert status is None or status >= 400, reply[:300]
    REPORT.bad_inputs["cdp http requests"] += 1
    if REPORT.bad_inputs["cdp http requests"] % 25 == 0:
        check_lease_works(target)


@fuzz_settings(250)
@given(raw=st.binary(min_size=1, max_size=400))
def test_garbage_bytes(target: Target, raw: bytes) -> None:
    status = status_of(exchange(target.port, raw))
    assert status is None or status >= 400
    REPORT.bad_inputs["cdp http requests"] += 1


def test_hostile_heads_and_the_lease_survives(target: Target) -> None:
    good = f"GET {target.path} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n"
    ws = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    cases: dict[str, tuple[str, set[int | None]]] = {
        # A head that arrives whole is parsed even past h11's 16 KiB bound for incomplete ones.
        "huge header": (good + "X-Big: " + "a" * 64_000 + "\r\n\r\n", {431, 400, 426, None}),
        "many headers": (good + "X: y\r\n" * 5000 + "\r\n", {431, 400, 426, None}),
        "huge header, slowly": (good + "X-Big: " + "a" * 300_000 + "\r\n\r\n", {431, 400, None}),
        "huge target": ("GET /cdp/" + "a" * 100_000 + " HTTP/1.1\r\n\r\n", {431, 400, None}),
        "no host": (f"GET {target.path} HTTP/1.1\r\n{ws}\r\n", {400, 403}),
        "two hosts": (good + f"Host: 127.0.0.1:{target.port}\r\n{ws}\r\n", {400, 403}),
        "foreign host": (f"GET {target.path} HTTP/1.1\r\nHost: evil.example\r\n{ws}\r\n", {403}),
        "rebinding": (f"GET {target.path} HTTP/1.1\r\nHost: 127.0.0.1.nip.io\r\n{ws}\r\n",
                      {403}),
        "origin": (good + "Origin: http://evil.example\r\n" + ws + "\r\n", {403}),
        "bad key": (good + ws.replace("dGhlIHNhbXBsZSBub25jZQ==", "short") + "\r\n", {400}),
        "old version": (good + ws.replace(": 13", ": 8") + "\r\n", {400}),
        "no upgrade": (good + "\r\n", {426}),
        "post": (good.replace("GET", "POST") + "Content-Length: 5\r\n\r\nhello", {405}),
        "chunked garbage": (good + "Transfer-Encoding: chunked\r\n\r\nzz\r\n", {400}),
        "body too large": (good.replace("GET", "POST") + "Content-Length: 100000\r\n\r\n"
                           + "a" * 100_000, {413, 405, None}),
        "http/1.0": (good.replace("1.1", "1.0") + ws + "\r\n", {400, 426, 101}),
        "bad token": (good.replace(target.token, "A" * 43) + ws + "\r\n", {401}),
        "unknown lease": (good.replace(target.cid, "conn_nope") + ws + "\r\n", {401}),
        "traversal": (good.replace(target.path, target.path + "/../../json") + "\r\n", {404}),
    }
    for name, (text, allowed) in cases.items():
        reply = exchange(target.port, text.encode())
        assert status_of(reply) in allowed, (name, reply[:300])
        REPORT.bad_inputs["cdp http requests"] += 1
    # Slow clients: many half-open connections that never finish their head, at once.
    idle = [socket.create_connection(("127.0.0.1", target.port)) for _ in range(50)]
    for sock in idle:
        sock.sendall(b"GET /cdp/")
    check_lease_works(target)
    with CdpSocket(target.url) as extra:
        assert extra.call("Browser.getVersion")["result"]
    for sock in idle:
        sock.close()
    REPORT.bad_inputs["cdp http requests"] += 50


def test_bad_frames_after_a_real_upgrade(target: Target) -> None:
    """Garbage after an accepted handshake ends that socket only."""
    for junk in (b"\xff" * 64, b"\x81\xff" + b"\x7f" * 8, b"\x88\x80\x00\x00\x00\x00" * 3,
                 b"\x01\x80abcd", b"\x81\x7e\xff"):
        sock = CdpSocket(target.url)
        sock.sock.sendall(junk)
        sock.sock.close()
        REPORT.bad_inputs["cdp frames"] += 1
    check_lease_works(target)
