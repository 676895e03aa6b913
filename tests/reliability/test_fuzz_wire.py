"""Fuzzing the RPC socket: generated and mutated msgpack frames against a daemon subprocess.

Every case runs on a fresh connection, while a well-behaved client keeps calling on another one
(one call interleaved with every case, and a thread calling all along). The daemon must never
crash, answer every request it can read with a success or a clean error (a documented code,
never rpc.internal_error, with message and hint), or close that connection after a final
`rpc.error` when the framing is broken — and the well-behaved client must never notice.

What a case's bytes mean to the daemon is predicted with the sans-io decoder both sides share,
so the test knows which msgids must be answered and whether the connection must end.
"""

from __future__ import annotations

import inspect
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import browserd.daemon.rpc.methods  # noqa: F401 - importing registers every RPC method
from browserd.client import wire
from browserd.daemon.rpc.api import METHODS

from .harness import (
    HELLO,
    REPORT,
    Daemon,
    RawRpc,
    assert_no_orphans,
    check_error,
    check_state_files,
    config_text,
    fuzz_settings,
)

SENTINEL = 4_000_000_000  # a msgid no generated case uses: its answer closes every case
_ADDRESS_KEYS = ("name", "space", "id", "runtime_id")


def _param_keys() -> list[str]:
    """Every param name a handler reads (from its source), so fuzzing reaches past `finish()`."""
    keys = set(_ADDRESS_KEYS)
    for registered in METHODS.values():
        source = inspect.getsource(registered.handler)
        keys |= set(re.findall(r"""\.\w+\(\s*["']([a-z_]+)["']""", source))
    return sorted(keys)


PARAM_KEYS = _param_keys()
METHOD_NAMES = sorted(METHODS)


# ------------------------------------------------------------------------------ strategies

_scalars = (
    st.none() | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80) | st.binary(max_size=80)
    | st.sampled_from(["default", "x", "rt_0", "run_0", "conn_0", "a" * 65, "../..", "", "\0"])
)
values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text(max_size=12) | st.integers(-(2**63), 2**64 - 1), inner,
                      max_size=6),
    max_leaves=25,
)
plausible = (
    st.sampled_from(["default", "fuzz", "x.y-z_1"])
    | st.integers(min_value=-5, max_value=100_000) | st.booleans() | st.none()
    | st.floats(min_value=0, max_value=1000)
)
params_maps = st.dictionaries(
    st.sampled_from(PARAM_KEYS) | st.text(max_size=20), values | plausible, max_size=6
)
msgids = (
    st.integers(min_value=0, max_value=2**32 - 1)
    | st.integers(min_value=-(2**63), max_value=-1)
    | st.integers(min_value=2**32, max_value=2**64 - 1)
    | st.floats() | st.text(max_size=5) | st.none() | st.binary(max_size=4)
)


