"""`browserd install-units`: write the systemd units shipped in the package, pointing at this
installation.

The units (package data `browserd.systemd`, from the repository's systemd/) name a usual
location in `ExecStart=` (`~/.local/bin/browserd`, `/opt/browserd/bin/browserd`); the copy
written here names the `browserd` that runs this command instead, so a venv or pipx install
works as it is. Nothing is enabled or started: the command prints what it wrote and what to run
next. An existing unit that differs is left alone unless `--force`.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

__all__ = ["exec_start", "install", "target_dir"]

UNITS = ("browserd.service", "browserd.socket")
_EXEC_START = re.compile(r"(?m)^ExecStart=.*$")


def exec_start() -> str:
    """The command that starts this installation's daemon."""
    script = Path(sys.argv[0])
    if script.name == "browserd" and script.is_file():
        return str(script.resolve())
    beside = Path(sys.executable).parent / "browserd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return f"{sys.executable} -m browserd.daemon"


def target_dir(scope: str) -> Path:
    if scope == "system":
        return Path("/etc/systemd/system")
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def shipped(scope: str, name: str) -> Path:
    """The unit file as the package ships it. (`browserd.systemd` is a namespace package of
    data only; importlib.resources cannot read one that an editable install maps.)"""
    import browserd.systemd

    for base in browserd.systemd.__path__:
        path = Path(base) / scope / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"the package holds no {scope}/{name}: a broken installation")


def render(scope: str, name: str, command: str) -> str:
    text = shipped(scope, name).read_text()
    return _EXEC_START.sub(lambda _: f"ExecStart={command}", text)


def install(scope: str, directory: Path | None = None, *, force: bool = False,
            dry_run: bool = False) -> int:
    """Write the units of `scope` ("user" or "system"); returns the exit status."""
    directory = directory or target_dir(scope)
    command = exec_start()
    planned = {directory / name: render(scope, name, command) for name in UNITS}
    clashes = [path for path, text in planned.items()
               if path.exists() and path.read_text() != text]
    if clashes and not force:
        for path in clashes:
            print(f"browserd: {path} exists and differs; not replaced (use --force)",
                  file=sys.stderr)
        return 1
    for path, text in planned.items():
        if dry_run:
            print(f"would write {path}")
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as exc:
            print(f"browserd: cannot write {path}: {exc.strerror or exc}"
                  + (" (the system units need root)" if scope == "system" else ""),
                  file=sys.stderr)
            return 1
        print(f"wrote {path}")
    print(f"ExecStart={command}")
    manager = "systemctl --user" if scope == "user" else "sudo systemctl"
    print(f"next: {manager} daemon-reload && {manager} enable --now browserd.socket")
    return 0
