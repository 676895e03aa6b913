"""The client's one exception family: every error carries a stable dot-separated code.

Errors the daemon reports arrive as wire error objects ``{code, message, hint, data}``;
:func:`error_from_wire` turns one into the subclass registered for its code (``CODES``),
or into :class:`RemoteError` for a code this client does not know yet (codes are added
over time, never changed). Transport failures are :class:`DaemonUnavailable` (cannot
connect) and :class:`ConnectionLost` (the connection broke). No socket, anyio or msgpack
exception escapes the client: catch :class:`BrowserdError`, or a subclass, or test
``err.code``.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = [
    "CODES",
    "ApiMismatch",
    "ArtifactNotFound",
    "BrowserLaunchFailed",
    "BrowserNotFound",
    "BrowserdError",
    "ClientError",
    "ConcurrentQuotaExceeded",
    "ConnectionLost",
    "ConnectionNotFound",
    "ContextError",
    "ControllerBusy",
    "DaemonShuttingDown",
    "DaemonUnavailable",
    "Forbidden",
    "HelloRequired",
    "IdempotencyConflict",
    "InternalError",
    "InvalidHost",
    "InvalidParams",
    "InvalidRequest",
    "InvocationCancelled",
    "InvocationError",
    "InvocationFailed",
    "InvocationNotFound",
    "InvocationTimedOut",
    "LaunchWarning",
    "MethodNotFound",
    "NoActiveRun",
    "NotFoundError",
    "ParseError",
    "PathInvalid",
    "ProfileExists",
    "ProfileInUse",
    "ProfileNotFound",
    "RemoteError",
    "ResourcesExhausted",
    "RpcError",
    "RunNotFound",
    "RuntimeFileIoError",
    "RuntimeFileNotFound",
    "RuntimeNameConflict",
    "RuntimeNotActive",
    "RuntimeNotFound",
    "RuntimeNotStopped",
    "SpaceNotEmpty",
    "SpaceNotFound",
    "StateUnwritable",
    "SubscriptionLimit",
    "TargetNotFound",
    "TooLarge",
    "error_from_wire",
]

E = TypeVar("E", bound="BrowserdError")


class BrowserdError(Exception):
    """Base of every error the client raises.

    ``code`` is the stable error code (``"runtime.not_found"``), ``message`` one
    sentence, ``hint`` what to do about it (may be empty), ``data`` structured details.
    """

    code: str = "browserd.error"

    def __init__(
        self, code: str, message: str, hint: str = "", data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(code, message, hint, data)
        self.code = code
        self.message = message
        self.hint = hint
        self.data: dict[str, Any] = data if data is not None else {}

    @classmethod
    def make(cls: type[E], message: str, hint: str = "", data: dict[str, Any] | None = None) -> E:
        """Build this class's error with its own code."""
        return cls(cls.code, message, hint, data)

    def to_wire(self) -> dict[str, Any]:
        """The error as a wire error object ``{code, message, hint, data}``."""
        return {"code": self.code, "message": self.message, "hint": self.hint, "data": self.data}

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, {self.hint!r})"


class RemoteError(BrowserdError):
    """An error from the daemon whose code this client does not know; ``code`` is kept."""


# -- raised by the client itself ----------------------------------------------------------


class ClientError(BrowserdError):
    """Raised by the client without a daemon reply (the connection failed)."""


class DaemonUnavailable(ClientError):
    """The daemon's socket could not be reached: not running, wrong path or no permission."""

    code = "client.daemon_unavailable"


class InvalidHost(ClientError):
    """A host (``--host``, ``$BROWSERD_HOST``, a context) that is not a usable address."""

    code = "client.invalid_host"


class ContextError(ClientError):
    """A context name that is not allowed, unknown, or already taken (``browserctl context``)."""

    code = "client.context_error"


class ConnectionLost(ClientError):
    """The connection to the daemon broke while a call was in flight, or was closed."""

    code = "client.connection_lost"


# -- protocol ----------------------------------------------------------------------------


class RpcError(BrowserdError):
    """A protocol-level error (``rpc.*``): a bug or a version mismatch, not a user error."""


class ParseError(RpcError):
    code = "rpc.parse_error"


class InvalidRequest(RpcError):
    code = "rpc.invalid_request"


class MethodNotFound(RpcError):
    code = "rpc.method_not_found"


class InvalidParams(RpcError):
    """A param is missing, mistyped or out of range; ``data["field"]`` names it."""

    code = "rpc.invalid_params"


class InternalError(RpcError):
    code = "rpc.internal_error"


class HelloRequired(RpcError):
    code = "rpc.hello_required"


class ApiMismatch(RpcError):
    """The daemon and the client share no API level; upgrade the older one."""

    code = "rpc.api_mismatch"


class TooLarge(RpcError):
    code = "rpc.too_large"


class Forbidden(BrowserdError):
    """This process's user may not use the daemon."""

    code = "auth.forbidden"


# -- resources ---------------------------------------------------------------------------


class NotFoundError(BrowserdError):
    """Base of every ``*.not_found`` error."""


