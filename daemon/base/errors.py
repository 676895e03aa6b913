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


# OS errors that say the machine (or the process) is short of something right now: never a bug
# and never fatal. Requests and actions fail with a clean error; accept loops back off and
# retry; the daemon goes on serving.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def _single(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def resource_shortage(exc: BaseException, doing: str) -> ApiError | None:
    """`daemon.resources_exhausted` for an OSError (or a group of exactly one) that says the
    daemon is out of descriptors or memory while `doing` something; None otherwise."""
    exc = _single(exc)
    if not isinstance(exc, OSError) or exc.errno not in RESOURCE_ERRNOS:
        return None
    code = errno.errorcode[exc.errno]
    return ApiError(
        "daemon.resources_exhausted",
        f"The daemon ran out of file descriptors or memory while {doing} "
        f"({code}: {exc.strerror or exc}).",
        hint="Close idle clients or stop runtimes, or raise the daemon's limits "
             "(LimitNOFILE= for the service), then retry.",
        data={"errno": code},
    )


def resource_error(exc: BaseException, doing: str) -> ApiError | None:
    """`state.unwritable` (a full or read-only disk) or `daemon.resources_exhausted` (out of
    descriptors or memory) for `exc`, raised while `doing` something ("serving runtimes.stop",
    "running screenshot"); None for anything else."""
    if (shortage := resource_shortage(exc, doing)) is not None:
        return shortage
    exc = _single(exc)
    if not isinstance(exc, OSError) or exc.errno not in DISK_ERRNOS:
        return None
    code = errno.errorcode[exc.errno]
    return ApiError(
        "state.unwritable",
        f"The daemon could not write its state while {doing} ({code}: {exc.strerror or exc}).",
        hint="Free space on the disk holding the state directory (or fix its "
             "permissions), then retry.",
        data={"errno": code},
    )
