"""Deleting only inside the daemon's own roots: the guard every recursive delete goes through.

The daemon removes whole trees: ephemeral profiles, deleted profiles and runtimes, old runs,
clone and artifact staging. Each of those paths is built from a root (`<state>/profiles`,
`<state>/runs`, ...) and a name or id, and the name rule (names.py) already keeps a caller's
name from meaning `..`. This is the second line, independent of how the path was made (a
name that slipped through, a tampered state file, a symlink placed in the state dir): a
path is acted on only when, resolved, it lies strictly inside its resolved root. Anything
else raises `OutsideRoot` and nothing is touched.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

__all__ = ["OutsideRoot", "inside", "remove_tree", "resolved_inside"]

log = logging.getLogger(__name__)


class OutsideRoot(ValueError):
    """A path the daemon was about to act on does not lie inside its root."""

    def __init__(self, path: Path, root: Path) -> None:
        super().__init__(f"refusing to act on {str(path)!r}: it is not inside {str(root)!r}")
        self.path = path
        self.root = root


def inside(path: Path, root: Path) -> Path:
    """`path` with its parent resolved, if it lies strictly inside `root` (resolved); else
    OutsideRoot. The last component is not resolved: a symlink there is the entry itself
    (what a delete removes is the link, never what it points at)."""
    name = path.name
    if name in ("", ".", ".."):
        raise OutsideRoot(path, root)
    real_root = os.path.realpath(root)
    target = os.path.join(os.path.realpath(path.parent), name)
    if os.path.commonpath([real_root, target]) != real_root or target == real_root:
        raise OutsideRoot(path, root)
    return Path(target)


def resolved_inside(path: Path, root: Path) -> Path:
    """`path` fully resolved (every symlink followed), if that lies strictly inside `root`;
    else OutsideRoot. For paths the daemon writes through (a profile's directory), where a
    symlink anywhere would carry the write elsewhere."""
    real_root = os.path.realpath(root)
    target = os.path.realpath(path)
    if os.path.commonpath([real_root, target]) != real_root or target == real_root:
        raise OutsideRoot(path, root)
    return Path(target)


def remove_tree(path: Path, root: Path) -> bool:
    """Remove `path` and everything below it if it lies inside `root`; False (and an error in
    the daemon log) if it does not, with nothing touched.

    Never follows a symlink: a link (at the top or anywhere below) is removed as a link.
    Errors while removing (a file already gone, a busy mount) are ignored, as `rm -rf` does:
    what cannot be removed stays, inside the root.
    """
    try:
        target = inside(path, root)
    except OutsideRoot as exc:
        log.error("%s", exc)
        return False
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        try:
            target.unlink()
        except FileNotFoundError:
            pass
        return True
    shutil.rmtree(target, ignore_errors=True)
    return True
