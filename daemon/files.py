"""A runtime's file area: files staged in (for uploads) and collected out (as artifacts).

    <state>/runtimes/<runtime_id>/files/

Paths in the API are relative to the area. Only plain relative paths are taken: no `..`, no
absolute path, no empty or over-long component, no NUL. Symlinks are never followed: every
directory is opened with O_NOFOLLOW relative to its parent's descriptor (openat), so a symlink
anywhere in the path (even one placed there while the request runs) is refused with
`runtime_file.path_invalid` rather than lead out of the area. A staged file is written to a
temporary name and renamed into place, so a reader never sees half a file.

File work runs in worker threads; events are appended by the caller on the trio thread.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .errors import ApiError
from .model import format_time
from .names import component_problem

__all__ = ["FileArea", "path_invalid"]

MAX_PATH = 1024
_CHUNK = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def path_invalid(path: str, why: str) -> ApiError:
    return ApiError(
        "runtime_file.path_invalid",
        f"{path!r} is not a path inside the runtime's file area: {why}.",
        hint="Give a relative path such as 'uploads/report.pdf' (no '..', no leading '/', "
             "no symbolic links).",
        data={"path": path},
    )


def split_path(path: str, *, allow_root: bool = False) -> list[str]:
    """The path's components, or `runtime_file.path_invalid`."""
    if not isinstance(path, str) or "\0" in path:
        raise path_invalid(str(path), "it contains a NUL character")
    if len(path.encode()) > MAX_PATH:
        raise path_invalid(path[:80], f"it is longer than {MAX_PATH} bytes")
    if path.startswith("/") or PurePosixPath(path).is_absolute():
        raise path_invalid(path, "it is absolute")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise path_invalid(path, "it contains '..'")
    for part in parts:  # the name rule (names.py), component by component
        if (problem := component_problem(part)) is not None:
            raise path_invalid(path, problem)
    if not parts and not allow_root:
        raise path_invalid(path, "it names no file")
    return parts


class FileArea:
    """One runtime's file area. Methods block (run them in a worker thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def _dir(self, parts: list[str], *, create: bool) -> Iterator[int]:
        """An O_NOFOLLOW descriptor of the directory `parts` inside the area."""
        if create:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise _refusal(parts, part, exc) from None
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def stage(self, path: str, data: bytes | None, source: Path | None) -> dict[str, Any]:
        """Write `data` (or a copy of the local file `source`) at `path`; return its record."""
        parts = split_path(path)
        digest = hashlib.sha256()
        try:
            source_file = open(source, "rb") if source is not None else None  # noqa: SIM115
        except OSError as exc:
            raise ApiError("rpc.invalid_params",
                           f"source_path: cannot read {str(source)!r}: {exc.strerror}",
                           hint="Give the absolute path of a readable local file.",
                           data={"field": "source_path"}) from None
        with contextlib.ExitStack() as stack, self._dir(parts[:-1], create=True) as dir_fd:
            if source_file is not None:
                stack.enter_context(source_file)
            tmp = f".{parts[-1][:200]}.{os.getpid()}.{os.urandom(4).hex()}.partial"
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            try:
                with open(out, "wb", closefd=True) as sink:
                    for chunk in _chunks(data, source_file):
                        digest.update(chunk)
                        sink.write(chunk)
                    sink.flush()
                    os.fsync(sink.fileno())
                existing = _lstat(parts[-1], dir_fd)
                if existing is not None and stat.S_ISDIR(existing.st_mode):
                    raise path_invalid(path, "it is a directory")
                # rename() replaces a symlink itself, never what it points at.
                os.rename(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
            info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        return self._record(parts, info, digest.hexdigest())

    def open_file(self, path: str) -> tuple[int, dict[str, Any]]:
        """A read descriptor of the regular file at `path` (no symlink anywhere on the way)
        and its record with sha256. The caller closes the descriptor; `/proc/self/fd/<fd>`
        names the very file that was checked, so nothing can be swapped in meanwhile."""
        parts = split_path(path)
        with self._dir(parts[:-1], create=False) as dir_fd:
            try:
                fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                raise _refusal(parts, parts[-1], exc) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise path_invalid(path, "it is not a regular file")
            return fd, self._record(parts, info, _hash_fd(fd))
        except BaseException:
            os.close(fd)
            raise

    def list_files(self, path: str = "", *, with_hash: bool = False) -> list[dict[str, Any]]:
        """Regular files under `path` (a directory or one file), sorted by path. Symlinks
        are not followed, so they are not listed."""
        parts = split_path(path, allow_root=True)
        if not self.root.exists():
            return []
        if parts:
            with self._dir(parts[:-1], create=False) as dir_fd:
                info = _lstat(parts[-1], dir_fd)
                if info is None:
                    raise ApiError("runtime_file.not_found", f"There is no file {path!r}.",
                                   hint="List the area with files.list.", data={"path": path})
                if stat.S_ISREG(info.st_mode):
                    digest = None
                    if with_hash:
                        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
                        try:
                            digest = _hash_fd(fd)
                        finally:
                            os.close(fd)
                    return [self._record(parts, info, digest)]
        records: list[dict[str, Any]] = []
        with self._dir(parts, create=False) as dir_fd:
            self._walk(dir_fd, parts, records, with_hash)
        return sorted(records, key=lambda record: record["path"])

    def _walk(self, dir_fd: int, parts: list[str], records: list[dict[str, Any]],
              with_hash: bool) -> None:
        for entry in os.scandir(dir_fd):
            if entry.name.endswith(".partial") and entry.name.startswith("."):
                continue  # a stage in progress
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                child = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    self._walk(child, [*parts, entry.name], records, with_hash)
                finally:
                    os.close(child)
            elif stat.S_ISREG(info.st_mode):
                digest = None
                if with_hash:
                    fd = os.open(entry.name, _FILE_FLAGS, dir_fd=dir_fd)
                    try:
                        digest = _hash_fd(fd)
                    finally:
                        os.close(fd)
                records.append(self._record([*parts, entry.name], info, digest))

    def _record(self, parts: list[str], info: os.stat_result, digest: str | None
                ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "path": "/".join(parts),
            "size_bytes": info.st_size,
            "modified_at": format_time(datetime.fromtimestamp(info.st_mtime, UTC)),
            # Where the browser can read it (DOM.setFileInputFiles takes local paths).
            "local_path": str(self.root.joinpath(*parts)),
        }
        if digest is not None:
            record["sha256"] = digest
        return record


def _refusal(parts: list[str], part: str, exc: OSError) -> ApiError:
    path = "/".join(parts)
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return path_invalid(path, f"{part!r} is a symbolic link or not a directory")
    if exc.errno == errno.ENOENT:
        return ApiError("runtime_file.not_found", f"There is no file {path!r}.",
                        hint="List the area with files.list.", data={"path": path})
    return ApiError("runtime_file.io_error", f"Cannot open {path!r}: {exc.strerror}.",
                    hint="Check the state directory's permissions and free space.",
                    data={"path": path, "errno": exc.errno})


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _chunks(data: bytes | None, source: BinaryIO | None) -> Iterator[bytes]:
    if data is not None:
        yield data
        return
    assert source is not None
    while chunk := source.read(_CHUNK):
        yield chunk


def _hash_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()
