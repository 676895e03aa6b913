"""Downloads a dead daemon left in flight (daemon/lost_downloads.py): which ones its run log
never ended, and clearing the run's staging folder without following a link out of the run.

Real files and links in tmp_path; the end-to-end case (kill -9 of a daemon mid-download, with
Chromium) is in tests/reliability/test_faults.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from browserd.daemon.store.eventlog import EventLog
from browserd.daemon.store.lost_downloads import STAGING_DIR, clear_staging, unfinished_downloads


def test_unfinished_downloads_are_those_started_and_never_ended(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    page = {"kind": "page", "id": "P1", "url": "http://127.0.0.1/"}
    with EventLog.open(path, run_id="run_1", runtime_id="rt_1", space="default") as log:
        for guid, name in (("g1", "done.csv"), ("g2", "lost.bin"), ("g3", "no-name"),
                           ("g4", "canceled.zip")):
            log.append("download", {"guid": guid, "url": "http://127.0.0.1/f",
                                    "suggested_filename": None if guid == "g3" else name,
                                    "frame_id": "F"}, source="browser", status="started",
                       target=page)
        log.append("download", {"guid": "g2", "received_bytes": 10, "total_bytes": 99},
                   source="browser", status="progress", target=page)
        log.append("download", {"guid": "g2", "received_bytes": 20, "total_bytes": 99},
                   source="browser", status="progress", target=page)
        log.append("download", {"guid": "g1", "name": "done.csv", "artifact_id": "art_1",
                                "size_bytes": 5, "sha256": "00"}, source="browser",
                   status="finished", target=page)
        log.append("download", {"guid": "g4", "name": "canceled.zip", "reason": "canceled"},
                   source="browser", status="failed", target=page)
        log.append("resource.sample", {"memory_bytes": 1})
    with open(path, "ab") as torn:  # a kill -9 mid-write
        torn.write(b'{"seq":9,"time":"2026-')
    assert unfinished_downloads(path) == [
        {"data": {"guid": "g2", "name": "lost.bin", "received_bytes": 20, "total_bytes": 99},
         "target": page},
        {"data": {"guid": "g3", "name": "download", "received_bytes": None,
                  "total_bytes": None}, "target": page},
    ]
    assert unfinished_downloads(tmp_path / "missing.jsonl") == []


def outside_things(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep.bin").write_bytes(b"keep")
    (outside / "sub" / "keep.txt").write_text("keep")
    return outside


def assert_untouched(outside: Path) -> None:
    assert (outside / "keep.bin").read_bytes() == b"keep"
    assert (outside / "sub" / "keep.txt").read_text() == "keep"


def test_clear_staging_removes_partial_files_and_links_but_nothing_they_point_to(
    tmp_path: Path,
) -> None:
    outside = outside_things(tmp_path)
    run_dir = tmp_path / "runs" / "run_1"
    staging = run_dir / "artifacts" / STAGING_DIR
    staging.mkdir(parents=True)
    (run_dir / "artifacts" / "art_1").mkdir()  # a kept artifact: not staging's
    (run_dir / "artifacts" / "art_1" / "done.csv").write_text("kept")
    (staging / "7f3c-guid.crdownload").write_bytes(b"p" * 1000)
    (staging / "finished-guid").write_bytes(b"whole")
    (staging / "link-to-file").symlink_to(outside / "keep.bin")
    (staging / "link-to-dir").symlink_to(outside)
    (staging / "odd-dir").mkdir()
    (staging / "odd-dir" / "link-inside").symlink_to(outside / "sub")
    removed = clear_staging(run_dir)
    assert sorted(removed) == ["7f3c-guid.crdownload", "finished-guid", "link-to-dir",
                               "link-to-file", "odd-dir"]
    assert not staging.exists(), "the emptied staging folder goes too"
    assert (run_dir / "artifacts" / "art_1" / "done.csv").read_text() == "kept"
    assert_untouched(outside)
    assert clear_staging(run_dir) == []  # nothing staged: nothing to do


def test_clear_staging_never_follows_a_link_on_the_way(tmp_path: Path) -> None:
    outside = outside_things(tmp_path)
    # The staging folder itself is a link out of the run: left alone, target and all.
    run_dir = tmp_path / "runs" / "run_1"
    (run_dir / "artifacts").mkdir(parents=True)
    (run_dir / "artifacts" / STAGING_DIR).symlink_to(outside)
    assert clear_staging(run_dir) == []
    assert (run_dir / "artifacts" / STAGING_DIR).is_symlink()
    # So is an artifacts folder that is a link to somewhere holding a .incoming.
    (outside / STAGING_DIR).mkdir()
    (outside / STAGING_DIR / "victim.crdownload").write_bytes(b"theirs")
    other = tmp_path / "runs" / "run_2"
    other.mkdir()
    (other / "artifacts").symlink_to(outside)
    assert clear_staging(other) == []
    assert (outside / STAGING_DIR / "victim.crdownload").read_bytes() == b"theirs"
    assert_untouched(outside)
    assert os.path.islink(other / "artifacts")
