"""``browserctl doctor``: check the installation and say what to do about each problem.

The checks, in order: the daemon's configuration and the browser it would run (asked of
``browserd --check-config --json``, so the answer is the daemon's own discovery), the socket
and its modes, whether the daemon answers, the state dir, browser processes left behind by a
daemon that is gone, stale ``SingletonLock`` and ``DevToolsActivePort`` files in profiles, and
free disk space. Each finding is ``ok``, ``warn`` or ``fail``; the exit status is 1 when any
check fails. Processes are read from /proc directly: the client imports no psutil.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._sync.client import Client
from .contexts import Destination
from .errors import BrowserdError
from .paths import socket_path
from .ssh import run_far_browserctl

__all__ = ["SYSTEM_SOCKET", "Finding", "render", "run", "run_checks", "run_far"]

SYSTEM_SOCKET = Path("/run/browserd/browserd.sock")  # systemd/system/browserd.socket
FAR_CONNECT_TIMEOUT_S = 10.0
MIN_FREE_BYTES = 512 * 2**20  # below this a launch or a download may fail outright
LOW_FREE_BYTES = 2 * 2**30
CHECK_CONFIG_TIMEOUT_S = 30.0


@attrs.frozen
class Finding:
    """One result: which check, ok/warn/fail, what was found, and what to do about it."""

    check: str
    status: str  # "ok", "warn" or "fail"
    message: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class _Context:
    socket: Path
    explicit_socket: bool
    daemon_config: dict[str, Any] | None = None
    status: dict[str, Any] | None = None  # daemon.status when the daemon answers
    socket_missing: bool = False  # then the socket finding already says to start the daemon


def run_checks(explicit_socket: str | None = None,
               environ: Mapping[str, str] | None = None) -> list[Finding]:
    """Every check, in order."""
    env = os.environ if environ is None else environ
    ctx = _Context(socket_path(explicit_socket, environ=env),
                   bool(explicit_socket or env.get("BROWSERD_SOCKET")))
    findings = list(_check_config(ctx, env))
    findings += _check_socket(ctx)
    findings += _check_daemon(ctx)
    state_dir = _state_dir(ctx)
    if state_dir is None:
        return findings
    findings += _check_state_dir(state_dir)
    if state_dir.is_dir() and os.access(state_dir, os.R_OK | os.X_OK):
        findings += _check_processes(state_dir, daemon_alive=ctx.status is not None)
        findings += _check_profiles(state_dir)
    findings += _check_disk(state_dir)
    return findings


# -- configuration and browser ----------------------------------------------------------


def _check_config(ctx: _Context, env: Mapping[str, str]) -> Iterator[Finding]:
    argv = [sys.executable, "-m", "browserd.daemon.main", "--check-config", "--json"]
    try:
        done = subprocess.run(argv, env=dict(env), capture_output=True, text=True,
                              timeout=CHECK_CONFIG_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        yield Finding("config", "fail", f"could not run browserd --check-config: {exc}",
                      "Reinstall the package (pip install browserd) and try again.")
        return
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        yield Finding("config", "fail", last.removeprefix("browserd: "),
                      "Fix the key named above in the config file, then check it with "
                      "`browserd --check-config`.")
        return
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        yield Finding("config", "fail", "browserd --check-config printed no JSON",
                      "Reinstall the package: the daemon and browserctl differ.")
        return
    ctx.daemon_config = report["config"]
    yield Finding("config", "ok", f"config file {report['config_file'] or 'absent: defaults'}")
    browser = report["browser"]
    if browser["error"] is None:
        yield Finding("browser", "ok", f"{browser['executable']}: {browser['version']}")
    else:
        error = browser["error"]
        yield Finding("browser", "fail", error["message"], error.get("hint") or None)


# -- socket and daemon --------------------------------------------------------------------


def _check_socket(ctx: _Context) -> Iterator[Finding]:
    path = ctx.socket
    configured = (ctx.daemon_config or {}).get("socket")
    if configured and Path(configured) != path and not ctx.explicit_socket:
        yield Finding("socket", "warn",
                      f"the daemon's config puts its socket at {configured}, clients look at "
                      f"{path}", f"export BROWSERD_SOCKET={configured}")
    try:
        st = path.lstat()
    except FileNotFoundError:
        ctx.socket_missing = True
        yield Finding("socket", "fail", f"no socket at {path}: no daemon runs there",
                      _start_hint(path))
        return
    except OSError as exc:
        yield Finding("socket", "fail", f"cannot inspect {path}: {exc.strerror}",
                      "Check the permissions of its directory.")
        return
    if not stat.S_ISSOCK(st.st_mode):
        yield Finding("socket", "fail", f"{path} is not a socket",
                      f"Remove it (rm {_quote(path)}) and start the daemon again.")
        return
    mode, owner = stat.S_IMODE(st.st_mode), _user(st.st_uid)
    described = f"{path} (mode {mode:04o}, owner {owner})"
    if mode & 0o002:  # connecting takes write permission
        yield Finding("socket", "fail", f"{described} lets every local user connect",
                      f"chmod 600 {_quote(path)} (0660 for a system service's group)")
    else:
        yield Finding("socket", "ok", described)
    parent = path.parent.stat()
    if stat.S_IMODE(parent.st_mode) & 0o022:
        yield Finding("socket", "fail",
                      f"the socket directory {path.parent} is writable by others (mode "
                      f"{stat.S_IMODE(parent.st_mode):04o}): anyone could replace the socket",
                      f"chmod go-w {_quote(path.parent)}")


def _check_daemon(ctx: _Context) -> Iterator[Finding]:
    if ctx.socket_missing:
        return
    try:
        with Client(ctx.socket, client_name="browserctl-doctor", connect_timeout=5.0) as bd:
            status = bd.status()
    except BrowserdError as err:
        yield Finding("daemon", "fail", f"no answer: {err.message}",
                      err.hint or _start_hint(ctx.socket))
        return
    ctx.status = status
    counts = status.get("counts", {})
    yield Finding(
        "daemon", "ok",
        f"browserd {status.get('version')} (pid {status.get('pid')}, up "
        f"{status.get('uptime_s', 0):.0f} s): {counts.get('active_runtimes', 0)} of "
        f"{counts.get('runtimes', 0)} runtimes active, {counts.get('clients', 0)} client(s)",
    )


def _start_hint(path: Path) -> str:
    hint = ("Start the daemon: `systemctl --user start browserd.socket` (then the first "
            "browserctl call starts it), or run `browserd` in a terminal.")
    if path != SYSTEM_SOCKET and SYSTEM_SOCKET.exists():
        hint += (f" A system daemon listens at {SYSTEM_SOCKET}: "
                 f"export BROWSERD_SOCKET={SYSTEM_SOCKET}")
    return hint


# -- state dir, leftovers, profiles, disk ------------------------------------------------


def _state_dir(ctx: _Context) -> Path | None:
    if ctx.status is not None and ctx.status.get("state_dir"):
        return Path(ctx.status["state_dir"])
    if ctx.daemon_config is not None:
        return Path(ctx.daemon_config["state_dir"])
    return None


def _check_state_dir(state_dir: Path) -> Iterator[Finding]:
    try:
        st = state_dir.stat()
    except FileNotFoundError:
        yield Finding("state dir", "warn", f"{state_dir} does not exist yet",
                      "Nothing to do: the daemon creates it when it first starts.")
        return
    except OSError as exc:
        yield Finding("state dir", "fail", f"cannot inspect {state_dir}: {exc.strerror}",
                      "Run doctor as the daemon's user.")
        return
    mode, owner = stat.S_IMODE(st.st_mode), _user(st.st_uid)
    described = f"{state_dir} (mode {mode:04o}, owner {owner})"
    if not os.access(state_dir, os.R_OK | os.X_OK):
        yield Finding("state dir", "warn", f"{described} is not readable by this user",
                      f"Run `browserctl doctor` as {owner} to check profiles and leftovers.")
    elif mode & 0o077:
        yield Finding("state dir", "warn", f"{described} is open to other users",
                      f"chmod 700 {_quote(state_dir)} (the daemon also does at start)")
    else:
        yield Finding("state dir", "ok", described)


def _user_data_dirs(state_dir: Path) -> list[Path]:
    dirs = sorted((state_dir / "profiles").glob("*/user-data"))
    dirs += sorted(p for p in (state_dir / "ephemeral").glob("*") if p.is_dir())
    return dirs


def _check_processes(state_dir: Path, *, daemon_alive: bool) -> Iterator[Finding]:
    roots = [str(state_dir / "profiles") + "/", str(state_dir / "ephemeral") + "/"]
    pids = sorted(pid for pid, argv in _processes() if _names_any(argv, roots))
    if not pids:
        yield Finding("processes", "ok", "no browser processes of this state dir")
    elif daemon_alive:
        yield Finding("processes", "ok", f"{len(pids)} browser process(es), the daemon's own")
    else:
        shown = " ".join(map(str, pids[:20]))
        yield Finding("processes", "fail",
                      f"{len(pids)} browser process(es) left by a daemon that is gone: {shown}",
                      "Start the daemon (it kills leftovers of its state dir when it starts), "
                      f"or kill them: kill {shown}")


def _check_profiles(state_dir: Path) -> Iterator[Finding]:
    stale = 0
    for user_data_dir in _user_data_dirs(state_dir):
        for finding in _check_singleton_lock(user_data_dir):
            stale += 1
            yield finding
        # A DevToolsActivePort without a browser is no failure: Chromium leaves it on a clean
        # exit, the daemon removes it at stop and deletes any before a launch.
    if stale == 0:
        yield Finding("profiles", "ok", "no stale SingletonLock files")


def _check_singleton_lock(user_data_dir: Path) -> Iterator[Finding]:
    lock = user_data_dir / "SingletonLock"
    try:
        target = os.readlink(lock)
    except OSError:
        return  # no lock (or not a symlink, which Chromium does not make)
    host, _, pid_text = target.rpartition("-")
    if host != socket.gethostname():
        yield Finding("profiles", "warn",
                      f"SingletonLock in {user_data_dir} names another host ({target})",
                      "If no browser on that host uses this profile, remove the lock: "
                      f"rm {_quote(lock)}")
    elif not pid_text.isdigit() or not _pid_alive(int(pid_text)):
        singleton = " ".join(_quote(user_data_dir / name) for name in
                             ("SingletonLock", "SingletonSocket", "SingletonCookie"))
        yield Finding("profiles", "fail",
                      f"stale SingletonLock in {user_data_dir}: it names {target}, and that "
                      "process is gone; Chromium refuses the profile while it exists",
                      f"rm -f {singleton}")


def _check_disk(state_dir: Path) -> Iterator[Finding]:
    existing = state_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        vfs = os.statvfs(existing)
    except OSError as exc:
        yield Finding("disk", "warn", f"cannot measure free space at {existing}: {exc}")
        return
    free = vfs.f_bavail * vfs.f_frsize
    text = f"{free / 2**30:.1f} GiB free for the state dir ({existing})"
    if free < MIN_FREE_BYTES:
        yield Finding("disk", "fail", text,
                      "Free some space: delete old runs, unused profiles or other files.")
    elif free < LOW_FREE_BYTES:
        yield Finding("disk", "warn", text, "Browsers and downloads need room: free some space.")
    else:
        yield Finding("disk", "ok", text)


# -- /proc and small helpers -------------------------------------------------------------


def _processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every live process this user may read; zombies have no argv."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if raw:
            yield int(name), [arg.decode(errors="replace") for arg in raw.split(b"\0")[:-1]]


def _names_any(argv: list[str], prefixes: list[str]) -> bool:
    """Whether a ``--flag=value`` (or ``--user-data-dir value``) of argv points into a prefix."""
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        flag, sep, value = arg.partition("=")
        if not sep and flag == "--user-data-dir" and i + 1 < len(argv):
            value = argv[i + 1]
        if value and any(value == p or value.startswith(p) for p in prefixes):
            return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _quote(path: Path) -> str:
    text = str(path)
    return text if all(c.isalnum() or c in "/._-+:@" for c in text) else "'" + text.replace(
        "'", "'\\''") + "'"


# -- output -------------------------------------------------------------------------------


def render(findings: list[Finding]) -> str:
    """Aligned lines, a ``fix:`` line under each problem, and a one-line verdict."""
    width = max((len(f.check) for f in findings), default=0)
    lines = []
    for f in findings:
        lines.append(f"{f.status.upper():<5} {f.check:<{width}}  {f.message}")
        if f.fix and f.status != "ok":
            lines.append(f"{'':<5} {'':<{width}}  fix: {f.fix}")
    failed = sum(f.status == "fail" for f in findings)
    lines.append("healthy" if failed == 0 else f"{failed} problem(s) found")
    return "\n".join(lines)


def run(explicit_socket: str | None, *, as_json: bool) -> int:
    """Run every check and print the result; 0 when nothing failed, else 1."""
    findings = run_checks(explicit_socket)
    healthy = not any(f.status == "fail" for f in findings)
    if as_json:
        print(json.dumps({"healthy": healthy, "checks": [f.to_dict() for f in findings]},
                         indent=2))
    else:
        print(render(findings))
    return 0 if healthy else 1


def run_far(where: Destination, *, as_json: bool) -> int:
    """The checks of a daemon on another machine are about that machine: run there (``ssh
    HOST browserctl doctor``), printed here; 0 when nothing failed, else 1."""
    assert where.ssh is not None
    print(f"doctor on {where.ssh} (through ssh):", file=sys.stderr)
    status = run_far_browserctl(where.ssh, ["doctor", *(["--json"] if as_json else [])],
                                remote_browserctl=where.remote_browserctl,
                                connect_timeout=FAR_CONNECT_TIMEOUT_S)
    if status in (0, 1):
        return status
    if status == 255:
        print(f"browserctl: could not reach {where.ssh} through ssh (ssh's words above). "
              f"Check `ssh {where.ssh.destination}` by hand.", file=sys.stderr)
    else:  # 127: no browserctl on the far PATH; else it failed in some other way
        print(f"browserctl: `browserctl doctor` did not run on {where.ssh} (exit {status}). "
              "If browserctl is not on the PATH of an ssh session there, set "
              "BROWSERD_REMOTE_BROWSERCTL to its full path.", file=sys.stderr)
    return 1
