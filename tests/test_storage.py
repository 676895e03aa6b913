"""State files: atomic JSON replace, timestamps and ids, on real files in tmp_path."""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from browserd.daemon.store.storage import (
    CorruptFileError,
    format_rfc3339,
    make_id,
    now_rfc3339,
    read_json,
    write_json_atomic,
)

CHILD_TIMEOUT_S = 60

CROCKFORD_CHAR = "[0-9a-hjkmnp-tv-z]"
ID_RE = re.compile(
    rf"(?P<prefix>[a-z]+)_(?P<time>{CROCKFORD_CHAR}{{10}})(?P<rand>{CROCKFORD_CHAR}{{16}})"
)
CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def decode_crockford(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + CROCKFORD.index(char)
    return value


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )


# -- write_json_atomic / read_json -------------------------------------------------------------


def test_write_json_atomic_round_trip_leaves_only_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    record = {"id": "run_x", "name": "crm ✓", "counts": {"events": 3}, "ended_at": None}

    write_json_atomic(path, record)
    write_json_atomic(path, {**record, "counts": {"events": 4}})

    assert read_json(path) == {**record, "counts": {"events": 4}}
    assert os.listdir(tmp_path) == ["run.json"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text(encoding="utf-8").endswith("}\n")


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": {1, 2}}, {"x": object()}])
def test_write_json_atomic_refuses_non_json_and_keeps_the_old_file(
    tmp_path: Path, bad: object
) -> None:
    path = tmp_path / "runtime.json"
    write_json_atomic(path, {"v": 1})

    with pytest.raises((TypeError, ValueError)):
        write_json_atomic(path, bad)

    assert read_json(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["runtime.json"]


def test_write_json_atomic_removes_tmp_when_the_write_fails(tmp_path: Path) -> None:
    # A file size limit makes write() fail with EFBIG halfway through the temporary file
    # (root ignores permissions, not rlimits).
    path = tmp_path / "runtime.json"
    write_json_atomic(path, {"v": "old"})
    child = run_child(
        """
        import resource, signal, sys
        from pathlib import Path
        from browserd.daemon.store.storage import write_json_atomic
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            write_json_atomic(Path(sys.argv[1]), {"v": "x" * 100_000})
        except OSError as exc:
            print(exc.errno)
        """,
        str(path),
    )

    assert child.returncode == 0, child.stderr
    assert int(child.stdout) == errno.EFBIG
    assert os.listdir(tmp_path) == ["runtime.json"]
    assert read_json(path) == {"v": "old"}


def test_concurrent_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    # The writer is another process, so reads and writes truly overlap. Large records make a
    # non-atomic write (truncate, then write) visible to the reader almost every time.
    path = tmp_path / "runtime.json"
    records = [{"version": v, "blob": str(v) * 300_000} for v in ("a", "b")]
    write_json_atomic(path, records[0])
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys
                from pathlib import Path
                from browserd.daemon.store.storage import write_json_atomic
                path = Path(sys.argv[1])
                for i in range(60):
                    v = "ab"[i % 2]
                    write_json_atomic(path, {"version": v, "blob": v * 300_000})
                """
            ),
            str(path),
        ]
    )
    reads = 0
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while writer.poll() is None:
            assert time.monotonic() < deadline, "writer did not finish"
            assert read_json(path) in records
            reads += 1
    finally:
        writer.kill()
        writer.wait(timeout=CHILD_TIMEOUT_S)

    assert writer.returncode == 0
    assert reads > 10
    assert os.listdir(tmp_path) == ["runtime.json"]


def test_read_json_missing_is_none(tmp_path: Path) -> None:
    assert read_json(tmp_path / "nope.json") is None


@pytest.mark.parametrize("content", [b'{"id": "run_x", "sta', b"", b'\xff{"a": 1}'])
def test_read_json_corrupt_raises_with_the_path(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "run.json"
    path.write_bytes(content)

    with pytest.raises(CorruptFileError) as info:
        read_json(path)

    assert info.value.path == path
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


# -- time ----------------------------------------------------------------------------------------


def test_now_rfc3339_is_utc_with_microseconds() -> None:
    before = datetime.now(UTC)
    stamp = now_rfc3339()
    after = datetime.now(UTC)

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    parsed = datetime.fromisoformat(stamp)
    assert parsed.tzinfo is not None
    assert before.replace(microsecond=0) <= parsed <= after


def test_format_rfc3339() -> None:
    assert format_rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    assert format_rfc3339(1_795_859_091.5) == "2026-11-28T09:44:51.500000Z"
    # Across a second boundary the cached date part must change.
    assert format_rfc3339(59.999999) == "1970-01-01T00:00:59.999999Z"
    assert format_rfc3339(60.000001) == "1970-01-01T00:01:00.000001Z"


# -- ids -----------------------------------------------------------------------------------------


def test_make_id_shape_and_time() -> None:
    before_ms = time.time_ns() // 1_000_000
    new_id = make_id("run")
    after_ms = time.time_ns() // 1_000_000

    match = ID_RE.fullmatch(new_id)
    assert match is not None, new_id
    assert match["prefix"] == "run"
    # The time part may run ahead by a millisecond when ids were made faster than the clock.
    assert before_ms <= decode_crockford(match["time"]) <= after_ms + 1000


def test_make_id_sorts_in_creation_order_and_is_unique() -> None:
    ids = [make_id("rt") for _ in range(20_000)]  # many per millisecond

    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids
    # Within one millisecond the random part does not count up by one: the next id is not
    # guessable from the previous one.
    randoms = [decode_crockford(ID_RE.fullmatch(i)["rand"]) for i in ids]  # type: ignore[index]
    steps = [b - a for a, b in itertools.pairwise(randoms) if b > a]
    assert sum(1 for step in steps if step <= 1) < len(steps) / 100


def test_make_id_is_unique_across_threads() -> None:
    results: list[list[str]] = [[] for _ in range(4)]

    def work(out: list[str]) -> None:
        out.extend(make_id("conn") for _ in range(5000))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=CHILD_TIMEOUT_S)

    every = [i for out in results for i in out]
    assert len(every) == 20_000
    assert len(set(every)) == 20_000
    for out in results:
        assert sorted(out) == out


def test_make_id_from_two_processes_differ() -> None:
    code = "from browserd.daemon.store.storage import make_id; print(make_id('sp'))"
    first, second = (run_child(code).stdout.strip() for _ in range(2))

    assert ID_RE.fullmatch(first) and ID_RE.fullmatch(second)
    assert first[-16:] != second[-16:]
    assert first < second


@pytest.mark.parametrize("prefix", ["", "run-x", "rün", "a b"])
def test_make_id_rejects_bad_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError):
        make_id(prefix)


def test_records_are_plain_json(tmp_path: Path) -> None:
    # Other tools (jq, browserctl --json) read these files: no NaN, real UTF-8.
    path = tmp_path / "space.json"
    write_json_atomic(path, {"name": "café", "id": make_id("sp"), "created_at": now_rfc3339()})
    text = path.read_bytes().decode("utf-8")

    assert "café" in text
    assert json.loads(text)["name"] == "café"
