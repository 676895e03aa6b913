"""Files that are not plain files, in a runtime's file area and as local sources: FIFOs,
devices, links and sparse giants, sent by many requests at once to a real daemon process.

A FIFO used to block `files.collect` in open() for ever, each holding one of trio's worker
threads; once all 40 were blocked, every request that needs one (`runtimes.stop` among them)
hung. Staging `/dev/zero` copied zeros until the disk was full.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from browserd.client import AsyncClient, errors

from .harness import REPORT, Daemon, assert_no_orphans, check_error

PARALLEL = 48  # more than trio's 40 worker threads


def release(fifos: list[Path]) -> None:
    """Open each FIFO's writing end once: a reader blocked in open() returns (a regression
    then fails its test instead of leaving the daemon unable to stop)."""
    for fifo in fifos:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def test_fifos_devices_and_giants_are_refused_at_once_and_wedge_nothing(
        short_dir: Path) -> None:
    # RLIMIT_FSIZE: should an endless copy start anyway, it ends at 512 MiB (EFBIG), not with
    # the machine's disk full.
    daemon = Daemon(short_dir / "d", fsize=512 << 20)
    daemon.start()
    outside = short_dir / "outside"
    outside.mkdir()
    fifos = [outside / "pipe"]
    try:
        async with AsyncClient(daemon.socket) as bd, AsyncClient(daemon.socket) as other:
            with trio.fail_after(30):
                runtime = await bd.runtimes.browser.launch(name="files")
                await runtime.files.stage("keep.txt", b"kept")
            area = daemon.state_dir / "runtimes" / runtime.id / "files"
            fifos.append(area / "pipe")
            for fifo in fifos:
                os.mkfifo(fifo)
            (outside / "link").symlink_to(area / "keep.txt")
            disk = os.statvfs(area)
            os.close(os.open(area / "giant.bin", os.O_WRONLY | os.O_CREAT, 0o600))
            os.truncate(area / "giant.bin", disk.f_blocks * disk.f_frsize * 2)  # all a hole

            bad: list[tuple[str, dict[str, Any], str]] = [
                ("files.collect", {"path": "pipe"}, "runtime_file.path_invalid"),
                ("files.list", {"path": "pipe", "sha256": True}, "runtime_file.path_invalid"),
                ("files.stage", {"path": "copy", "source_path": str(outside / "pipe")},
                 "rpc.invalid_params"),
                ("files.stage", {"path": "zero", "source_path": "/dev/zero"},
                 "rpc.invalid_params"),
                ("files.stage", {"path": "linked", "source_path": str(outside / "link")},
                 "rpc.invalid_params"),
                ("files.collect", {"path": "giant.bin"}, "state.unwritable"),
                ("files.stage", {"path": "copy", "source_path": str(area / "giant.bin")},
                 "state.unwritable"),
            ]
            seen: Counter[tuple[str, str]] = Counter()

            async def one(index: int) -> None:
                method, params, expected = bad[index % len(bad)]
                try:
                    result = await bd.call(method, {"runtime_id": runtime.id, **params})
                except errors.BrowserdError as exc:
                    assert check_error(exc.to_wire()) == expected, (method, params, exc)
                    seen[method, exc.code] += 1
                else:
                    raise AssertionError(f"{method} {params} was served: {result}")

            started = trio.current_time()
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for index in range(PARALLEL):
                        nursery.start_soon(one, index)
            refused_in = trio.current_time() - started
            assert sum(seen.values()) == PARALLEL

            # Nothing was left holding a worker thread: other clients, the area and a stop
            # are all served at once.
            with trio.fail_after(10):
                status = await other.call("daemon.status")
                assert status["counts"]["active_runtimes"] == 1
                listed = await other.call("files.list", {"runtime_id": runtime.id})
                assert [f["path"] for f in listed["data"]] == ["giant.bin", "keep.txt"]
                run = await runtime.current_run()
                events = await run.events.list(types=["file.*"])
                assert [e.type for e in events] == ["file.staged"], "nothing else staged"
            started = trio.current_time()
            with trio.fail_after(20):
                await runtime.stop()
            REPORT.notes.append(
                f"{PARALLEL} requests on FIFOs, /dev/zero, a link and a sparse giant at once: "
                f"all refused in {refused_in * 1000:.0f} ms; runtimes.stop then took "
                f"{(trio.current_time() - started) * 1000:.0f} ms")
        assert sorted(p.name for p in area.iterdir()) == ["giant.bin", "keep.txt", "pipe"]
        assert not daemon.tracebacks(), daemon.tracebacks()
        REPORT.bad_inputs["file types"] += PARALLEL
    except BaseException:
        release(fifos)
        daemon.kill()  # a daemon left wedged may not stop: this test has failed already
        raise
    assert daemon.stop(timeout_s=30) == 0, daemon.log_text()
    assert_no_orphans(daemon.state_dir)
