"""What the reliability tests share: a blocking raw RPC client, a daemon subprocess with its own
config and limits, the checks every fault ends with (run logs whole, nothing orphaned, errors
clean), and the figures `make soak` prints.

Settings come from the environment, so `make soak` runs the same tests longer:
  BROWSERD_FUZZ_PROFILE   "ci" (default, bounded for make test) or "soak" (make soak): the
                          fuzzers' hypothesis profile, and how many times faults repeat
  BROWSERD_LOAD_S         seconds of load in the quick load test (default 40)
  BROWSERD_SOAK_S         seconds of load in the soak test (default 600)
  BROWSERD_REPORT         a path: the figures are also written there as JSON
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import psutil
from hypothesis import HealthCheck, settings
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from browserd.client import wire

from ..conftest import BIN, REPO, DaemonProcess, processes_using, socket_accepts

HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"
HELLO = {"client": {"name": "reliability", "version": "0"}, "api": {"min": 1, "max": 1}}

FUZZ_PROFILE = os.environ.get("BROWSERD_FUZZ_PROFILE", "ci")
LOAD_S = float(os.environ.get("BROWSERD_LOAD_S", "40"))
SOAK_S = float(os.environ.get("BROWSERD_SOAK_S", "600"))
FAULT_CYCLES = 10 if FUZZ_PROFILE == "soak" else 2  # daemon kills per run

# The fuzzers' hypothesis profiles: "ci" bounds make test, "soak" tries ten times as many inputs.
# They are only ever used as parents of the fuzzers' own settings (never loaded globally), so
# the rest of the suite keeps hypothesis' defaults.
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
             HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=1, deadline=None, database=None,
                          suppress_health_check=_SUPPRESS, print_blob=True)
settings.register_profile("soak", parent=settings.get_profile("ci"), max_examples=10)


def fuzz_settings(ci_examples: int) -> settings:
    """Settings for a fuzzer that tries `ci_examples` inputs in make test (x10 under soak)."""
    profile = settings.get_profile(FUZZ_PROFILE)
    return settings(profile, max_examples=ci_examples * profile.max_examples)


# ------------------------------------------------------------------------------ error checks


def readme_error_codes() -> frozenset[str]:
    """Every code docs/api.md's "Error codes" section lists: the codes a client may be sent."""
    text = (REPO / "docs" / "api.md").read_text()
    section = text.split("## Error codes", 1)[1].split("\n#", 1)[0]
    return frozenset(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", section))


KNOWN_CODES = readme_error_codes()


def check_error(error: Any) -> str:
    """Assert a wire error is clean: a documented code (never internal_error), message, hint."""
    assert isinstance(error, dict), f"error is not a map: {error!r}"
    code = error.get("code")
    assert code in KNOWN_CODES, f"undocumented error code {code!r}: {error!r}"
    assert code != "rpc.internal_error", f"internal error: {error!r}"
    assert isinstance(error.get("message"), str) and error["message"], error
    assert isinstance(error.get("hint"), str) and error["hint"], error
    return str(code)


# ------------------------------------------------------------------------------ raw RPC client


class RawRpc:
    """A blocking msgpack-RPC connection that sends whatever it is given."""

    def __init__(self, path: Path, *, hello: bool = True, timeout_s: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        self.sock.connect(str(path))
        self.wire = wire.Connection()
        self.timeout_s = timeout_s
        self.next_id = 0
        self.closed = False
        if hello:
            response = self.call("hello", HELLO)
            assert response.error is None, response.error

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawRpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_bytes(self, data: bytes) -> bool:
        """False if the daemon already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def request(self, method: str, params: dict[str, Any]) -> int:
        self.next_id += 1
        self.sock.sendall(self.wire.send_request(self.next_id, method, params))
        return self.next_id

    def next_event(self, deadline: float) -> wire.Event | None:
        """The next message; None once the daemon closed the connection."""
        while True:
            try:
                event = self.wire.next_event()
            except wire.RemoteProtocolError as exc:
                raise AssertionError(f"the daemon sent undecodable bytes: {exc}") from None
            if event is wire.CLOSED:
                self.closed = True
                return None
            if event is not wire.NEED_DATA:
                return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the daemon did not answer in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(256 * 1024)
            except ConnectionResetError:
                data = b""
            except TimeoutError:
                raise AssertionError("the daemon did not answer in time") from None
            self.wire.receive_data(data)

    def call(self, method: str, params: dict[str, Any]) -> wire.Response:
        msgid = self.request(method, params)
        deadline = time.monotonic() + self.timeout_s
        while True:
            event = self.next_event(deadline)
            assert event is not None, f"connection closed while waiting for {method}"
            if isinstance(event, wire.Response) and event.msgid == msgid:
                return event


# ------------------------------------------------------------------------------ CDP client


class CdpSocket:
    """A blocking CDP WebSocket (wsproto over a plain socket) through the daemon's proxy."""

    def __init__(self, url: str, *, timeout_s: float = 15.0,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.timeout_s = timeout_s
        self.next_id = 0
        self._text: list[str] = []
        self._messages: list[dict[str, Any]] = []
        self.sock.sendall(self.ws.send(Request(host=hostport, target="/" + path,
                                               extra_headers=headers or [])))
        deadline = time.monotonic() + timeout_s
        while True:
            for event in self._receive(deadline):
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection | RejectData):
                    self.sock.close()
                    raise ConnectionRefusedError(f"handshake refused: {event!r}")

    def _receive(self, deadline: float) -> list[Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer from the CDP proxy in time")
        self.sock.settimeout(left)
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionResetError("the CDP proxy closed the socket")
        self.ws.receive_data(data)
        return list(self.ws.events())

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             session_id: str | None = None) -> dict[str, Any]:
        """Send one CDP command and return its answer (events in between are kept aside)."""
        self.next_id += 1
        msgid = self.next_id
        message: dict[str, Any] = {"id": msgid, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        self.sock.sendall(self.ws.send(TextMessage(json.dumps(message))))
        deadline = time.monotonic() + self.timeout_s
        while True:
            for event in self._receive(deadline):
                if isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    raise ConnectionResetError(f"the proxy closed the WebSocket: {event!r}")
                elif isinstance(event, TextMessage):
                    self._text.append(event.data)
                    if event.message_finished:
                        message = json.loads("".join(self._text))
                        self._text.clear()
                        if message.get("id") == msgid:
                            return dict(message)
                        self._messages.append(message)

    def close(self) -> None:
        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        except Exception:
            pass
        self.sock.close()

    def __enter__(self) -> CdpSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exchange(port: int, data: bytes, timeout_s: float = 15.0) -> bytes:
    """Send `data` to the CDP proxy, half-close, and return all it says before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # EPIPE, ECONNRESET, ENOTCONN (reset already)
            pass  # the proxy may refuse (and close) before it has read everything
        reply = bytearray()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
        else:
            raise AssertionError(f"the proxy neither answered nor closed: {data[:200]!r}")
        return bytes(reply)


def status_of(reply: bytes) -> int | None:
    """The HTTP status of a reply (None for no reply at all)."""
    if not reply:
        return None
    head = reply.split(b"\r\n", 1)[0].split(b" ")
    assert head[0] == b"HTTP/1.1" and head[1].isdigit(), f"not an HTTP answer: {reply[:200]!r}"
    return int(head[1])


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int | None, bytes]:
    """GET an http:// URL of the proxy with exactly these headers (Host defaults to the URL's)."""
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    port = int(hostport.rpartition(":")[2])
    fields = {"Host": hostport, "Connection": "close", **(headers or {})}
    head = f"GET /{path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in fields.items() if v is not None) + "\r\n"
    reply = exchange(port, head.encode())
    return status_of(reply), reply.partition(b"\r\n\r\n")[2]


# ------------------------------------------------------------------------------ daemons


def config_text(*, executable: str | None = HEADLESS_SHELL, **sections: dict[str, Any]) -> str:
    """A config.toml: browser.executable plus `section={key: value}` tables (top level: "")."""
    tables: dict[str, dict[str, Any]] = {"": {}, "browser": {}}
    if executable is not None:
        tables["browser"]["executable"] = executable
    for name, values in sections.items():
        tables.setdefault("" if name == "top" else name, {}).update(values)
    lines = [f"{k} = {json.dumps(v)}" for k, v in tables.pop("").items()]
    for name, values in tables.items():
        if values:
            lines.append(f"[{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


@attrs.frozen
class Resources:
    fds: int
    threads: int
    rss: int

    def within(self, baseline: Resources, tolerance: float) -> list[str]:
        """What grew beyond `tolerance` (a fraction) over the baseline (+2 for small counts)."""
        grew = []
        for field in ("fds", "threads", "rss"):
            now, then = getattr(self, field), getattr(baseline, field)
            if now > then * (1 + tolerance) + (2 if field != "rss" else 0):
                grew.append(f"{field}: {then} -> {now}")
        return grew


class Daemon(DaemonProcess):
    """`browserd` as a subprocess with a config of its own and, optionally, lowered limits."""

    def __init__(self, base: Path, config: str = "", *, nofile: int | None = None,
                 nofile_hard: int | None = None, fsize: int | None = None) -> None:
        base.mkdir(parents=True, exist_ok=True)
        (base / "config.toml").write_text(config or config_text())
        super().__init__(base)
        self.nofile = nofile
        # The daemon raises its soft limit to the hard one at start: a low limit that must
        # hold is low in both (its browsers inherit it; Chromium runs with 64).
        self.nofile_hard = nofile_hard if nofile_hard is not None else nofile
        self.fsize = fsize

    def start(self, timeout_s: float = 20.0) -> None:
        def limits() -> None:
            if self.nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile_hard))
            if self.fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (self.fsize, self.fsize))

        if self.nofile is None and self.fsize is None:
            super().start(timeout_s)
            return
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "browserd")], env=self.env, stdout=log,
                                         stderr=log, preexec_fn=limits)
        deadline = time.monotonic() + timeout_s
        # The socket file appears at bind, a moment before listen: wait until it accepts.
        while not socket_accepts(self.socket):
            assert self.proc.poll() is None, f"browserd exited early:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"browserd did not bind:\n{self.log.read_text()}"
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def resources(self) -> Resources:
        proc = psutil.Process(self.pid)
        with proc.oneshot():
            return Resources(proc.num_fds(), proc.num_threads(), proc.memory_info().rss)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def tracebacks(self) -> list[str]:
        """Tracebacks in the daemon's log: each one is a bug somebody did not handle."""
        text = self.log_text()
        blocks = text.split("Traceback (most recent call last):")[1:]
        return ["Traceback (most recent call last):" + block[-6000:] for block in blocks]