def _deep(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@st.composite
def requests(draw: st.DrawFn) -> Any:
    """A request-shaped array with its parts valid or not."""
    method = draw(st.sampled_from(METHOD_NAMES) | st.text(max_size=30) | values)
    params = draw(
        st.builds(lambda p: [p], params_maps)
        | st.just([]) | values
        | st.builds(lambda p: [p, p], params_maps)
        | st.builds(lambda d: [{"metadata": _deep(d, 1), "name": "deep"}],
                    st.integers(min_value=20, max_value=40))
    )
    message = [draw(st.sampled_from([0, 0, 0, 1, 2, 3, -1])), draw(msgids), method, params]
    cut = draw(st.sampled_from([4, 4, 4, 0, 1, 2, 3, 5]))
    return message[:cut] + ([None] * (cut - 4) if cut > 4 else [])


def _pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


_hostile_frames = st.sampled_from([
    b"\xc1" * 8,  # never valid msgpack
    b"\xdf\xff\xff\xff\xff",  # a map header declaring 4 billion entries
    b"\xdd\x7f\xff\xff\xff",  # an array header declaring 2 billion elements
    b"\xc6\xff\xff\xff\xf0",  # a 4 GiB bin header
    b"\xdb\x00\x00\x00\x05\xff\xfe\xfd\xfc\xfb",  # invalid UTF-8 in a str
    b"\xd4\x01\x00",  # an ext type
    b"\x94\x00\x01\xa5hello\x91\x80" * 3,  # hello, answered three times
    b"\x94\x00\x01\xafdaemon.status\x91\x80\x00",  # an extra byte after a whole request
]) | st.builds(lambda d, m: (b"\x81\xa1k" if m else b"\x91") * d + b"\xc0",
                st.integers(min_value=100, max_value=3000), st.booleans())

frames = st.one_of(
    st.builds(_pack, requests()),
    st.builds(_pack, values),
    st.binary(min_size=1, max_size=200),
    _hostile_frames,
    st.builds(lambda obj, cut: _pack(obj)[:cut], requests(),
              st.integers(min_value=1, max_value=40)),
    st.builds(lambda a, b: a + b, st.builds(_pack, requests()), st.builds(_pack, requests())),
)


# ------------------------------------------------------------------------------ the daemon


class GoodClient:
    """Calls all along on its own connection; every call must succeed."""

    def __init__(self, path: Path) -> None:
        self.rpc = RawRpc(path)
        self.calls = 0
        self.failures: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._path = path

    def start(self) -> None:
        self._thread.start()

    def expect_success(self, msgid: int) -> None:
        """The answer to the call sent (from the test thread) before a case: a success."""
        while True:  # answers to calls of a case that failed half-way come first
            event = self.rpc.next_event(time.monotonic() + 15)
            assert isinstance(event, wire.Response), event
            assert event.error is None, event.error
            if event.msgid == msgid:
                return

    def _loop(self) -> None:
        with RawRpc(self._path) as rpc:
            while not self._stop.is_set():
                for method in ("daemon.status", "runtimes.list", "spaces.get"):
                    response = rpc.call(method, {"name": "default"} if method == "spaces.get"
                                        else {})
                    self.calls += 1
                    if response.error is not None:
                        self.failures.append((method, response.error))
                time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "the well-behaved client hung"
        self.rpc.close()


@pytest.fixture(scope="module")
def fuzz_target() -> Iterator[tuple[Daemon, GoodClient]]:
    """A daemon whose browser is /bin/true: every launch the fuzzer hits fails fast and clean."""
    base = Path(tempfile.mkdtemp(prefix="bd-fz-", dir="/tmp"))
    daemon = Daemon(base, config_text(executable="/bin/true"))
    daemon.start()
    good = GoodClient(daemon.socket)
    good.start()
    try:
        yield daemon, good
        good.stop()
        assert daemon.alive(), f"the daemon died:\n{daemon.log_text()[-3000:]}"
        assert not good.failures, good.failures[:5]
        assert good.calls > 0
        REPORT.notes.append(f"well-behaved client during the wire fuzz: {good.calls} calls, "
                            "0 failed")
        assert daemon.tracebacks() == [], daemon.tracebacks()[0]
        check_state_files(daemon.state_dir)
        assert daemon.stop() == 0
        assert_no_orphans(daemon.state_dir)
    finally:
        if daemon.alive():
            daemon.kill()
        shutil.rmtree(base, ignore_errors=True)


def _predict(data: bytes, eof: bool) -> tuple[set[int], bool]:
    """(msgids the daemon must answer, whether it must close the connection) for these bytes."""
    conn = wire.Connection()
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    answered: set[int] = set()
    while True:
        try:
            event = conn.next_event()
        except wire.RemoteProtocolError:
            return answered, True
        if event is wire.NEED_DATA or event is wire.CLOSED:
            return answered, eof
        if isinstance(event, wire.Request | wire.InvalidMessage) and event.msgid is not None:
            answered.add(event.msgid)


def run_case(daemon: Daemon, good: GoodClient, data: bytes, *, hello: bool,
             eof: bool = False) -> None:
    """Send `data` on a fresh connection and check everything that comes back."""
    sentinel = b"" if eof else _pack([0, SENTINEL, "spaces.get", [{"name": "default"}]])
    expect, must_close = _predict(data + sentinel, eof)
    good_id = good.rpc.request("runtimes.list", {})  # in flight while the case runs
    with RawRpc(daemon.socket, hello=hello, timeout_s=15) as conn:
        conn.send_bytes(data + sentinel)
        if eof:
            conn.sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 15
        answered: dict[int, Any] = {}
        while not (expect <= answered.keys() and not must_close):
            event = conn.next_event(deadline)
            if event is None:
                break
            if isinstance(event, wire.Response):
                if event.error is not None:
                    check_error(event.error)
                answered[event.msgid] = event
            elif isinstance(event, wire.Notification):
                assert event.method == "rpc.error", event
                check_error(event.payload.get("error"))
        if not conn.closed:
            assert not must_close, "the daemon kept a connection whose framing broke"
            assert expect <= answered.keys(), f"unanswered: {expect - answered.keys()}"
        else:
            assert must_close or not expect - answered.keys(), (
                f"connection closed with {expect - answered.keys()} unanswered: {data[:200]!r}")
    good.expect_success(good_id)
    assert daemon.alive(), f"the daemon died:\n{daemon.log_text()[-3000:]}"


# ------------------------------------------------------------------------------ the fuzzers


@fuzz_settings(1200)
@given(data=frames, hello=st.booleans())
def test_generated_frames(fuzz_target: tuple[Daemon, GoodClient], data: bytes,
                          hello: bool) -> None:
    daemon, good = fuzz_target
    run_case(daemon, good, data, hello=hello)
    REPORT.bad_inputs["rpc frames"] += 1


@fuzz_settings(1200)
@given(method=st.sampled_from(METHOD_NAMES), params=params_maps, msgid=st.integers(0, 2**32 - 2))
def test_bad_params_for_every_method(fuzz_target: tuple[Daemon, GoodClient], method: str,
                                     params: dict[Any, Any], msgid: int) -> None:
    daemon, good = fuzz_target
    run_case(daemon, good, _pack([0, msgid, method, [params]]), hello=True)
    REPORT.bad_inputs["rpc params"] += 1


def test_every_method_is_fuzzed_with_a_wrong_type_for_every_key(
        fuzz_target: tuple[Daemon, GoodClient]) -> None:
    """Deterministic sweep: each method, each key it reads, each wrong type."""
    daemon, good = fuzz_target
    wrong = [None, True, -1, 2**64 - 1, 1.5, float("nan"), "", "x" * 5000, b"\x00", [], [1],
             {}, {"a": {"b": 1}}, _deep(40, 1)]
    with RawRpc(daemon.socket) as conn:
        for method in METHOD_NAMES:
            for key in PARAM_KEYS:
                for value in wrong:
                    response = conn.call(method, {key: value})
                    if response.error is not None:
                        check_error(response.error)
                    REPORT.bad_inputs["rpc params"] += 1
    assert (good.rpc.call("daemon.status", {})).error is None


@fuzz_settings(250)
@given(data=st.binary(min_size=1, max_size=60), cut=st.integers(min_value=1, max_value=30),
       request=requests())
def test_truncated_frames_then_eof(fuzz_target: tuple[Daemon, GoodClient], data: bytes,
                                   cut: int, request: Any) -> None:
    daemon, good = fuzz_target
    truncated = _pack(request)[:cut]
    run_case(daemon, good, truncated, hello=True, eof=True)
    run_case(daemon, good, data, hello=False, eof=True)
    REPORT.bad_inputs["rpc frames"] += 2


@fuzz_settings(150)
@given(mutations=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1,
                          max_size=4))
