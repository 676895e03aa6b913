"""What every scenario shares: statistics, a daemon run as a subprocess, config probing, sweeps.

The daemon under test is always a real `browserd` subprocess (as a user runs it), so psutil can
measure its RSS and CPU alone and the bench's own work never runs inside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import psutil

from browserd.daemon.base.config import ConfigError, parse

from .profile import Sampler

BIN = Path(sys.executable).parent
# Where daemons and scratch dirs go: short, because Unix socket paths are limited to 107 bytes.
TMP_ROOT = os.environ.get("BROWSERD_BENCH_TMPDIR", "/tmp")
CHROMIUM = "/usr/bin/chromium"
HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"


# ------------------------------------------------------------------ statistics


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# ------------------------------------------------------------------ config probing


def config_key_known(dotted: str, sample: Any) -> bool:
    """Whether the daemon's config schema accepts `dotted` (e.g. "pool.size") with `sample`.

    Scenarios for features still being built check this and skip with a note, so the bench
    runs on every version of the daemon.
    """
    section, _, key = dotted.rpartition(".")
    table: dict[str, Any] = {section: {key: sample}} if section else {key: sample}
    try:
        parse(table)
    except ConfigError:
        return False
    return True


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml_text(settings: Mapping[str, Any]) -> str:
    """{"browser.executable": "...", "limits.max_runtimes": 40} as a TOML document."""
    sections: dict[str, list[str]] = {}
    for dotted, value in settings.items():
        section, _, key = dotted.rpartition(".")
        sections.setdefault(section, []).append(f"{key} = {toml_value(value)}")
    lines = list(sections.pop("", []))
    for section, body in sections.items():
        lines += ["", f"[{section}]", *body]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the daemon under test


class DaemonUnderTest:
    """`browserd` as a subprocess in a short temp dir, with its own config file.

    Use as a context manager: on exit it is stopped with SIGTERM (an orderly shutdown that
    stops every runtime) and the directory is removed once nothing names it any more.
    """

    # Set by `python -m bench --profile DIR`: every daemon is then sampled with py-spy.
    profile_dir: ClassVar[Path | None] = None
    _started: ClassVar[int] = 0

    def __init__(self, settings: Mapping[str, Any], *, label: str = "daemon",
                 prefix: str = "bdb-") -> None:
        self.label = label
        # Unix socket paths are limited to 107 bytes: keep the base short.
        self.base = Path(tempfile.mkdtemp(prefix=prefix, dir=TMP_ROOT))
        self.socket = self.base / "run" / "browserd.sock"
        self.state_dir = self.base / "state"
        self.config_path = self.base / "config.toml"
        self.config_path.write_text(toml_text(settings))
        self.log_path = self.base / "daemon.log"
        self.env = {
            **os.environ,
            "BROWSERD_SOCKET": str(self.socket),
            "BROWSERD_STATE_DIR": str(self.state_dir),
            "BROWSERD_CONFIG": str(self.config_path),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.process: psutil.Process | None = None
        self.sampler: Sampler | None = None

    def __enter__(self) -> DaemonUnderTest:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            # The daemon's log goes with its temporary dir: a scenario that failed (an
            # internal error says "the daemon log has the details") shows its end first.
            print(f"-- the end of the {self.label} daemon's log ({self.log_path}):\n"
                  f"{self.log_tail(60)}", file=sys.stderr)
        self.stop()

    def start(self, timeout_s: float = 20.0) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "browserd"), "--log-level", "warning"], env=self.env,
                stdout=log, stderr=log,
            )
        self.process = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout_s
        while not socket_accepts(self.socket):
            if self.proc.poll() is not None:
                raise RuntimeError(f"browserd exited early:\n{self.log_path.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"browserd did not bind in time:\n{self.log_path.read_text()}")
            time.sleep(0.02)
        if self.profile_dir is not None:
            DaemonUnderTest._started += 1
            output = self.profile_dir / f"{DaemonUnderTest._started:02d}-{self.label}.txt"
            self.sampler = Sampler(self.proc.pid, output)

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.sampler is not None:  # before SIGTERM: the profile is of the work, not the exit
            self.sampler.stop()
            self.sampler = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        sweep(self.base)
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_bytes(self) -> int:
        assert self.process is not None
        return int(self.process.memory_info().rss)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the daemon process alone (not its browsers)."""
        assert self.process is not None
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""


def socket_accepts(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


# ------------------------------------------------------------------ processes


def processes_naming(directory: Path) -> list[psutil.Process]:
    """Live processes whose command line names `directory` (browser trees name their profile)."""
    needle = str(directory)
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(needle in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def sweep(directory: Path) -> int:
    """SIGKILL whatever still names `directory` (after a failed scenario); how many there were."""
    found = processes_naming(directory)
    for proc in found:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(found, timeout=5)
    return len(found)


def kill_group(proc: subprocess.Popen[bytes], directory: Path) -> None:
    """Kill a browser started in its own session, and whatever escaped its group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    sweep(directory)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=TMP_ROOT))
    try:
        yield path
    finally:
        sweep(path)
        shutil.rmtree(path, ignore_errors=True)
