"""Nothing a caller types, and no second daemon, destroys data or signals a process the daemon
did not start.

Names that are paths (`.`, `..`, `/`, NUL, control characters) are refused for every field
that becomes a path or a key, and deletes stay inside their roots whatever the state dir
holds; a second daemon on the same state dir refuses to start and touches nothing; launch,
stop and delete of one runtime never interleave; a bystander whose command line names a
profile survives both a stop and the start-up sweep; reserved browser switches are refused in
every spelling.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from browserd.client import Client, errors
from browserd.daemon.store import roots

from .harness import BIN, REPORT, Daemon, assert_no_orphans, config_text

BAD_NAMES = [".", "..", "...", ".hidden", "a/b", "/", "../x", "a\0b", "a\nb", "tab\there",
             "x" * 65, ""]
NOBODY = 65534


@pytest.fixture
def daemon(short_dir: Path) -> Iterator[Daemon]:
    running = Daemon(short_dir)
    running.start()
    yield running
    if running.alive():
        running.stop()
    assert_no_orphans(short_dir / "state")


def bystander(*argv: str, as_nobody: bool = False) -> subprocess.Popen[bytes]:
    """A process that is none of the daemon's, whose command line says `argv`."""
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] \
        if as_nobody else []
    return subprocess.Popen([*prefix, "sh", "-c", "exec sleep 600", "sh", *argv],
                            start_new_session=True)


def stop_bystander(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


# ------------------------------------------------------------------------------ names


def test_names_that_are_paths_are_refused_for_every_field(daemon: Daemon) -> None:
    state = daemon.state_dir
    sentinel = state / "runs" / "keep-me"
    sentinel.mkdir(parents=True)
    calls: list[tuple[str, dict[str, Any], str]] = []
    for bad in BAD_NAMES:
        calls += [
            ("spaces.create", {"name": bad}, "name"),
            ("runtimes.launch", {"name": bad}, "name"),
            ("runtimes.launch", {"name": "ok", "space": bad}, "space"),
            ("runtimes.launch", {"name": "ok", "profile": bad}, "profile"),
            ("profiles.get", {"name": bad}, "name"),
            ("profiles.delete", {"name": bad}, "name"),
            ("profiles.clone", {"name": "ok", "to": bad}, "to"),
        ]
    with Client(daemon.socket) as bd:
        for method, params, field in calls:
            with pytest.raises(errors.InvalidParams) as caught:
                bd.call(method, params)
            assert caught.value.data["field"] == field, (method, params)
            assert caught.value.hint
        for bad_label in ("a\nforged line", "nul\0", "", "x" * 201):
            with pytest.raises(errors.InvalidParams) as caught:
                bd.call("connections.create", {"name": "nope", "label": bad_label})
            assert caught.value.data["field"] == "label"
        # The daemon still works, and nothing was removed.
        assert bd.call("daemon.status")["counts"]["runtimes"] == 0
    assert sentinel.is_dir() and (state / "profiles").is_dir()
    REPORT.bad_inputs["names"] += len(calls) + 4


def test_file_area_paths_follow_the_name_rule(daemon: Daemon) -> None:
    with Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="files")
        try:
            for bad in (".env", "a/.hidden", "a/../b", "a/\x07bell", "..", "./.."):
                with pytest.raises(errors.PathInvalid):
                    runtime.files.stage(bad, b"x")
            assert runtime.files.stage("a/./b.txt", b"ok").path == "a/b.txt"
        finally:
            runtime.stop()


def test_deletes_stay_inside_their_roots_whatever_the_state_dir_holds(
    daemon: Daemon, tmp_path: Path
) -> None:
    """Defence in depth, independent of the name rule: a profile directory replaced by a
    symlink to somewhere else is neither used for a browser nor deleted through."""
    outside = tmp_path / "outside"
    (outside / "user-data").mkdir(parents=True)
    (outside / "user-data" / "precious").write_text("keep")
    profiles = daemon.state_dir / "profiles"
    (profiles / "linked").symlink_to(outside)
    with Client(daemon.socket) as bd:
        for attempt in (lambda: bd.runtimes.browser.launch(name="escape", profile="linked"),
                        lambda: bd.profiles.delete("linked"),
                        lambda: bd.profiles.clone("linked", "copy")):
            with pytest.raises(errors.BrowserdError) as caught:
                attempt()
            assert caught.value.code == "state.unwritable"
            assert "symbolic link" in caught.value.hint
        assert bd.runtimes.get("escape").status == "stopped"
    assert (outside / "user-data" / "precious").read_text() == "keep"
    assert sorted(p.name for p in outside.iterdir()) == ["user-data"]


