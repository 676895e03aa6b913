"""The supervisor against real Chromium (both builds) and small scripts posing as browsers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import h11
import psutil
import pytest
import trio

from browserd.daemon.base.errors import ApiError
from browserd.daemon.browser import procutil, spawn_tags
from browserd.daemon.browser.process import (
    BrowserProcess,
    ExitStatus,
    LaunchSpec,
    browser_args,
)

CHROMIUM = "/usr/bin/chromium"
HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"  # a `sh` wrapper that does not exec
BROWSERS = [CHROMIUM, HEADLESS_SHELL]
FAKE_ENDPOINT = "DevTools listening on ws://127.0.0.1:9/devtools/browser/fake"


@pytest.fixture(params=BROWSERS, ids=["chromium", "headless-shell"])
def browser(request: pytest.FixtureRequest) -> str:
    path: str = request.param
    # A missing browser fails loudly rather than skipping.
    assert os.access(path, os.X_OK), f"{path} is needed for these tests"
    return path


@pytest.fixture
async def pumps() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


def live_naming(directory: Path) -> list[int]:
    """Live processes whose command line mentions `directory` anywhere."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(str(directory) in arg for arg in proc.info["cmdline"] or ()):
            found.append(proc.pid)
    return found


def live_in_session(sid: int) -> list[int]:
    return [p.pid for p in procutil.scan() if (p.sid == sid or p.pgid == sid) and not p.zombie]


def alive(pid: int) -> bool:
    info = procutil.read_proc(pid)
    return info is not None and not info.zombie


async def until(condition: Callable[[], bool]) -> None:
    """Poll `condition` (for state only the OS knows, such as files a script writes)."""
    while True:
        if condition():
            return
        await trio.sleep(0.01)


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


async def http_get_json(port: int, target: str) -> object:
    conn = h11.Connection(h11.CLIENT)
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            request = h11.Request(method="GET", target=target,
                                  headers=[("Host", f"127.0.0.1:{port}")])
            await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            body, status = b"", 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some())
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert status == 200
                    return json.loads(body)


# ---------------------------------------------------------------- real Chromium


async def test_launch_then_stop_leaves_nothing(
    browser: str, tmp_path: Path, pumps: trio.Nursery
) -> None:
    profile = tmp_path / "profile"
    with trio.fail_after(30):
        proc = await BrowserProcess.launch(LaunchSpec(browser, profile), pumps)
    assert proc.user_data_dir == profile
    assert proc.create_time == psutil.Process(proc.pid).create_time()
    version = await http_get_json(proc.endpoint.port, "/json/version")
    assert isinstance(version, dict)
    assert version["webSocketDebuggerUrl"] == proc.endpoint.ws_url
    assert proc.tree_pids()[0] == proc.pid
    assert live_naming(profile)

    with trio.fail_after(30):
        status = await proc.stop()
    # Browser.close did it: a signal would show in the status (even through the sh wrapper).
    assert (status.exit_code, status.signal) == (0, None)
    assert proc.stop_requested
    assert live_naming(profile) == []
    assert live_in_session(proc.pid) == []
    assert proc.tree_pids() == []
    with trio.fail_after(1):
        assert await proc.wait_exited() == proc.exit_status
        again = await proc.stop()  # idempotent, and immediate
    assert (again.exit_code, again.signal) == (0, None)


async def test_crash_is_seen_and_cleanup_leaves_nothing(
    browser: str, tmp_path: Path, pumps: trio.Nursery
) -> None:
    profile = tmp_path / "profile"
    with trio.fail_after(30):
        proc = await BrowserProcess.launch(LaunchSpec(browser, profile), pumps)
    helpers = [pid for pid in proc.tree_pids() if pid != proc.pid]
    assert helpers
    os.kill(proc.pid, signal.SIGKILL)
    with trio.fail_after(10):
        status = await proc.wait_exited()
    assert (status.exit_code, status.signal) == (None, signal.SIGKILL)
    assert not proc.stop_requested
    assert status.stderr_tail  # what the browser said before dying
    with trio.fail_after(20):
        await proc.stop()
    assert live_naming(profile) == []
    assert live_in_session(proc.pid) == []
    assert not any(alive(pid) for pid in helpers)


