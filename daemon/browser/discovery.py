"""Which browser executable the daemon runs (docs/configuration.md, browser.executable).

Order: config `browser.executable` > `$BROWSERD_BROWSER` > the Chromium that Playwright
installed (`$PLAYWRIGHT_BROWSERS_PATH`, else `$XDG_CACHE_HOME/ms-playwright` or
`~/.cache/ms-playwright`) > chromium / chromium-headless-shell / google-chrome on PATH.
An explicit choice (config or environment) that does not work is an error, never a silent
fallback to another browser.

A shell wrapper that only passes its arguments on to one binary (Debian's
/usr/bin/chromium-headless-shell is `/usr/lib/chromium/chromium-headless-shell "$@"`,
without exec) is replaced by that binary: otherwise the supervisor's main process is the
shell, and the parent-death signal set on it would not reach the browser.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
from pathlib import Path

import trio

from ..base.errors import ApiError

__all__ = [
    "ENV_VAR",
    "PATH_NAMES",
    "browser_version",
    "find_browser",
    "playwright_candidates",
    "playwright_registry_dir",
    "resolve_trivial_wrapper",
]

ENV_VAR = "BROWSERD_BROWSER"
PATH_NAMES = ("chromium", "chromium-headless-shell", "google-chrome", "google-chrome-stable")

# Playwright's layout: <registry>/<name>-<revision>/<platform dir>/<executable>; the platform
# dirs changed over the years (chrome-linux -> chrome-linux64), so every known one is tried.
_PLAYWRIGHT_BUILDS = (
    ("chromium", ("chrome-linux64/chrome", "chrome-linux-arm64/chrome", "chrome-linux/chrome")),
    ("chromium_headless_shell", (
        "chrome-headless-shell-linux64/chrome-headless-shell",
        "chrome-headless-shell-linux-arm64/chrome-headless-shell",
        "chrome-linux/headless_shell",
    )),
)

NOT_FOUND_HINT = (
    "Install Chromium with `apt-get install chromium` (Debian/Ubuntu), or Playwright's with "
    "`pip install 'browserd[playwright]'` then `python -m playwright install chromium`, "
    "or set browser.executable in the config "
    f"(or ${ENV_VAR}) to the path of a Chromium or Chrome executable."
)


def find_browser(configured: str | None = None) -> str:
    """The absolute path of the browser to run; raises ApiError("browser.not_found")."""
    if configured:
        return resolve_trivial_wrapper(_require(configured, "browser.executable in the config"))
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return resolve_trivial_wrapper(_require(from_env, f"${ENV_VAR}"))
    for candidate in playwright_candidates():
        if _is_executable(candidate):
            return str(candidate)
    for name in PATH_NAMES:
        found = shutil.which(name)
        if found:
            return resolve_trivial_wrapper(os.path.abspath(found))
    raise ApiError(
        "browser.not_found",
        "No Chromium-based browser was found.",
        hint=NOT_FOUND_HINT,
        data={"searched": {
            "playwright": str(playwright_registry_dir()),
            "path": list(PATH_NAMES),
        }},
    )


def _require(value: str, source: str) -> str:
    path = shutil.which(value) if os.sep not in value else value
    if path is not None and _is_executable(Path(path)):
        return os.path.abspath(path)
    raise ApiError(
        "browser.not_found",
        f"The browser {value!r} named by {source} is not an executable file.",
        hint=f"Fix or remove {source}; without it the daemon looks for Playwright's Chromium "
        f"and then for chromium on PATH. {NOT_FOUND_HINT}",
        data={"executable": value, "source": source},
    )


_PASS_THROUGH = re.compile(r'(?:exec\s+)?(?P<target>/[^\s"\'$;&|<>`]+)\s+"\$@"')


def resolve_trivial_wrapper(executable: str) -> str:
    """The binary a pass-through shell wrapper runs, or `executable` itself.

    Only a script whose single command is `[exec] /absolute/path "$@"` is resolved; any
    wrapper that sets variables or flags is kept as it is.
    """
    try:
        with open(executable, "rb") as f:
            head = f.read(4097)
    except OSError:
        return executable
    if not head.startswith(b"#!") or len(head) > 4096:
        return executable
    lines = head.decode(errors="replace").splitlines()
    if not re.fullmatch(r"#!\s*/(usr/)?bin/(env\s+)?(ba|da)?sh(\s+-e)?\s*", lines[0]):
        return executable
    commands = [line.strip() for line in lines[1:]]
    commands = [line for line in commands if line and not line.startswith("#")]
    if len(commands) != 1:
        return executable
    match = _PASS_THROUGH.fullmatch(commands[0])
    if match is None or not _is_executable(Path(match["target"])):
        return executable
    return match["target"]


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def playwright_registry_dir() -> Path:
    """Where Playwright installs browsers, by Playwright's own rules."""
    configured = os.environ.get("PLAYWRIGHT_BROWSERS_PATH")
    if configured == "0":  # "inside the package"
        spec = importlib.util.find_spec("playwright")
        package = Path(spec.origin).parent if spec and spec.origin else Path()
        return package / "driver" / "package" / ".local-browsers"
    if configured:
        return Path(configured).absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ms-playwright"


def playwright_candidates() -> list[Path]:
    """Playwright's Chromium executables, full builds before headless shells, newest first."""
    registry = playwright_registry_dir()
    try:
        entries = list(registry.iterdir())
    except OSError:
        return []
    found: list[Path] = []
    for name, executables in _PLAYWRIGHT_BUILDS:
        builds = []
        for entry in entries:
            match = re.fullmatch(rf"{name}-(\d+)", entry.name)
            if match:
                builds.append((int(match[1]), entry))
        for _, build in sorted(builds, reverse=True):
            found.extend(build / exe for exe in executables if (build / exe).exists())
    return found


async def browser_version(executable: str, *, timeout_s: float = 10.0) -> str:
    """What `<executable> --version` prints, e.g. "Chromium 156.0.8078.108 ...".

    Raises ApiError("browser.launch_failed") when it cannot run, fails or hangs.
    """
    def failed(message: str, **data: object) -> ApiError:
        return ApiError(
            "browser.launch_failed", message,
            hint="Check the executable by running it with --version by hand.",
            data={"executable": executable, **data},
        )

    try:
        with trio.fail_after(timeout_s):
            result = await trio.run_process(
                [executable, "--version"], capture_stdout=True, capture_stderr=True,
                check=False, stdin=b"", start_new_session=True, deliver_cancel=_kill_group,
            )
    except trio.TooSlowError:
        raise failed(f"{executable} --version did not answer within {timeout_s:g} s.") from None
    except OSError as exc:
        raise failed(f"Could not run {executable}: {exc.strerror or exc}.") from exc
    lines = [line.strip() for line in result.stdout.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    if result.returncode != 0 or not lines:
        stderr = result.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise failed(f"{executable} --version failed (exit code {result.returncode}).",
                     exit_code=result.returncode, stderr_tail=stderr)
    return lines[-1]


async def _kill_group(process: trio.Process) -> None:
    """A wrapper script's children share its output pipes: take the whole group down."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
