"""Who may do what: socket peers by uid and group, file modes, CDP lease tokens and headers, and
file paths that try to leave a runtime's file area.

Tests run as root and switch to `nobody` (65534) in child processes; the allowed-group test
creates a temporary group with groupadd and removes it afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from browserd.client import AsyncClient, errors
from browserd.daemon.service import Daemon, serve

from ..conftest import make_config
from .harness import HEADLESS_SHELL, REPORT, CdpSocket, assert_no_orphans, http_get

NOBODY = 65534

# Runs as root until it drops to nobody (imports first: the venv need not be readable by nobody).
_PEER_SCRIPT = """
import json, os, socket, sys
import msgpack
groups, gid = json.loads(os.environ["GROUPS_JSON"]), int(os.environ["PRIMARY_GID"])
os.setgroups(groups); os.setgid(gid); os.setuid(65534)
try:
    s = socket.socket(socket.AF_UNIX); s.connect(os.environ["SOCK"])
except PermissionError:
    print(json.dumps({"connect": "EACCES"})); sys.exit()
frames = [msgpack.packb([0, 1, "hello", [{}]])]
for msgid, method, params in json.loads(os.environ["CALLS"]):
    frames.append(msgpack.packb([0, msgid, method, [params]]))
s.sendall(b"".join(frames))
u = msgpack.Unpacker(); out = {}
want = 1 + len(json.loads(os.environ["CALLS"]))
s.settimeout(60)
while len(out) < want:
    data = s.recv(65536)
    if not data:
        break
    u.feed(data)
    for msg in u:
        if msg[0] == 1:
            out[msg[1]] = msg[2]["code"] if msg[2] else msg[3]
