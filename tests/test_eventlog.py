"""The run event log on real files: seq recovery, torn tails, filters, crashes and full disks."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from browserd.daemon.store.eventlog import EventLog, iter_events, read_events

CHILD_TIMEOUT_S = 60
IDS = {"run_id": "run_01jdxq3m7z8k2c4v6b8n0p2r4t", "runtime_id": "rt_01jdxq3m", "space": "sales"}


def open_log(path: Path, **kwargs: Any) -> EventLog:
    return EventLog.open(path, **IDS, **kwargs)


def compact(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [event["seq"] for event in events]


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )


# -- the line format -------------------------------------------------------------------------


def test_append_builds_the_contract_event_and_writes_it_as_one_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    actor = {"type": "client", "pid": 4242, "uid": 1000, "name": "python3"}
    target = {"kind": "page", "id": "T1", "url": "https://example.com/ü"}
    with open_log(path) as log:
        first = log.append("runtime.lifecycle", status="starting")
        second = log.append(
            "connection.attached", {"pid": 4242}, source="client", actor=actor, target=target
        )

    head = ["seq", "time", "run_id", "runtime_id", "space", "type"]
    assert list(first) == [*head, "status", "source", "data"]
    assert first["seq"] == 1 and first["data"] == {} and first["source"] == "daemon"
    assert list(second) == [*head, "source", "actor", "target", "data"]
    assert second["seq"] == 2 and second["actor"] == actor and second["target"] == target
    assert {k: second[k] for k in IDS} == IDS
    assert first["time"] <= second["time"] and second["time"].endswith("Z")
    # Compact, UTF-8 (not \u escapes), one line each, nothing else in the file.
    assert path.read_bytes() == compact(first) + compact(second)
    assert read_events(path) == [first, second]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    type_=st.text(min_size=1),
    data=st.dictionaries(st.text(), json_values, max_size=5),
    status=st.none() | st.text(),
    source=st.sampled_from(["daemon", "browser", "client"]),
    actor=st.none() | st.dictionaries(st.text(), json_values, max_size=3),
    target=st.none() | st.dictionaries(st.text(), json_values, max_size=3),
)
def test_lines_are_exactly_compact_json(
    tmp_path: Path,
    type_: str,
    data: dict[str, Any],
    status: str | None,
    source: str,
    actor: dict[str, Any] | None,
    target: dict[str, Any] | None,
) -> None:
    # The writer formats the fixed fields by hand for speed: it must give json.dumps' bytes.
    path = tmp_path / "events.jsonl"
    path.unlink(missing_ok=True)
    with open_log(path, fsync="never") as log:
        event = log.append(type_, data, source=source, status=status, actor=actor, target=target)

    assert path.read_bytes() == compact(event)
    assert read_events(path) == [event]


def test_lone_surrogates_are_escaped_not_lost(tmp_path: Path) -> None:
    # JavaScript strings may hold half a surrogate pair; UTF-8 cannot, JSON escapes can.
    path = tmp_path / "events.jsonl"
    with open_log(path) as log:
        log.append("console.message", {"text": "broken \ud83d emoji"})
        log.append("console.message", {"text": "fine"})

    assert [e["data"]["text"] for e in read_events(path)] == ["broken \ud83d emoji", "fine"]
    assert path.read_bytes().decode("utf-8").count("\n") == 2


@pytest.mark.parametrize(
    "data", [{"cpu": float("nan")}, {"x": {1, 2}}, {"x": b"bytes"}, ["not", "a", "dict"]]
)
def test_non_json_data_raises_without_using_a_seq(tmp_path: Path, data: Any) -> None:
    path = tmp_path / "events.jsonl"
    with open_log(path) as log:
        log.append("alert")
        with pytest.raises((TypeError, ValueError)):
            log.append("resource.sample", data)
        assert log.last_seq == 1
        log.append("alert")

    assert seqs(read_events(path)) == [1, 2]


def test_circular_data_raises_value_error(tmp_path: Path) -> None:
    data: dict[str, Any] = {}
    data["self"] = data
    with open_log(tmp_path / "events.jsonl") as log, pytest.raises(ValueError):
        log.append("alert", data)


# -- seq recovery and torn tails ---------------------------------------------------------------


def test_seq_is_gap_free_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for round_ in range(3):
        with open_log(path) as log:
            assert log.last_seq == round_ * 4
            for _ in range(4):
                log.append("target.created")

    assert seqs(read_events(path)) == list(range(1, 13))


def test_torn_last_line_is_skipped_and_the_next_append_starts_a_fresh_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    with open_log(path) as log:
        for _ in range(3):
            log.append("target.navigated", {"url": "https://example.com"})
        fourth = log.append("target.navigated", {"url": "https://example.com/4"})
    # Simulate a crash halfway through writing event 4.
    whole = path.read_bytes()
    line4 = compact(fourth)
    torn = whole[: -len(line4)] + line4[: len(line4) // 2]
    path.write_bytes(torn)

    assert seqs(read_events(path)) == [1, 2, 3]
    with open_log(path) as log:
        assert log.last_seq == 3
        again = log.append("target.navigated", {"url": "https://example.com/again"})

    assert again["seq"] == 4
    content = path.read_bytes()
    assert content.startswith(torn)  # existing bytes are never rewritten
    assert content == torn + b"\n" + compact(again)
    assert read_events(path) == [*read_events(path)[:3], again]
    assert seqs(read_events(path)) == [1, 2, 3, 4]


def test_complete_last_line_without_newline_counts(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with open_log(path) as log:
        log.append("alert")
        second = log.append("alert")
    path.write_bytes(path.read_bytes()[:-1])  # the newline of event 2 never made it

    with open_log(path) as log:
        assert log.last_seq == 2
        log.append("alert")

    assert seqs(read_events(path)) == [1, 2, 3]
    assert compact(second) in path.read_bytes()


def test_invalid_lines_anywhere_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with open_log(path) as log:
        log.append("alert")
    with path.open("ab") as file:
        file.write(b'\n   \nnot json\n[1,2]\n{"seq":true,"type":"x"}\n{"seq":9}\n')
        file.write(b"\x00" * 100 + b"\n\xff\xfe\n")
    with open_log(path) as log:
        assert log.last_seq == 1
        log.append("alert")
    path.write_bytes(path.read_bytes() + b"\x00" * 4096)  # a zero-filled tail after power loss

    assert seqs(read_events(path)) == [1, 2]
    with open_log(path) as log:
        assert log.last_seq == 2
        log.append("alert")
    assert seqs(read_events(path)) == [1, 2, 3]


def test_open_scans_back_over_long_lines_and_long_garbage(tmp_path: Path) -> None:
    # The backwards scan reads 64 KiB blocks: lines and garbage longer than a block must work.
    path = tmp_path / "events.jsonl"
    with open_log(path) as log:
        log.append("alert", {"blob": "x" * 200_000})
        log.append("alert", {"blob": "y" * 150_000})
    with path.open("ab") as file:
        file.write(b"z" * 300_000)  # torn, no newline

    with open_log(path) as log:
        assert log.last_seq == 2
        log.append("alert")
    assert seqs(read_events(path)) == [1, 2, 3]


def test_new_log_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    assert read_events(path) == []
    with open_log(path) as log:
        assert log.last_seq == 0
    assert path.exists() and path.stat().st_size == 0
    assert path.stat().st_mode & 0o777 == 0o600


def test_open_refuses_unknown_fsync_policy(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        EventLog.open(tmp_path / "e.jsonl", **IDS, fsync="sometimes")


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_fsync_policies_write_the_same_log(tmp_path: Path, fsync: Any) -> None:
    path = tmp_path / "events.jsonl"
    with open_log(path, fsync=fsync) as log:
        for i in range(50):
            log.append("resource.sample", {"i": i})
        log.flush()
        assert seqs(read_events(path)) == list(range(1, 51))
    assert [e["data"]["i"] for e in read_events(path)] == list(range(50))


def test_append_after_close_raises_and_close_is_idempotent(tmp_path: Path) -> None:
    log = open_log(tmp_path / "events.jsonl")
    log.append("alert")
    log.close()
    log.close()

    assert log.closed
    with pytest.raises(trio.ClosedResourceError):
        log.append("alert")


# -- reading: filters, cursor, limit ---------------------------------------------------------


TYPES = [
    "runtime.lifecycle",
    "connection.created",
    "connection.attached",
    "connection.command",
    "connections.other",
    "connection",
    "target.created",
    "console.message",
]


@pytest.fixture
def mixed_log(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    with open_log(path) as log:
        for i in range(40):
            log.append(TYPES[i % len(TYPES)], {"i": i})
    return path


def test_types_exact_and_family(mixed_log: Path) -> None:
    def types_of(types: list[str]) -> set[str]:
        return {e["type"] for e in read_events(mixed_log, types=types)}

    assert types_of(["connection.*"]) == {
        "connection.created",
        "connection.attached",
        "connection.command",
    }
    assert types_of(["runtime.lifecycle", "console.message"]) == {
        "runtime.lifecycle",
        "console.message",
    }
    assert types_of(["connection"]) == {"connection"}
    assert types_of(["target.*", "connection"]) == {"target.created", "connection"}
    assert types_of(["nothing.*"]) == set()
    assert len(read_events(mixed_log, types=[])) == 40
    assert len(read_events(mixed_log, types=["*"])) == 40
    assert seqs(read_events(mixed_log, types=["connection.*"])) == [
        e["seq"] for e in read_events(mixed_log) if e["type"].startswith("connection.")
    ]
    with pytest.raises(TypeError):
        read_events(mixed_log, types="connection.*")


def test_after_seq_and_limit(mixed_log: Path) -> None:
    assert seqs(read_events(mixed_log, after_seq=35)) == [36, 37, 38, 39, 40]
    assert seqs(read_events(mixed_log, after_seq=10, limit=3)) == [11, 12, 13]
    assert read_events(mixed_log, after_seq=40) == []
    assert read_events(mixed_log, limit=0) == []
    assert seqs(read_events(mixed_log, after_seq=4, limit=2, types=["connection.*"])) == [10, 11]
    with pytest.raises(ValueError):
        read_events(mixed_log, limit=-1)


def test_paging_with_a_cursor_visits_every_event_once(mixed_log: Path) -> None:
    seen: list[int] = []
    cursor = 0
    while page := read_events(mixed_log, after_seq=cursor, limit=7):
        seen += seqs(page)
        cursor = page[-1]["seq"]
    assert seen == list(range(1, 41))


def test_cursor_search_in_a_large_log_with_gaps_and_garbage(tmp_path: Path) -> None:
    # read_events binary-searches for after_seq: check it against a plain filter on a file
    # much larger than its 64 KiB search window, with missing seqs (a degraded log) and junk.
    rng = random.Random(7)
    path = tmp_path / "events.jsonl"
    present: list[int] = []
    with path.open("wb") as file:
        for seq in range(1, 3001):
            if rng.random() < 0.1:
                continue  # dropped while the disk was full
            if rng.random() < 0.05:
                file.write(rng.choice([b"garbage\n", b'{"seq":' + str(seq).encode(), b"\n"]))
                file.write(b"\n")
            pad = "p" * rng.randrange(0, 2000)
            file.write(compact({"seq": seq, "type": "alert", "data": {"pad": pad}}))
            present.append(seq)

    assert path.stat().st_size > 20 * 64 * 1024
    assert seqs(read_events(path)) == present
    for after in range(3002):
        expected = [s for s in present if s > after][:3]
        assert seqs(read_events(path, after_seq=after, limit=3)) == expected, after


def test_iter_events_streams(mixed_log: Path) -> None:
    events = iter_events(mixed_log, after_seq=38)
    assert next(events)["seq"] == 39
    assert next(events)["seq"] == 40
    with pytest.raises(StopIteration):
        next(events)


# -- listeners ---------------------------------------------------------------------------------


def test_listeners_get_the_event_after_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    calls: list[tuple[str, int, list[int]]] = []

    def first(event: dict[str, Any]) -> None:
        calls.append(("first", event["seq"], seqs(read_events(path))))

    def second(event: dict[str, Any]) -> None:
        calls.append(("second", event["seq"], []))

    with open_log(path) as log:
        log.add_listener(first)
        log.add_listener(second)
        returned = log.append("alert")
        log.remove_listener(second)
        log.remove_listener(second)  # not registered any more: ignored
        log.append("alert")

    assert calls == [("first", 1, [1]), ("second", 1, []), ("first", 2, [1, 2])]
    assert returned["seq"] == 1


def test_a_failing_listener_is_logged_and_breaks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    received: list[int] = []

    def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    with open_log(path) as log:
        log.add_listener(broken)
        log.add_listener(lambda event: received.append(event["seq"]))
        log.append("alert")
        log.append("alert")

    assert received == [1, 2]
    assert seqs(read_events(path)) == [1, 2]
    errors = [r for r in caplog.records
              if r.name == "browserd.daemon.store.eventlog" and r.exc_info]
    assert len(errors) == 2
    assert "listener bug" in str(errors[0].exc_info[1])  # type: ignore[index]


# -- crashes and failing disks -------------------------------------------------------------------

APPEND_FOREVER = """
import sys
from pathlib import Path
from browserd.daemon.store.eventlog import EventLog
log = EventLog.open(Path(sys.argv[1]), run_id="run_x", runtime_id="rt_x", space="s",
                    fsync=sys.argv[2])
