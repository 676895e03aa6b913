"""files.*: the runtime's file area. Path rules on real files, then staging, listing and
collecting through the daemon, and a staged file given to a page's <input type=file>."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import trio
from playwright.sync_api import sync_playwright

from browserd.client import errors
from browserd.daemon.base.errors import ApiError
from browserd.daemon.control.files import FileArea, split_path
from browserd.daemon.rpc.api import Caller

from .conftest import Launched, artifact_bytes

T = TypeVar("T")

BAD_PATHS = ["../escape", "a/../../b", "/etc/passwd", "", ".", "a/\0b", "x" * 256]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_paths_outside_or_malformed_are_refused(path: str) -> None:
    with pytest.raises(ApiError) as refused:
        split_path(path)
    assert refused.value.code == "runtime_file.path_invalid"


def test_relative_paths_are_split() -> None:
    assert split_path("a/./b//c.txt") == ["a", "b", "c.txt"]
    assert split_path("", allow_root=True) == []


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    area = FileArea(tmp_path / "files")
    area.stage("in/ok.txt", b"fine", None)
    root = tmp_path / "files"
    (root / "out").symlink_to(outside)  # a directory link pointing out
    (root / "in" / "leak.txt").symlink_to(outside / "secret.txt")  # a file link pointing out
    (root / "in" / "alias.txt").symlink_to(root / "in" / "ok.txt")  # even one pointing in

    for path in ("out/secret.txt", "in/leak.txt", "in/alias.txt"):
        with pytest.raises(ApiError) as refused:
            area.open_file(path)
        assert refused.value.code == "runtime_file.path_invalid", path
    with pytest.raises(ApiError) as through_link:
        area.stage("out/new.txt", b"x", None)  # would write outside through the link
    assert through_link.value.code == "runtime_file.path_invalid"
    assert not (outside / "new.txt").exists()
    with pytest.raises(ApiError):
        area.list_files("out")

    # The listing shows regular files only, and does not descend through links.
    assert [r["path"] for r in area.list_files()] == ["in/ok.txt"]
    # Staging over a link replaces the link itself, never its target.
    area.stage("in/leak.txt", b"replaced", None)
    assert (outside / "secret.txt").read_text() == "secret"
    assert not (root / "in" / "leak.txt").is_symlink()


def test_stage_is_atomic_and_records_are_complete(tmp_path: Path) -> None:
    area = FileArea(tmp_path / "files")
    record = area.stage("docs/report.txt", b"v1", None)
    assert record["path"] == "docs/report.txt" and record["size_bytes"] == 2
    assert record["sha256"] == hashlib.sha256(b"v1").hexdigest()
    assert Path(record["local_path"]) == tmp_path / "files" / "docs" / "report.txt"
    area.stage("docs/report.txt", b"version 2", None)
    fd, again = area.open_file("docs/report.txt")
    os.close(fd)
    assert again["size_bytes"] == 9 and again["sha256"] == hashlib.sha256(b"version 2").hexdigest()
    assert [p.name for p in (tmp_path / "files" / "docs").iterdir()] == ["report.txt"], \
        "no temporary file is left behind"
    with pytest.raises(ApiError) as missing:
        area.open_file("docs/none.txt")
    assert missing.value.code == "runtime_file.not_found"
    with pytest.raises(ApiError) as is_dir:
        area.stage("docs", b"x", None)
    assert is_dir.value.code == "runtime_file.path_invalid"


async def test_stage_list_collect_through_the_daemon(launched: Launched, tmp_path: Path) -> None:
    runtime, daemon = launched.runtime, launched.daemon
    with trio.fail_after(60):
        staged = await runtime.files.stage("uploads/hello.txt", b"hello file")
        assert staged.path == "uploads/hello.txt" and staged.size_bytes == 10
        area = daemon.config.state_dir / "runtimes" / runtime.id / "files"
        assert (area / "uploads" / "hello.txt").read_bytes() == b"hello file"

        local = tmp_path / "big.bin"
        local.write_bytes(os.urandom(300_000))
        from_disk = await runtime.files.stage("big.bin", source_path=local)
        assert from_disk.size_bytes == 300_000

        listed = await runtime.files.list(sha256=True)
        assert [f.path for f in listed] == ["big.bin", "uploads/hello.txt"]
        assert listed[1].sha256 == hashlib.sha256(b"hello file").hexdigest()
        assert [f.path for f in await runtime.files.list("uploads")] == ["uploads/hello.txt"]
        assert listed[0].sha256 is not None and (await runtime.files.list())[0].sha256 is None

        collected = await runtime.files.collect("uploads/hello.txt")
        artifact = collected.artifact
        assert artifact["kind"] == "file" and artifact["name"] == "hello.txt"
        assert artifact_bytes(daemon, artifact) == b"hello file"
        assert artifact["sha256"] == collected.file.sha256

        for bad in ("../x", "/etc/passwd"):
            with pytest.raises(errors.PathInvalid):
                await runtime.files.stage(bad, b"x")
        with pytest.raises(errors.PathInvalid):
            await runtime.files.collect("../../runtime.json")
        with pytest.raises(errors.RuntimeFileNotFound):
            await runtime.files.collect("nope.txt")
        with pytest.raises(errors.InvalidParams):
            await launched.bd.call("files.stage", {"runtime_id": runtime.id, "path": "t.txt",
                                                   "data": "text, not bytes"})

        run = await runtime.current_run()
        events = await run.events.list(types=["file.*"])
        assert [e.type for e in events] == ["file.staged", "file.staged", "file.collected"]
        assert events[0].data["source"] == "data" and events[1].data["source"] == "local"
        assert events[2].data["artifact_id"] == artifact["id"]
        assert events[0].actor is not None and events[0].actor["pid"] == os.getpid()


async def test_a_local_source_needs_the_daemons_uid(launched: Launched, tmp_path: Path) -> None:
    local = tmp_path / "a.txt"
    local.write_text("a")
    api = launched.daemon.api
    stranger = Caller(pid=os.getpid(), uid=os.getuid() + 4242, name="someone")
    params = {"runtime_id": launched.runtime.id, "path": "a.txt", "source_path": str(local)}
    with pytest.raises(ApiError) as forbidden:
        await api.call("files.stage", stranger, params)
    assert forbidden.value.code == "auth.forbidden"
    # The same caller may still send the bytes.
    record = await api.call("files.stage", stranger, {**{k: v for k, v in params.items()
                                                         if k != "source_path"},
                                                      "data": b"a"})
    assert record["size_bytes"] == 1


def upload_with_playwright(cdp_url: str, page_url: str, local_path: str) -> str:
    """Give a staged file to <input type=file> over CDP; return what the page read."""
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(cdp_url, timeout=20_000)
        page = browser.contexts[0].new_page()
        page.goto(page_url)
        cdp = browser.contexts[0].new_cdp_session(page)
        root = cdp.send("DOM.getDocument")["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": "#f"})["nodeId"]
        cdp.send("DOM.setFileInputFiles", {"files": [local_path], "nodeId": node})
        page.wait_for_function("document.title !== 'upload'", timeout=10_000)
        title = page.title()
        page.close()
        browser.close()
        return title


async def test_a_staged_file_goes_into_a_file_input(launched: Launched, site: str) -> None:
    runtime = launched.runtime
    with trio.fail_after(60):
        staged = await runtime.files.stage("forms/cv.txt", b"my curriculum")
        lease = await runtime.connections.create(ttl_s=60)
        assert lease.endpoint is not None
        title = await trio.to_thread.run_sync(upload_with_playwright, lease.endpoint.url,
                                              f"{site}/upload", staged.local_path)
        assert title == "cv.txt:my curriculum"


async def test_files_outlive_runs(launched: Launched) -> None:
    runtime = launched.runtime
    with trio.fail_after(60):
        await runtime.files.stage("keep.txt", b"kept")
        await runtime.stop()
        staged = await runtime.files.stage("while-stopped.txt", b"ok")  # no run: no event
        assert staged.size_bytes == 2
        assert [f.path for f in await runtime.files.list()] == ["keep.txt", "while-stopped.txt"]
        with pytest.raises(errors.NoActiveRun):
            await runtime.files.collect("keep.txt")


# -- files that are not regular files -------------------------------------------------------


def bounded(call: Callable[[], T], *fifos: Path, within_s: float = 5.0) -> T:
    """`call()` in a thread, which must return within `within_s`. A call blocked in opening a
    FIFO is released (by opening the FIFO's other end) before the test fails, so a regression
    fails this test rather than hang the suite."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(("value", call()))
        except BaseException as exc:
            outcome.append(("raised", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within_s)
    if thread.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(within_s)
        raise AssertionError(f"blocked for more than {within_s} s")
    kind, value = outcome[0]
    if kind == "raised":
        raise value
    return cast(T, value)


def test_fifos_devices_and_links_are_refused_without_blocking(tmp_path: Path) -> None:
    area = FileArea(tmp_path / "files")
    area.stage("in/ok.txt", b"fine", None)
    root = tmp_path / "files"
    pipe = root / "in" / "pipe"
    os.mkfifo(pipe)
    (tmp_path / "sub").mkdir()

    with pytest.raises(ApiError) as refused:
        bounded(lambda: area.open_file("in/pipe"), pipe)
    assert refused.value.code == "runtime_file.path_invalid"
    assert "'in/pipe' is a FIFO" in refused.value.message and refused.value.hint
    assert refused.value.data == {"path": "in/pipe", "type": "fifo"}
    with pytest.raises(ApiError) as listed:
        bounded(lambda: area.list_files("in/pipe", with_hash=True), pipe)
    assert listed.value.code == "runtime_file.path_invalid" and "FIFO" in listed.value.message
    # A listing skips what is not a regular file, and never opens it (hashing or not).
    for with_hash in (False, True):
        records = bounded(lambda: area.list_files(with_hash=with_hash), pipe)  # noqa: B023
        assert [r["path"] for r in records] == ["in/ok.txt"]

    # A local source is checked the same way: a FIFO, a device, a directory, a link.
    outside_fifo = tmp_path / "source-pipe"
    os.mkfifo(outside_fifo)
    (tmp_path / "link.txt").symlink_to(root / "in" / "ok.txt")
    for source, words, kind in ((outside_fifo, "is a FIFO", "fifo"),
                                (Path("/dev/zero"), "is a character device", "char_device"),
                                (tmp_path / "sub", "is a directory", "directory"),
                                (tmp_path / "link.txt", "is a symbolic link", "symlink")):
        with pytest.raises(ApiError) as bad_source:
            bounded(lambda: area.stage("copy.bin", None, source), outside_fifo)  # noqa: B023
        assert bad_source.value.code == "rpc.invalid_params", source
        assert words in bad_source.value.message, bad_source.value.message
        assert bad_source.value.data == {"field": "source_path", "type": kind}
    assert sorted(p.name for p in root.iterdir()) == ["in"], "nothing staged, no temp left"


@contextlib.contextmanager
def small_file_limit(limit: int = 64 << 20) -> Iterator[None]:
    """RLIMIT_FSIZE for the while: should a copy start anyway, it fails at 64 MiB (EFBIG;
    Python ignores SIGXFSZ) rather than fill the machine's disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_huge_file_is_refused_before_it_fills_the_disk(tmp_path: Path) -> None:
    area = FileArea(tmp_path / "files")
    area.stage("small.txt", b"small", None)
    free = shutil.disk_usage(tmp_path).free
    sparse = tmp_path / "sparse.bin"
    with open(sparse, "wb") as file:
        file.truncate(free + (1 << 30))  # a hole: takes no space, reads as zeros
    os.link(sparse, tmp_path / "files" / "sparse.bin")
    started = time.monotonic()
    with small_file_limit(), pytest.raises(ApiError) as staged:
        bounded(lambda: area.stage("copy.bin", None, sparse))
    assert staged.value.code == "state.unwritable" and staged.value.data["size_bytes"] > free
    with small_file_limit(), pytest.raises(ApiError) as collected:
        bounded(lambda: area.open_file("sparse.bin"))
    assert collected.value.code == "state.unwritable"
    assert time.monotonic() - started < 2, "refused before reading (or hashing) anything"
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["small.txt", "sparse.bin"]