print(json.dumps({"connect": "ok", "answers": out}))
"""


def as_nobody(socket_path: Path, *, groups: Sequence[int] = (), gid: int = NOBODY,
              calls: Sequence[tuple[int, str, dict[str, Any]]] = ()) -> dict[str, Any]:
    """Connect as uid nobody (with these groups), hello, make `calls`; what came back."""
    env = {**os.environ, "SOCK": str(socket_path), "GROUPS_JSON": json.dumps(list(groups)),
           "PRIMARY_GID": str(gid), "CALLS": json.dumps(list(calls))}
    result = subprocess.run([sys.executable, "-c", _PEER_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    answer["answers"] = {int(k): v for k, v in answer.get("answers", {}).items()}
    return answer


@pytest.fixture
def temp_group() -> Iterator[tuple[str, int]]:
    name = f"bdtest{secrets.token_hex(3)}"
    subprocess.run(["groupadd", name], check=True, capture_output=True)
    try:
        import grp

        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], check=False, capture_output=True)


@pytest.fixture
async def shell_daemon(short_dir: Path) -> AsyncIterator[Daemon]:
    config = make_config(short_dir, executable=HEADLESS_SHELL)
    async with trio.open_nursery() as nursery:
        running: Daemon = await nursery.start(serve, config)
        yield running
        running.stop()
    assert_no_orphans(config.state_dir)


# ------------------------------------------------------------------------------ the socket


async def test_allowed_group_lets_a_member_in_and_nobody_else(
        short_dir: Path, temp_group: tuple[str, int]) -> None:
    name, gid = temp_group
    config = attrs.evolve(make_config(short_dir, executable=HEADLESS_SHELL), allowed_group=name)
    os.chmod(short_dir, 0o711)  # nobody may traverse to the socket dir; its own mode decides
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve, config)
        sock = config.socket
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660 and sock.stat().st_gid == gid
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o750
        assert sock.parent.stat().st_gid == gid
        assert stat.S_IMODE(config.state_dir.stat().st_mode) == 0o700, "state stays private"

        calls = [(2, "daemon.status", {}), (3, "spaces.create", {"name": "grp"})]
        member = await trio.to_thread.run_sync(
            lambda: as_nobody(sock, groups=[gid], calls=calls))
        assert member["connect"] == "ok"
        assert member["answers"][1]["peer"]["uid"] == NOBODY, member
        assert member["answers"][2]["pid"] == os.getpid()
        assert member["answers"][3]["name"] == "grp"

        primary = await trio.to_thread.run_sync(lambda: as_nobody(sock, gid=gid, calls=calls))
        assert primary["answers"][1]["peer"]["uid"] == NOBODY, "a primary-group member too"

        outsider = await trio.to_thread.run_sync(lambda: as_nobody(sock, calls=calls))
        assert outsider == {"connect": "EACCES", "answers": {}}, "file modes are the first gate"
        # Open the modes up: SO_PEERCRED is a second, independent gate.
        os.chmod(sock.parent, 0o755)
        os.chmod(sock, 0o666)
        outsider = await trio.to_thread.run_sync(lambda: as_nobody(sock, calls=calls))
        assert outsider["answers"] == {1: "auth.forbidden"}, outsider
        async with AsyncClient(sock) as bd:
            spaces = [space.name for space in await bd.spaces.list()]
            assert spaces.count("grp") == 1
        daemon.stop()
    REPORT.bad_inputs["foreign peers"] += 2


async def test_a_foreign_uid_is_refused_before_anything_runs(shell_daemon: Daemon) -> None:
    sock = shell_daemon.config.socket
    os.chmod(sock.parent.parent, 0o711)
    os.chmod(sock.parent, 0o755)
    os.chmod(sock, 0o666)
    calls = [(2, "runtimes.launch", {"name": "intruder"}), (3, "spaces.create", {"name": "x"})]
    outsider = await trio.to_thread.run_sync(lambda: as_nobody(sock, calls=calls))
    # Only the first request is answered, then the connection ends: nothing else ran.
    assert outsider["answers"] == {1: "auth.forbidden"}, outsider
    assert not shell_daemon.registry.runtimes
    assert "x" not in shell_daemon.registry.spaces
    REPORT.bad_inputs["foreign peers"] += 1


async def test_state_files_are_private(shell_daemon: Daemon) -> None:
    async with AsyncClient(shell_daemon.config.socket) as bd:
        runtime = await bd.runtimes.browser.launch(name="modes", profile="modes")
        await runtime.connections.create(ttl_s=60)
        await runtime.stop()
    state = shell_daemon.config.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    checked = 0
    for path in state.rglob("*"):
        if path.is_symlink() or "user-data" in path.parts:
            continue  # Chromium's own files live in the 0700 profile dir
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert not mode & 0o002, f"{path} is world-writable ({oct(mode)})"
        if path.is_file():
            assert not mode & 0o077, f"{path} is readable by others ({oct(mode)})"
            checked += 1
    assert checked >= 4
    for profile_dir in state.glob("profiles/*/user-data"):
        assert stat.S_IMODE(profile_dir.stat().st_mode) == 0o700


# ------------------------------------------------------------------------------ CDP leases


async def test_cdp_refuses_bad_tokens_expired_revoked_origins_and_hosts(
        shell_daemon: Daemon) -> None:
    async with AsyncClient(shell_daemon.config.socket) as bd:
        runtime = await bd.runtimes.browser.launch(name="guarded")
        good = await runtime.connections.create(ttl_s=600)
        short = await runtime.connections.create(ttl_s=1)
        revoked = await runtime.connections.create(ttl_s=600)
        assert good.endpoint and short.endpoint and revoked.endpoint
        url = good.endpoint.http_url + "/json/version"
        token = url.split("/")[5]
        cases: list[tuple[str, str, dict[str, Any], int]] = [
            ("good", url, {}, 200),
            ("wrong token", url.replace(token, token[:-2] + "xx"), {}, 401),
            ("short token", url.replace(token, token[:10]), {}, 401),
            ("other lease's token", url.replace(token, short.endpoint.url.split("/")[5]), {},
             401),
            ("unknown lease", url.replace(good.id, "conn_00000000000000000000000000"), {}, 401),
            ("origin", url, {"Origin": "http://evil.example"}, 403),
            ("null origin", url, {"Origin": "null"}, 403),
            ("foreign host", url, {"Host": "evil.example"}, 403),
            ("rebinding host", url, {"Host": "localhost.evil.example:80"}, 403),
            ("no host", url, {"Host": None}, 400),
        ]
        for name, target, headers, expected in cases:
            status, body = await trio.to_thread.run_sync(http_get, target, headers)
            assert status == expected, (name, status, body[:200])
        revoked_http = revoked.endpoint.http_url
        open_socket = await trio.to_thread.run_sync(CdpSocket, revoked.endpoint.url)
        try:
            await bd.call("connections.delete", {"id": revoked.id})
            status, _ = await trio.to_thread.run_sync(http_get, revoked_http + "/json/version")
            assert status == 410, "a revoked lease admits nobody new"
            # ...while a socket already open stays until force (docs/api.md, the model).
            answer = await trio.to_thread.run_sync(open_socket.call, "Browser.getVersion")
            assert answer["result"]["product"]
            await bd.call("connections.delete", {"id": revoked.id, "force": True})
            with pytest.raises(OSError):
                await trio.to_thread.run_sync(open_socket.call, "Browser.getVersion")
        finally:
            open_socket.sock.close()
        await trio.sleep(1.2)
        short_http = short.endpoint.http_url + "/json/version"
        status, _ = await trio.to_thread.run_sync(http_get, short_http)
        assert status == 410, "an expired lease admits nobody"
        with pytest.raises(ConnectionRefusedError):
            await trio.to_thread.run_sync(CdpSocket, good.endpoint.url.replace(token, "A" * 43))
        run = await runtime.current_run()
        events = [e async for e in _events(bd, run.id)]
        refused = [e["data"]["status"] for e in events if e["type"] == "connection.refused"]
        assert 403 in refused and 410 in refused
        attached = [e for e in events if e["type"] == "connection.attached"]
        assert len(attached) == 1, "only the revoked lease's one good socket ever attached"
        await runtime.stop()  # returns once the ephemeral profile's files are gone too
    # The token is a secret: never written anywhere in the state dir.
    for path in shell_daemon.config.state_dir.rglob("*"):
        if path.is_file() and "user-data" not in path.parts:
            assert token.encode() not in path.read_bytes(), f"token stored in {path}"
    REPORT.bad_inputs["cdp refusals"] += len(cases) + 3


_ORIGIN_GET = """
import encodings.idna, os, socket, sys  # imports first: the venv need not be readable by nobody
if os.environ.get("AS_NOBODY"):
    os.setgid(65534); os.setuid(65534)
