"""The unit files in systemd/: clean under `systemd-analyze verify`, and saying what the daemon
relies on (notify, watchdog, kill mode, directories, socket modes)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from browserd.client.paths import default_socket_path
from browserd.daemon.base.config import BrowserConfig

from .conftest import BIN, REPO

UNITS = REPO / "systemd"
ANALYZE = shutil.which("systemd-analyze")


def directives(path: Path) -> dict[str, list[str]]:
    """`Key=value` lines that are in force (comments are not), by key."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("scope", ["user", "system"])
def test_units_verify_without_a_word(scope: str, tmp_path: Path) -> None:
    assert ANALYZE is not None
    copies = []
    for unit in sorted((UNITS / scope).iterdir()):
        copy = tmp_path / unit.name
        # verify insists that ExecStart= is executable: point it at this checkout's daemon.
        copy.write_text(re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={BIN / 'browserd'}",
                               unit.read_text()))
        copies.append(str(copy))
    assert [Path(c).name for c in copies] == ["browserd.service", "browserd.socket"]
    runtime_dir = tmp_path / "xdg-runtime"
    runtime_dir.mkdir(mode=0o700)
    argv = [ANALYZE, "verify", "--man=no", *(["--user"] if scope == "user" else []), *copies]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)})
    # verify exits 0 on unknown keys and bad values: only silence means a clean unit.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize("scope", ["user", "system"])
def test_service_says_what_the_daemon_relies_on(scope: str) -> None:
    service = directives(UNITS / scope / "browserd.service")
    assert service["Type"] == ["notify"]
    assert seconds(service["WatchdogSec"][0]) >= 10
    assert service["Restart"] == ["on-failure"]
    assert service["KillMode"] == ["mixed"]
    # Above the daemon's own bound on shutdown (service.serve: stop_grace_s + 20 s).
    assert seconds(service["TimeoutStopSec"][0]) > BrowserConfig().stop_grace_s + 20
    assert service["RuntimeDirectory"] == ["browserd"]
    assert service["RuntimeDirectoryPreserve"] == ["yes"]  # the socket unit's path lives there
    assert service["ExecStart"][0].endswith("/browserd")
    for chromium_breaker in ("MemoryDenyWriteExecute", "RestrictNamespaces"):
        assert chromium_breaker not in service
        assert chromium_breaker in (UNITS / scope / "browserd.service").read_text()  # explained
    if scope == "system":
        assert service["StateDirectory"] == ["browserd"]
        assert service["User"] == ["browserd"]
        assert service["Environment"] == ["BROWSERD_ALLOWED_GROUP=browserd"]


def test_sockets_are_where_clients_look_with_the_right_modes() -> None:
    user = directives(UNITS / "user" / "browserd.socket")
    assert user["ListenStream"] == ["%t/browserd/browserd.sock"]
    # %t is $XDG_RUNTIME_DIR: the client's default path, so no client needs BROWSERD_SOCKET.
    expanded = user["ListenStream"][0].replace("%t", "/run/user/1000")
    assert Path(expanded) == default_socket_path(environ={"XDG_RUNTIME_DIR": "/run/user/1000"})
    assert user["SocketMode"] == ["0600"]
    system = directives(UNITS / "system" / "browserd.socket")
    assert system["ListenStream"] == ["/run/browserd/browserd.sock"]
    assert (system["SocketMode"], system["SocketGroup"]) == (["0660"], ["browserd"])
    for unit in (user, system):
        assert unit["FileDescriptorName"] == ["rpc"]
        assert unit["Accept"] == ["no"]
