"""One browser process tree, from launch to the moment nothing of it is left.

A browser runs in its own session and process group, with an explicit `--user-data-dir`, a
parent-death signal and a scrubbed environment that carries its spawn tag (spawn_tags.py).
Its DevTools endpoint comes from the
"DevTools listening on ws://..." line on stderr (cross-checked with `DevToolsActivePort`);
stdout and stderr are drained for the browser's whole life into a bounded tail.

Stop order (docs/operations.md, Supervision): CDP `Browser.close` -> wait -> SIGTERM the
group -> wait -> SIGKILL the group and sweep what escaped it -> wait until nothing remains.
Which processes make up "the tree", and the signalling and reaping of them, is
process_tree.py's job.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import secrets
import signal
import subprocess
from pathlib import Path

import attrs
import trio

from ..base.errors import RESOURCE_ERRNOS, ApiError, resource_shortage
from ..base.flags import COMMON_FLAGS, HEADLESS_FLAGS, START_PAGE, reserved_switch
from ..cdp.client import open_cdp
from . import procutil, spawn_tags
from .process_tree import ProcessTree

__all__ = [
    "BrowserProcess",
    "DevToolsEndpoint",
    "ExitStatus",
    "LaunchSpec",
    "browser_args",
    "scrubbed_env",
]

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 200
MAX_LINE_BYTES = 16 * 1024
TERM_WAIT_S = 3.0  # after SIGTERM, at most this long (and at most grace_s) before SIGKILL
ORPHAN_GRACE_S = 1.0  # main already gone when stop begins: its helpers get this long to follow

DEVTOOLS_LINE = re.compile(
    r"DevTools listening on ws://(?P<host>[^\s/]+):(?P<port>\d+)(?P<path>/devtools/browser/\S+)"
)
# Chromium's ProcessSingleton refusing a profile that another browser holds (Playwright
# treats the same two markers as "profile in use"); the second one exits 0.
PROFILE_IN_USE_MARKERS = (
    "Failed to create a ProcessSingleton",
    "Opening in existing browser session",
    "profile appears to be in use by another",
)
# systemd's protocol variables are for the daemon: a browser that saw NOTIFY_SOCKET or
# LISTEN_FDS could talk to the service manager or claim sockets in our name.
SCRUBBED_ENV_PREFIXES = ("NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_")


@attrs.frozen
class LaunchSpec:
    executable: str
    user_data_dir: Path
    headless: bool = True
    extra_args: tuple[str, ...] = ()
    # Added to the browser's environment (TZ for config.timezone).
    env: tuple[tuple[str, str], ...] = ()
    startup_timeout_s: float = 30.0
    # False with live_restore: no parent-death signal, so a new daemon can adopt the browser.
    die_with_daemon: bool = True
    # In the browser's environment, inherited by all its helpers: how the daemon tells its
    # own processes from anyone else's (spawn_tags.py). The daemon gives each spawn its own.
    tag: str = attrs.Factory(lambda: spawn_tags.make_tag("unkeyed", secrets.token_hex(8)))


@attrs.frozen
class DevToolsEndpoint:
    host: str
    port: int
    browser_path: str  # "/devtools/browser/<uuid>"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.browser_path}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@attrs.frozen
class ExitStatus:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    stderr_tail: tuple[str, ...]

    @classmethod
    def from_returncode(cls, returncode: int | None, tail: tuple[str, ...]) -> ExitStatus:
        if returncode is None:
            return cls(None, None, tail)
        if returncode < 0:
            return cls(None, -returncode, tail)
        return cls(returncode, None, tail)


def browser_args(spec: LaunchSpec, user_data_dir: Path) -> list[str]:
    """The full argv: our flags first, the user's extra args after them, then the start page."""
    for arg in spec.extra_args:
        if reserved_switch(arg) is not None:
            raise ApiError(
                "browser.launch_failed",
                f"The browser argument {arg!r} is reserved by the daemon.",
                hint="Remove it: the daemon picks the profile directory and the debugging port. "
                "Use a named profile to keep browser data.",
                data={"arg": arg, "exit_code": None, "signal": None, "stderr_tail": []},
            )
    return [
        spec.executable,
        "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1",
        f"--user-data-dir={user_data_dir}",
        *COMMON_FLAGS,
        *(HEADLESS_FLAGS if spec.headless else ()),
        # Chromium's sandbox refuses to start as root; elsewhere it stays on.
        *(("--no-sandbox",) if os.geteuid() == 0 else ()),
        *spec.extra_args,
        START_PAGE,
    ]