def browser_pids(state_dir: Path) -> list[psutil.Process]:
    return processes_using(state_dir)


def descendants(pid: int) -> list[psutil.Process]:
    """The live process tree under `pid` (Chromium's helpers do not name the user-data-dir in
    their command lines, so a cmdline search alone would miss them)."""
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return children


def renderer_of(daemon_pid: int) -> psutil.Process | None:
    for proc in descendants(daemon_pid):
        try:
            if "--type=renderer" in proc.cmdline():
                return proc
        except psutil.Error:
            continue
    return None


def assert_gone(procs: list[psutil.Process], within_s: float = 10.0) -> None:
    """Every one of these processes has exited (psutil compares create times, so a reused pid
    does not count)."""
    _, alive = psutil.wait_procs(procs, timeout=within_s)
    left = []
    for proc in alive:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append((proc.pid, proc.cmdline()[:2]))
        except psutil.Error:
            continue
    assert not left, f"orphaned processes: {left}"


def assert_no_orphans(state_dir: Path, within_s: float = 10.0) -> None:
    """Nothing left whose command line names the state dir (every browser tree does)."""
    deadline = time.monotonic() + within_s
    while left := processes_using(state_dir):
        if time.monotonic() > deadline:
            names = []
            for proc in left:
                try:
                    names.append((proc.pid, proc.name(), proc.status()))
                except psutil.Error:
                    continue
            if names:
                raise AssertionError(f"orphaned processes of {state_dir}: {names}")
        time.sleep(0.1)


