"""Sans-io WebSocket frame-header scanner (RFC 6455 section 5.2).

The CDP proxy forwards WebSocket bytes as they are; it only needs to know where frames begin and
end. `FrameScanner` follows one direction of one connection: feed it every chunk in order with
`receive_data`, and it returns the headers that completed inside that chunk. It never copies or
unmasks payloads; it only skips over them. Its header checks (`parse_header`) are shared with
`ws_messages.MessageScanner`, which also reads the payloads' first bytes.
"""

from __future__ import annotations

import attrs

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_DATA_OPCODES = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY})
_CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})
_MAX_HEADER = 14  # 2 + 8 (64-bit length) + 4 (mask key)


class FrameError(Exception):
    """The peer broke WebSocket framing; the byte stream can no longer be followed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class FrameHeader:
    """One frame header.

    `payload_offset` is where the payload starts inside the chunk that completed the header (it
    equals the chunk's length when the payload begins in the next chunk); the payload then runs for
    `payload_length` bytes across as many chunks as it takes.
    """

    fin: bool
    rsv: int  # RSV1..RSV3 as a 3-bit number
    opcode: int
    mask: bytes | None  # 4-byte masking key, or None for an unmasked frame
    payload_length: int
    payload_offset: int
    header_length: int = 2  # bytes of the header itself (2 to 14)

    @property
    def is_control(self) -> bool:
        return self.opcode >= 0x8

    @property
    def ends_message(self) -> bool:
        """True for the final frame of a text or binary message."""
        return self.fin and self.opcode in _DATA_OPCODES


class FrameScanner:
    """Follows frame boundaries in one direction of a WebSocket byte stream.

    masked: True for client-to-server bytes (every frame must be masked), False for
    server-to-client bytes (none may be), None to accept either.
    allow_rsv: set when an extension was negotiated; otherwise RSV bits are a framing error.

    Counters: `frames` (all frames), `messages` (complete text/binary messages, counted when the
    header of their final frame is read), `bytes_seen`; `close_seen` once a Close frame came.
    After a `FrameError` the scanner stays broken and raises the same error again.
    """

    def __init__(self, *, masked: bool | None = None, allow_rsv: bool = False) -> None:
        self._masked = masked
        self._allow_rsv = allow_rsv
        self._remaining = 0  # payload bytes of the current frame still to skip
        self._partial = b""  # start of a header split across chunks (< _MAX_HEADER bytes)
        self._fragmented = False  # inside a message whose final frame has not come yet
        self._error: str | None = None
        self.close_seen = False
        self.frames = 0
        self.messages = 0
        self.bytes_seen = 0

    @property
    def error(self) -> str | None:
        """Why the stream broke framing (then every later call raises), or None."""
        return self._error

    @property
    def at_frame_boundary(self) -> bool:
        """True when the bytes fed so far end exactly at the end of a frame."""
        return self._remaining == 0 and not self._partial

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[FrameHeader]:
        if self._error is not None:
            raise FrameError(self._error)
        n = len(data)
        self.bytes_seen += n
        headers: list[FrameHeader] = []
        pos = 0
        while True:
            if self._remaining:
                avail = n - pos
                if self._remaining >= avail:
                    self._remaining -= avail
                    return headers
                pos += self._remaining
                self._remaining = 0
            if pos >= n:
                return headers
            if self._partial:
                # Rare path: the header started in an earlier chunk. Join at most one header's
                # worth of bytes; payloads are never copied.
                have = len(self._partial)
                buf = self._partial + bytes(data[pos : pos + _MAX_HEADER - have])
                parsed = self.parse_header(buf, 0)
                if parsed is None:
                    self._partial = buf
                    return headers
                header_len = parsed[0]
                pos += header_len - have
                self._partial = b""
            else:
                parsed = self.parse_header(data, pos)
                if parsed is None:
                    self._partial = bytes(data[pos:])
                    return headers
                header_len = parsed[0]
                pos += header_len
            header_len, fin, rsv, opcode, mask, length = parsed
            headers.append(FrameHeader(fin, rsv, opcode, mask, length, pos, header_len))
            self._remaining = length

    def parse_header(
        self, buf: bytes | bytearray | memoryview, pos: int
    ) -> tuple[int, bool, int, int, bytes | None, int] | None:
        """Parse, check and count the header at buf[pos:]: (header length, fin, rsv, opcode,
        mask, payload length), or None if it is not complete yet. Raises FrameError."""
        avail = len(buf) - pos
        if avail < 2:
            return None
        b0 = buf[pos]
        b1 = buf[pos + 1]
        length = b1 & 0x7F
        masked = bool(b1 & 0x80)
        header_len = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if masked else 0)
        if avail < header_len:
            return None
        i = pos + 2
        if length == 126:
            length = int.from_bytes(buf[i : i + 2], "big")
            i += 2
        elif length == 127:
            length = int.from_bytes(buf[i : i + 8], "big")
            i += 8
            if length >> 63:
                self._fail("64-bit payload length has its most significant bit set")
        mask = bytes(buf[i : i + 4]) if masked else None
        fin = bool(b0 & 0x80)
        rsv = (b0 >> 4) & 0x7
        opcode = b0 & 0x0F
        self._check(fin, rsv, opcode, masked, length)
        return header_len, fin, rsv, opcode, mask, length

    def _check(self, fin: bool, rsv: int, opcode: int, masked: bool, length: int) -> None:
        # Invariants: control frames are final and short and may sit between the fragments of a
        # data message; a continuation frame needs an open message; a new text or binary frame
        # needs none.
        if rsv and not self._allow_rsv:
            self._fail(f"reserved bits {rsv:#o} set without a negotiated extension")
        if self._masked is not None and masked != self._masked:
            self._fail("unmasked client frame" if self._masked else "masked server frame")
        if opcode in _CONTROL_OPCODES:
            if not fin:
                self._fail("fragmented control frame")
            if length > 125:
                self._fail("control frame payload longer than 125 bytes")
        elif opcode == OP_CONTINUATION:
            if not self._fragmented:
                self._fail("continuation frame outside a fragmented message")
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._fragmented:
                self._fail("new data frame inside a fragmented message")
        else:
            self._fail(f"reserved opcode {opcode:#x}")
        self.frames += 1
        if opcode == OP_CLOSE:
            self.close_seen = True
        elif opcode in _DATA_OPCODES:
            self._fragmented = not fin
            if fin:
                self.messages += 1

    def _fail(self, reason: str) -> None:
        self._error = reason
        raise FrameError(reason)