def test_mutated_valid_requests(fuzz_target: tuple[Daemon, GoodClient],
                                mutations: list[tuple[int, int]]) -> None:
    """Byte flips in real requests: the shapes a buggy client or a corrupted stream sends."""
    daemon, good = fuzz_target
    for method, params in (("hello", HELLO), ("runtimes.launch", {"name": "m", "headless": True}),
                           ("runs.events.list", {"run_id": "run_x", "after_seq": 3}),
                           ("connections.create", {"name": "m", "ttl_s": 10})):
        frame = bytearray(_pack([0, 7, method, [params]]))
        for position, byte in mutations:
            frame[position % len(frame)] = byte
        run_case(daemon, good, bytes(frame), hello=method != "hello")
        REPORT.bad_inputs["rpc frames"] += 1


def test_huge_and_deep_inputs(fuzz_target: tuple[Daemon, GoodClient]) -> None:
    """Containers at and past the decoder's limits, and a frame past the 16 MiB buffer."""
    daemon, good = fuzz_target
    cases = [
        _pack([0, 1, "spaces.create", [{"name": "big", "metadata": {str(i): i for i in
                                                                    range(70_000)}}]]),
        _pack([0, 1, "spaces.create", [{"name": "big", "metadata": {str(i): i for i in
                                                                    range(60_000)}}]]),
        _pack([0, 1, "runtimes.update", [{"name": "x", "metadata": _deep(33, 1)}]]),
        _pack([0, 1, "spaces.create", [{"name": "big", "metadata": {"b": b"x" * (17 << 20)}}]]),
        _pack([0, 1, "runs.events.list", [{"run_id": "r", "types": ["t"] * 65_536}]]),
        b"\x94\x00\x01\xafdaemon.status\x91" + b"\x81\xa1k" * 2000 + b"\xc0",
    ]
    for data in cases:
        run_case(daemon, good, data, hello=True)
        REPORT.bad_inputs["rpc frames"] += 1
    with RawRpc(daemon.socket) as conn:  # a flood of pipelined requests on one connection
        burst = b"".join(_pack([0, i, "nope.method", [{}]]) for i in range(1, 2001))
        conn.send_bytes(burst)
        deadline = time.monotonic() + 30
        seen = 0
        while seen < 2000:
            event = conn.next_event(deadline)
            assert isinstance(event, wire.Response), event
            assert check_error(event.error) == "rpc.method_not_found"
            seen += 1
        REPORT.bad_inputs["rpc frames"] += 2000


def test_many_connections_that_leave_abruptly(fuzz_target: tuple[Daemon, GoodClient]) -> None:
    """Clients that vanish mid-request (a launch in flight, a half-sent frame, RST)."""
    daemon, good = fuzz_target
    for i in range(100):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.socket))
        hello = _pack([0, 1, "hello", [HELLO]])
        follow = [_pack([0, 2, "runtimes.launch", [{"name": f"gone-{i % 3}"}]]),
                  _pack([0, 2, "runs.events.list", [{"run_id": "r"}]])[:5],
                  b""][i % 3]
        sock.sendall(hello + follow)
        sock.close()
        REPORT.bad_inputs["abrupt disconnects"] += 1
    assert (good.rpc.call("daemon.status", {})).error is None