# ------------------------------------------------------------------------------ run logs


@attrs.frozen
class LogCheck:
    files: int
    events: int
    torn_lines: int
    seqs: dict[str, int]  # run id -> last seq
    dropped: int = 0  # seqs missing from degraded runs (the disk refused them)


def check_run_logs(state_dir: Path, *, allow_torn_before_reconcile: bool = True) -> LogCheck:
    """Every events.jsonl: each line a valid event, seq 1, 2, 3... without gaps.

    A torn line (a write cut short by a kill) is allowed as the last line; and, since the
    daemon starts its next append on a fresh line, in the middle of a log when what follows it
    is the reconciliation after a lost daemon (`daemon_lost`) or the same seq written again.
    A run whose run.json says `degraded` (a disk error hit it: docs/operations.md, "State on
    disk") may miss seqs; they must still grow. Every such gap is counted in `dropped`.
    """
    files = events = torn = dropped = 0
    seqs: dict[str, int] = {}
    for path in sorted(state_dir.glob("runs/*/events.jsonl")):
        files += 1
        run_file = path.parent / "run.json"
        degraded = run_file.exists() and bool(json.loads(run_file.read_bytes()).get("degraded"))
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the file ends with a newline: no torn tail
        expected = 1
        pending_torn: int | None = None
        for number, line in enumerate(lines, 1):
            try:
                event = json.loads(line)
                ok = isinstance(event, dict) and type(event.get("seq")) is int
            except ValueError:
                ok = False
            if not ok:
                last = number == len(lines)
                assert last or allow_torn_before_reconcile, f"{path}:{number}: bad line {line!r}"
                assert line.startswith(b'{"seq":') or line == b"", (
                    f"{path}:{number}: not a torn event line: {line[:200]!r}")
                torn += 1
                pending_torn = number
                continue
            if pending_torn is not None:
                # A degraded run's log may hold a line a full disk cut short, anywhere
                # (eventlog.py: the next append starts on a fresh line).
                resumed = degraded or (event["seq"] == expected and (
                    event.get("data", {}).get("end_reason") == "daemon_lost"
                    or event.get("type") == "runtime.lifecycle"
                    # the reconcile ends the downloads a lost daemon left in flight first
                    or (event.get("type") == "download"
                        and event.get("data", {}).get("reason") == "daemon_lost")))
                assert resumed, (f"{path}:{pending_torn}: torn line in the middle of a live log "
                                 f"(degraded: {degraded}): {lines[pending_torn - 1][:300]!r}")
                pending_torn = None
            if degraded and event["seq"] > expected:
                dropped += event["seq"] - expected
                expected = event["seq"]
            assert event["seq"] == expected, (
                f"{path}:{number}: seq {event['seq']}, expected {expected} (gap or repeat)")
            for key in ("time", "run_id", "runtime_id", "space", "type", "source", "data"):
                assert key in event, f"{path}:{number}: no {key}: {event}"
            expected += 1
            events += 1
        seqs[path.parent.name] = expected - 1
    return LogCheck(files, events, torn, seqs, dropped)


