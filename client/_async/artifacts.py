"""``run.artifacts``: the files a run produced, listed and read back in chunks.

Written once, here; ``scripts/unasync.py`` makes the blocking twin.

    artifacts = await run.artifacts.list(kind="download")       # newest first
    chunk = await run.artifacts.read(artifacts[0].id, offset=0, length=1 << 20)
    path = await run.artifacts.download(artifacts[0].id, "report.csv")
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from ..errors import ArtifactNotFound, ClientError
from ..records import Artifact, ArtifactChunk
from .backend import run_blocking
from .transport import AsyncTransport

__all__ = ["DOWNLOAD_CHUNK", "MAX_READ", "AsyncRunArtifacts"]

MAX_READ = 8 * 1024 * 1024  # the daemon's largest read
DOWNLOAD_CHUNK = 4 * 1024 * 1024


@attrs.frozen
class AsyncRunArtifacts:
    """``run.artifacts``: list, read and download the run's artifacts."""

    _transport: AsyncTransport
    run_id: str

    async def list(self, kind: str | None = None) -> list[Artifact]:
        """The run's artifacts, newest first; ``kind`` keeps one kind (download, screenshot,
        pdf, file)."""
        params: dict[str, Any] = {"run_id": self.run_id}
        if kind is not None:
            params["kind"] = kind
        page = await self._transport.call("runs.artifacts.list", params)
        return [Artifact.from_wire(wire) for wire in page["data"]]

    async def get(self, artifact_id: str) -> Artifact:
        """One artifact's record; raises ArtifactNotFound."""
        for artifact in await self.list():
            if artifact.id == artifact_id:
                return artifact
        raise ArtifactNotFound.make(f"run {self.run_id} has no artifact {artifact_id!r}",
                                    "List the run's artifacts with run.artifacts.list().")

    async def read(self, artifact_id: str, offset: int = 0,
                   length: int = 1024 * 1024) -> ArtifactChunk:
        """Up to ``length`` bytes (at most 8 MiB) of the artifact from ``offset``."""
        result = await self._transport.call("runs.artifacts.read", {
            "run_id": self.run_id, "artifact_id": artifact_id, "offset": offset,
            "length": length,
        })
        return ArtifactChunk(data=bytes(result.get("data") or b""), eof=bool(result.get("eof")))

    async def download(self, artifact_id: str, path: str | os.PathLike[str]) -> Path:
        """Save the artifact to ``path`` (a file, or a directory to put it in under its
        name); returns the file's path. Read in chunks, written to a temporary file beside
        it and renamed, so ``path`` never holds half a file; the SHA-256 is checked."""
        artifact = await self.get(artifact_id)
        dest = Path(path)
        if await run_blocking(dest.is_dir):
            dest = dest / _local_name(artifact.name)
        partial = dest.with_name(f".{dest.name}.partial")
        digest = hashlib.sha256()
        offset = 0
        try:
            with await run_blocking(_open_new, partial) as sink:
                while True:
                    chunk = await self.read(artifact_id, offset, DOWNLOAD_CHUNK)
                    await run_blocking(sink.write, chunk.data)
                    digest.update(chunk.data)
                    offset += len(chunk.data)
                    if chunk.eof or not chunk.data:
                        break
            if artifact.sha256 and digest.hexdigest() != artifact.sha256:
                raise ClientError(
                    "client.checksum_mismatch",
                    f"artifact {artifact_id} read back with a different SHA-256",
                    "Its file changed on the daemon's side while it was read; try again.",
                    {"expected": artifact.sha256, "actual": digest.hexdigest()})
            await run_blocking(os.replace, partial, dest)
        except BaseException:
            await run_blocking(lambda: partial.unlink(missing_ok=True))
            raise
        return dest


def _open_new(path: Path) -> BinaryIO:
    return open(path, "wb")


def _local_name(name: str) -> str:
    """The artifact's name as one safe local file name."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".")
    return base or "artifact"