async def test_profile_in_use_fails_without_touching_the_holder(
    tmp_path: Path, pumps: trio.Nursery
) -> None:
    profile = tmp_path / "profile"
    with trio.fail_after(30):
        holder = await BrowserProcess.launch(LaunchSpec(CHROMIUM, profile), pumps)
        with pytest.raises(ApiError) as caught:
            await BrowserProcess.launch(LaunchSpec(CHROMIUM, profile), pumps)
    error = caught.value
    assert error.code == "browser.launch_failed"
    assert error.data["reason"] == "profile_in_use"
    assert "in use" in error.message
    assert any("ProcessSingleton" in line for line in error.data["stderr_tail"])
    assert not alive(error.data["pid"])
    # The failed launch swept nothing of the browser that holds the profile.
    assert alive(holder.pid)
    await http_get_json(holder.endpoint.port, "/json/version")
    with trio.fail_after(30):
        await holder.stop()
    assert live_naming(profile) == []


async def test_stale_devtools_active_port_is_replaced(tmp_path: Path, pumps: trio.Nursery) -> None:
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "DevToolsActivePort").write_text("1\n/devtools/browser/stale\n")
    with trio.fail_after(30):
        proc = await BrowserProcess.launch(LaunchSpec(HEADLESS_SHELL, profile), pumps)
    try:
        assert proc.endpoint.port != 1
        port_file = profile / "DevToolsActivePort"
        with trio.fail_after(5):  # Chromium writes the file just after the stderr line
            await until(lambda: port_file.exists() and len(port_file.read_text().split()) == 2)
        lines = port_file.read_text().splitlines()
        assert (int(lines[0]), lines[1]) == (proc.endpoint.port, proc.endpoint.browser_path)
    finally:
        with trio.fail_after(30):
            await proc.stop()


async def test_stale_devtools_active_port_is_gone_before_the_browser_starts(
    tmp_path: Path, pumps: trio.Nursery
) -> None:
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "DevToolsActivePort").write_text("1\n/devtools/browser/stale\n")
    exe = script(tmp_path / "fake", f"""
        test -e {profile}/DevToolsActivePort && {{ echo "stale file present" >&2; exit 4; }}
        echo "{FAKE_ENDPOINT}" >&2
        exec sleep 600
    """)
    with trio.fail_after(10):
        proc = await BrowserProcess.launch(LaunchSpec(exe, profile), pumps)
        await proc.stop(grace_s=0)


