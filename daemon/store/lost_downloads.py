"""What a dead daemon's downloads leave behind, found and cleared when the next daemon
reconciles the run (reconcile.py).

A download is in flight between its `download` `started` event and its `finished` or `failed`
one. A daemon killed meanwhile takes its browser with it (or the reconcile kills it), so the
download can never end: the run's log would keep it started for good, and Chromium's partial
file (`<guid>.crdownload` under `allowAndName`) would stay in the run's staging folder. The
reconcile records each such download as failed (`reason: "daemon_lost"`) and empties the
staging folder.

Only the run's own staging folder is cleared. A download that went to a folder a client set
(Playwright sets its own) left its partial file there, and that folder is the client's: its
download is recorded as failed all the same, its file is left alone. The staging folder is
reached from the run's directory one component at a time with O_NOFOLLOW, and its entries are
removed through its descriptor, so a symbolic link on the way or inside is never followed out
of the run's directory: a link is removed as a link.

Plain blocking functions (they read a whole log and remove files): call them from a worker
thread.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from .eventlog import iter_events

__all__ = ["STAGING_DIR", "clear_staging", "unfinished_downloads"]

log = logging.getLogger(__name__)

STAGING_DIR = ".incoming"  # under the run's artifacts/: where the daemon's downloads land


def unfinished_downloads(events_path: Path) -> list[dict[str, Any]]:
    """The downloads the log at `events_path` started and never ended, oldest first: for
    each, the data and target of the `failed` event that ends it (`reason` left to the
    caller)."""
    open_downloads: dict[str, dict[str, Any]] = {}
    for event in iter_events(events_path, types=["download"]):
        data = event.get("data") or {}
        guid = str(data.get("guid", ""))
        status = event.get("status")
        if status == "started":
            open_downloads[guid] = {
                "data": {"guid": guid, "name": str(data.get("suggested_filename") or "download"),
                         "received_bytes": None, "total_bytes": None},
                "target": event.get("target"),
            }
        elif status == "progress" and guid in open_downloads:
            sizes = open_downloads[guid]["data"]
            sizes["received_bytes"] = data.get("received_bytes")
            sizes["total_bytes"] = data.get("total_bytes")
        elif status in ("finished", "failed"):
            open_downloads.pop(guid, None)
    return list(open_downloads.values())


def clear_staging(run_dir: Path) -> list[str]:
    """Remove everything in `run_dir`/artifacts/.incoming, then the folder; return the names
    removed. Links are removed, never followed; a path that is not what the daemon made (a
    link instead of a directory) is left alone. Errors are logged, not raised."""
    removed: list[str] = []
    try:
        fd = _open_dir(run_dir, ("artifacts", STAGING_DIR))
    except FileNotFoundError:
        return removed  # no download ever staged, or nothing left
    except OSError as exc:
        log.warning("not clearing the download staging folder of %s: %s", run_dir, exc)
        return removed
    try:
        for name in os.listdir(fd):
            try:
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    shutil.rmtree(name, dir_fd=fd)  # fd-based: links inside are not followed
                else:
                    os.unlink(name, dir_fd=fd)
                removed.append(name)
            except OSError as exc:
                log.warning("could not remove %s from the staging folder of %s: %s", name,
                            run_dir, exc)
    finally:
        os.close(fd)
    try:
        artifacts = _open_dir(run_dir, ("artifacts",))
        try:
            os.rmdir(STAGING_DIR, dir_fd=artifacts)
        finally:
            os.close(artifacts)
    except OSError:
        pass  # not empty (something could not be removed, logged above) or gone already
    return removed


def _open_dir(base: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of base/parts..., each part opened with O_NOFOLLOW below the last (a link
    anywhere among `parts` is ELOOP or ENOTDIR, never followed)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(base, flags)
    try:
        for part in parts:
            inner = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd
