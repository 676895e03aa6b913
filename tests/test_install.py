"""browserd as a user installs it: the wheel built from this checkout, installed into a fresh
venv outside the checkout, its `browserd` started from elsewhere, and the tour run against it
(launch, lease, Playwright attach, stop).

`make test` installs the checkout in editable mode, which hides a package the wheel leaves
out (it once shipped without browserd/daemon/methods/: the installed daemon could not start).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from .conftest import REPO, serve_pages, socket_accepts

PAGE = b"<!doctype html><title>installed</title><h1 id=greeting>from the wheel</h1>"


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv (outside the checkout) with the wheel of this checkout installed."""
    base = tmp_path_factory.mktemp("installed")
    wheels = base / "wheels"
    # No build isolation: the checkout's venv has setuptools, and CI need not fetch it again.
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(REPO)])
    (wheel,) = wheels.glob("browserd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("daemon", "daemon/rpc/methods", "daemon/core", "client", "client/_sync"):
        assert f"browserd/{package}/__init__.py" in names, f"the wheel lacks {package}"
    venv = base / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], cwd=base)
    yield venv


def test_the_installed_commands_answer(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    bin_dir = installed / "bin"
    for argv in ([bin_dir / "browserd", "--version"], [bin_dir / "browserctl", "--version"],
                 [bin_dir / "python", "-m", "browserd.client", "--version"],
                 [bin_dir / "python", "-m", "browserd.daemon", "--version"]):
        assert run([str(a) for a in argv], cwd=tmp_path, env=env).stdout.startswith("browser")
    # Playwright is an extra: the daemon never imports it.
    pip_list = run([str(bin_dir / "pip"), "list"], cwd=tmp_path, env=env).stdout
    assert "playwright" not in pip_list.lower()
    units = tmp_path / "units"
    run([str(bin_dir / "browserd"), "install-units", "--user", "--dir", str(units)],
        cwd=tmp_path, env=env)
    service = (units / "browserd.service").read_text()
    assert f"\nExecStart={bin_dir / 'browserd'}\n" in service
    assert (units / "browserd.socket").is_file()


def test_tour_against_the_installed_daemon(installed: Path, short_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(BROWSERD_SOCKET=str(short_dir / "run" / "b.sock"),
               BROWSERD_STATE_DIR=str(short_dir / "state"),
               BROWSERD_CONFIG=str(short_dir / "config.toml"))
    (short_dir / "config.toml").write_text("")
    bin_dir = installed / "bin"
    log = open(short_dir / "daemon.log", "wb")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen([str(bin_dir / "browserd")], cwd=short_dir, env=env,
                              stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not socket_accepts(short_dir / "run" / "b.sock"):
            assert daemon.poll() is None, (short_dir / "daemon.log").read_text()
            assert time.monotonic() < deadline, "the installed daemon did not bind"
            time.sleep(0.05)

        def ctl(*args: str) -> str:
            return run([str(bin_dir / "browserctl"), *args], cwd=short_dir, env=env).stdout

        ctl("launch", "crm", "--profile", "crm-bot")
        url = ctl("connect", "crm").strip()
        assert url.startswith("ws://127.0.0.1:")
        with serve_pages({"/": ("text/html", PAGE)}) as base, sync_playwright() as pw:
            browser = pw.chromium.connect_over_cdp(url, timeout=20_000)
            page = browser.contexts[0].new_page()
            page.goto(base + "/")
            assert page.inner_text("#greeting") == "from the wheel"
            browser.close()
        # The installed Python client, from outside the checkout.
        script = ("from browserd.client import Client\n"
                  "with Client() as bd:\n"
                  "    rt = bd.runtimes.get('crm')\n"
                  "    print(rt.status, len(rt.current_run().events.list()))\n"
                  "    rt.stop()\n")
        status, events = run([str(bin_dir / "python"), "-c", script], cwd=short_dir,
                             env=env).stdout.split()
        assert status == "active" and int(events) > 2
        assert "stopped" in ctl("ls")
    finally:
        daemon.terminate()
        assert daemon.wait(40) == 0, (short_dir / "daemon.log").read_text()
        log.close()


def test_the_pytest_plugin_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    """A user's suite in the fresh venv (pytest added, no Playwright): the plugin's fixtures,
    with a daemon of the plugin's own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "BROWSERD_SOCKET")}
    (tmp_path / "xdg").mkdir(mode=0o700)
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "xdg")
    run([str(installed / "bin" / "pip"), "install", "-q", "pytest"], cwd=tmp_path, env=env)
    (tmp_path / "test_mine.py").write_text(
        "def test_mine(browserd, browserd_runtime, browserd_cdp_url):\n"
        "    assert browserd_runtime.status == 'active'\n"
        "    assert browserd_cdp_url.startswith('ws://127.0.0.1:')\n")
    done = subprocess.run([str(installed / "bin" / "python"), "-m", "pytest", "-q",
                           "-p", "no:cacheprovider", "test_mine.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
