"""A run's artifacts: files the run produced (downloads, screenshots, PDFs, collected files).

    <state>/runs/<run_id>/artifacts/<artifact_id>/<safe name>

Each artifact is one file in a directory of its own, so two downloads with the same name never
collide and the real name stays the file's name (sanitised to be safe on disk; the record keeps
the name as given). The index is the run's `artifact.created` events: the log is the truth, so
the list survives daemon restarts, and an artifact whose event was never written (the daemon
died between the copy and the append) is simply not part of the run.

File work (copy, hash, read) runs in worker threads; the event is appended from the trio thread,
as the event log requires.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import mimetypes
import os
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import trio

from ..base.errors import ApiError
from ..base.model import RunRecord
from ..store import storage
from ..store.eventlog import read_events
from ..store.roots import remove_tree
from .runtime import Runtime

__all__ = ["ArtifactStore", "safe_file_name"]

_COPY_CHUNK = 1024 * 1024
_MAX_NAME_BYTES = 200  # well under NAME_MAX (255), leaving room for a uniquifying suffix
_CACHED_RUNS = 64  # runs whose index stays in memory

Records = list[dict[str, Any]]  # (an alias: the class below defines a method named list)


def safe_file_name(name: str) -> str:
    """`name` as a single, harmless file name: no directories, control characters or dot-names.

    Keeps the name readable (unicode letters, spaces and the extension stay), so a download
    saved as "Q3 report.pdf" is found under that name on disk.
    """
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join("_" if unicodedata.category(ch).startswith("C") else ch for ch in name)
    name = name.strip().lstrip(".").strip()
    if not name:
        return "artifact"
    encoded = name.encode("utf-8")
    if len(encoded) > _MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if not dot or len(ext.encode()) > 16:
            stem, ext = name, ""
        room = _MAX_NAME_BYTES - len(ext.encode()) - (1 if ext else 0)
        stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore")
        name = f"{stem}.{ext}" if ext else stem
    return name


class ArtifactStore:
    """Stores files as artifacts of runs and lists them back. `registry.artifacts` is one."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        # run id -> its artifact records, oldest first; loaded from the log on first use.
        self._index: collections.OrderedDict[str, Records] = collections.OrderedDict()

    def run_dir(self, run: RunRecord) -> Path:
        return self.state_dir / "runs" / run.id

    def artifacts_dir(self, run: RunRecord) -> Path:
        return self.run_dir(run) / "artifacts"

    # ------------------------------------------------------------------ writing

    async def add(
        self,
        rt: Runtime,
        *,
        kind: str,
        name: str,
        data: bytes | None = None,
        source: Path | None = None,
        max_bytes: int | None = None,
        content_type: str | None = None,
        link: bool = False,
        move: bool = False,
        run: RunRecord | None = None,
        target: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store `data` (or the file at `source`) as an artifact of the run; return its record.

        `link=True` hard-links `source` when it is on the same filesystem (else copies);
        `move=True` renames it into place (else copies and removes it): for files the daemon
        itself staged. `max_bytes` copies at most that much of `source` (a file that grows
        while it is copied is taken as it was when checked). The run is `rt`'s active run
        unless `run` is given; a run that is not live raises `runtime.no_active_run`.
        Appends `artifact.created` (data = the record).
        """
        if (data is None) == (source is None):
            raise ValueError("give exactly one of data and source")
        run = run or rt.run
        self._check_live(rt, run)
        assert run is not None
        artifact_id = storage.make_id("art")
        file_name = safe_file_name(name)
        directory = self.artifacts_dir(run) / artifact_id
        dest = directory / file_name
        size, digest = await trio.to_thread.run_sync(
            _store_file, directory, dest, data, source, link, move, max_bytes
        )
        try:
            self._check_live(rt, run)
        except ApiError:
            # The run ended while the file was being written: it is no artifact of it.
            await trio.to_thread.run_sync(remove_tree, directory, self.artifacts_dir(run))
            raise
        record = {
            "id": artifact_id,
            "run_id": run.id,
            "kind": kind,
            "name": name,
            "path": str(dest.relative_to(self.run_dir(run))),
            "content_type": content_type or _guess_type(name),
            "size_bytes": size,
            "sha256": digest,
            "created_at": storage.now_rfc3339(),
        }
        assert rt.log is not None
        rt.log.append("artifact.created", record, target=target)
        run.counts["artifacts"] = run.counts.get("artifacts", 0) + 1
        if run.id in self._index:
            self._index[run.id].append(record)
        return record

    def new_dir(self, run: RunRecord) -> tuple[str, Path]:
        """An id for an artifact the daemon writes in place, and its (new) directory's path;
        `register_nowait` makes it an artifact once it is whole."""
        artifact_id = storage.make_id("art")
        return artifact_id, self.artifacts_dir(run) / artifact_id

    def register_nowait(self, rt: Runtime, *, artifact_id: str, kind: str, dest: Path,
                        size: int, sha256: str, content_type: str,
                        extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record a file the daemon wrote in place (at `dest`, in the directory `new_dir`
        gave) as an artifact of `rt`'s live run; appends `artifact.created`. No I/O."""
        run = rt.run
        self._check_live(rt, run)
        assert run is not None and rt.log is not None
        record = {
            "id": artifact_id, "run_id": run.id, "kind": kind, "name": dest.name,
            "path": str(dest.relative_to(self.run_dir(run))), "content_type": content_type,
            "size_bytes": size, "sha256": sha256, "created_at": storage.now_rfc3339(),
            **(extra or {}),
        }
        rt.log.append("artifact.created", record)
        run.counts["artifacts"] = run.counts.get("artifacts", 0) + 1
        if run.id in self._index:
            self._index[run.id].append(record)
        return record

    def _check_live(self, rt: Runtime, run: RunRecord | None) -> None:
        if run is None or rt.run is not run or rt.log is None:
            what = f"run {run.id} has ended" if run is not None else "it has no active run"
            raise ApiError(
                "runtime.no_active_run",
                f"Runtime {rt.record.space}/{rt.record.name} cannot take artifacts: {what}.",
                hint="Launch the runtime; artifacts belong to a live run.",
                data={"runtime_id": rt.id, "run_id": run.id if run is not None else None},
            )

    # ------------------------------------------------------------------ reading

    async def load(self, run: RunRecord) -> None:
        """Read the run's index from its log in a worker thread (`list` then needs no I/O)."""
        if run.id not in self._index:
            records = await trio.to_thread.run_sync(self._read_index, run)
            self._remember(run.id, records)

    def list(self, run: RunRecord, kind: str | None = None) -> Records:
        """The run's artifacts, newest first, optionally of one kind."""
        records = self._index.get(run.id)
        if records is None:
            records = self._read_index(run)
            self._remember(run.id, records)
        else:
            self._index.move_to_end(run.id)
        return [dict(r) for r in reversed(records) if kind is None or r["kind"] == kind]

    def get(self, run: RunRecord, artifact_id: str) -> dict[str, Any]:
        """One artifact of the run; `artifact.not_found` if the run has none by that id."""
        for record in self.list(run):
            if record["id"] == artifact_id:
                return record
        raise ApiError(
            "artifact.not_found",
            f"Run {run.id} has no artifact {artifact_id!r}.",
            hint="List the run's artifacts with runs.artifacts.list.",
            data={"run_id": run.id, "artifact_id": artifact_id},
        )

    def path_of(self, run: RunRecord, record: dict[str, Any]) -> Path:
        """Where an artifact's file is on disk."""
        path = (self.run_dir(run) / str(record["path"])).resolve()
        if not path.is_relative_to(self.artifacts_dir(run).resolve()):
            # The record came from a log line; never read outside the run's artifacts.
            raise ApiError("artifact.not_found", f"Artifact {record['id']} has no valid path.",
                           hint="The run's log may be damaged.",
                           data={"run_id": run.id, "artifact_id": record["id"]})
        return path

    async def read(self, run: RunRecord, artifact_id: str, offset: int,
                   length: int) -> tuple[bytes, bool]:
        """Up to `length` bytes of the artifact from `offset`; (data, eof)."""
        await self.load(run)
        record = self.get(run, artifact_id)
        path = self.path_of(run, record)
        try:
            return await trio.to_thread.run_sync(_read_chunk, path, offset, length)
        except FileNotFoundError:
            raise ApiError(
                "artifact.not_found",
                f"The file of artifact {artifact_id} is gone from disk.",
                hint="It may have been removed by retention or by hand.",
                data={"run_id": run.id, "artifact_id": artifact_id},
            ) from None

    def _read_index(self, run: RunRecord) -> Records:
        path = self.run_dir(run) / "events.jsonl"
        return [event["data"] for event in read_events(path, types=["artifact.created"])
                if isinstance(event.get("data"), dict) and "id" in event["data"]]

    def _remember(self, run_id: str, records: Records) -> None:
        self._index[run_id] = records
        self._index.move_to_end(run_id)
        while len(self._index) > _CACHED_RUNS:
            self._index.popitem(last=False)

    def forget(self, run_id: str) -> None:
        """Drop a run's cached index (its files were removed, e.g. by retention)."""
        self._index.pop(run_id, None)


def _guess_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def _store_file(directory: Path, dest: Path, data: bytes | None, source: Path | None,
                link: bool, move: bool, max_bytes: int | None) -> tuple[int, str]:
    """Put the artifact's bytes at `dest`; return (size, sha256 hex). Runs in a thread."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if data is not None:
            with open(dest, "xb") as out:
                out.write(data)
            return len(data), hashlib.sha256(data).hexdigest()
        assert source is not None
        placed = False
        if move or link:
            with contextlib.suppress(OSError):  # EXDEV (another filesystem), EPERM: copy
                (os.rename if move else os.link)(source, dest)
                placed = True
        if not placed and max_bytes is not None:
            _copy_prefix(source, dest, max_bytes)
        elif not placed:
            shutil.copyfile(source, dest)
            if move:
                source.unlink(missing_ok=True)
        return _hash_file(dest)
    except BaseException:
        remove_tree(directory, directory.parent)
        raise


def _copy_prefix(source: Path, dest: Path, limit: int) -> None:
    with open(source, "rb") as src, open(dest, "xb") as out:
        left = limit
        while left > 0 and (chunk := src.read(min(_COPY_CHUNK, left))):
            out.write(chunk)
            left -= len(chunk)


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(_COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _read_chunk(path: Path, offset: int, length: int) -> tuple[bytes, bool]:
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if offset >= size:
            return b"", True
        file.seek(offset)
        data = file.read(length)
    return data, offset + len(data) >= size