def scrubbed_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The daemon's environment without the service manager's variables (nor a spawn tag
    the daemon itself may have inherited)."""
    source = dict(os.environ if environ is None else environ)
    return {k: v for k, v in source.items()
            if not k.startswith(SCRUBBED_ENV_PREFIXES) and k != spawn_tags.ENV_VAR}


def _prepare_profile(path: Path) -> Path:
    user_data_dir = Path(os.path.abspath(path))
    user_data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Left behind by a SIGKILLed browser, it would name a dead port.
    (user_data_dir / "DevToolsActivePort").unlink(missing_ok=True)
    return user_data_dir


def read_devtools_active_port(user_data_dir: Path) -> DevToolsEndpoint | None:
    """The endpoint Chromium wrote into DevToolsActivePort, or None (missing or partly written)."""
    try:
        lines = (user_data_dir / "DevToolsActivePort").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if len(lines) < 2 or not lines[0].isdigit() or not lines[1].startswith("/devtools/browser/"):
        return None
    return DevToolsEndpoint("127.0.0.1", int(lines[0]), lines[1])


class BrowserProcess:
    """A running browser tree, made by `launch`; its background tasks run in the nursery
    given there."""

    pid: int
    create_time: float
    user_data_dir: Path
    stop_requested: bool

    def __init__(
        self, spec: LaunchSpec, user_data_dir: Path,
        popen: subprocess.Popen[bytes] | procutil.AdoptedPopen,
    ) -> None:
        self.spec = spec
        self.user_data_dir = user_data_dir
        self.pid = popen.pid
        info = procutil.read_proc(popen.pid)
        # The process exists until we reap it, so this read cannot miss.
        self.create_time = info.create_time if info is not None else 0.0
        self.stop_requested = False
        self._popen = popen
        self._pidfd = os.pidfd_open(popen.pid)
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._endpoint: DevToolsEndpoint | None = None
        self._profile_in_use = False
        self._startup_news = trio.Event()  # endpoint line, profile marker or exit: look again
        self._exit_status: ExitStatus | None = None
        self._exited = trio.Event()
        self._output_done = trio.Event()
        self._stopping: trio.Event | None = None
        self._tree = ProcessTree(pid=self.pid, create_time=self.create_time,
                                 tag=spec.tag, popen=popen,
                                 poll_main=self._poll_main)
        self.adopted = isinstance(popen, procutil.AdoptedPopen)

    def __repr__(self) -> str:
        return f"<BrowserProcess pid={self.pid} user_data_dir={str(self.user_data_dir)!r}>"

    # ---------------------------------------------------------------- launch

    @classmethod
    async def launch(cls, spec: LaunchSpec, nursery: trio.Nursery) -> BrowserProcess:
        """Start a browser and return once its DevTools endpoint is known.

        Raises ApiError("browser.launch_failed") with data {exit_code, signal, stderr_tail,
        reason: "spawn_failed" | "exited" | "timeout" | "profile_in_use", pid} when the browser
        exits, refuses the profile or stays silent past `spec.startup_timeout_s`; nothing of
        it is left running then, and none is when the launch is cancelled either.
        """
        user_data_dir = _prepare_profile(spec.user_data_dir)
        argv = browser_args(spec, user_data_dir)
        try:
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        except OSError as exc:
            if (shortage := resource_shortage(exc, "starting a browser")) is not None:
                raise shortage from None
            raise
        try:
            env = {**scrubbed_env(), **dict(spec.env), spawn_tags.ENV_VAR: spec.tag}
            popen = procutil.spawn(argv, env=env, output_fd=write_fd,
                                         die_with_parent=spec.die_with_daemon)
        except OSError as exc:
            os.close(read_fd)
            if (shortage := resource_shortage(exc, "starting a browser")) is not None:
                raise shortage from None  # Popen's own pipes, or a fork refused for memory
            raise ApiError(
                "browser.launch_failed",
                f"Could not start {spec.executable}: {exc.strerror or exc}.",
                hint="Check that browser.executable (or $BROWSERD_BROWSER) names an executable "
                "Chromium; `browserctl doctor` shows what the daemon finds.",
                data={"reason": "spawn_failed", "exit_code": None, "signal": None,
                      "stderr_tail": [], "pid": None},
            ) from exc
        finally:
            os.close(write_fd)
        output = trio.lowlevel.FdStream(read_fd)
        try:
            proc = cls(spec, user_data_dir, popen)
        except BaseException as exc:  # out of file descriptors for the pidfd, say
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            output.close()
            if (shortage := resource_shortage(exc, "starting a browser")) is not None:
                raise shortage from None
            raise
        # From here on a process exists: every way out of this block but success kills it.
        try:
            nursery.start_soon(proc._watch_exit)
            try:
                nursery.start_soon(proc._pump_output, output)
            except BaseException:
                output.close()
                raise
            await proc._wait_started()
        except BaseException:
            with trio.CancelScope(shield=True):
                await proc._tree.kill(sweep=True)
            raise
        return proc

    @classmethod
    async def adopt(cls, spec: LaunchSpec, *, pid: int, create_time: float,
                    endpoint: DevToolsEndpoint, nursery: trio.Nursery) -> BrowserProcess:
        """Take over a browser that an earlier daemon started (live restore).

        Raises LookupError unless `pid` is still that browser: same start time, and the spawn
        tag `spec.tag` in its environment. Its output went to the dead daemon, so the stderr
        tail stays empty; its exit is seen through a pidfd, its exit status is unknown.
        """
        info = procutil.read_proc(pid)
        if info is None or info.zombie or abs(info.create_time - create_time) > 0.05:
            raise LookupError(f"pid {pid} is not the browser that was recorded")
        if spawn_tags.tag_of(info) != spec.tag:
            raise LookupError(f"pid {pid} does not carry the spawn tag it was started with")
        user_data_dir = spec.user_data_dir  # recorded absolute by the daemon that launched it
        proc = cls(spec, user_data_dir, procutil.AdoptedPopen(pid))
        proc._endpoint = endpoint
        proc._output_done.set()
        nursery.start_soon(proc._watch_exit)
        return proc

    async def _wait_started(self) -> None:
        deadline = trio.current_time() + self.spec.startup_timeout_s
        with trio.move_on_at(deadline):
            while self._endpoint is None and not self._profile_in_use:
                if self._poll_main():
                    break
                # Not DevToolsActivePort: a browser that already holds the profile may write
                # it after we deleted it, and its endpoint is not ours.
                with trio.move_on_after(0.1):
                    await self._startup_news.wait()
                self._startup_news = trio.Event()
        if self._endpoint is not None and not self._profile_in_use:
            self._cross_check_endpoint(self._endpoint)
            log.info("browser pid %d listening on %s", self.pid, self._endpoint.ws_url)
            return
        exited = self._poll_main()
        # (A browser that holds the profile already is not swept: it lacks our spawn tag.)
        await self._tree.kill(sweep=True)
        # The reason is read after the last lines: a browser that finds the profile in use
        # says so and exits at once, and its exit can be seen before the pump reads the line.
        with trio.move_on_after(1.0):
            await self._output_done.wait()
        reason = ("profile_in_use" if self._profile_in_use
                  else "exited" if exited else "timeout")
        status = self._final_status()
        messages = {
            "profile_in_use": (
                f"The profile {self.user_data_dir} is in use by another browser process.",
                "Stop the other browser that uses this profile, or launch with another profile.",
            ),
            "exited": (
                f"The browser exited during startup ({_describe(status)}).",
                "The last lines of its output are in data.stderr_tail; run the executable by "
                "hand with the same flags to see more.",
            ),
            "timeout": (
                f"The browser did not report a DevTools endpoint within "
                f"{self.spec.startup_timeout_s:g} s; it was killed.",
                "A slow machine may need a larger browser.startup_timeout_s; otherwise check "
                "data.stderr_tail for what it was doing.",
            ),
        }
        message, hint = messages[reason]
        raise ApiError(
            "browser.launch_failed", message, hint=hint,
            data={"reason": reason, "exit_code": status.exit_code, "signal": status.signal,
                  "stderr_tail": list(status.stderr_tail), "pid": self.pid},
        )

    def _cross_check_endpoint(self, endpoint: DevToolsEndpoint) -> None:
        # Chromium usually writes the file just after the line; when it is there already, a
        # difference means a second browser on this profile.
        written = read_devtools_active_port(self.user_data_dir)
        if written is not None and (written.port, written.browser_path) != (
            endpoint.port, endpoint.browser_path
        ):
            log.warning("browser pid %d: stderr names %s but DevToolsActivePort names %s",
                        self.pid, endpoint.ws_url, written.ws_url)

    # ---------------------------------------------------------------- background tasks

    async def _pump_output(self, stream: trio.lowlevel.FdStream) -> None:
        """Drain stdout+stderr for the browser's whole life: a full pipe would block it."""
        pending = b""
        try:
            async with stream:
                while True:
                    try:
                        chunk = await stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        break
                    if not chunk:
                        break
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    if len(pending) > MAX_LINE_BYTES:
                        lines.append(pending[:MAX_LINE_BYTES] + b" [truncated]")
                        pending = b""
                    for line in lines:
                        self._on_line(line)
        finally:
            if pending:
                self._on_line(pending)
            self._output_done.set()

    def _on_line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        self._tail.append(line)
        if self._endpoint is None:
            if match := DEVTOOLS_LINE.search(line):
                self._endpoint = DevToolsEndpoint(
                    match["host"], int(match["port"]), match["path"]
                )
                self._startup_news.set()
            elif any(marker in line for marker in PROFILE_IN_USE_MARKERS):
                self._profile_in_use = True
                self._startup_news.set()

    async def _watch_exit(self) -> None:
        """Notice the main process's exit as it happens (crash detection)."""
        try:
            await trio.lowlevel.wait_readable(self._pidfd)
            # Let the pump take in the last lines (EOF comes once the helpers are gone too).
            with trio.move_on_after(0.1):
                await self._output_done.wait()
            # Readable means exited, so this reaps at once; the loop is only a safety net.
            while not self._poll_main():  # noqa: ASYNC110 - polling the kernel, not our state
                await trio.sleep(0.01)
        finally:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)

    def _poll_main(self) -> bool:
        """Reap the main process if it has exited; True once it has."""
        if self._popen.poll() is None:
            return False
        if self._exit_status is None:
            self._exit_status = self._status_now()
            self._startup_news.set()
            self._exited.set()
            log.info("browser pid %d exited (%s)%s", self.pid, _describe(self._exit_status),
                     "" if self.stop_requested else " unasked")
        return True

    # ---------------------------------------------------------------- observation

    @property
    def endpoint(self) -> DevToolsEndpoint:
        assert self._endpoint is not None, "launch() returns only once the endpoint is known"
        return self._endpoint

    @property
    def exit_status(self) -> ExitStatus | None:
        return self._exit_status

    @property
    def stderr_tail(self) -> tuple[str, ...]:
        return tuple(self._tail)

    async def wait_exited(self) -> ExitStatus:
        """Return once the main process has exited, for whatever reason.

        `stop_requested` then tells a stop from a crash. The rest of the tree may still be
        running: `stop()` removes it (and is what a crash handler should call next).
        """
        await self._exited.wait()
        assert self._exit_status is not None
        return self._exit_status

    def tree_pids(self, procs: list[procutil.ProcInfo] | None = None) -> list[int]:
        """The live (non-zombie) processes of this browser, main process first (see
        `ProcessTree.pids`; it blocks)."""
        return self._tree.pids(procs)

    # ---------------------------------------------------------------- stop

    async def stop(self, grace_s: float = 5.0) -> ExitStatus:
        """Close the browser and return once nothing of its tree is left.

        Browser.close over CDP (flushes cookies), then SIGTERM, then SIGKILL and a sweep of
        processes that carry its spawn tag. Idempotent; safe to call while another stop
        runs, and from a cancelled scope: it shields itself and is bounded by about
        grace_s + TERM_WAIT_S + KILL_WAIT_S seconds.
        """
        self.stop_requested = True
        with trio.CancelScope(shield=True):
            if self._stopping is not None:
                await self._stopping.wait()
            elif not self._tree.gone:
                self._stopping = trio.Event()
                try:
                    await self._shutdown_through_shortage(max(grace_s, 0.0))
                finally:
                    self._stopping.set()
                    self._stopping = None
            with trio.move_on_after(0.5):  # lines written while dying, for the final tail
                await self._output_done.wait()
        status = self._status_now()
        if self._exit_status is not None:
            self._exit_status = status
        return status

    async def _shutdown_through_shortage(self, grace_s: float) -> None:
        """`_shutdown`, retried for as long as the daemon is out of descriptors (EMFILE): each
        of its steps reads /proc, which takes one. Meanwhile the group is SIGKILLed (killpg
        needs none), so the browser goes at once, its pipes and connections close and give
        descriptors back, and what is left of the tree is found then. A stop that gave up
        would leave the run half-stopped, and the supervisor waiting on it would fail."""
        delay = 0.1
        level = logging.WARNING
        while True:
            try:
                await self._shutdown(grace_s)
                return
            except OSError as exc:
                if exc.errno not in RESOURCE_ERRNOS:
                    raise
                log.log(level, "browser pid %d: out of descriptors while stopping (%s); "
                        "killing its group and retrying", self.pid, exc)
                level = logging.DEBUG
            if self._popen.returncode is None:  # unreaped, so the group id is still ours
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            grace_s = 0.0  # no time for grace any more
            await trio.sleep(delay)
            delay = min(2 * delay, 1.0)

    async def _shutdown(self, grace_s: float) -> None:
        if self._poll_main():
            # A crash (or an exit nobody asked for): no browser is left to close, and its
            # helpers normally follow it within milliseconds.
            graceful_until = trio.current_time() + min(grace_s, ORPHAN_GRACE_S)
        else:
            graceful_until = trio.current_time() + grace_s
            closing = False
            if grace_s > 0 and self._endpoint is not None:
                with trio.move_on_at(graceful_until):
                    closing = await self._close_over_cdp()
            if not closing:  # no graceful exit is coming: go on to the signals
                graceful_until = trio.current_time()
        with trio.move_on_at(graceful_until):
            await self._tree.wait_gone(sweep=False)
        if grace_s > 0 and not await self._tree.check_gone(sweep=False):
            await self._tree.signal(signal.SIGTERM, sweep=False)
            with trio.move_on_after(min(grace_s, TERM_WAIT_S)):
                await self._tree.wait_gone(sweep=False)
        # Even when the group left by itself: what escaped it (crashpad) is found by its tag.
        await self._tree.kill(sweep=True)
        if self._tree.gone:
            # Chromium leaves it after a clean exit too; it would name a dead port (the next
            # launch deletes it anyway, but `browserctl doctor` and other tools read it).
            with contextlib.suppress(OSError):
                (self.user_data_dir / "DevToolsActivePort").unlink(missing_ok=True)

    async def _close_over_cdp(self) -> bool:
        """Send Browser.close; False when it could not be delivered."""
        try:
            async with open_cdp(self.endpoint.ws_url, connect_timeout_s=2.0) as cdp:
                await cdp.call("Browser.close", timeout_s=None)
        except trio.BrokenResourceError:
            pass  # the browser may close the socket before it answers: that is success
        except Exception as exc:  # best effort: the signals that follow do the job anyway
            log.info("browser pid %d: Browser.close failed: %r", self.pid, exc)
            return False
        return True

    def _status_now(self) -> ExitStatus:
        # An adopted browser is not our child: it exited, but how is not ours to know.
        returncode = None if self.adopted else self._popen.returncode
        return ExitStatus.from_returncode(returncode, self.stderr_tail)

    def _final_status(self) -> ExitStatus:
        self._poll_main()
        return self._status_now()


def _describe(status: ExitStatus) -> str:
    if status.signal is not None:
        try:
            return f"killed by {signal.Signals(status.signal).name}"
        except ValueError:
            return f"killed by signal {status.signal}"
    if status.exit_code is not None:
        return f"exit code {status.exit_code}"
    return "still running"
