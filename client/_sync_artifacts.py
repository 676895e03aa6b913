"""Blocking twin of ``artifacts.py``: ``run.artifacts`` on a blocking Run.

Each method runs its async twin through the Client's portal, as ``_sync.py`` does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from .artifacts import AsyncRunArtifacts
from .records import Artifact, ArtifactChunk

if TYPE_CHECKING:
    from ._sync import Client

__all__ = ["RunArtifacts"]


@attrs.frozen
class RunArtifacts:
    """``run.artifacts``: list, read and download the run's artifacts."""

    _bd: Client
    _impl: AsyncRunArtifacts

    def list(self, kind: str | None = None) -> list[Artifact]:
        """The run's artifacts, newest first; ``kind`` keeps one kind (download, screenshot,
        pdf, file)."""
        return self._bd._run(self._impl.list, kind)

    def get(self, artifact_id: str) -> Artifact:
        """One artifact's record; raises ArtifactNotFound."""
        return self._bd._run(self._impl.get, artifact_id)

    def read(self, artifact_id: str, offset: int = 0, length: int = 1024 * 1024
             ) -> ArtifactChunk:
        """Up to ``length`` bytes (at most 8 MiB) of the artifact from ``offset``."""
        return self._bd._run(self._impl.read, artifact_id, offset, length)

    def download(self, artifact_id: str, path: str | os.PathLike[str]) -> Path:
        """Save the artifact to ``path``; returns the file's path. ``path`` is a file, or a
        directory (one that exists, or any path ending in ``/``, created if missing) to put
        it in under its own name, with a suffix (``report (1).csv``) when that name is taken
        there. No path ever holds half a file."""
        return self._bd._run(self._impl.download, artifact_id, path)
