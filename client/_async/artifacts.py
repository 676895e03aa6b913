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
        """Save the artifact to ``path``; returns the file's path.

        ``path`` is a file, or a directory (one that exists, or any path ending in ``/``,
        created if missing) to put the artifact in under its own name; a name taken there
        gets a suffix (``report (1).csv``), never overwriting a file. Read in chunks into a
        temporary file beside it, then moved into place, so no path ever holds half a file;
        the SHA-256 is checked."""
        artifact = await self.get(artifact_id)
        dest = Path(path)
        into = str(path).endswith(("/", os.sep)) or await run_blocking(dest.is_dir)
        if into:
            await run_blocking(lambda: dest.mkdir(mode=0o755, parents=True, exist_ok=True))
            partial = dest / f".{_local_name(artifact.name)}.{artifact.id}.partial"
        else:
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
            if into:
                dest = await run_blocking(_place_new, partial, dest, _local_name(artifact.name))
            else:
                await run_blocking(os.replace, partial, dest)
        except BaseException:
            await run_blocking(lambda: partial.unlink(missing_ok=True))
            raise
        return dest


def _open_new(path: Path) -> BinaryIO:
    return open(path, "wb")


def _place_new(partial: Path, directory: Path, name: str) -> Path:
    """Move `partial` to `name` in `directory`, or to `stem (N)suffix` when that is taken:
    linked, so an existing file is never replaced (not even one made a moment ago)."""
    stem, suffix = os.path.splitext(name)
    for n in range(10_000):
        candidate = directory / (name if n == 0 else f"{stem} ({n}){suffix}")
        try:
            os.link(partial, candidate)
        except FileExistsError:
            continue
        partial.unlink()
        return candidate
    raise FileExistsError(f"no free name for {name} in {directory}")


def _local_name(name: str) -> str:
    """The artifact's name as one safe local file name."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".")
    return base or "artifact"