async def test_browser_outlives_trio_worker_threads(
    tmp_path: Path, pumps: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PR_SET_PDEATHSIG fires when the forking thread exits: trio's idle worker threads exit
    after 10 s (shortened here), and a browser forked from one would die with it."""
    from trio._core import _thread_cache

    monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", 0.05)
    with trio.fail_after(30):
        proc = await BrowserProcess.launch(LaunchSpec(HEADLESS_SHELL, tmp_path / "p"), pumps)
        await trio.to_thread.run_sync(time.sleep, 0.01)  # start and idle out a worker thread
        await trio.sleep(1.0)
    assert proc.exit_status is None and alive(proc.pid)
    with trio.fail_after(30):
        await proc.stop()


@pytest.mark.parametrize("arming", ["setpriv", "preexec_fn"])
def test_browser_dies_with_the_daemon(tmp_path: Path, arming: str) -> None:
    """The daemon SIGKILLed: the parent-death signal takes the browser down, whether setpriv
    armed it or (where setpriv is missing) the fork's preexec_fn."""
    profile = tmp_path / "profile"
    code = textwrap.dedent(f"""
        import sys, trio
        from browserd.daemon.browser import procutil, spawn_tags
        from browserd.daemon.browser.discovery import find_browser
        from browserd.daemon.browser.process import BrowserProcess, LaunchSpec
        if {arming!r} == "preexec_fn":
            procutil._SETPRIV = None
        async def main():
            async with trio.open_nursery() as nursery:
                proc = await BrowserProcess.launch(
                    LaunchSpec(find_browser({HEADLESS_SHELL!r}), {str(profile)!r}), nursery)
                print(proc.pid, flush=True)
                await trio.sleep_forever()
        trio.run(main)
    """)
    daemon = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert daemon.stdout is not None
        browser_pid = int(daemon.stdout.readline())
        assert alive(browser_pid)
    finally:
        daemon.kill()
        daemon.wait(10)
    deadline = time.monotonic() + 10
    while live_naming(profile) or alive(browser_pid):
        assert time.monotonic() < deadline, f"left behind: {live_naming(profile)}"
        time.sleep(0.05)


# ---------------------------------------------------------------- scripts posing as browsers


async def test_early_exit_reports_the_stderr_tail(tmp_path: Path, pumps: trio.Nursery) -> None:
    exe = script(tmp_path / "broken", """
        echo "starting up" >&2
        echo "FATAL: no usable display" >&2
        exit 3
    """)
    with trio.fail_after(10), pytest.raises(ApiError) as caught:
        await BrowserProcess.launch(LaunchSpec(exe, tmp_path / "profile"), pumps)
    error = caught.value
    assert error.code == "browser.launch_failed"
    assert error.hint
    assert error.data["reason"] == "exited"
    assert (error.data["exit_code"], error.data["signal"]) == (3, None)
    assert error.data["stderr_tail"][-2:] == ["starting up", "FATAL: no usable display"]
    assert error.to_wire()["code"] == "browser.launch_failed"


async def test_startup_deadline_kills_the_whole_group(tmp_path: Path, pumps: trio.Nursery) -> None:
    pids = tmp_path / "pids"
    exe = script(tmp_path / "silent", f"""
        echo "thinking" >&2
        sleep 600 &
        echo $$ $! > {pids}
        wait
    """)
    spec = LaunchSpec(exe, tmp_path / "profile", startup_timeout_s=1.0)
    started = time.monotonic()
    with trio.fail_after(15), pytest.raises(ApiError) as caught:
        await BrowserProcess.launch(spec, pumps)
    assert time.monotonic() - started < 8
    error = caught.value
    assert error.data["reason"] == "timeout"
    assert error.data["signal"] == signal.SIGKILL
    assert "thinking" in error.data["stderr_tail"]
    shell, child = map(int, pids.read_text().split())
    assert shell == error.data["pid"]
    assert not alive(shell) and not alive(child)
    assert live_in_session(shell) == []


async def test_cancelled_launch_leaves_nothing(tmp_path: Path, pumps: trio.Nursery) -> None:
    pids = tmp_path / "pids"
    exe = script(tmp_path / "slow", f"""
        sleep 600 &
        echo $$ $! > {pids}
        wait
    """)
    with trio.move_on_after(0.5) as scope:
        await BrowserProcess.launch(LaunchSpec(exe, tmp_path / "profile"), pumps)
    assert scope.cancelled_caught
    shell, child = map(int, pids.read_text().split())
    assert not alive(shell) and not alive(child)


async def test_unstartable_executable(tmp_path: Path, pumps: trio.Nursery) -> None:
    not_executable = tmp_path / "chrome"
    not_executable.write_text("not a program")
    with pytest.raises(ApiError) as caught:
        await BrowserProcess.launch(LaunchSpec(str(not_executable), tmp_path / "p"), pumps)
    assert caught.value.code == "browser.launch_failed"
    assert caught.value.data["reason"] == "spawn_failed"


async def test_environment_and_arguments(
    tmp_path: Path, pumps: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                 "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("BROWSERD_TEST_KEEP", "kept")
    env_dump, argv_dump = tmp_path / "env", tmp_path / "argv"
    # Announces an endpoint nobody listens on and ignores nothing: stop() has to fall back
    # from Browser.close to SIGTERM.
    exe = script(tmp_path / "fake", f"""
        env > {env_dump}
        for arg in "$@"; do echo "$arg"; done > {argv_dump}
        echo "{FAKE_ENDPOINT}" >&2
        exec sleep 600
    """)
    profile = tmp_path / "profile"
    spec = LaunchSpec(exe, profile, extra_args=("--lang=de", "--window-size=800,600"))
    with trio.fail_after(10):
        proc = await BrowserProcess.launch(spec, pumps)
    assert proc.endpoint.ws_url == "ws://127.0.0.1:9/devtools/browser/fake"
    env = dict(line.split("=", 1) for line in env_dump.read_text().splitlines() if "=" in line)
    assert env["BROWSERD_TEST_KEEP"] == "kept"
    assert not [k for k in env if k == "NOTIFY_SOCKET" or k.startswith(("LISTEN_", "WATCHDOG_"))]

    argv = argv_dump.read_text().splitlines()
    assert argv == browser_args(spec, profile)[1:]
    for flag in ("--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                 f"--user-data-dir={profile}", "--headless", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--password-store=basic", "--hide-crash-restore-bubble"):
        assert flag in argv
    assert ("--no-sandbox" in argv) == (os.geteuid() == 0)
    assert argv[-3:] == ["--lang=de", "--window-size=800,600", "about:blank"]

    with trio.fail_after(30):
        status = await proc.stop(grace_s=2)
    assert status == ExitStatus(None, signal.SIGTERM, status.stderr_tail)
    assert FAKE_ENDPOINT in status.stderr_tail


RESERVED_SPELLINGS = ["--user-data-dir=/tmp/x", "--remote-debugging-port=9222",
                      "--remote-debugging-pipe", "-remote-debugging-port=9333",
                      "-user-data-dir=/x", "--Remote-Debugging-Port=1", "---user-data-dir=/y",
                      "--remote-debugging-io-pipes", "--remote-allow-origins=*",
                      "-remote-debugging-address=0.0.0.0"]


def test_reserved_arguments_are_refused(tmp_path: Path) -> None:
    """Chromium takes `-name` as well as `--name` (the last value wins): every spelling of a
    reserved switch is refused."""
    for arg in RESERVED_SPELLINGS:
        with pytest.raises(ApiError) as caught:
            browser_args(LaunchSpec("chrome", tmp_path, extra_args=(arg,)), tmp_path)
        assert caught.value.data["arg"] == arg
    for arg in ("--user-data-dirx=1", "user-data-dir=/x", "--lang=de", "-incognito"):
        assert arg in browser_args(LaunchSpec("chrome", tmp_path, extra_args=(arg,)), tmp_path)


async def test_headful_drops_headless_flags(tmp_path: Path) -> None:
    argv = browser_args(LaunchSpec("chrome", tmp_path, headless=False), tmp_path)
    assert "--headless" not in argv and "--mute-audio" not in argv


async def test_stop_sweeps_a_process_that_left_the_group(
    tmp_path: Path, pumps: trio.Nursery
) -> None:
    """Like crashpad: a helper in its own session, reparented away, naming no path of the
    profile (Debian's crashpad names ~/.config/chromium): found by its spawn tag."""
    profile = tmp_path / "profile"
    pid_file = tmp_path / "escapee"
    escapee = f"setsid sh -c 'echo $$ > {pid_file}; sleep 600' &"
    exe = script(tmp_path / "fake", f"""
        ( {escapee} )
        echo "{FAKE_ENDPOINT}" >&2
        exec sleep 600
    """)
    with trio.fail_after(10):
        proc = await BrowserProcess.launch(LaunchSpec(exe, profile), pumps)
        await until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    escaped = int(pid_file.read_text())
    assert procutil.read_proc(escaped).sid == escaped  # type: ignore[union-attr]
    with trio.fail_after(5):
        await until(lambda: bool(psutil.Process(escaped).children()))
    its_child = psutil.Process(escaped).children()[0].pid
    assert {escaped, its_child} <= set(proc.tree_pids())
    with trio.fail_after(30):
        await proc.stop(grace_s=1)
    assert not alive(escaped) and not alive(its_child)
    assert live_naming(profile) == []


async def test_stop_from_a_cancelled_scope_still_finishes(
    tmp_path: Path, pumps: trio.Nursery
) -> None:
    exe = script(tmp_path / "fake", f"""
        trap '' TERM
        echo "{FAKE_ENDPOINT}" >&2
        while true; do sleep 0.1; done
    """)
    with trio.fail_after(10):
        proc = await BrowserProcess.launch(LaunchSpec(exe, tmp_path / "profile"), pumps)
    started = time.monotonic()
    with trio.CancelScope() as scope:
        scope.cancel()
        status = await proc.stop(grace_s=0.5)  # SIGTERM is ignored: SIGKILL ends it
    assert time.monotonic() - started < 10
    assert status.signal == signal.SIGKILL
    assert live_in_session(proc.pid) == []


async def test_concurrent_stops_share_one_shutdown(tmp_path: Path, pumps: trio.Nursery) -> None:
    exe = script(tmp_path / "fake", f"""
        echo "{FAKE_ENDPOINT}" >&2
        exec sleep 600
    """)
    with trio.fail_after(10):
        proc = await BrowserProcess.launch(LaunchSpec(exe, tmp_path / "profile"), pumps)
    results: list[ExitStatus] = []

    async def stop() -> None:
        results.append(await proc.stop(grace_s=1))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(stop)
    assert [(s.exit_code, s.signal) for s in results] == [(None, signal.SIGTERM)] * 3


# ---------------------------------------------------------------- sweep and reaping


def _tagged_sleeper(tag: str | None, *,
                    argv_extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """A process (with a child) in a session of its own, carrying `tag` as its spawn tag."""
    env = {k: v for k, v in os.environ.items() if k != spawn_tags.ENV_VAR}
    if tag is not None:
        env[spawn_tags.ENV_VAR] = tag
    return subprocess.Popen(["sh", "-c", "sleep 600 & wait", "sh", *argv_extra],
                            start_new_session=True, env=env)


def _wait_for_child(parent: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 5
    while not psutil.Process(parent.pid).children():
        assert time.monotonic() < deadline, "the sleeper's child did not start"
        time.sleep(0.01)
    return psutil.Process(parent.pid).children()[0].pid


def test_sweep_leftovers_kills_only_this_state_dirs_tagged_processes(tmp_path: Path) -> None:
    """The start-up sweep: processes tagged with the state dir's key (and their children)
    die, except kept (adopted) tags; another key, no tag or a bystander naming the profile
    in its argv are left alone."""
    profile = tmp_path / "profile"
    ours = _tagged_sleeper("key1.run_a")
    kept = _tagged_sleeper("key1.run_kept")
    other_state = _tagged_sleeper("key2.run_a")
    bystander = _tagged_sleeper(None, argv_extra=(f"--user-data-dir={profile}",
                                                  f"--database={profile}/Crash Reports"))
    procs = [ours, kept, other_state, bystander]
    try:
        child = _wait_for_child(ours)
        killed = spawn_tags.sweep_leftovers("key1", keep=["key1.run_kept"])
        assert sorted(killed["key1.run_a"]) == sorted([ours.pid, child])
        assert set(killed) == {"key1.run_a"}
        assert ours.wait(5) == -signal.SIGKILL
        assert kept.poll() is None and other_state.poll() is None and bystander.poll() is None
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_sweep_leftovers_kills_a_recorded_browser_only_while_its_start_time_matches() -> None:
    untagged = _tagged_sleeper(None)
    try:
        child = _wait_for_child(untagged)
        info = procutil.read_proc(untagged.pid)
        assert info is not None
        # The same pid with another start time is another process: left alone.
        assert spawn_tags.sweep_leftovers("key", recorded=[(untagged.pid,
                                                            info.create_time - 100)]) == {}
        assert untagged.poll() is None
        killed = spawn_tags.sweep_leftovers("key", recorded=[(untagged.pid, info.create_time)])
        assert sorted(killed[""]) == sorted([untagged.pid, child])
        assert untagged.wait(5) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(untagged.pid, signal.SIGKILL)
        untagged.wait(5)


def test_send_signal_skips_a_reused_pid() -> None:
    sleeper = _tagged_sleeper(None)
    try:
        info = procutil.read_proc(sleeper.pid)
        assert info is not None
        stale = procutil.ProcInfo(pid=info.pid, ppid=info.ppid, pgid=info.pgid, sid=info.sid,
                                  state=info.state, create_time=info.create_time - 100)
        assert spawn_tags.send_signal([stale]) == []
        assert sleeper.poll() is None
        assert spawn_tags.send_signal([info]) == [sleeper.pid]
        assert sleeper.wait(5) == -signal.SIGKILL
        # Never this process or its ancestors, whatever a caller passes.
        me = procutil.read_proc(os.getpid())
        assert me is not None and spawn_tags.send_signal([me], signal.SIGTERM) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sleeper.pid, signal.SIGKILL)
        sleeper.wait(5)


async def test_stop_never_signals_a_bystander_naming_the_profile(
    tmp_path: Path, pumps: trio.Nursery
) -> None:
    """Another process whose argv names paths under the profile (any user's, were the daemon
    root) is not part of the browser, however it was started."""
    profile = tmp_path / "profile"
    bystander = _tagged_sleeper(None, argv_extra=(f"--user-data-dir={profile}",
                                                  f"--database={profile}/Crash Reports"))
    try:
        exe = script(tmp_path / "fake", f"""
            echo "{FAKE_ENDPOINT}" >&2
            exec sleep 600
        """)
        with trio.fail_after(10):
            proc = await BrowserProcess.launch(LaunchSpec(exe, profile), pumps)
        assert bystander.pid not in proc.tree_pids()
        with trio.fail_after(30):
            await proc.stop(grace_s=1)
        assert bystander.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bystander.pid, signal.SIGKILL)
        bystander.wait(5)


def test_reap_orphans_reaps_only_orphans(tmp_path: Path) -> None:
    """In a child interpreter (the subreaper flag is for life): an orphaned helper is reaped;
    a zombie child that trio spawned and waits for keeps its exit status."""
    code = textwrap.dedent("""
        import os, subprocess, time, trio
        from browserd.daemon.browser import procutil, spawn_tags
        from browserd.daemon.browser.procutil import (
            reap_orphans, run_orphan_reaper, set_child_subreaper)

        def zombie_children():
            return {p.pid for p in procutil.scan() if p.ppid == os.getpid() and p.zombie}

        async def main():
            set_child_subreaper()
            own = await trio.lowlevel.open_process(["sh", "-c", "exit 7"])
            # A browser-like session whose helper outlives its parent, then dies.
            subprocess.Popen(["sh", "-c", "(sleep 0.3 &) ; exit 0"],
                             start_new_session=True).wait()
            await trio.sleep(1.0)
            zombies = zombie_children()
            assert own.pid in zombies and len(zombies) == 2, zombies
            # What the reaper reads (the children lists) is what a scan of /proc finds.
            listed = procutil.own_children()
            assert listed is not None, "the kernel lists no children (CONFIG_PROC_CHILDREN)"
            assert ({p.pid for p in listed}
                    == {p.pid for p in procutil.scan() if p.ppid == os.getpid()})
            reaped = reap_orphans()
            assert reaped == sorted(zombies - {own.pid}), (reaped, zombies)
            assert zombie_children() == {own.pid}
            assert await own.wait() == 7

            async with trio.open_nursery() as nursery:
                await nursery.start(lambda task_status: run_orphan_reaper(
                    interval_s=0.1, task_status=task_status))
                subprocess.Popen(["sh", "-c", "(sleep 0.2 &) ; exit 0"],
                                 start_new_session=True).wait()
                await trio.sleep(1.0)
                assert zombie_children() == set()
                nursery.cancel_scope.cancel()
            print("ok")

        trio.run(main)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30)
    assert result.stdout.strip() == "ok", result.stderr


def test_helpers_remembered_in_a_worker_thread_while_the_loop_reaps() -> None:
    """The memory monitor finds a tree's helpers in a worker thread (`tree_pids`) while a
    stop reaps on the event loop: remembering must not break the reaper's pruning (a full
    bench run once answered a `runtimes.stop` with `rpc.internal_error`: "dictionary changed
    size during iteration" in `reap_orphans`)."""
    first_fake = 1 << 30  # above any pid_max: never a live process, so always pruned
    done = threading.Event()

    def remember() -> None:
        pid = first_fake
        while not done.is_set():
            if len(procutil._helpers) > 2000:  # a bound on each prune's work
                time.sleep(0)
                continue
            procutil.remember_helpers(
                [procutil.ProcInfo(pid=pid, ppid=1, pgid=pid, sid=pid, state="S",
                                   create_time=0.0)])
            pid += 1

    worker = threading.Thread(target=remember, daemon=True)
    worker.start()
    try:
        until = time.monotonic() + 1.0
        while time.monotonic() < until:  # a second of prunes while the worker remembers
            assert procutil.reap_orphans([]) == []
    finally:
        done.set()
        worker.join(timeout=5)
    assert not worker.is_alive()
    procutil.reap_orphans([])
    assert not [pid for pid in procutil._helpers if pid >= first_fake]  # pruned


def test_proc_create_time_matches_psutil() -> None:
    info = procutil.read_proc(os.getpid())
    assert info is not None
    assert info.create_time == psutil.Process().create_time()
    assert (info.pgid, info.sid) == (os.getpgid(0), os.getsid(0))
