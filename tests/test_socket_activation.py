"""The daemon behind a socket it did not bind: started by systemd-socket-activate on the first
client call, serving a real client, and leaving the socket to its owner; and the socket the
daemon binds itself for a system service's group."""

from __future__ import annotations

import grp
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from browserd.daemon.rpc.server import bind_unix_socket

from .conftest import BIN, assert_no_processes, processes_using

ACTIVATE = shutil.which("systemd-socket-activate")


def _program(pid: int) -> str:
    return os.path.basename(os.readlink(f"/proc/{pid}/exe"))


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed")
def test_first_call_starts_the_daemon_through_the_socket(short_dir: Path) -> None:
    assert ACTIVATE is not None
    run_dir, state_dir = short_dir / "run", short_dir / "state"
    run_dir.mkdir(mode=0o700)
    sock = run_dir / "browserd.sock"
    config = short_dir / "config.toml"
    config.write_text('[browser]\nexecutable = "/usr/bin/chromium-headless-shell"\n')
    log = short_dir / "daemon.log"
    with open(log, "wb") as out:
        # As a socket unit would: the daemon's environment names no socket at all.
        proc = subprocess.Popen(
            [ACTIVATE, "-l", str(sock), "--fdname=rpc",
             "-E", f"BROWSERD_STATE_DIR={state_dir}", "-E", f"BROWSERD_CONFIG={config}",
             "-E", f"XDG_RUNTIME_DIR={short_dir / 'elsewhere'}", "-E", "PATH",
             str(BIN / "browserd")],
            stdout=out, stderr=out)
    env = {**os.environ, "BROWSERD_SOCKET": str(sock)}

    def ctl(*args: str) -> dict[str, object]:
        done = subprocess.run([str(BIN / "browserctl"), "--json", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{done.stderr}\n{log.read_text()}"
        result: dict[str, object] = json.loads(done.stdout)
        return result

    try:
        deadline = time.monotonic() + 10
        while "Listening on" not in log.read_text():  # printed once it listens, not at bind
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        assert _program(proc.pid) == "systemd-socket-activate"  # no daemon runs yet

        status = ctl("status")  # the first call: the daemon starts and answers it
        assert status["pid"] == proc.pid and _program(proc.pid).startswith("python")
        assert status["socket"] == str(sock)  # the activated socket, not a default path
        runtime = ctl("launch", "activated")
        assert runtime["status"] == "active"
        browsers = processes_using(state_dir)
        assert browsers
        for browser in browsers:
            environ = Path(f"/proc/{browser.pid}/environ").read_bytes()
            assert b"LISTEN_" not in environ
        stopped = ctl("stop", "activated")
        assert stopped["stopped"] is True
        assert_no_processes(state_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=40)
    assert code == 0, log.read_text()
    assert "socket activation: serving fd 3 (rpc)" in log.read_text()
    assert sock.is_socket()  # systemd's path: the daemon never unlinks an activated socket


async def test_bound_socket_admits_the_allowed_group(short_dir: Path) -> None:
    other = next((g for g in grp.getgrall() if g.gr_gid != os.getgid()), None)
    if other is None or os.geteuid() != 0:
        pytest.skip("needs root and a second group to hand the socket to")
    path = short_dir / "svc" / "browserd.sock"
    listener = bind_unix_socket(path, other.gr_gid)
    try:
        st, parent = path.stat(), path.parent.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, other.gr_gid)
        assert (stat.S_IMODE(parent.st_mode), parent.st_gid) == (0o750, other.gr_gid)
    finally:
        listener.close()
    plain = bind_unix_socket(short_dir / "own" / "browserd.sock")
    try:
        assert stat.S_IMODE((short_dir / "own" / "browserd.sock").stat().st_mode) == 0o600
        assert stat.S_IMODE((short_dir / "own").stat().st_mode) == 0o700
    finally:
        plain.close()