i = 0
while True:
    i += 1
    log.append("connection.command", {"i": i, "pad": "x" * (i % 5000)})
"""


@pytest.mark.parametrize("fsync", ["never", "batch"])
def test_sigkill_while_appending_leaves_a_readable_gap_free_log(tmp_path: Path, fsync: str) -> None:
    path = tmp_path / "events.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", APPEND_FOREVER, str(path), fsync], stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while not path.exists() or path.stat().st_size < 3_000_000:
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the child did not write in time"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=CHILD_TIMEOUT_S)
        if child.stderr:
            child.stderr.close()

    lines = path.read_bytes().split(b"\n")
    for line in lines[:-1]:
        json.loads(line)  # every complete line parses
    events = read_events(path)
    assert len(events) >= 1000
    assert seqs(events) == list(range(1, len(events) + 1))
    assert [e["data"]["i"] for e in events] == seqs(events)

    with open_log(path) as log:
        assert log.last_seq == len(events)
        log.append("runtime.lifecycle", {"end_reason": "daemon_lost"}, status="ended")
    assert seqs(read_events(path)) == list(range(1, len(events) + 2))


def test_full_disk_degrades_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # /dev/full fails every write with ENOSPC, even for root.
    path = tmp_path / "events.jsonl"
    path.symlink_to("/dev/full")
    delivered: list[int] = []
    with open_log(path) as log:
        log.add_listener(lambda event: delivered.append(event["seq"]))
        assert not log.degraded
        returned = [log.append("alert", {"n": n})["seq"] for n in range(3)]

        assert returned == [1, 2, 3] == delivered
        assert log.last_seq == 3
        assert log.degraded
        assert log.degraded_reason is not None
        assert log.degraded_reason.startswith("ENOSPC")
        assert log.dropped_events == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].name == "browserd.daemon.store.eventlog"
    assert "ENOSPC" in warnings[0].getMessage()


def test_descriptor_closed_underneath_degrades_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    delivered: list[int] = []
    with open_log(path) as log:
        log.add_listener(lambda event: delivered.append(event["seq"]))
        log.append("alert")
        log.append("alert")
        # Close the log's descriptor behind its back, found the way lsof would.
        fd_dir = Path("/proc/self/fd")
        ours = [
            int(name)
            for name in os.listdir(fd_dir)
            if os.path.realpath(fd_dir / name) == os.path.realpath(path)
        ]
        assert len(ours) == 1
        os.close(ours[0])

        assert log.append("alert")["seq"] == 3  # lost on disk: EBADF
        assert log.degraded_reason is not None
        assert log.degraded_reason.startswith("EBADF")
        assert log.append("alert")["seq"] == 4  # the log reopened its file
        assert log.dropped_events == 1

    assert delivered == [1, 2, 3, 4]
    assert seqs(read_events(path)) == [1, 2, 4]


def test_file_size_limit_mid_line_degrades_and_leaves_a_readable_log(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes a write stop short in the middle of a line, then fail with EFBIG:
    # the log must keep going in memory, and the file must read cleanly afterwards.
    path = tmp_path / "events.jsonl"
    child = run_child(
        """
        import json, resource, signal, sys
        from pathlib import Path
        from browserd.daemon.store.eventlog import EventLog
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, resource.RLIM_INFINITY))
        delivered = []
        log = EventLog.open(Path(sys.argv[1]), run_id="r", runtime_id="rt", space="s",
                            fsync="always")
        log.add_listener(lambda event: delivered.append(event["seq"]))
        returned = [log.append("alert", {"pad": "x" * 77})["seq"] for _ in range(300)]
        size_at_limit = Path(sys.argv[1]).stat().st_size
        # Space comes back: the next event must start on a line of its own.
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        returned.append(log.append("alert", {"after": "recovery"})["seq"])
        log.close()
        print(json.dumps({"returned": returned, "delivered": delivered, "size": size_at_limit,
                          "reason": log.degraded_reason, "dropped": log.dropped_events}))
        """,
        str(path),
    )

    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report["returned"] == report["delivered"] == list(range(1, 302))
    assert report["reason"].startswith("EFBIG")
    assert report["size"] == 10_000
    events = read_events(path)
    written = [e for e in events if e["seq"] <= 300]
    assert seqs(written) == list(range(1, len(written) + 1))  # a gap-free prefix...
    assert events[len(written) :] == [events[-1]]  # ...then the event after recovery
    assert events[-1]["seq"] == 301 and events[-1]["data"] == {"after": "recovery"}
    assert report["dropped"] == 300 - len(written)
    # The limit cut a line in two; the torn piece is still there, on a line of its own.
    torn = path.read_bytes()[:10_000].rsplit(b"\n", 1)[1]
    assert torn and path.read_bytes()[10_000:11_000].startswith(b"\n{")

    with open_log(path) as log:
        assert log.last_seq == 301
        log.append("alert")
    assert read_events(path, after_seq=300)[-1]["seq"] == 302
