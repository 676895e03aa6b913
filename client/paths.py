"""Where the daemon's socket is: one rule, shared by the daemon and every client.

Order: an explicit path > ``$BROWSERD_SOCKET`` > ``$XDG_RUNTIME_DIR/browserd/browserd.sock``
> ``/run/user/<uid>/browserd/browserd.sock`` (when ``XDG_RUNTIME_DIR`` is unset or not
absolute, and ``/run/user/<uid>`` exists) > ``/tmp/browserd-<uid>/browserd.sock``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

SOCKET_ENV = "BROWSERD_SOCKET"
SOCKET_NAME = "browserd.sock"


def default_socket_path(
    *,
    environ: Mapping[str, str] | None = None,
    uid: int | None = None,
    run_user_root: str | os.PathLike[str] = "/run/user",
) -> Path:
    """The socket path when none is given explicitly and ``$BROWSERD_SOCKET`` is unset."""
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    runtime_dir = env.get("XDG_RUNTIME_DIR", "")
    # The XDG spec says a relative XDG_RUNTIME_DIR is invalid and must be ignored.
    if runtime_dir and os.path.isabs(runtime_dir):
        return Path(runtime_dir) / "browserd" / SOCKET_NAME
    user_run = Path(run_user_root) / str(uid)
    if user_run.is_dir():
        return user_run / "browserd" / SOCKET_NAME
    # Last resort on systems without a per-user runtime dir. The daemon must create this
    # directory 0700 and refuse one it does not own (anyone may create names in /tmp).
    return Path(f"/tmp/browserd-{uid}") / SOCKET_NAME


def socket_path(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    uid: int | None = None,
) -> Path:
    """The socket path: ``explicit`` > ``$BROWSERD_SOCKET`` > :func:`default_socket_path`."""
    if explicit is not None and os.fspath(explicit):
        return Path(explicit)
    env = os.environ if environ is None else environ
    from_env = env.get(SOCKET_ENV, "")
    if from_env:
        return Path(from_env)
    return default_socket_path(environ=env, uid=uid)