host, port = os.environ["ORIGIN"].rsplit("/", 1)[1].split(":")
with socket.create_connection((host, int(port)), timeout=30) as s:
    s.sendall(f"GET /json/version HTTP/1.1\\r\\nHost: {host}:{port}\\r\\n\\r\\n".encode())
    reply = b""
    while chunk := s.recv(65536):
        reply += chunk
print(reply.split(b" ", 2)[1].decode())
"""


async def test_a_lease_origin_answers_only_the_leases_uid(shell_daemon: Daemon) -> None:
    """The browser_url port is no secret: the owner of the client's socket is checked."""
    async with AsyncClient(shell_daemon.config.socket) as bd:
        runtime = await bd.runtimes.browser.launch(name="origin")
        lease = await runtime.connections.create(ttl_s=600)
        assert lease.endpoint is not None and lease.endpoint.browser_url

        def get(as_nobody: bool) -> int:
            env = {**os.environ, "ORIGIN": lease.endpoint.browser_url if lease.endpoint else "",
                   **({"AS_NOBODY": "1"} if as_nobody else {})}
            done = subprocess.run([sys.executable, "-c", _ORIGIN_GET], env=env, text=True,
                                  capture_output=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return int(done.stdout)

        assert await trio.to_thread.run_sync(get, False) == 200
        assert await trio.to_thread.run_sync(get, True) == 403
        await runtime.stop()
    REPORT.bad_inputs["foreign peers"] += 1


async def _events(bd: AsyncClient, run_id: str) -> AsyncIterator[dict[str, Any]]:
    result = await bd.call("runs.events.list", {"run_id": run_id})
    for event in result["data"]:
        yield event


async def test_leases_do_not_cross_runtimes(shell_daemon: Daemon) -> None:
    async with AsyncClient(shell_daemon.config.socket) as bd:
        one = await bd.runtimes.browser.launch(name="one")
        two = await bd.runtimes.browser.launch(name="two")
        lease_one = await one.connections.create(ttl_s=60)
        lease_two = await two.connections.create(ttl_s=60)
        assert lease_one.endpoint and lease_two.endpoint
        one_http = lease_one.endpoint.http_url
        # One lease's id with the other's token: refused.
        token_two = lease_two.endpoint.url.rsplit("/", 1)[1]
        mixed = lease_one.endpoint.http_url.rsplit("/", 1)[0] + "/" + token_two + "/json/version"
        status, _ = await trio.to_thread.run_sync(lambda: http_get(mixed))
        assert status == 401
        # A lease outlives nothing: once its runtime stops, it admits nobody.
        await one.stop()
        status, _ = await trio.to_thread.run_sync(http_get, one_http + "/json/version")
        assert status == 410
        await two.stop()


# ------------------------------------------------------------------------------ file areas


ESCAPES = ["../escape", "/etc/passwd", "a/../../escape", "..", ".", "", "a/\0b", "x" * 300,
           "./../escape", "a/" * 600 + "f", "link/escape", "in/secret-link"]


async def test_file_paths_cannot_leave_the_runtime_area(shell_daemon: Daemon) -> None:
    # files.* arrived with teammate C's work (issue 6); this test covers it now that it exists.
    async with AsyncClient(shell_daemon.config.socket) as bd:
        runtime = await bd.runtimes.browser.launch(name="files")
        ok = await bd.call("files.stage", {"name": "files", "path": "in/ok.txt", "data": b"ok"})
        assert ok["path"] == "in/ok.txt"
        area = shell_daemon.config.state_dir / "runtimes" / runtime.id / "files"
        outside = shell_daemon.config.state_dir.parent / "outside"
        outside.mkdir()
        (outside / "secret").write_text("secret")
        (area / "link").symlink_to(outside)  # a symlink planted inside the area
        (area / "in" / "secret-link").symlink_to(outside / "secret")
        refused = 0
        for path in ESCAPES:
            for method, params in (
                ("files.stage", {"path": path, "data": b"x"}),
                ("files.collect", {"path": path}),
                ("files.list", {"path": path}),
            ):
                if method == "files.list" and path in (".", ""):
                    continue  # the area itself
                if method == "files.stage" and path == "in/secret-link":
                    continue  # replaces the link itself, inside the area (checked below)
                try:
                    result = await bd.call(method, {"name": "files", **params})
                except errors.BrowserdError as exc:
                    assert exc.code == "runtime_file.path_invalid", (method, path, exc)
                    assert exc.hint
                else:
                    raise AssertionError(f"{method} {path!r} was served: {result}")
                refused += 1
        # Staging over a planted symlink replaces the link, never what it points at.
        await bd.call("files.stage", {"name": "files", "path": "in/secret-link", "data": b"y"})
        assert not (area / "in" / "secret-link").is_symlink()
        assert sorted(p.name for p in outside.iterdir()) == ["secret"], "nothing written outside"
        assert (outside / "secret").read_text() == "secret"
        await runtime.stop()
    REPORT.bad_inputs["file paths"] += refused