def check_state_files(state_dir: Path) -> int:
    """Every runtime.json, run.json and spaces.json parses (they are replaced atomically)."""
    count = 0
    for path in [*state_dir.glob("runtimes/*/runtime.json"), *state_dir.glob("runs/*/run.json"),
                 state_dir / "spaces.json"]:
        if path.exists():
            json.loads(path.read_bytes())
            count += 1
    return count


# ------------------------------------------------------------------------------ figures


@attrs.define
class Figures:
    """What `make soak` reports. Tests add to the one instance, REPORT."""

    bad_inputs: Counter[str] = attrs.Factory(Counter)
    faults: Counter[str] = attrs.Factory(Counter)
    load: dict[str, Any] = attrs.Factory(dict)
    events_checked: int = 0
    data_lost: int = 0
    disk_refused: int = 0  # events a full disk refused, in runs marked degraded
    notes: list[str] = attrs.Factory(list)

    def empty(self) -> bool:
        return not (self.bad_inputs or self.faults or self.load or self.events_checked
                    or self.notes)

    def lines(self) -> list[str]:
        out = [f"fuzz profile {FUZZ_PROFILE!r}"]
        if self.load:
            for name, figures in self.load.items():
                out.append(
                    f"load held ({name}): {figures['duration_s']:.0f} s, "
                    f"{figures['clients']} RPC clients, {figures['requests']} requests "
                    f"({figures['requests_per_s']:.0f}/s, p99 {figures['p99_ms']:.1f} ms), "
                    f"{figures['launches']} launches/stops, {figures['attaches']} CDP attaches, "
                    f"{figures['errors']} unexpected errors; daemon after settle: "
                    f"{figures['resources_after']} vs baseline {figures['resources_before']}")
        if self.faults:
            out.append(f"faults survived: {sum(self.faults.values())} "
                       f"({', '.join(f'{k} x{v}' for k, v in sorted(self.faults.items()))})")
        if self.bad_inputs:
            out.append(f"bad inputs tried: {sum(self.bad_inputs.values())} "
                       f"({', '.join(f'{k} {v}' for k, v in sorted(self.bad_inputs.items()))})")
        out.append(f"run-log events checked: {self.events_checked}; data lost: {self.data_lost}"
                   f" (events a full disk refused, in runs marked degraded: {self.disk_refused})")
        out += self.notes
        return out

    def to_json(self) -> dict[str, Any]:
        return {"fuzz_profile": FUZZ_PROFILE, "bad_inputs": dict(self.bad_inputs),
                "faults": dict(self.faults), "load": self.load,
                "events_checked": self.events_checked, "data_lost": self.data_lost,
                "disk_refused": self.disk_refused}


REPORT = Figures()
