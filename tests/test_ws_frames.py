"""FrameScanner: bytes in, frame headers and message counts out (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol

from browserd.daemon.cdp.ws_frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    FrameError,
    FrameHeader,
    FrameScanner,
)

# (opcode, fin, payload) as sent; sizes cover the 7-bit, 16-bit and 64-bit length encodings.
SCRIPT: list[tuple[str, bytes, bool]] = [
    ("text", b'{"id":1,"method":"Browser.getVersion"}', True),
    ("binary", b"", True),
    ("binary", bytes(range(256)) * 300, True),  # 76800 bytes: 64-bit length
    ("text", b"a" * 125, True),
    ("text", b"b" * 126, True),  # 16-bit length
    ("text", b"c" * 65535, True),
    ("text", b"frag-1 ", False),
    ("ping", b"are you there", True),
    ("text", b"frag-2 ", False),
    ("text", b"frag-3", True),
    ("close", b"", True),
]
MESSAGES = 7  # the fragmented message counts once; ping and close are not messages


def encode(client: bool) -> tuple[bytes, list[bytes]]:
    """The script as wire bytes, plus each frame's payload in order."""
    proto = FrameProtocol(client=client, extensions=[])
    out = bytearray()
    payloads: list[bytes] = []
    for kind, payload, fin in SCRIPT:
        if kind == "ping":
            out += proto.ping(payload)
        elif kind == "close":
            out += proto.close(1000, "bye")
            payload = (1000).to_bytes(2, "big") + b"bye"
        elif kind == "text":
            out += proto.send_data(payload.decode(), fin)
        else:
            out += proto.send_data(payload, fin)
        payloads.append(payload)
    return bytes(out), payloads


def feed(scanner: FrameScanner, wire: bytes, cuts: list[int]) -> list[tuple[int, FrameHeader]]:
    """Feed wire split at cuts; returns (absolute payload offset, header) per frame."""
    found: list[tuple[int, FrameHeader]] = []
    start = 0
    for end in [*sorted(set(cuts)), len(wire)]:
        chunk = wire[start:end]
        for header in scanner.receive_data(chunk):
            found.append((start + header.payload_offset, header))
        start = end
    return found


def check(wire: bytes, payloads: list[bytes], client: bool, cuts: list[int]) -> None:
    scanner = FrameScanner(masked=client)
    found = feed(scanner, wire, cuts)
    assert scanner.frames == len(SCRIPT)
    assert scanner.messages == MESSAGES
    assert scanner.bytes_seen == len(wire)
    assert scanner.at_frame_boundary and scanner.close_seen
    expected_ops = [OP_TEXT, OP_BINARY, OP_BINARY, OP_TEXT, OP_TEXT, OP_TEXT, OP_TEXT, OP_PING,
                    OP_CONTINUATION, OP_CONTINUATION, OP_CLOSE]  # fmt: skip
    assert [h.opcode for _, h in found] == expected_ops
    assert [h.ends_message for _, h in found].count(True) == MESSAGES
    for (offset, header), payload in zip(found, payloads, strict=True):
        assert header.payload_length == len(payload)
        assert (header.mask is not None) is client
        raw = wire[offset : offset + len(payload)]
        if header.mask is not None:
            mask = header.mask
            raw = bytes(b ^ mask[i % 4] for i, b in enumerate(raw))
        assert raw == payload


@pytest.mark.parametrize("client", [True, False])
def test_whole_stream(client: bool) -> None:
    wire, payloads = encode(client)
    check(wire, payloads, client, [])


@pytest.mark.parametrize("client", [True, False])
def test_every_split_point(client: bool) -> None:
    wire, payloads = encode(client)
    # Every cut inside the first frames (headers split at every byte), then one per frame edge.
    for cut in range(1, 200):
        check(wire, payloads, client, [cut])


def test_byte_by_byte() -> None:
    wire, payloads = encode(True)
    check(wire, payloads, True, list(range(1, len(wire))))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=250_000), max_size=40), st.booleans())
def test_random_chunking(cuts: list[int], client: bool) -> None:
    wire, payloads = encode(client)
    check(wire, payloads, client, [c % (len(wire) + 1) for c in cuts])


def test_payload_offset_is_chunk_length_when_payload_starts_in_next_chunk() -> None:
    frame = bytes(FrameProtocol(client=False, extensions=[]).send_data(b"hello"))
    scanner = FrameScanner(masked=False)
    (header,) = scanner.receive_data(frame[:2])
    assert header.payload_offset == 2 and header.payload_length == 5
    assert not scanner.at_frame_boundary
    assert scanner.receive_data(frame[2:]) == []
    assert scanner.at_frame_boundary and scanner.messages == 1


def frame(b0: int, length: int, masked: bool = False) -> bytes:
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = bytes([b0, mask_bit | length])
    else:
        head = bytes([b0, mask_bit | 126]) + length.to_bytes(2, "big")
    return head + (b"\x00" * 4 if masked else b"") + b"x" * length


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (frame(0x83, 0), "reserved opcode"),
        (frame(0x8B, 0), "reserved opcode"),
        (frame(0x09, 0), "fragmented control"),
        (frame(0x89, 126), "longer than 125"),
        (frame(0x80, 1), "continuation frame outside"),
        (frame(0x01, 1) + frame(0x81, 1), "new data frame inside"),
        (frame(0xC1, 1), "reserved bits"),
        (bytes([0x82, 127]) + (1 << 63).to_bytes(8, "big"), "most significant bit"),
        (frame(0x81, 1, masked=True), "masked server frame"),
    ],
)
def test_framing_errors(data: bytes, reason: str) -> None:
    scanner = FrameScanner(masked=False)
    with pytest.raises(FrameError, match=reason):
        scanner.receive_data(data)
    with pytest.raises(FrameError, match=reason):  # sticky: the stream cannot be followed
        scanner.receive_data(frame(0x81, 1))


def test_client_frames_must_be_masked() -> None:
    with pytest.raises(FrameError, match="unmasked client frame"):
        FrameScanner(masked=True).receive_data(frame(0x81, 3))


def test_rsv_allowed_when_an_extension_was_negotiated() -> None:
    scanner = FrameScanner(masked=None, allow_rsv=True)
    (header,) = scanner.receive_data(frame(0xC1, 3))
    assert header.rsv == 0b100 and header.fin and scanner.messages == 1


def test_control_frames_between_fragments_keep_the_message_open() -> None:
    scanner = FrameScanner()
    scanner.receive_data(frame(0x01, 2) + frame(0x89, 0) + frame(0x8A, 0))
    assert scanner.messages == 0 and scanner.frames == 3
    scanner.receive_data(frame(0x80, 2))
    assert scanner.messages == 1