def test_remove_tree_refuses_paths_outside_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "child").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (root / "link").symlink_to(victim)
    for path in (root, root / "..", root / ".", tmp_path, victim, root / "link" / "x",
                 root / "child" / ".." / ".."):
        assert roots.remove_tree(path, root) is False, path
    assert victim.is_dir() and (root / "child").is_dir()
    assert roots.remove_tree(root / "link", root) is True
    assert victim.is_dir() and not (root / "link").is_symlink()
    assert roots.remove_tree(root / "child", root) is True and not (root / "child").exists()


# ------------------------------------------------------------------------------ second daemon


@pytest.mark.parametrize("same_socket", [False, True], ids=["own-socket", "same-socket"])
def test_a_second_daemon_on_the_state_dir_refuses_and_touches_nothing(
    daemon: Daemon, short_dir: Path, same_socket: bool
) -> None:
    with Client(daemon.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="first", profile="first")
        run = runtime.current_run()
        browser = psutil.Process(_browser_pid(daemon, runtime.id))
        log = daemon.state_dir / "runs" / run.id / "events.jsonl"
        second_socket = daemon.socket if same_socket else short_dir / "run2" / "b.sock"
        env = {**daemon.env, "BROWSERD_SOCKET": str(second_socket)}
        started = time.monotonic()
        second = subprocess.run([str(BIN / "browserd")], env=env, capture_output=True,
                                text=True, timeout=30)
        assert time.monotonic() - started < 10
        assert second.returncode == 1, second.stderr
        assert f"pid {daemon.pid}" in second.stderr and "state directory" in second.stderr
        assert "Exceptions from Trio nursery" not in second.stderr
        assert "Traceback" not in second.stderr
        # Touched nothing: the browser lives, nobody ended its run, no socket was made.
        assert browser.is_running()
        events = [json.loads(line) for line in log.read_text().splitlines()]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert not [e for e in events if e["type"] == "runtime.lifecycle"
                    and e.get("status") in ("ended", "failed")]
        assert same_socket or not second_socket.exists()
        assert bd.runtimes.get("first").status == "active"
        runtime.stop()
    REPORT.faults["second daemon on the state dir"] += 1


def _browser_pid(daemon: Daemon, runtime_id: str) -> int:
    record = json.loads((daemon.state_dir / "runtimes" / runtime_id / "runtime.json")
                        .read_text())
    deadline = time.monotonic() + 10
    while record.get("process") is None:  # written by the state writer, just after ready
        assert time.monotonic() < deadline, "runtime.json never named the browser"
        time.sleep(0.05)
        record = json.loads((daemon.state_dir / "runtimes" / runtime_id / "runtime.json")
                            .read_text())
    return int(record["process"]["pid"])


# ------------------------------------------------------------------------------ one runtime


def test_launch_stop_and_delete_of_one_runtime_never_interleave(daemon: Daemon) -> None:
    """Threads hammer launch, stop and delete of one runtime; afterwards every browser is
    one the daemon knows (and can stop), every run has ended, and the profile is free."""
    expected = (errors.RuntimeNotFound, errors.RuntimeNotStopped, errors.ProfileInUse,
                errors.ConcurrentQuotaExceeded)
    failures: list[BaseException] = []
    calls = [0]
    deadline = time.monotonic() + 8

    def hammer(seed: int) -> None:
        try:
            with Client(daemon.socket) as bd:
                step = seed
                while time.monotonic() < deadline:
                    step += 1
                    try:
                        match step % 4:
                            case 0 | 1:
                                bd.runtimes.browser.launch(name="race", profile="race-p")
                            case 2:
                                bd.call("runtimes.delete", {"name": "race", "force": True})
                            case 3:
                                bd.call("runtimes.stop", {"name": "race"})
                        calls[0] += 1
                    except expected:
                        calls[0] += 1
        except BaseException as exc:  # reported below, with the thread's traceback lost
            failures.append(exc)

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a hammering thread hung"
    assert not failures, failures
    assert calls[0] > 20
    with Client(daemon.socket) as bd:
        for runtime in bd.runtimes.list():
            runtime.stop()
            runtime.delete()
        assert bd.runtimes.list() == []
        assert bd.profiles.get("race-p").in_use_by is None
        live = [run for run in bd.call("runs.list", {})["data"]
                if run["status"] not in ("ended", "failed")]
        assert live == [], live
    # No browser the API cannot reach: the daemon has no child process left.
    deadline = time.monotonic() + 10
    while left := [p for p in psutil.Process(daemon.pid).children(recursive=True)
                   if p.status() != psutil.STATUS_ZOMBIE]:
        assert time.monotonic() < deadline, f"unmanaged processes: {left}"
        time.sleep(0.1)
    REPORT.bad_inputs["launch/stop/delete races"] += calls[0]


