"""Resources of the control surface: invocations, targets (pages) and files.

``runtime.invocations``, ``runtime.targets`` and ``runtime.files``. Written once, here;
``scripts/unasync.py`` makes the blocking twins.
"""

from __future__ import annotations

import json
import os
from typing import Any

import attrs

from ..errors import ArtifactNotFound
from ..records import (
    CollectedFile,
    InvocationRecord,
    RuntimeFile,
    Target,
    from_wire,
    from_wire_list,
)
from .artifacts import MAX_READ
from .transport import AsyncTransport


def _params(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


# -- invocations -------------------------------------------------------------------------


@attrs.define(on_setattr=attrs.setters.NO_OP)  # as the records (records.Record)
class AsyncInvocation(InvocationRecord):
    """A browser action the daemon runs; ``refresh()`` reloads its status and output."""

    _transport: AsyncTransport = attrs.field(kw_only=True, repr=False, eq=False)

    async def refresh(self) -> AsyncInvocation:
        """Reload this invocation's fields; returns self."""
        await self._load(await self._transport.call("invocations.get", {"id": self.id}))
        return self

    async def cancel(self) -> AsyncInvocation:
        """Cancel it if it is queued or running; returns self once it has stopped."""
        await self._load(await self._transport.call("invocations.cancel", {"id": self.id}))
        return self

    async def read_output(self) -> Any:
        """The output's value: ``output`` as sent, or, when the daemon kept it as an
        artifact (``output_truncated``), the artifact read back (JSON decoded; ``content``
        as its text). Raises ArtifactNotFound if the run's files have been removed."""
        artifact = self.output_artifact
        if artifact is None:
            return self.raw.get("output", self.output)
        run_id, artifact_id = str(artifact.get("run_id")), str(artifact.get("id"))
        data = bytearray()
        while True:
            try:
                chunk = await self._transport.call("runs.artifacts.read", {
                    "run_id": run_id, "artifact_id": artifact_id, "offset": len(data),
                    "length": MAX_READ,
                })
            except ArtifactNotFound as exc:
                raise ArtifactNotFound.make(
                    f"the output of invocation {self.id} was kept as artifact {artifact_id} "
                    f"of run {run_id}, which is gone ({exc.message})",
                    "Its run may have been removed by retention.") from None
            data += chunk.get("data") or b""
            if chunk.get("eof") or not chunk.get("data"):
                break
        content_type = str(artifact.get("content_type") or "").split(";")[0].strip()
        if content_type == "application/json":
            return json.loads(data)
        return data.decode("utf-8", "replace")

    async def _load(self, wire: dict[str, Any]) -> None:
        """Take a record from the daemon, reading an output kept as an artifact."""
        self._update(wire)
        if self.output_artifact is not None:
            self.output = await self.read_output()


@attrs.frozen
class AsyncInvocations:
    """``runtime.invocations``: run browser actions on the runtime's pages."""

    _transport: AsyncTransport
    runtime_id: str

    async def create(
        self,
        action: str,
        params: dict[str, Any] | None = None,
        *,
        target_id: str | None = None,
        timeout_s: float | None = None,
        wait: bool = True,
        idempotency_key: str | None = None,
    ) -> AsyncInvocation:
        """Run ``action`` (navigate, screenshot, pdf, evaluate, content) with ``params``.

        On ``target_id``, else the active page. With ``wait`` (the default) this returns
        once it has finished and raises InvocationFailed, InvocationTimedOut or
        InvocationCancelled when it did not succeed; with ``wait=False`` it returns the
        queued invocation at once. ``timeout_s`` defaults to 30. The same
        ``idempotency_key`` with the same request returns the first invocation for 24 h.
        """
        wire = await self._transport.call(
            "invocations.create",
            _params(
                runtime_id=self.runtime_id,
                action=action,
                params=params or {},
                target_id=target_id,
                timeout_s=timeout_s,
                wait=wait,
                idempotency_key=idempotency_key,
            ),
        )
        return await self._loaded(wire)

    async def get(self, invocation_id: str) -> AsyncInvocation:
        """Invocation ``invocation_id``."""
        return await self._loaded(await self._transport.call("invocations.get",
                                                          {"id": invocation_id}))

    async def list(self, status: str | None = None, limit: int | None = None
                   ) -> list[AsyncInvocation]:
        """This runtime's invocations, newest first; ``limit`` None means all kept. Outputs
        kept as artifacts stay as they are (``read_output()`` reads one)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self._transport.call(
                "invocations.list",
                _params(runtime_id=self.runtime_id, status=status, cursor=cursor),
            )
            items.extend(page["data"])
            cursor = page.get("next_cursor")
            if cursor is None or (limit is not None and len(items) >= limit):
                break
        items = items[:limit] if limit is not None else items
        return from_wire_list(AsyncInvocation, items, transport=self._transport)

    async def cancel(self, invocation_id: str) -> AsyncInvocation:
        """Cancel invocation ``invocation_id``; returns it once it has stopped."""
        return await self._loaded(await self._transport.call("invocations.cancel",
                                                          {"id": invocation_id}))

    async def _loaded(self, wire: dict[str, Any]) -> AsyncInvocation:
        inv = from_wire(AsyncInvocation, wire, transport=self._transport)
        await inv._load(wire)
        return inv


# -- targets -----------------------------------------------------------------------------


@attrs.frozen
class AsyncTargets:
    """``runtime.targets``: the runtime's pages, on the daemon's own connection."""

    _transport: AsyncTransport
    runtime_id: str

    async def list(self, all_types: bool = False) -> list[Target]:
        """The pages, oldest first (``all_types``: workers and other targets too)."""
        page = await self._transport.call(
            "targets.list", {"runtime_id": self.runtime_id, "all": all_types}
        )
        return [Target.from_wire(wire) for wire in page["data"]]

    async def create(self, url: str = "about:blank") -> Target:
        """Open a new page on ``url``; it becomes the active page."""
        wire = await self._transport.call(
            "targets.create", {"runtime_id": self.runtime_id, "url": url}
        )
        return Target.from_wire(wire)

    async def activate(self, target_id: str) -> Target:
        """Bring page ``target_id`` to the front and make it the active page."""
        wire = await self._transport.call(
            "targets.activate", {"runtime_id": self.runtime_id, "target_id": target_id}
        )
        return Target.from_wire(wire)

    async def close(self, target_id: str) -> Target:
        """Close page ``target_id``."""
        wire = await self._transport.call(
            "targets.close", {"runtime_id": self.runtime_id, "target_id": target_id}
        )
        return Target.from_wire(wire)


# -- files -------------------------------------------------------------------------------


@attrs.frozen
class AsyncFiles:
    """``runtime.files``: the runtime's file area (relative paths only)."""

    _transport: AsyncTransport
    runtime_id: str

    async def stage(
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
        if (data is None) == (source_path is None):
            raise TypeError("give exactly one of data and source_path")
        wire = await self._transport.call(
            "files.stage",
            _params(
                runtime_id=self.runtime_id,
                path=path,
                data=bytes(data) if data is not None else None,
                source_path=os.fspath(source_path) if source_path is not None else None,
            ),
        )
        return RuntimeFile.from_wire(wire)

    async def list(self, path: str | None = None, sha256: bool = False) -> list[RuntimeFile]:
        """Files in the area (or under ``path``), by path; ``sha256`` hashes each."""
        page = await self._transport.call(
            "files.list", _params(runtime_id=self.runtime_id, path=path, sha256=sha256)
        )
        return [RuntimeFile.from_wire(wire) for wire in page["data"]]

    async def collect(self, path: str) -> CollectedFile:
        """Copy the file at ``path`` into the active run's artifacts (kind ``file``)."""
        wire = await self._transport.call(
            "files.collect", {"runtime_id": self.runtime_id, "path": path}
        )
        return CollectedFile(RuntimeFile.from_wire(wire["file"]), dict(wire["artifact"]))
