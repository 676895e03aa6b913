"""`browserctl doctor` against a real daemon and real leftovers: healthy means exit 0 (also
after ordinary stops); a stale SingletonLock, leftover browser processes or an open socket mean
exit 1 with the problem and its fix named."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BIN, DaemonProcess

CHECKS = {"config", "browser", "socket", "daemon", "state dir", "processes", "profiles", "disk"}


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "browserctl"), "doctor", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def headless_daemon(short_dir: Path) -> DaemonProcess:
    (short_dir / "config.toml").write_text(
        '[browser]\nexecutable = "/usr/bin/chromium-headless-shell"\n')
    return DaemonProcess(short_dir)


def test_healthy_daemon(headless_daemon: DaemonProcess) -> None:
    headless_daemon.start()
    try:
        # Ordinary stops leave nothing doctor should fail on (Chromium leaves its
        # DevToolsActivePort on a clean exit; the daemon removes it).
        for name in ("was", "were"):
            headless_daemon.ctl("launch", name, "--profile", name)
            headless_daemon.ctl("stop", name)
            profile = headless_daemon.state_dir / "profiles" / name / "user-data"
            assert not (profile / "DevToolsActivePort").exists()
        headless_daemon.ctl("launch", "fine", "--profile", "fine")
        done = doctor(headless_daemon.env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[-1] == "healthy"
        report = json.loads(doctor(headless_daemon.env, "--json").stdout)
        assert report["healthy"] is True
        assert {c["check"] for c in report["checks"]} == CHECKS
        assert all(c["status"] == "ok" for c in report["checks"]), report
        by_check = {c["check"]: c["message"] for c in report["checks"]}
        assert "chromium-headless-shell" in by_check["browser"]
        assert "mode 0600" in by_check["socket"]
        assert "1 of 3 runtimes active" in by_check["daemon"]
        assert "the daemon's own" in by_check["processes"]  # the live profile is not stale
    finally:
        assert headless_daemon.stop() == 0


def test_stale_singleton_lock(headless_daemon: DaemonProcess) -> None:
    headless_daemon.start()
    try:
        profiles = headless_daemon.state_dir / "profiles"
        locked = profiles / "crashed" / "user-data"
        locked.mkdir(parents=True)
        (locked / "SingletonLock").symlink_to(f"{socket.gethostname()}-{dead_pid()}")
        ported = profiles / "killed" / "user-data"
        ported.mkdir(parents=True)
        (ported / "DevToolsActivePort").write_text("40000\n/devtools/browser/x\n")
        # A lock whose process lives is somebody's, not stale.
        alive = profiles / "busy" / "user-data"
        alive.mkdir(parents=True)
        (alive / "SingletonLock").symlink_to(f"{socket.gethostname()}-{os.getpid()}")
        done = doctor(headless_daemon.env)
        assert done.returncode == 1
        out = done.stdout
        assert f"FAIL  profiles   stale SingletonLock in {locked}" in out
        assert f"rm -f {locked}/SingletonLock {locked}/SingletonSocket" in out
        # A DevToolsActivePort without a browser is harmless (deleted before each launch).
        assert str(ported) not in out
        assert str(alive) not in out
        assert out.splitlines()[-1] == "1 problem(s) found"
        report = json.loads(doctor(headless_daemon.env, "--json").stdout)
        assert report["healthy"] is False
        failed = [c for c in report["checks"] if c["status"] == "fail"]
        assert [c["check"] for c in failed] == ["profiles"]
        assert all(c["fix"].startswith("rm ") for c in failed)
    finally:
        assert headless_daemon.stop() == 0


def test_leftover_browser_processes_without_a_daemon(short_dir: Path) -> None:
    state_dir = short_dir / "state"
    user_data_dir = state_dir / "ephemeral" / "run_left"
    user_data_dir.mkdir(parents=True, mode=0o700)
    os.chmod(state_dir, 0o700)
    # Looks like a browser of this state dir to anyone reading /proc.
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                 f"--user-data-dir={user_data_dir}"])
    env = {**os.environ, "BROWSERD_SOCKET": str(short_dir / "run" / "browserd.sock"),
           "BROWSERD_STATE_DIR": str(state_dir), "BROWSERD_CONFIG": str(short_dir / "c.toml")}
    (short_dir / "c.toml").write_text("")
    try:
        done = doctor(env)
    finally:
        leftover.kill()
        leftover.wait()
    assert done.returncode == 1
    assert f"FAIL  socket     no socket at {short_dir}/run/browserd.sock" in done.stdout
    assert (f"FAIL  processes  1 browser process(es) left by a daemon that is gone: "
            f"{leftover.pid}") in done.stdout
    assert f"kill {leftover.pid}" in done.stdout


def test_socket_open_to_everyone_and_a_bad_config(short_dir: Path) -> None:
    path = short_dir / "open.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        os.chmod(path, 0o666)
        (short_dir / "c.toml").write_text("[browser]\nstop_grace = 5\n")
        env = {**os.environ, "BROWSERD_SOCKET": str(path),
               "BROWSERD_STATE_DIR": str(short_dir / "state"),
               "BROWSERD_CONFIG": str(short_dir / "c.toml")}
        report = json.loads(doctor(env, "--json").stdout)
    found = {(c["check"], c["status"]): c for c in report["checks"]}
    assert "lets every local user connect" in found["socket", "fail"]["message"]
    assert found["socket", "fail"]["fix"].startswith("chmod 600")
    assert "'browser.stop_grace': unknown key" in found["config", "fail"]["message"]
    assert "nothing is listening" in found["daemon", "fail"]["message"]


def test_the_client_imports_no_daemon_dependencies() -> None:
    probe = ("import sys, browserd.client, browserd.client.cli, browserd.client.doctor; "
             "print([m for m in ('trio', 'psutil', 'playwright') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "[]", done.stderr
