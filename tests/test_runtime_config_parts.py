"""The runtime config's parts without a daemon: parsing and its field names, the switches of
each build, the block patterns, the relay's request heads, and the relay on real sockets."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import trio

from browserd.daemon.base.errors import ApiError
from browserd.daemon.base.runtime_config import (
    ParsedConfig,
    ProxyConfig,
    ProxyCredentials,
    RuntimeConfig,
    parse_runtime_config,
    timezone_problem,
)
from browserd.daemon.browser.proxy_relay import ProxyRelay, parse_request_head
from browserd.daemon.browser.runtime_switches import HEADLESS_UI_HEIGHT, runtime_switches
from browserd.daemon.services.network_rules import fetch_patterns
from browserd.daemon.system.fd_budget import Pool

SHELL = "/usr/lib/chromium/chromium-headless-shell"
FULL = "/usr/lib/chromium/chromium"


def test_parse_round_trips_and_keeps_credentials_apart() -> None:
    parsed = parse_runtime_config({
        "proxy": {"server": "socks5://proxy.example:1080", "username": "u", "password": "p",
                  "bypass": ["*.internal"]},
        "viewport": {"width": 1280, "height": 720},
        "locale": "de-DE", "timezone": "Europe/Berlin", "user_agent": "x/1",
        "block": {"resource_types": ["Image", "image", "font"]}, "browser": "headless-shell",
    })
    assert parsed.credentials == ProxyCredentials("u", "p")
    shown = parsed.config.to_json()
    assert shown["proxy"] == {"server": "socks5://proxy.example:1080",
                              "bypass": ["*.internal"], "auth": True}
    assert repr(parsed.credentials) == "ProxyCredentials()"  # never in a log line
    assert shown["block"]["resource_types"] == ["image", "font"]
    assert RuntimeConfig.from_json(shown) == parsed.config


def test_update_changes_only_the_keys_given() -> None:
    base = parse_runtime_config({"locale": "fr-FR", "timezone": "Europe/Paris",
                                 "proxy": {"server": "http://p:3128", "username": "u",
                                           "password": "pw"}})
    changed = parse_runtime_config({"locale": None, "user_agent": "ua"}, base=base)
    assert changed.config.locale is None
    assert changed.config.timezone == "Europe/Paris"
    assert changed.credentials == ProxyCredentials("u", "pw")
    cleared = parse_runtime_config({"proxy": None}, base=changed)
    assert cleared.config.proxy is None and cleared.credentials is None
    assert isinstance(cleared, ParsedConfig)


@pytest.mark.parametrize(("raw", "field"), [
    ({"proxy": {"server": "https://p:1"}}, "config.proxy.server"),
    ({"proxy": {"server": "http://p:1", "colour": 1}}, "config.proxy.colour"),
    ({"proxy": {"server": "http://p:1", "username": "a:b", "password": "x"}},
     "config.proxy.username"),
    ({"proxy": {"server": "http://p:1", "bypass": ["a, b"]}}, "config.proxy.bypass[0]"),
    ({"viewport": {"width": 0, "height": 1}}, "config.viewport.width"),
    ({"viewport": {"width": 10, "height": 10, "device_scale_factor": 0}},
     "config.viewport.device_scale_factor"),
    ({"viewport": {"width": True, "height": 10}}, "config.viewport.width"),
    ({"user_agent": "a\nb"}, "config.user_agent"),
    ({"timezone": "Europe/../Asia/Tokyo"}, "config.timezone"),
    ({"extensions": "/x"}, "config.extensions"),
    ({"block": {"url_patterns": [1]}}, "config.block.url_patterns[0]"),
])
def test_each_bad_value_names_its_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_runtime_config(raw)
    assert refused.value.code == "rpc.invalid_params"
    assert refused.value.data["field"] == field


def test_timezone_names_never_leave_zoneinfo(tmp_path: Path) -> None:
    zoneinfo = tmp_path / "zoneinfo"
    (zoneinfo / "Europe").mkdir(parents=True)
    (zoneinfo / "Europe" / "Berlin").write_bytes(b"TZif2" + b"\0" * 40)
    (zoneinfo / "NotAZone").write_bytes(b"hello")
    secret = tmp_path / "secret"
    secret.write_bytes(b"TZif-looking but outside")
    os.symlink(secret, zoneinfo / "Escape")
    assert timezone_problem("Europe/Berlin", str(zoneinfo)) is None
    assert timezone_problem("Escape", str(zoneinfo)) is not None
    assert timezone_problem("NotAZone", str(zoneinfo)) == "not a time zone"
    for name in ("../secret", "/etc/localtime", "Europe/./Berlin", "Europe//Berlin", "a b"):
        assert timezone_problem(name, str(zoneinfo)) is not None, name
    assert timezone_problem("Asia/Tokyo") is None  # the machine's own


def test_switches_per_build() -> None:
    config = parse_runtime_config({
        "proxy": {"server": "http://p:1", "bypass": ["*.a", "b.c"]},
        "viewport": {"width": 800, "height": 600, "device_scale_factor": 1.5},
        "locale": "pt-BR", "timezone": "America/Sao_Paulo", "user_agent": "ua/1",
    }).config
    args, env = runtime_switches(config, executable=SHELL, headless=True, relay_port=4321)
    assert args == ["--proxy-server=http://127.0.0.1:4321", "--proxy-bypass-list=*.a;b.c",
                    "--window-size=800,600", "--force-device-scale-factor=1.5",
                    "--user-agent=ua/1", "--accept-lang=pt-BR,pt"]
    assert env == {"TZ": "America/Sao_Paulo"}
    full, _ = runtime_switches(config, executable=FULL, headless=True, relay_port=4321)
    assert f"--window-size=800,{600 + HEADLESS_UI_HEIGHT}" in full
    headful, _ = runtime_switches(config, executable=FULL, headless=False, relay_port=4321)
    assert "--window-size=800,600" in headful


def test_extensions_need_the_full_build(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    config = parse_runtime_config({"extensions": [str(tmp_path)]}).config
    with pytest.raises(ApiError) as refused:
        runtime_switches(config, executable=SHELL, headless=True, relay_port=None)
    assert refused.value.data["reason"] == "extensions_unsupported"
    args, _ = runtime_switches(config, executable=FULL, headless=True, relay_port=None)
    assert f"--load-extension={tmp_path}" in args
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ApiError) as missing:
        runtime_switches(config, executable=FULL, headless=True, relay_port=None)
    assert missing.value.data["reason"] == "extension_missing"


def test_block_patterns_pause_only_what_they_block() -> None:
    rules = parse_runtime_config({"block": {"resource_types": ["image", "xhr"],
                                            "url_patterns": ["*://ads.*/*"]}}).config.block
    assert fetch_patterns(rules) == [
        {"urlPattern": "*", "resourceType": "Image", "requestStage": "Request"},
        {"urlPattern": "*", "resourceType": "XHR", "requestStage": "Request"},
        {"urlPattern": "*://ads.*/*", "requestStage": "Request"},
    ]


def test_request_heads() -> None:
    head = parse_request_head(b"GET http://a.test:8080/p?q=1 HTTP/1.1\r\nHost: a.test:8080\r\n"
                              b"Proxy-Connection: keep-alive\r\nAccept: */*")
    assert head.authority() == ("a.test", 8080)
    sent = head.encode(origin_form=True, extra=[(b"X-Extra", b"1")])
    assert sent.startswith(b"GET /p?q=1 HTTP/1.1\r\n")
    assert b"Proxy-Connection" not in sent and sent.endswith(b"Connection: close\r\n\r\n")
    connect = parse_request_head(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: x")
    assert connect.authority() == ("::1", 443)
    for bad in (b"GET / HTTP/1.1", b"GET http://a/ HTTP/2", b"nonsense", b"CONNECT a HTTP/1.1"):
        with pytest.raises(ValueError):
            parse_request_head(bad).authority()


async def _upstream_that_wants(expected: bytes, seen: list[bytes],
                               task_status: trio.TaskStatus[int]) -> None:
    """An HTTP proxy on real sockets: 407 unless Proxy-Authorization is `expected`."""
    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        seen.append(data)
        ok = b"Proxy-Authorization: " + expected in data
        body = b"proxied"
        await stream.send_all((b"HTTP/1.1 200 OK\r\n" if ok else b"HTTP/1.1 407 No\r\n")
                              + b"Content-Length: 7\r\n\r\n" + body)
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def _fetch_through(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(4096):
            data += chunk
    return data


async def test_relay_adds_credentials_and_reports_a_refusal(nursery: trio.Nursery) -> None:
    seen: list[bytes] = []
    basic = b"Basic " + base64.b64encode(b"u:p")
    upstream_port = await nursery.start(_upstream_that_wants, basic, seen)
    server = f"http://127.0.0.1:{upstream_port}"
    good = ProxyRelay(ProxyConfig(server, (), True), ProxyCredentials("u", "p"))
    await nursery.start(good.serve)
    with trio.fail_after(10):
        answer = await _fetch_through(good.port, b"GET http://x.test/ HTTP/1.1\r\nHost: x.test"
                                                 b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"proxied")
    assert b"Proxy-Authorization: " + basic in seen[-1]
    wrong = ProxyRelay(ProxyConfig(server, (), True), ProxyCredentials("u", "nope"))
    await nursery.start(wrong.serve)
    with trio.fail_after(10):
        answer = await _fetch_through(wrong.port, b"CONNECT x.test:443 HTTP/1.1\r\n"
                                                  b"Host: x.test:443\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 502")
    assert b"refused the credentials" in answer and b"nope" not in answer
    assert wrong.refused == 1
    with trio.fail_after(10):
        answer = await _fetch_through(good.port, b"BREW coffee\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    nursery.cancel_scope.cancel()


async def _tunnelling_upstream(seen: list[bytes], task_status: trio.TaskStatus[int]) -> None:
    """An HTTP proxy that accepts any CONNECT, then echoes what comes through upper-cased."""
    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        seen.append(data)
        await stream.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        while chunk := await stream.receive_some(4096):
            await stream.send_all(chunk.upper())
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_relay_tunnels_connect_with_credentials(nursery: trio.Nursery) -> None:
    seen: list[bytes] = []
    port = await nursery.start(_tunnelling_upstream, seen)
    relay = ProxyRelay(ProxyConfig(f"http://127.0.0.1:{port}", (), True),
                       ProxyCredentials("u", "p"))
    await nursery.start(relay.serve)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", relay.port)
        async with stream:
            await stream.send_all(b"CONNECT secure.test:443 HTTP/1.1\r\nHost: secure.test:443"
                                  b"\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some(4096)
            assert answer.startswith(b"HTTP/1.1 200")
            await stream.send_all(b"tls bytes")
            echoed = b""
            while len(echoed) < 9:
                echoed += await stream.receive_some(4096)
            assert echoed == b"TLS BYTES"
    assert seen[0].startswith(b"CONNECT secure.test:443 HTTP/1.1\r\n")
    assert b"Proxy-Authorization: Basic " + base64.b64encode(b"u:p") in seen[0]
    nursery.cancel_scope.cancel()


async def _open_tunnel(port: int) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += await stream.receive_some(4096)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return stream


async def test_relays_share_the_daemons_budget_of_connections(nursery: trio.Nursery) -> None:
    """Each relayed connection holds two descriptors: the relays of every runtime draw on one
    pool (fd_budget.py), and past it a browser's new connection gets a 503 at once while the
    tunnels already open go on."""
    port = await nursery.start(_tunnelling_upstream, [])
    pool = Pool("relay_connections", 2)
    upstream = ProxyConfig(f"http://127.0.0.1:{port}", (), True)
    first, second = ProxyRelay(upstream, None, pool), ProxyRelay(upstream, None, pool)
    await nursery.start(first.serve)
    await nursery.start(second.serve)
    with trio.fail_after(10):
        one = await _open_tunnel(first.port)
        two = await _open_tunnel(second.port)
        answer = await _fetch_through(first.port, b"CONNECT b.test:443 HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503") and b"limit" in answer, answer
        assert pool.turned_away == 1
        await two.send_all(b"still")
        echoed = b""
        while len(echoed) < 5:
            echoed += await two.receive_some(4096)
        assert echoed == b"STILL"  # the tunnels already open never noticed
        await one.aclose()
        while pool.in_use > 1:  # noqa: ASYNC110 (the relay sees the close, gives the slot back)
            await trio.sleep(0.01)
        three = await _open_tunnel(second.port)
        await three.aclose()
        await two.aclose()
    nursery.cancel_scope.cancel()
