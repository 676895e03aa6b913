"""Blocking twins of ``control.py``: ``runtime.invocations``, ``.targets``, ``.files``.

Each method runs its async twin through the Client's portal, as ``_sync.py`` does.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .control import (
    AsyncFiles,
    AsyncInvocation,
    AsyncInvocations,
    AsyncTargets,
    CollectedFile,
)
from .records import InvocationRecord, RuntimeFile, Target, from_wire

if TYPE_CHECKING:
    from ._sync import Client

T = TypeVar("T")


@attrs.define
class Invocation(InvocationRecord):
    """A browser action the daemon runs; ``refresh()`` reloads its status and output."""

    _impl: AsyncInvocation = attrs.field(kw_only=True, repr=False, eq=False)
    _bd: Client = attrs.field(kw_only=True, repr=False, eq=False)

    def _run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            return self._bd._run(fn, *args)
        finally:
            self._update(self._impl.raw)
            self.output = self._impl.output  # read back from its artifact, if it was

    def refresh(self) -> Invocation:
        """Reload this invocation's fields; returns self."""
        self._run(self._impl.refresh)
        return self

    def cancel(self) -> Invocation:
        """Cancel it if it is queued or running; returns self once it has stopped."""
        self._run(self._impl.cancel)
        return self

    def read_output(self) -> Any:
        """The output's value: ``output`` as sent, or, when the daemon kept it as an
        artifact (``output_truncated``), the artifact read back (JSON decoded; ``content``
        as its text). Raises ArtifactNotFound if the run's files have been removed."""
        return self._run(self._impl.read_output)


def _invocation(bd: Client, impl: AsyncInvocation) -> Invocation:
    inv = from_wire(Invocation, impl.raw, impl=impl, bd=bd)
    inv.output = impl.output
    return inv


@attrs.frozen
class Invocations:
    """``runtime.invocations``: run browser actions on the runtime's pages."""

    _bd: Client
    _impl: AsyncInvocations

    def create(
        self,
        action: str,
        params: dict[str, Any] | None = None,
        *,
        target_id: str | None = None,
        timeout_s: float | None = None,
        wait: bool = True,
        idempotency_key: str | None = None,
    ) -> Invocation:
        """Run ``action`` (navigate, screenshot, pdf, evaluate, content) with ``params``.

        On ``target_id``, else the active page. With ``wait`` (the default) this returns
        once it has finished and raises InvocationFailed, InvocationTimedOut or
        InvocationCancelled when it did not succeed; with ``wait=False`` it returns the
        queued invocation at once. ``timeout_s`` defaults to 30. The same
        ``idempotency_key`` with the same request returns the first invocation for 24 h.
        """
        impl = self._bd._run(
            self._impl.create,
            action,
            params,
            target_id=target_id,
            timeout_s=timeout_s,
            wait=wait,
            idempotency_key=idempotency_key,
        )
        return _invocation(self._bd, impl)

    def get(self, invocation_id: str) -> Invocation:
        """Invocation ``invocation_id``."""
        return _invocation(self._bd, self._bd._run(self._impl.get, invocation_id))

    def list(self, status: str | None = None, limit: int | None = None) -> list[Invocation]:
        """This runtime's invocations, newest first; ``limit`` None means all kept. Outputs
        kept as artifacts stay as they are (``read_output()`` reads one)."""
        return [_invocation(self._bd, i) for i in self._bd._run(self._impl.list, status, limit)]

    def cancel(self, invocation_id: str) -> Invocation:
        """Cancel invocation ``invocation_id``; returns it once it has stopped."""
        return _invocation(self._bd, self._bd._run(self._impl.cancel, invocation_id))


@attrs.frozen
class Targets:
    """``runtime.targets``: the runtime's pages, on the daemon's own connection."""

    _bd: Client
    _impl: AsyncTargets

    def list(self, all_types: bool = False) -> list[Target]:
        """The pages, oldest first (``all_types``: workers and other targets too)."""
        return self._bd._run(self._impl.list, all_types)

    def create(self, url: str = "about:blank") -> Target:
        """Open a new page on ``url``; it becomes the active page."""
        return self._bd._run(self._impl.create, url)

    def activate(self, target_id: str) -> Target:
        """Bring page ``target_id`` to the front and make it the active page."""
        return self._bd._run(self._impl.activate, target_id)

    def close(self, target_id: str) -> Target:
        """Close page ``target_id``."""
        return self._bd._run(self._impl.close, target_id)


@attrs.frozen
class Files:
    """``runtime.files``: the runtime's file area (relative paths only)."""

    _bd: Client
    _impl: AsyncFiles

    def stage(
        self,
        path: str,
        data: bytes | None = None,
        *,
        source_path: str | os.PathLike[str] | None = None,
    ) -> RuntimeFile:
        """Put ``data`` (or a copy of the local file ``source_path``) at ``path``.

        ``source_path`` is read by the daemon itself, so it must be absolute and is only
        accepted from a process with the daemon's uid; otherwise send ``data``.
        """
        return self._bd._run(self._impl.stage, path, data, source_path=source_path)

    def list(self, path: str | None = None, sha256: bool = False) -> list[RuntimeFile]:
        """Files in the area (or under ``path``), by path; ``sha256`` hashes each."""
        return self._bd._run(self._impl.list, path, sha256)

    def collect(self, path: str) -> CollectedFile:
        """Copy the file at ``path`` into the active run's artifacts (kind ``file``)."""
        return self._bd._run(self._impl.collect, path)
