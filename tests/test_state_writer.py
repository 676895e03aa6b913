"""The state writer: records written off the event loop, newest snapshot per path, on real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from browserd.daemon.store import storage
from browserd.daemon.store.state_writer import StateWriter


@pytest.fixture
async def writer(nursery: trio.Nursery) -> AsyncIterator[StateWriter]:
    state = StateWriter()
    scope = trio.CancelScope()

    async def host(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await state.run(task_status=task_status)

    await nursery.start(host)
    yield state
    scope.cancel()


def read(path: Path) -> object:
    return json.loads(path.read_text())


async def test_saves_coalesce_to_the_newest_snapshot(writer: StateWriter, tmp_path: Path) -> None:
    path = tmp_path / "runtime.json"
    for version in range(50):  # no checkpoint in between: the worker has not woken yet
        writer.save(path, {"version": version})
    assert not path.exists(), "save must not write on the caller's turn"
    with trio.fail_after(10):
        await writer.flush()
    assert read(path) == {"version": 49}
    assert writer.batches == 1, "fifty saves of one path are one write"


async def test_saves_made_during_a_write_are_written_after_it(
    writer: StateWriter, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    writer.save(first, {"n": 1})
    await trio.testing.wait_all_tasks_blocked()  # the worker waits for its thread now
    writer.save(first, {"n": 2})
    writer.save(second, {"n": 1})
    with trio.fail_after(10):
        await writer.flush()
    assert read(first) == {"n": 2} and read(second) == {"n": 1}
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.json"], "no temporary file is left"


async def test_a_failed_save_reports_to_its_saver(writer: StateWriter, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    errors: list[OSError] = []
    writer.save(not_a_dir / "run.json", {"n": 1}, errors.append)
    with trio.fail_after(10):
        await writer.flush()
    assert len(errors) == 1 and isinstance(errors[0], NotADirectoryError)


async def test_a_record_whose_directory_went_is_dropped(
    writer: StateWriter, tmp_path: Path
) -> None:
    directory = tmp_path / "rt_1"
    directory.mkdir()
    errors: list[OSError] = []
    writer.save(directory / "runtime.json", {"n": 1}, errors.append)
    shutil.rmtree(directory)  # a delete that came before the write
    with trio.fail_after(10):
        await writer.flush()
    assert errors == [] and not directory.exists(), "the write must not bring it back"


async def test_write_returns_with_the_record_on_disk(writer: StateWriter, tmp_path: Path) -> None:
    path = tmp_path / "runtime.json"
    writer.save(path, {"n": 1})
    with trio.fail_after(10):
        await writer.write(path, {"n": 2})
    assert read(path) == {"n": 2}
    with pytest.raises(FileNotFoundError), trio.fail_after(10):
        await writer.write(tmp_path / "missing" / "run.json", {"n": 1})


async def test_unencodable_records_fail_at_the_save(writer: StateWriter, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        writer.save(tmp_path / "x.json", {"n": float("nan")})
    assert not (tmp_path / "x.json").exists()


async def test_queued_records_are_written_when_the_writer_stops(tmp_path: Path) -> None:
    state = StateWriter()
    path, later = tmp_path / "a.json", tmp_path / "b.json"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(state.run)
            state.save(path, {"n": 1})
            nursery.cancel_scope.cancel()  # before the worker ran
    assert read(path) == {"n": 1}
    state.save(later, {"n": 2})  # a daemon on its way out still records how runs ended
    assert read(later) == {"n": 2}


async def test_flush_gives_up_on_a_hung_disk(
    writer: StateWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A write that never returns (a stalled network mount; no such disk here, so the write
    blocks on an event) must not hang a stop that flushes: flush gives up after its limit."""
    released = threading.Event()
    real_write = storage.write_bytes_atomic

    def hung_write(path: Path, payload: bytes) -> None:
        released.wait(30)
        real_write(path, payload)

    monkeypatch.setattr(storage, "write_bytes_atomic", hung_write)
    writer.save(tmp_path / "run.json", {"n": 1})
    with trio.fail_after(10):
        assert await writer.flush(limit_s=0.3) is False
    assert "still being written" in caplog.text
    released.set()
    with trio.fail_after(10):
        assert await writer.flush() is True
    assert read(tmp_path / "run.json") == {"n": 1}


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (the tests run as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as sink, pytest.raises(OSError):
        while True:
            sink.write(b"\0" * 65536)
    return filler


async def test_a_record_a_full_disk_refused_lands_once_there_is_room(
    writer: StateWriter, small_fs: Path
) -> None:
    """A run's final record saved while the disk was full is not left behind for good: it is
    tried again until the disk takes it (unless a newer snapshot replaced it)."""
    path = small_fs / "run.json"
    writer.save(path, {"status": "active"})
    with trio.fail_after(10):
        await writer.flush()
    filler = fill(small_fs)
    failures: list[OSError] = []
    writer.save(path, {"status": "ended", "big": "x" * 8192}, failures.append)
    with trio.fail_after(10):
        await writer.flush()
    assert failures and read(path) == {"status": "active"}
    filler.unlink()
    with trio.fail_after(10):
        while read(path) == {"status": "active"}:  # noqa: ASYNC110 - a file, not our state
            await trio.sleep(0.05)
    assert read(path) == {"status": "ended", "big": "x" * 8192}
    assert len(failures) == 1, "a retry that fails again is not reported again"
