"""The pytest plugin, as a user's test suite meets it: a test file of theirs run by pytest in a
subprocess, with a daemon already running and with none (the plugin then runs its own for the
session and leaves nothing behind)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from .conftest import DaemonProcess

USER_TESTS = '''
def test_page(browserd_page):
    browserd_page.set_content("<title>from the plugin</title><p id=p>hi</p>")
    assert browserd_page.title() == "from the plugin"
    assert browserd_page.inner_text("#p") == "hi"


def test_runtime_and_lease(browserd, browserd_runtime, browserd_cdp_url):
    assert browserd_runtime.status == "active"
    assert browserd_cdp_url.startswith("ws://127.0.0.1:")
    names = [rt.name for rt in browserd.runtimes.list()]
    assert browserd_runtime.name in names


def test_each_test_gets_its_own_runtime(browserd, browserd_runtime):
    assert browserd_runtime.name.startswith("pytest-test_each_test_gets_its_own_runtime-")
'''


def run_user_suite(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_user.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def plugin_leftovers() -> tuple[list[str], list[int]]:
    dirs = sorted(p.name for p in Path("/tmp").glob("browserd-pytest-*"))
    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        if any("browserd-pytest-" in part for part in proc.info["cmdline"] or ()):
            procs.append(proc.pid)
    return dirs, procs


def test_the_plugin_uses_a_running_daemon(daemon_process: DaemonProcess, tmp_path: Path
                                          ) -> None:
    before = plugin_leftovers()
    done = run_user_suite(tmp_path, {**os.environ, "BROWSERD_SOCKET": str(daemon_process.socket)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    # Its runtimes were stopped and deleted; it started no daemon of its own.
    assert daemon_process.ctl("ls").stdout.strip() == "no runtimes"
    assert plugin_leftovers() == before


def test_the_plugin_runs_its_own_daemon_and_leaves_nothing(tmp_path: Path) -> None:
    runtime_dir = tmp_path / "xdg"
    runtime_dir.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "BROWSERD_SOCKET"}
    env["XDG_RUNTIME_DIR"] = str(runtime_dir)  # no daemon answers on the default socket
    before = plugin_leftovers()
    done = run_user_suite(tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    assert plugin_leftovers() == before