# ------------------------------------------------------------------------------ bystanders


def test_stop_and_the_startup_sweep_spare_bystanders_naming_the_profile(
    short_dir: Path
) -> None:
    """Processes of any user whose argv names paths under a profile are not the daemon's:
    neither a stop nor the next daemon's sweep of a lost browser signals them."""
    first = Daemon(short_dir, config_text(top={"live_restore": True}))
    first.start()
    user_data = first.state_dir / "profiles" / "by" / "user-data"
    argv = (f"--user-data-dir={user_data}", f"--database={user_data}/Crash Reports")
    bystanders = [bystander(*argv), bystander(*argv, as_nobody=True)]
    second: Daemon | None = None
    try:
        with Client(first.socket) as bd:
            runtime = bd.runtimes.browser.launch(name="by", profile="by")
            runtime.stop()
            assert all(b.poll() is None for b in bystanders)
            runtime = bd.runtimes.browser.launch(name="by", profile="by")
            browser_pid = _browser_pid(first, runtime.id)
            run_id = runtime.current_run().id
        first.kill()  # live_restore: the browser outlives the daemon
        assert psutil.pid_exists(browser_pid)
        (short_dir / "config.toml").write_text(config_text(top={"live_restore": False}))
        second = Daemon(short_dir, config_text(top={"live_restore": False}))
        second.start()
        with Client(second.socket) as bd:
            run = bd.call("runs.get", {"run_id": run_id})
            assert run["end_reason"] == "daemon_lost"
        events = (second.state_dir / "runs" / run_id / "events.jsonl").read_text()
        last = json.loads(events.splitlines()[-1])
        assert browser_pid in last["data"]["killed_pids"]
        # Killed: gone, or a zombie, once its exit has run (a moment in D state first).
        deadline = time.monotonic() + 5
        while not _dead(browser_pid):
            assert time.monotonic() < deadline, f"the lost browser {browser_pid} still runs"
            time.sleep(0.02)
        assert all(b.poll() is None for b in bystanders), "a bystander was signalled"
        REPORT.faults["bystanders spared (stop, start-up sweep)"] += 1
    finally:
        for proc in bystanders:
            stop_bystander(proc)
        if second is not None and second.alive():
            second.stop()
        if first.alive():
            first.kill()
    assert_no_orphans(short_dir / "state")


# ------------------------------------------------------------------------------ switches

RESERVED_SPELLINGS = ["--user-data-dir=/tmp/x", "-user-data-dir=/tmp/x",
                      "-remote-debugging-port=9333", "--REMOTE-DEBUGGING-PORT=9333",
                      "--remote-debugging-io-pipes", "--remote-allow-origins=*",
                      "-remote-debugging-address=0.0.0.0", "---remote-debugging-pipe"]


def test_reserved_switches_are_refused_in_every_spelling(daemon: Daemon, short_dir: Path
                                                        ) -> None:
    with Client(daemon.socket) as bd:
        for arg in RESERVED_SPELLINGS:
            with pytest.raises(errors.InvalidParams) as caught:
                bd.runtimes.browser.launch(name="flags", args=[arg])
            assert caught.value.data["field"] == "args"
        assert bd.call("runtimes.list", {})["data"] == []
    config = short_dir / "bad.toml"
    config.write_text(config_text(browser={"args": ["-remote-debugging-port=9333"]}))
    checked = subprocess.run([str(BIN / "browserd"), "--config", str(config), "--check-config"],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 2 and "browser.args" in checked.stderr, checked.stderr
    REPORT.bad_inputs["reserved switches"] += len(RESERVED_SPELLINGS) + 1


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
