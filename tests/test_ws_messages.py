"""MessageScanner: bytes in, whole messages with their first and last bytes out (no sockets)."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol

from browserd.daemon.cdp.ws_frames import OP_BINARY, OP_TEXT, FrameError
from browserd.daemon.cdp.ws_messages import Message, MessageScanner, encode_frame, unmask

# (kind, payload, fin): a fragmented message with a ping between its fragments, sizes over
# every length encoding, an empty message, and a close at the end.
SCRIPT: list[tuple[str, bytes, bool]] = [
    ("text", b'{"id":1,"method":"Browser.getVersion"}', True),
    ("binary", b"", True),
    ("binary", os.urandom(70_000), True),
    ("text", b"b" * 126, True),
    ("text", b"frag-1 ", False),
    ("ping", b"are you there", True),
    ("text", b"frag-2 ", False),
    ("text", b"frag-3", True),
    ("text", b"x" * 5000, True),
    ("close", b"", True),
]
# Each message's payload, and whether the script's frames for it are a fragmented run.
EXPECTED = [SCRIPT[0][1], b"", SCRIPT[2][1], SCRIPT[3][1], b"frag-1 frag-2 frag-3", SCRIPT[8][1]]


def encode(client: bool) -> bytes:
    proto = FrameProtocol(client=client, extensions=[])
    out = bytearray()
    for kind, payload, fin in SCRIPT:
        if kind == "ping":
            out += proto.ping(payload)
        elif kind == "close":
            out += proto.close(1000, "bye")
        elif kind == "text":
            out += proto.send_data(payload.decode(), fin)
        else:
            out += proto.send_data(payload, fin)
    return bytes(out)


def feed(scanner: MessageScanner, wire: bytes, cuts: list[int]) -> list[Message]:
    found: list[Message] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(wire)]:
        found += scanner.receive_data(wire[start:cut])
        start = cut
    return found


@settings(max_examples=200, deadline=None)
@given(client=st.booleans(), cuts=st.lists(st.integers(0, 90_000), max_size=30),
       capture=st.sampled_from([0, 1, 7, 256, 100_000]), tail=st.sampled_from([0, 5, 300]))
def test_messages_survive_any_chunking(client: bool, cuts: list[int], capture: int,
                                       tail: int) -> None:
    wire = encode(client)
    scanner = MessageScanner(masked=client, capture=capture, tail_capture=tail)
    messages = feed(scanner, wire, [c for c in cuts if c <= len(wire)])
    assert [m.length for m in messages] == [len(p) for p in EXPECTED]
    for message, payload in zip(messages, EXPECTED, strict=True):
        assert message.head == payload[:capture]
        long = len(payload) > capture
        # The tail is the end of what the head did not hold.
        assert message.tail == (payload[capture:][-tail:] if long and tail else b"")
        assert message.complete == (not long)
    assert [m.opcode for m in messages] == [OP_TEXT, OP_BINARY, OP_BINARY, OP_TEXT, OP_TEXT,
                                            OP_TEXT]
    assert messages[4].frames == 3 and messages[0].frames == 1
    # Offsets: messages tile the stream, except the ping (inside message 4) and the close.
    assert messages[0].start == 0
    for before, after in itertools.pairwise(messages):
        assert after.start == before.end
    assert scanner.close_seen and scanner.messages == len(EXPECTED)
    assert scanner.last_boundary == scanner.bytes_seen == len(wire)


def test_a_message_is_exactly_its_byte_range() -> None:
    wire = encode(client=True)
    messages = MessageScanner(masked=True, capture=0).receive_data(wire)
    # Re-scanning one message's byte range alone yields that message alone.
    for message in messages:
        alone = MessageScanner(masked=True, capture=10**6).receive_data(
            wire[message.start : message.end]
        )
        assert len(alone) == 1 and alone[0].length == message.length


def test_safe_until_holds_back_only_small_incomplete_messages() -> None:
    proto = FrameProtocol(client=True, extensions=[])
    small = proto.send_data('{"id":7,"method":"Browser.close"}', True)
    big = proto.send_data("y" * 100_000, True)
    scanner = MessageScanner(masked=True, capture=64)
    scanner.receive_data(small[:10])
    assert scanner.safe_until(64) == 0  # its start must wait for the rest
    assert scanner.receive_data(small[10:])[0].head.startswith(b'{"id":7')
    assert scanner.safe_until(64) == len(small)  # whole: everything may go
    scanner.receive_data(big[:1000])
    assert scanner.safe_until(64) == len(small) + 1000  # too long to hold: stream it
    scanner.receive_data(big[1000:])
    scanner.receive_data(small[:1])  # inside a header between messages
    assert scanner.safe_until(64) == len(small) + len(big)


def test_control_frame_between_fragments_is_held_with_the_message() -> None:
    proto = FrameProtocol(client=True, extensions=[])
    wire = proto.send_data("ab", False) + proto.ping(b"p") + proto.send_data("cd", True)
    scanner = MessageScanner(masked=True, capture=64)
    assert scanner.receive_data(wire[:-3]) == []
    assert scanner.safe_until(64) == 0  # the ping waits with the message around it
    (message,) = scanner.receive_data(wire[-3:])
    assert message.head == b"abcd" and message.frames == 2
    assert scanner.safe_until(64) == len(wire)


def test_bad_framing_raises_and_stays_broken() -> None:
    scanner = MessageScanner(masked=True)
    unmasked = FrameProtocol(client=False, extensions=[]).send_data("hi", True)
    with pytest.raises(FrameError):
        scanner.receive_data(unmasked)
    with pytest.raises(FrameError):
        scanner.receive_data(b"")


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4), st.integers(0, 7))
def test_unmask_matches_the_rfc_definition(data: bytes, mask: bytes, offset: int) -> None:
    expected = bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))
    assert unmask(data, mask, offset) == expected


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_encode_frame_round_trips(size: int) -> None:
    payload = os.urandom(size)
    for mask in (None, b"\x01\x02\x03\x04"):
        scanner = MessageScanner(masked=mask is not None, capture=size)
        (message,) = scanner.receive_data(encode_frame(OP_BINARY, payload, mask))
        assert message.head == payload and message.length == size
