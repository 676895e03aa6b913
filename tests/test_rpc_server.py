"""The RPC server with raw sockets and the sans-io wire: hello, errors, isolation, backpressure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from browserd.client import wire
from browserd.daemon.rpc.server import bind_unix_socket
from browserd.daemon.service import Daemon
from browserd.daemon.system.listen_fds import SocketUnusable

HELLO = {"client": {"name": "test", "version": "0"}, "api": {"min": 1, "max": 1}}


class RawClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.wire = wire.Connection()
        self.next_id = 0

    @classmethod
    async def connect(cls, path: Path, hello: bool = True) -> RawClient:
        client = cls(await trio.open_unix_socket(str(path)))
        if hello:
            response = await client.call("hello", HELLO)
            assert response.error is None, response.error
        return client

    async def send(self, method: str, params: dict[str, Any]) -> int:
        self.next_id += 1
        await self.stream.send_all(self.wire.send_request(self.next_id, method, params))
        return self.next_id

    async def receive(self) -> Any:
        with trio.fail_after(10):
            while True:
                event = self.wire.next_event()
                if event is wire.NEED_DATA:
                    self.wire.receive_data(await self.stream.receive_some(65536))
                    continue
                return event

    async def call(self, method: str, params: dict[str, Any]) -> wire.Response:
        msgid = await self.send(method, params)
        event = await self.receive()
        assert isinstance(event, wire.Response) and event.msgid == msgid, event
        return event


async def test_hello_is_required_first(daemon: Daemon) -> None:
    client = await RawClient.connect(daemon.config.socket, hello=False)
    response = await client.call("daemon.status", {})
    assert response.error is not None and response.error["code"] == "rpc.hello_required"
    response = await client.call("hello", HELLO)
    assert response.error is None
    assert response.result["api_level"] == 1
    assert response.result["peer"] == {"pid": os.getpid(), "uid": os.geteuid()}
    assert (await client.call("daemon.status", {})).error is None


async def test_api_mismatch_names_the_supported_range(daemon: Daemon) -> None:
    client = await RawClient.connect(daemon.config.socket, hello=False)
    response = await client.call("hello", {**HELLO, "api": {"min": 7, "max": 9}})
    assert response.error is not None
    assert response.error["code"] == "rpc.api_mismatch"
    assert response.error["data"]["supported"] == {"min": 1, "max": 1}


@pytest.mark.parametrize(
    ("method", "params", "code", "field"),
    [
        ("nope.nothing", {}, "rpc.method_not_found", None),
        ("runtimes.launch", {}, "rpc.invalid_params", "name"),
        ("runtimes.launch", {"name": "bad name!"}, "rpc.invalid_params", "name"),
        ("runtimes.launch", {"name": "ok", "headless": "yes"}, "rpc.invalid_params", "headless"),
        ("runtimes.launch", {"name": "ok", "colour": "red"}, "rpc.invalid_params", "colour"),
        ("runtimes.launch", {"name": "ok", "restart": "always"}, "rpc.invalid_params", "restart"),
        ("runtimes.launch", {"name": "ok", "args": ["--user-data-dir=/x"]},
         "rpc.invalid_params", "args"),
        ("runtimes.get", {"name": "ghost"}, "runtime.not_found", None),
        ("runs.get", {"run_id": "run_nothing"}, "run.not_found", None),
        ("spaces.get", {"name": "nowhere"}, "space.not_found", None),
        ("connections.delete", {"id": 5}, "rpc.invalid_params", "id"),
        ("runs.events.list", {"run_id": "x", "limit": -1}, "rpc.invalid_params", "limit"),
    ],
)
async def test_bad_params_get_stable_codes_and_hints(
    daemon: Daemon, method: str, params: dict[str, Any], code: str, field: str | None
) -> None:
    client = await RawClient.connect(daemon.config.socket)
    response = await client.call(method, params)
    assert response.error is not None
    assert response.error["code"] == code
    assert response.error["message"] and response.error["hint"]
    if field is not None:
        assert response.error["data"]["field"] == field


async def test_invalid_messages_are_answered_and_the_stream_goes_on(daemon: Daemon) -> None:
    client = await RawClient.connect(daemon.config.socket)
    # A well-framed request whose params are not [map]: answered, connection kept.
    await client.stream.send_all(msgpack.packb([0, 77, "daemon.status", "oops"]))
    event = await client.receive()
    assert isinstance(event, wire.Response) and event.msgid == 77
    assert event.error is not None and event.error["code"] == "rpc.invalid_request"
    assert (await client.call("spaces.list", {})).error is None


async def test_garbage_ends_only_that_connection(daemon: Daemon) -> None:
    good = await RawClient.connect(daemon.config.socket)
    bad = await RawClient.connect(daemon.config.socket)
    await bad.stream.send_all(b"\xc1" * 64)  # 0xc1 is never valid msgpack
    event = await bad.receive()
    assert isinstance(event, wire.Notification) and event.method == "rpc.error"
    assert event.payload["error"]["code"] == "rpc.parse_error"
    with trio.fail_after(5):
        assert await bad.stream.receive_some(10) == b""  # the daemon closed it
    response = await good.call("daemon.status", {})
    assert response.error is None
    assert response.result["counts"]["clients"] >= 1


async def test_oversize_frame_is_refused(daemon: Daemon) -> None:
    good = await RawClient.connect(daemon.config.socket)
    bad = await RawClient.connect(daemon.config.socket)
    big = {"name": "x", "metadata": {"b": b"x" * (17 << 20)}}
    huge = msgpack.packb([0, 1, "spaces.create", [big]])
    with trio.move_on_after(10):
        try:
            await bad.stream.send_all(huge)
        except trio.BrokenResourceError:
            pass  # the daemon may close before it has read everything
    event = await bad.receive()
    assert isinstance(event, wire.Notification)
    assert event.payload["error"]["code"] == "rpc.too_large"
    assert (await good.call("spaces.list", {})).error is None


async def test_requests_run_concurrently_and_answer_out_of_order(daemon: Daemon) -> None:
    client = await RawClient.connect(daemon.config.socket)
    # Many pipelined requests in one write: every one answered, each by its own msgid.
    payload = b"".join(client.wire.send_request(i, "spaces.get", {"name": "default"})
                       for i in range(1, 201))
    await client.stream.send_all(payload)
    seen = set()
    while len(seen) < 200:
        event = await client.receive()
        assert isinstance(event, wire.Response) and event.error is None
        seen.add(event.msgid)
    assert seen == set(range(1, 201))


async def test_another_uid_is_forbidden(daemon: Daemon) -> None:
    script = (
        "import os, socket, msgpack\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(os.environ['SOCK'])\n"
        "s.sendall(msgpack.packb([0, 1, 'hello', [{}]]))\n"
        "u = msgpack.Unpacker(); u.feed(s.recv(65536)); print(next(u)[2]['code'])\n"
    )
    # The socket's dir is 0700 root: a foreign uid cannot even reach it. Open it up to prove the
    # peer-credential check is a second, independent gate.
    sock_dir = daemon.config.socket.parent
    os.chmod(sock_dir, 0o755)
    os.chmod(daemon.config.socket, 0o666)
    os.chmod(sock_dir.parent, 0o755)
    result = await trio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "SOCK": str(daemon.config.socket)},
        capture_output=True, text=True, timeout=20))
    assert result.stdout.strip() == "auth.forbidden", result.stderr


async def test_live_daemon_on_the_same_socket_is_refused(daemon: Daemon) -> None:
    with pytest.raises(SocketUnusable, match="already serving"):
        bind_unix_socket(daemon.config.socket)


async def test_socket_and_dir_modes(daemon: Daemon) -> None:
    assert daemon.config.socket.stat().st_mode & 0o777 == 0o600
    assert daemon.config.socket.parent.stat().st_mode & 0o777 == 0o700
    assert daemon.config.state_dir.stat().st_mode & 0o777 == 0o700


async def test_stale_socket_file_is_replaced(short_dir: Path) -> None:
    import socket

    path = short_dir / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens
    sock = bind_unix_socket(path)
    sock.close()
    assert path.exists()