class SpaceNotFound(NotFoundError):
    code = "space.not_found"


class SpaceNotEmpty(BrowserdError):
    """A space cannot be deleted while it has active runtimes."""

    code = "space.not_empty"


class RuntimeNotFound(NotFoundError):
    code = "runtime.not_found"


class RuntimeNotActive(BrowserdError):
    code = "runtime.not_active"


class RuntimeNotStopped(BrowserdError):
    """Delete refused: stop the runtime first, or pass force=True."""

    code = "runtime.not_stopped"


class RuntimeNameConflict(BrowserdError):
    code = "runtime.name_conflict"


class NoActiveRun(BrowserdError):
    """The runtime has no active run (it is stopped or failed)."""

    code = "runtime.no_active_run"


class ControllerBusy(BrowserdError):
    """An exclusive connection holds the runtime."""

    code = "runtime.controller_busy"


class BrowserNotFound(NotFoundError):
    """No browser executable was found; the hint says how to install one."""

    code = "browser.not_found"


class BrowserLaunchFailed(BrowserdError):
    """The browser exited or timed out while starting; ``data`` has exit code and stderr tail."""

    code = "browser.launch_failed"


class ConcurrentQuotaExceeded(BrowserdError):
    code = "browser.concurrent_quota_exceeded"


class ProfileInUse(BrowserdError):
    """Another runtime holds the profile; ``data`` names the holder."""

    code = "profile.in_use"


class ProfileNotFound(NotFoundError):
    code = "profile.not_found"


class ProfileExists(BrowserdError):
    """A clone's target name is taken; pick another or delete that profile first."""

    code = "profile.exists"


class RunNotFound(NotFoundError):
    code = "run.not_found"


class ArtifactNotFound(NotFoundError):
    code = "artifact.not_found"


class ConnectionNotFound(NotFoundError):
    code = "connection.not_found"


class TargetNotFound(NotFoundError):
    """The runtime's browser has no page (target) with that id."""

    code = "target.not_found"


class InvocationNotFound(NotFoundError):
    """No such invocation (the daemon keeps the last 10000 and forgets them on restart)."""

    code = "invocation.not_found"


class RuntimeFileNotFound(NotFoundError):
    """No file at that path in the runtime's file area."""

    code = "runtime_file.not_found"


class PathInvalid(BrowserdError):
    """A file path is not a relative path inside the runtime's file area."""

    code = "runtime_file.path_invalid"


class InvocationError(BrowserdError):
    """Base of the ``invocation.*`` errors."""


class InvocationFailed(InvocationError):
    code = "invocation.failed"


class InvocationTimedOut(InvocationError):
    code = "invocation.timed_out"


class InvocationCancelled(InvocationError):
    code = "invocation.cancelled"


class DaemonShuttingDown(BrowserdError):
    code = "daemon.shutting_down"


class ResourcesExhausted(BrowserdError):
    """The daemon is at one of its limits (``data["budget"]``: ``rpc_connections``,
    ``cdp_sockets``, ``cdp_pending``, ``lease_ports``, with ``limit`` and ``in_use``) or ran
    out of file descriptors or memory (``data["errno"]``); it goes on serving others."""

    code = "daemon.resources_exhausted"


class IdempotencyConflict(BrowserdError):
    """The idempotency key was used before with different params."""

    code = "request.idempotency_conflict"


class StateUnwritable(BrowserdError):
    """The daemon could not write its state (a full or read-only disk, permissions): a launch
    it refused, or the one request or action that failed; it goes on serving."""

    code = "state.unwritable"


class SubscriptionLimit(BrowserdError):
    """This connection holds as many event streams as a connection may."""

    code = "subscription.limit"


class RuntimeFileIoError(BrowserdError):
    """A file in the runtime's file area could not be read or written."""

    code = "runtime_file.io_error"


def _leaf_classes(cls: type[BrowserdError]) -> list[type[BrowserdError]]:
    found = []
    for sub in cls.__subclasses__():
        if "code" in vars(sub):
            found.append(sub)
        found.extend(_leaf_classes(sub))
    return found


CODES: dict[str, type[BrowserdError]] = {
    cls.code: cls for cls in _leaf_classes(BrowserdError) if not issubclass(cls, ClientError)
}
"""Error code -> class, for every code the daemon may report."""


def error_from_wire(obj: Any) -> BrowserdError:
    """Turn a wire error object into its exception (unknown codes -> :class:`RemoteError`)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("code"), str):
        return InternalError.make(
            f"the daemon sent a malformed error object: {obj!r:.200}",
            "this is a bug in browserd; please report it",
        )
    code: str = obj["code"]
    message, hint, data = obj.get("message"), obj.get("hint"), obj.get("data")
    cls = CODES.get(code, RemoteError)
    return cls(
        code,
        message if isinstance(message, str) else code,
        hint if isinstance(hint, str) else "",
        data if isinstance(data, dict) else {},
    )


class LaunchWarning(UserWarning):
    """A launch of a runtime that was running already did not apply an option it gave (the
    running browser keeps its own; the option applies at the next start)."""
