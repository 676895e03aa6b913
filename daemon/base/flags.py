"""The Chromium command line: the flags the daemon gives every browser, and the switches a
caller's `args` (or `browser.args` in the config) may not set.

Chromium reads a switch from any argument that starts with `--` or `-` (`-user-data-dir=/x`
is `--user-data-dir=/x`), and when a switch is given twice the last one wins; the caller's
args come after ours. So a reserved switch is recognised whatever its dashes and case, not
only in its `--name` spelling.
"""

from __future__ import annotations

__all__ = [
    "COMMON_FLAGS",
    "HEADLESS_FLAGS",
    "RESERVED_SWITCHES",
    "START_PAGE",
    "reserved_switch",
]

# Supervision and the endpoint's security depend on these: the profile directory the daemon
# holds, the debugging port it reads and proxies on loopback, and no web origin reaching that
# port directly.
RESERVED_SWITCHES = frozenset({
    "user-data-dir",
    "remote-debugging-port",
    "remote-debugging-address",
    "remote-debugging-pipe",
    "remote-debugging-io-pipes",
    "remote-allow-origins",
})

COMMON_FLAGS = (
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--disable-hang-monitor",
    "--disable-ipc-flooding-protection",
    "--disable-popup-blocking",
    "--disable-prompt-on-repost",
    "--disable-search-engine-choice-screen",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--disable-dev-shm-usage",
    "--metrics-recording-only",
    "--password-store=basic",
    "--hide-crash-restore-bubble",
)
HEADLESS_FLAGS = ("--headless", "--hide-scrollbars", "--mute-audio")
START_PAGE = "about:blank"


def reserved_switch(arg: str) -> str | None:
    """The reserved switch `arg` would set (as `--name`), or None."""
    if not arg.startswith("-"):
        return None
    name = arg.lstrip("-").partition("=")[0].strip().lower()
    return f"--{name}" if name in RESERVED_SWITCHES else None
