"""Byte-level tests for the sans-io msgpack-RPC connection: no sockets, no event loop."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from browserd.client.wire import (
    CLOSED,
    MAX_MSGID,
    NEED_DATA,
    Connection,
    Event,
    InvalidMessage,
    LocalProtocolError,
    Notification,
    RemoteProtocolError,
    Request,
    Response,
    make_error,
    to_event,
)


def pack(obj: Any) -> bytes:
    frame: bytes = msgpack.packb(obj, use_bin_type=True)
    return frame


def drain(conn: Connection) -> list[Event]:
    """Every event up to NEED_DATA or CLOSED (CLOSED is included, NEED_DATA is not)."""
    events: list[Any] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if event is CLOSED:
            return events


def feed(data: bytes, *, max_buffer_size: int = 1 << 20) -> list[Any]:
    conn = Connection(max_buffer_size)
    conn.receive_data(data)
    return drain(conn)


SAMPLE: list[Request | Response | Notification] = [
    Request(0, "hello", {"client": {"name": "t", "version": "1"}, "api": {"min": 1, "max": 1}}),
    Request(MAX_MSGID, "runtimes.launch", {"name": "crm", "args": ["--x"], "blob": b"\x00\xff"}),
    Request(7, "daemon.status", {}),
    Response(0, None, {"api_level": 1, "nested": [1, 2.5, None, True, "é"]}),
    Response(7, make_error("runtime.not_found", "no such runtime", "ls"), None),
    Notification("subscription.event", {"subscription": "s1", "event": {"seq": 1}}),
    Notification("heartbeat", {}),
]


def encode(conn: Connection, msg: Request | Response | Notification) -> bytes:
    if isinstance(msg, Request):
        return conn.send_request(msg.msgid, msg.method, msg.params)
    if isinstance(msg, Response):
        return conn.send_response(msg.msgid, msg.error, msg.result)
    return conn.send_notification(msg.method, msg.payload)


def stream_of(messages: list[Request | Response | Notification]) -> bytes:
    sender = Connection()
    return b"".join(encode(sender, m) for m in messages)


# -- framing -----------------------------------------------------------------------


def test_round_trip_and_wire_layout() -> None:
    conn = Connection()
    assert conn.send_request(5, "m", {"a": 1}) == pack([0, 5, "m", [{"a": 1}]])
    assert conn.send_response(5, None, [1]) == pack([1, 5, None, [1]])
    assert conn.send_notification("n", {"b": 2}) == pack([2, "n", [{"b": 2}]])
    assert feed(stream_of(SAMPLE)) == SAMPLE


def test_empty_params_array_means_empty_map() -> None:
    assert feed(pack([0, 1, "m", []]) + pack([2, "n", []])) == [
        Request(1, "m", {}),
        Notification("n", {}),
    ]


def test_split_byte_by_byte() -> None:
    data = stream_of(SAMPLE)
    conn = Connection()
    events: list[Any] = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        events.extend(drain(conn))
    conn.receive_data(b"")
    events.extend(drain(conn))
    assert events == [*SAMPLE, CLOSED]


def test_many_frames_in_one_chunk_larger_than_the_buffer() -> None:
    # 200 frames of ~60 bytes in a single 12 kB chunk, with a 256-byte bound: each
    # frame fits, so all of them come out even though the chunk does not fit at once.
    messages = [Request(i, "runs.get", {"run_id": f"run_{i:040d}"}) for i in range(200)]
    data = stream_of(messages)
    assert len(data) > 40 * 256
    assert feed(data, max_buffer_size=256) == messages


def test_frame_of_exactly_the_buffer_size_is_accepted() -> None:
    frame = pack([2, "n", [{"x": "a" * 100}]])
    assert (
        feed(frame + frame, max_buffer_size=len(frame)) == [Notification("n", {"x": "a" * 100})] * 2
    )


def test_oversize_frame_is_too_large_and_the_connection_stays_dead() -> None:
    frame = pack([2, "n", [{"x": "a" * 100}]])
    conn = Connection(len(frame) - 1)
    conn.receive_data(frame)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == "rpc.too_large"
    assert info.value.error["code"] == "rpc.too_large"
    with pytest.raises(RemoteProtocolError) as again:
        conn.next_event()
    assert again.value is info.value


def test_oversize_frame_of_many_small_elements_is_too_large() -> None:
    # The decoder parses incrementally and drops consumed bytes, so its own buffer
    # bound alone would never trip on a frame made of many small elements.
    frame = pack([1, 1, None, [list(range(100))] * 100])
    conn = Connection(1000)
    with pytest.raises(RemoteProtocolError, match="larger than 1000 bytes"):
        for i in range(0, len(frame), 100):
            conn.receive_data(frame[i : i + 100])
            assert conn.next_event() is NEED_DATA
    assert i == 1000


def test_oversize_frame_split_across_chunks() -> None:
    conn = Connection(64)
    conn.receive_data(b"\xdb\xff\xff\xff\xff")  # str32 declaring 4 GiB
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"x" * 59)  # 64 bytes: still within the bound
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"x")
    with pytest.raises(RemoteProtocolError, match="larger than 64 bytes") as info:
        conn.next_event()
    assert info.value.code == "rpc.too_large"


@pytest.mark.parametrize(
    "header",
    [
        b"\xdd\xff\xff\xff\xff",  # array32 declaring 4G elements
        b"\xdf\xff\xff\xff\xff",  # map32 declaring 4G entries
        b"\x91\xdd\x00\x01\x00\x01",  # nested array over the 64Ki element cap
    ],
)
def test_huge_declared_container_is_refused_from_its_header(header: bytes) -> None:
    conn = Connection()
    conn.receive_data(header)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == "rpc.too_large"


def test_deep_nesting_is_refused_without_recursion() -> None:
    conn = Connection()
    conn.receive_data(b"\x91" * 5000 + b"\x01")
    with pytest.raises(RemoteProtocolError, match="nested too deeply") as info:
        conn.next_event()
    assert info.value.code == "rpc.too_large"


def test_moderate_nesting_is_fine() -> None:
    nested: Any = 1
    for _ in range(200):
        nested = [nested]
    assert feed(pack([1, 3, None, nested])) == [Response(3, None, nested)]


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xc1",  # the one byte msgpack never uses
        pack([0, 1, "m", []])[:-3] + b"\xc1\xc1\xc1",
        b"\xa2\xff\xfe",  # str with invalid UTF-8
    ],
)
def test_garbage_is_a_parse_error(garbage: bytes) -> None:
    conn = Connection()
    conn.receive_data(garbage + pack([2, "n", []]))
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == "rpc.parse_error"
    assert info.value.hint  # every error a peer is sent says what to do
    assert info.value.error == make_error("rpc.parse_error", info.value.message, info.value.hint)


def test_eof_on_a_frame_boundary() -> None:
    conn = Connection()
    conn.receive_data(pack([2, "n", []]))
    conn.receive_data(b"")
    assert conn.next_event() == Notification("n", {})
    assert conn.next_event() is CLOSED
    assert conn.next_event() is CLOSED
    with pytest.raises(RuntimeError):
        conn.receive_data(b"more")


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 9])
def test_eof_mid_frame_is_a_parse_error(cut: int) -> None:
    # Every cut, including one right after a complete element ("m") of the frame.
    frame = pack([0, 1, "m", [{"a": "bcdef"}]])
    conn = Connection()
    conn.receive_data(frame[:cut])
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a message") as info:
        conn.next_event()
    assert info.value.code == "rpc.parse_error"


# -- well-framed but invalid: the stream stays in sync ------------------------------

INVALID: list[tuple[Any, int | None, str]] = [
    ({"not": "an array"}, None, "non-empty array"),
    ([], None, "non-empty array"),
    ("hello", None, "non-empty array"),
    ([3, 1, "m", []], None, "unknown message type 3"),
    ([True, 1, "m", []], None, "unknown message type True"),
    (["0", 1, "m", []], None, "unknown message type"),
    ([0, 1, "m"], 1, "needs 4 elements, got 3"),
    ([0, 1, "m", [], 5], 1, "needs 4 elements, got 5"),
    ([1, 9], 9, "needs 4 elements"),
    ([2, "n", [], 1], None, "needs 3 elements"),
    ([0, -1, "m", []], None, "msgid"),
    ([0, MAX_MSGID + 1, "m", []], None, "msgid"),
    ([0, "1", "m", []], None, "msgid"),
    ([0, 1.0, "m", []], None, "msgid"),
    ([0, True, "m", []], None, "msgid"),
    ([1, None, None, 1], None, "msgid"),
    ([0, 4, b"method", []], 4, "method must be a string"),
    ([0, 4, 17, []], 4, "method must be a string"),
    ([2, None, []], None, "method must be a string"),
    ([0, 4, "m", {"a": 1}], 4, "zero or one map"),
    ([0, 4, "m", [{"a": 1}, {"b": 2}]], 4, "zero or one map"),
    ([0, 4, "m", [[1]]], 4, "zero or one map"),
    ([0, 4, "m", ["x"]], 4, "zero or one map"),
    ([0, 4, "m", None], 4, "zero or one map"),
    ([2, "n", [1]], None, "zero or one map"),
    ([1, 4, "boom", None], 4, "error must be nil or a map"),
    ([0, 4, "m", [{1: "int key"}]], 4, "map keys must be strings"),
    ([0, 4, "m", [{b"k": "bin key"}]], 4, "map keys must be strings"),
    ([0, 4, "m", [{"ok": {None: 1}}]], 4, "map keys must be strings"),
    ([1, 4, None, {"deep": [[{"x": {2.5: 1}}]]}], 4, "map keys must be strings"),
    ([2, "n", [{"a": {True: 1}}]], None, "map keys must be strings"),
    ([0, 4, "m", [{"ext": msgpack.ExtType(5, b"x")}]], 4, "map keys must be strings"),
]


@pytest.mark.parametrize(("obj", "msgid", "fragment"), INVALID)
def test_invalid_message_keeps_the_stream_in_sync(
    obj: Any, msgid: int | None, fragment: str
) -> None:
    after = Request(8, "next", {"still": "in sync"})
    events = feed(pack(obj) + stream_of([after]))
    assert len(events) == 2
    invalid, following = events
    assert isinstance(invalid, InvalidMessage)
    assert invalid.msgid == msgid
    assert invalid.error["code"] == "rpc.invalid_request"
    assert fragment in invalid.error["message"]
    assert following == after


@pytest.mark.parametrize(
    "key_bytes",
    [
        b"\x91\x01",  # array key: unhashable
        b"\x81\xa1a\x01",  # map key: unhashable
    ],
)
def test_unhashable_map_keys_keep_the_stream_in_sync(key_bytes: bytes) -> None:
    # [0, 4, "m", [{<key>: 1}]] built by hand: Python cannot pack such a map.
    frame = b"\x94\x00\x04\xa1m\x91\x81" + key_bytes + b"\x01"
    invalid, following = feed(frame + pack([2, "n", []]))
    assert isinstance(invalid, InvalidMessage)
    assert invalid.msgid == 4
    assert "map keys must be strings" in invalid.error["message"]
    assert following == Notification("n", {})


# -- sending -------------------------------------------------------------------------


@pytest.mark.parametrize("msgid", [-1, MAX_MSGID + 1, True, 1.0, "1"])
def test_send_rejects_bad_msgid(msgid: Any) -> None:
    conn = Connection()
    with pytest.raises(LocalProtocolError) as info:
        conn.send_request(msgid, "m", {})
    assert info.value.code == "rpc.invalid_request"
    with pytest.raises(LocalProtocolError):
        conn.send_response(msgid, None, None)


def test_send_rejects_bad_method_and_params() -> None:
    conn = Connection()
    bad: Any = [1]
    with pytest.raises(LocalProtocolError):
        conn.send_request(1, bad, {})
    with pytest.raises(LocalProtocolError):
        conn.send_request(1, "m", bad)
    with pytest.raises(LocalProtocolError):
        conn.send_notification("n", bad)
    with pytest.raises(LocalProtocolError):
        conn.send_response(1, bad, None)


@pytest.mark.parametrize("value", [object(), 2**64, {1j}, "\ud800"])
def test_unencodable_values_are_local_errors_and_the_packer_recovers(value: Any) -> None:
    conn = Connection()
    with pytest.raises(LocalProtocolError) as info:
        conn.send_request(1, "m", {"v": [1, 2, value]})
    assert info.value.code == "rpc.invalid_params"
    with pytest.raises(LocalProtocolError) as info:
        conn.send_response(1, None, {"v": value})
    assert info.value.code == "rpc.internal_error"
    # Nothing of the failed message leaks into the next one.
    assert conn.send_notification("n", {}) == pack([2, "n", [{}]])


def test_send_refuses_a_frame_the_peer_could_not_receive() -> None:
    conn = Connection(100)
    with pytest.raises(LocalProtocolError) as info:
        conn.send_response(1, None, "x" * 100)
    assert info.value.code == "rpc.too_large"
    assert len(conn.send_response(1, None, "x" * 80)) <= 100
    with pytest.raises(LocalProtocolError) as info:  # a request too (its own way to _pack)
        conn.send_request(1, "m", {"x": "x" * 100})
    assert info.value.code == "rpc.too_large"
    assert len(conn.send_request(1, "m", {"x": "x" * 70})) <= 100


# -- properties ----------------------------------------------------------------------

keys = st.text(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
maps = st.dictionaries(keys, values, max_size=4)
msgids = st.integers(min_value=0, max_value=MAX_MSGID)
messages = st.one_of(
    st.builds(Request, msgids, st.text(max_size=12), maps),
    st.builds(Response, msgids, st.none() | maps, values),
    st.builds(Notification, st.text(max_size=12), maps),
)


@settings(max_examples=300, deadline=None)
@given(msgs=st.lists(messages, max_size=8), data=st.data())
def test_any_chunking_of_a_valid_stream_yields_the_same_messages(
    msgs: list[Request | Response | Notification], data: st.DataObject
) -> None:
    stream = stream_of(msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    conn = Connection()
    events: list[Any] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if end > start:  # b"" would mean EOF
            conn.receive_data(stream[start:end])
        events.extend(drain(conn))
    conn.receive_data(b"")
    events.extend(drain(conn))
    assert events == [*msgs, CLOSED]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_ever_raise_remote_protocol_errors(data: bytes) -> None:
    conn = Connection(128)
    if data:
        conn.receive_data(data)
    conn.receive_data(b"")
    try:
        events = drain(conn)
    except RemoteProtocolError as exc:
        assert exc.code in ("rpc.parse_error", "rpc.too_large")
    else:
        assert events[-1] is CLOSED
        assert all(
            isinstance(e, (Request, Response, Notification, InvalidMessage)) for e in events[:-1]
        )


def test_unchecked_map_keys_decode_natively_and_end_the_stream_on_a_bad_key() -> None:
    """check_map_keys=False (the client reading its own daemon): maps come straight from the
    decoder; a key that is not a string cannot be flagged per frame, so it ends the stream."""
    conn = Connection(check_map_keys=False)
    conn.receive_data(msgpack.packb([1, 7, None, {"data": [{"id": "sp_1", "metadata": {}}]}]))
    assert conn.next_event() == Response(7, None, {"data": [{"id": "sp_1",
                                                                   "metadata": {}}]})
    assert conn.next_event() is NEED_DATA
    conn.receive_data(msgpack.packb([1, 8, None, {1: "int key"}]))
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.code == "rpc.parse_error"
    checked = Connection()
    checked.receive_data(msgpack.packb([1, 8, None, {1: "int key"}]))
    assert isinstance(checked.next_event(), InvalidMessage), "the default still flags it"


def test_next_frame_is_next_event_before_the_reading() -> None:
    """next_frame gives each frame as decoded (to_event reads it as next_event would), and a
    frame already known invalid (an ext type) as its InvalidMessage, the stream in sync."""
    frames = [[1, 7, None, {"data": []}], [2, "n", [{"ext": msgpack.ExtType(5, b"x")}]],
              [0, 8, "m", []], "not a message"]
    conn = Connection()
    conn.receive_data(b"".join(pack(frame) for frame in frames))
    first = conn.next_frame()
    assert first == [1, 7, None, {"data": []}]
    assert to_event(first) == Response(7, None, {"data": []})
    invalid = conn.next_frame()
    assert isinstance(invalid, InvalidMessage) and invalid.msgid is None
    assert "map keys must be strings" in invalid.error["message"]
    assert to_event(conn.next_frame()) == Request(8, "m", {})
    assert isinstance(to_event(conn.next_frame()), InvalidMessage)
    assert conn.next_frame() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_frame() is CLOSED
