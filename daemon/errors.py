"""The daemon's one exception family: every error a client can see carries a stable code."""

from __future__ import annotations

import errno
from typing import Any


class ApiError(Exception):
    """An error reported to the client as a wire error object {code, message, hint, data}."""

    def __init__(
        self, code: str, message: str, *, hint: str = "", data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.data = data or {}

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint, "data": self.data}


# OS errors that say the machine is short of something (not a bug, not a bad request): the
# request or action fails with a clean error and the daemon goes on serving.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def resource_error(exc: BaseException, doing: str) -> ApiError | None:
    """`state.unwritable` (a full or read-only disk) or `daemon.resources_exhausted` (out of
    file descriptors or memory) for `exc` (an OSError, or a group of exactly one), raised
    while `doing` something ("serving runtimes.stop", "a screenshot"); None for anything
    else."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if not isinstance(exc, OSError) or exc.errno not in DISK_ERRNOS | RESOURCE_ERRNOS:
        return None
    code = errno.errorcode[exc.errno]
    reason = f"{code}: {exc.strerror or exc}"
    if exc.errno in DISK_ERRNOS:
        return ApiError(
            "state.unwritable",
            f"The daemon could not write its state while {doing} ({reason}).",
            hint="Free space on the disk holding the state directory (or fix its "
                 "permissions), then retry.",
            data={"errno": code},
        )
    return ApiError(
        "daemon.resources_exhausted",
        f"The daemon ran out of file descriptors or memory while {doing} ({reason}).",
        hint="Close idle clients or stop runtimes, or raise the daemon's limits "
             "(LimitNOFILE= for the service), then retry.",
        data={"errno": code},
    )
