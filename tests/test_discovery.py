"""Browser discovery order, Playwright's layout, wrapper resolution and `--version`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from browserd.daemon.base.errors import ApiError
from browserd.daemon.browser.discovery import (
    ENV_VAR,
    browser_version,
    find_browser,
    playwright_candidates,
    playwright_registry_dir,
    resolve_trivial_wrapper,
)


def executable(path: Path, body: str = "exit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No browser anywhere: empty PATH dir, empty Playwright registry, no $BROWSERD_BROWSER."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "pw"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    return tmp_path


def test_nothing_found_says_how_to_get_a_browser(clean: Path) -> None:
    with pytest.raises(ApiError) as caught:
        find_browser()
    error = caught.value
    assert error.code == "browser.not_found"
    assert "apt-get install chromium" in error.hint
    assert "browser.executable" in error.hint and ENV_VAR in error.hint
    assert error.data["searched"]["playwright"] == str(clean / "pw")


def test_path_order(clean: Path) -> None:
    shell = executable(clean / "bin" / "chromium-headless-shell")
    assert find_browser() == str(shell)
    chrome = executable(clean / "bin" / "google-chrome")
    assert find_browser() == str(shell)
    chromium = executable(clean / "bin" / "chromium")
    assert find_browser() == str(chromium)
    chromium.chmod(0o644)  # not executable: skipped
    assert find_browser() == str(shell)
    shell.unlink()
    assert find_browser() == str(chrome)


def test_playwright_beats_path_newest_full_build_first(clean: Path) -> None:
    executable(clean / "bin" / "chromium")
    pw = clean / "pw"
    shell = executable(pw / "chromium_headless_shell-1300" / "chrome-headless-shell-linux64"
                       / "chrome-headless-shell")
    assert find_browser() == str(shell)
    old = executable(pw / "chromium-1100" / "chrome-linux" / "chrome")
    assert find_browser() == str(old)
    new = executable(pw / "chromium-1255" / "chrome-linux64" / "chrome")
    executable(pw / "chromium-tip-of-tree-1400" / "chrome-linux64" / "chrome")
    assert find_browser() == str(new)
    assert playwright_candidates() == [new, old, shell]


def test_playwright_default_location(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLAYWRIGHT_BROWSERS_PATH")
    monkeypatch.setenv("XDG_CACHE_HOME", str(clean / "cache"))
    assert playwright_registry_dir() == clean / "cache" / "ms-playwright"
    chrome = executable(clean / "cache" / "ms-playwright" / "chromium-1" / "chrome-linux64"
                        / "chrome")
    assert find_browser() == str(chrome)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(clean / "home"))
    assert playwright_registry_dir() == clean / "home" / ".cache" / "ms-playwright"
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", "0")
    assert playwright_registry_dir().parts[-4:] == ("playwright", "driver", "package",
                                                    ".local-browsers")


def test_environment_beats_playwright_and_config_beats_environment(clean: Path,
                                                                    monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    executable(clean / "pw" / "chromium-1" / "chrome-linux64" / "chrome")
    from_env = executable(clean / "env-chrome")
    configured = executable(clean / "bin" / "my-chrome")
    monkeypatch.setenv(ENV_VAR, str(from_env))
    assert find_browser() == str(from_env)
    assert find_browser(str(configured)) == str(configured)
    assert find_browser("my-chrome") == str(configured)  # a bare name is looked up on PATH


def test_a_broken_explicit_choice_is_an_error_not_a_fallback(clean: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    executable(clean / "bin" / "chromium")
    with pytest.raises(ApiError) as caught:
        find_browser(str(clean / "missing"))
    assert caught.value.code == "browser.not_found"
    assert "browser.executable" in caught.value.message
    monkeypatch.setenv(ENV_VAR, str(clean / "bin"))  # a directory
    with pytest.raises(ApiError) as caught:
        find_browser()
    assert ENV_VAR in caught.value.message


def test_pass_through_wrappers_resolve_to_their_binary(clean: Path) -> None:
    real = executable(clean / "lib" / "chromium-headless-shell")
    plain = executable(clean / "a", f'\n{real} "$@"\n')
    assert resolve_trivial_wrapper(str(plain)) == str(real)
    exec_form = executable(clean / "b", f'# comment\nexec {real} "$@"\n')
    assert resolve_trivial_wrapper(str(exec_form)) == str(real)
    with_flags = executable(clean / "c", f'{real} --flag "$@"\n')
    assert resolve_trivial_wrapper(str(with_flags)) == str(with_flags)
    with_env = executable(clean / "d", f'export X=1\n{real} "$@"\n')
    assert resolve_trivial_wrapper(str(with_env)) == str(with_env)
    dangling = executable(clean / "e", f'{clean}/nothing "$@"\n')
    assert resolve_trivial_wrapper(str(dangling)) == str(dangling)
    (clean / "bin" / "chromium-headless-shell").symlink_to(plain)
    assert find_browser() == str(real)


def test_this_machine() -> None:
    """The Debian packages here: the headless-shell wrapper resolves, chromium's does not."""
    assert resolve_trivial_wrapper("/usr/bin/chromium-headless-shell") == (
        "/usr/lib/chromium/chromium-headless-shell"
    )
    assert resolve_trivial_wrapper("/usr/bin/chromium") == "/usr/bin/chromium"


@pytest.mark.parametrize("exe", ["/usr/bin/chromium", "/usr/lib/chromium/chromium-headless-shell"])
async def test_browser_version(exe: str) -> None:
    with trio.fail_after(30):
        version = await browser_version(exe)
    assert version.startswith("Chromium ")


async def test_browser_version_failures(tmp_path: Path) -> None:
    failing = executable(tmp_path / "failing", "echo broken >&2\nexit 2\n")
    with trio.fail_after(10), pytest.raises(ApiError) as caught:
        await browser_version(str(failing))
    assert caught.value.data["exit_code"] == 2
    assert caught.value.data["stderr_tail"] == ["broken"]

    hanging = executable(tmp_path / "hanging", "sleep 600 &\nwait\n")
    with trio.fail_after(10), pytest.raises(ApiError) as caught:
        await browser_version(str(hanging), timeout_s=0.5)
    assert "did not answer" in caught.value.message

    with trio.fail_after(10), pytest.raises(ApiError):
        await browser_version(str(tmp_path / "missing"))


def test_real_discovery_finds_the_installed_chromium(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    found = find_browser()
    assert os.access(found, os.X_OK)
