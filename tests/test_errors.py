"""The client's error family: one class per stable code, built from wire error objects."""

from __future__ import annotations

import ast
import pickle

import pytest

from browserd.client import errors

from .conftest import REPO

# The error codes of docs/api.md that the client knows by class.
API_CODES = [
    "rpc.parse_error",
    "rpc.invalid_request",
    "rpc.method_not_found",
    "rpc.invalid_params",
    "rpc.internal_error",
    "rpc.hello_required",
    "rpc.api_mismatch",
    "rpc.too_large",
    "auth.forbidden",
    "space.not_found",
    "space.not_empty",
    "runtime.not_found",
    "runtime.not_active",
    "runtime.not_stopped",
    "runtime.name_conflict",
    "runtime.no_active_run",
    "runtime.controller_busy",
    "browser.not_found",
    "browser.launch_failed",
    "browser.concurrent_quota_exceeded",
    "profile.in_use",
    "profile.not_found",
    "run.not_found",
    "artifact.not_found",
    "connection.not_found",
    "runtime_file.path_invalid",
    "invocation.failed",
    "invocation.timed_out",
    "invocation.cancelled",
    "daemon.shutting_down",
    "request.idempotency_conflict",
    "profile.exists",
    # the control surface
    "target.not_found",
    "invocation.not_found",
    "runtime_file.not_found",
    # a daemon at one of its limits, or out of descriptors or memory
    "daemon.resources_exhausted",
    "state.unwritable",
    "subscription.limit",
    "runtime_file.io_error",
]


def test_every_api_code_has_its_own_class() -> None:
    assert set(errors.CODES) == set(API_CODES)
    classes = [errors.CODES[code] for code in API_CODES]
    assert len(set(classes)) == len(classes)
    for code, cls in zip(API_CODES, classes, strict=True):
        assert cls.code == code
        assert issubclass(cls, errors.BrowserdError)
        assert not issubclass(cls, errors.RemoteError)


@pytest.mark.parametrize("code", API_CODES)
def test_error_from_wire_builds_the_class_of_the_code(code: str) -> None:
    wire = {"code": code, "message": "it broke", "hint": "do this", "data": {"field": "name"}}
    err = errors.error_from_wire(wire)
    assert type(err) is errors.CODES[code]
    assert (err.code, err.message, err.hint, err.data) == (
        code,
        "it broke",
        "do this",
        wire["data"],
    )
    assert err.to_wire() == wire


def test_groups() -> None:
    assert issubclass(errors.RuntimeNotFound, errors.NotFoundError)
    assert issubclass(errors.ConnectionNotFound, errors.NotFoundError)
    assert issubclass(errors.TooLarge, errors.RpcError)
    assert issubclass(errors.InvocationTimedOut, errors.InvocationError)
    assert issubclass(errors.DaemonUnavailable, errors.ClientError)
    assert not issubclass(errors.SpaceNotEmpty, errors.NotFoundError)


def test_unknown_code_keeps_its_code() -> None:
    err = errors.error_from_wire({"code": "quota.new_kind", "message": "m"})
    assert type(err) is errors.RemoteError
    assert err.code == "quota.new_kind"
    assert (err.hint, err.data) == ("", {})


@pytest.mark.parametrize("wire", [None, "boom", {"message": "no code"}, {"code": 7}])
def test_malformed_error_object_is_an_internal_error(wire: object) -> None:
    err = errors.error_from_wire(wire)
    assert isinstance(err, errors.InternalError)
    assert "malformed" in err.message


def test_missing_or_mistyped_fields_are_tolerated() -> None:
    err = errors.error_from_wire({"code": "run.not_found", "hint": None, "data": [1]})
    assert isinstance(err, errors.RunNotFound)
    assert (err.message, err.hint, err.data) == ("run.not_found", "", {})


def test_str_shows_code_message_and_hint() -> None:
    err = errors.RuntimeNotFound.make("no runtime default/crm", "run `browserctl ls`")
    assert str(err) == "runtime.not_found: no runtime default/crm (hint: run `browserctl ls`)"
    assert str(errors.RuntimeNotFound.make("gone")) == "runtime.not_found: gone"


def test_client_side_codes() -> None:
    assert errors.DaemonUnavailable.make("x").code == "client.daemon_unavailable"
    assert errors.ConnectionLost.make("x").code == "client.connection_lost"
    assert "client.daemon_unavailable" not in errors.CODES


def test_errors_pickle() -> None:
    err = errors.ProfileInUse.make("held", "stop it", {"holder": "rt_1"})
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is errors.ProfileInUse
    assert copy.to_wire() == err.to_wire()


# Raised and caught inside the daemon: never sent to a client.
INTERNAL_CODES = {"browser.adopt_failed"}


def test_every_code_the_daemon_raises_is_known_to_the_client_and_the_docs() -> None:
    """One registry of codes: every `ApiError("…")` in the daemon's source has its class in
    the client and its place in docs/api.md's list."""
    raised = {}
    for path in (REPO / "daemon").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            name = getattr(func, "id", getattr(func, "attr", None))
            if isinstance(node, ast.Call) and name == "ApiError" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    raised.setdefault(first.value, path.name)
    assert len(raised) > 30, "the scan found too few codes: has ApiError been renamed?"
    unknown = {code: where for code, where in raised.items()
               if code not in errors.CODES and code not in INTERNAL_CODES}
    assert not unknown, unknown
    documented = (REPO / "docs" / "api.md").read_text().split("## Error codes", 1)[1]
    undocumented = [code for code in raised if code not in INTERNAL_CODES
                    and f"`{code}`" not in documented]
    assert not undocumented, undocumented
