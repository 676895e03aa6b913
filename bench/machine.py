"""What the numbers were measured on: the machine and the versions of everything in the path."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import psutil

from .harness import CHROMIUM, HEADLESS_SHELL


def machine() -> dict[str, str]:
    memory_gib = psutil.virtual_memory().total / 2**30
    return {
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical ({psutil.cpu_count(logical=False) or '?'} physical)",
        "memory": f"{memory_gib:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "os": _os_name(),
    }


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "browserd": _dist("browserd"),
        "chromium": _browser_version(CHROMIUM),
        "chromium-headless-shell": _browser_version(HEADLESS_SHELL),
        "playwright": _dist("playwright"),
        "trio": _dist("trio"),
        "trio-websocket": _dist("trio-websocket"),
        "msgpack": _dist("msgpack"),
        "psutil": _dist("psutil"),
        "anyio": _dist("anyio"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip('"')
    except OSError:
        pass
    return "unknown"


def _dist(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _browser_version(executable: str) -> str:
    if not Path(executable).exists():
        return f"not found ({executable})"
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    # Debian's wrapper script may print shell noise on stderr; the version is on stdout.
    return f"{out.strip() or 'unknown'} ({executable})"
