"""A runtime's config (base/runtime_config.py) as the browser's command line and environment.

Everything here is fixed at the browser's start and applies to every page of every browser
context, with no CDP at all, so a client never meets it: what it sets with its own means
(Playwright's context options, page.route) applies on top, as on any Chromium. What
Chromium 156 honours (measured with /usr/bin/chromium and chromium-headless-shell):

- `--accept-lang=de-DE,de` sets both `navigator.language(s)` and Accept-Language in both
  builds; `--lang` changes neither in headless mode.
- `TZ=Asia/Tokyo` in the environment sets `Intl.DateTimeFormat().resolvedOptions().timeZone`.
- `--user-agent` sets `navigator.userAgent` and the User-Agent header.
- `--window-size=W,H` is the page's viewport in headless-shell; the full build's headless
  window keeps `HEADLESS_UI_HEIGHT` px of it for its (invisible) tab strip and toolbar, so the
  daemon asks for that much more. Run as root (with `--no-sandbox`), the full build also puts
  a 56 px warning bar over the first tab only; `--test-type` is what keeps it away, so it is
  added with a viewport in that case. `--force-device-scale-factor` sets `devicePixelRatio`.
- `--load-extension` loads unpacked extensions in the full build only; headless-shell has no
  extension system, so the daemon refuses that combination before starting anything.
- `--proxy-server` points at the run's loopback relay (proxy_relay.py), which holds the
  credentials; `--proxy-bypass-list` takes the bypass patterns.
"""

from __future__ import annotations

import os
import shutil

from ..base.errors import ApiError
from ..base.runtime_config import RuntimeConfig, extension_problem
from .discovery import resolve_trivial_wrapper

__all__ = [
    "CONFIG_SWITCHES",
    "HEADLESS_UI_HEIGHT",
    "browser_for",
    "is_headless_shell",
    "runtime_switches",
]

HEADLESS_UI_HEIGHT = 87  # the full build's headless tab strip and toolbar, CSS px at any scale

# The switches each config key produces: a raw `args` entry setting one of them while the key
# is set is refused at launch (two sources for one thing; the last would silently win).
CONFIG_SWITCHES = {
    "proxy": ("proxy-server", "proxy-bypass-list", "proxy-pac-url", "no-proxy-server"),
    "viewport": ("window-size", "force-device-scale-factor"),
    "user_agent": ("user-agent",),
    "locale": ("accept-lang", "lang"),
    "extensions": ("load-extension", "disable-extensions-except", "disable-extensions"),
}

_BUILD_NAMES = {
    "chromium": ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"),
    "headless-shell": ("chromium-headless-shell", "chrome-headless-shell", "headless_shell"),
}


def is_headless_shell(executable: str) -> bool:
    name = os.path.basename(executable)
    return "headless-shell" in name or "headless_shell" in name


def browser_for(choice: str | None, default: str) -> str:
    """The executable for a runtime's `browser` choice (None: the daemon's default)."""
    if choice is None:
        return default
    if os.path.isabs(choice):
        if not (os.path.isfile(choice) and os.access(choice, os.X_OK)):
            raise ApiError("browser.not_found",
                           f"The browser {choice} named by the runtime's config.browser is not "
                           "an executable file.",
                           hint="Update the runtime's config.browser (runtimes.update).",
                           data={"executable": choice, "source": "config.browser"})
        return resolve_trivial_wrapper(choice)
    if (choice == "headless-shell") == is_headless_shell(default):
        return default
    for name in _BUILD_NAMES[choice]:
        found = shutil.which(name)
        if found:
            return resolve_trivial_wrapper(os.path.abspath(found))
    raise ApiError("browser.not_found", f"No {choice} build was found on PATH.",
                   hint="Install it (`apt-get install chromium chromium-headless-shell`), or "
                        "give config.browser as an absolute path.",
                   data={"browser": choice, "searched": list(_BUILD_NAMES[choice])})


def runtime_switches(config: RuntimeConfig, *, executable: str, headless: bool,
                     relay_port: int | None) -> tuple[list[str], dict[str, str]]:
    """(switches, environment additions) for a browser of this config. Raises
    ApiError("browser.launch_failed") for what the build cannot do."""
    args: list[str] = []
    env: dict[str, str] = {}
    if config.proxy is not None:
        if relay_port is not None:
            args.append(f"--proxy-server=http://127.0.0.1:{relay_port}")
        else:
            args.append(f"--proxy-server={config.proxy.server}")
        # Chromium bypasses loopback on its own; the user's patterns come on top.
        if config.proxy.bypass:
            args.append(f"--proxy-bypass-list={';'.join(config.proxy.bypass)}")
    if config.viewport is not None:
        height = config.viewport.height
        if headless and not is_headless_shell(executable):
            height += HEADLESS_UI_HEIGHT
            if os.geteuid() == 0:
                args.append("--test-type")
        args.append(f"--window-size={config.viewport.width},{height}")
        if config.viewport.device_scale_factor is not None:
            args.append(f"--force-device-scale-factor={config.viewport.device_scale_factor:g}")
    if config.user_agent is not None:
        args.append(f"--user-agent={config.user_agent}")
    if config.locale is not None:
        language = config.locale.split("-")[0]
        accept = config.locale if language == config.locale else f"{config.locale},{language}"
        args.append(f"--accept-lang={accept}")
    if config.timezone is not None:
        env["TZ"] = config.timezone
    if config.extensions:
        if is_headless_shell(executable):
            raise ApiError(
                "browser.launch_failed",
                f"{executable} is a headless shell, which cannot load extensions.",
                hint="Use the full build for this runtime (config.browser = \"chromium\") or "
                     "remove config.extensions.",
                data={"reason": "extensions_unsupported", "field": "config.extensions",
                      "executable": executable, "exit_code": None, "signal": None,
                      "stderr_tail": [], "pid": None},
            )
        for path in config.extensions:
            if (problem := extension_problem(path)) is not None:
                raise ApiError(
                    "browser.launch_failed", f"config.extensions: {problem}.",
                    hint="Put the unpacked extension back, or update config.extensions.",
                    data={"reason": "extension_missing", "field": "config.extensions",
                          "path": path, "exit_code": None, "signal": None,
                          "stderr_tail": [], "pid": None},
                )
        joined = ",".join(config.extensions)
        args += [f"--disable-extensions-except={joined}", f"--load-extension={joined}"]
    return args, env
