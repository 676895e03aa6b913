"""Sans-io WebSocket message scanner: whole messages, their first bytes, and where they lie.

The CDP proxy reads every client command and the first bytes of every browser message while it
forwards the bytes untouched. `MessageScanner` follows one direction of one connection: feed it
each chunk in order, and it returns the messages that completed inside that chunk, with the
first `capture` payload bytes (unmasked), the last `tail_capture` bytes of a longer one, and the
stream offsets where the message starts and ends. Payload bytes past those are skipped, never
copied. The frame rules (masking, control frames, fragmentation, reserved bits) are
`FrameScanner.parse_header`'s.

It runs on the proxy's hot path, once per chunk in each direction, so it keeps its state in
plain attributes and builds one tuple per message.
"""

from __future__ import annotations

from typing import NamedTuple

from .ws_frames import OP_BINARY, OP_TEXT, FrameError, FrameScanner

__all__ = ["Message", "MessageScanner", "encode_frame", "unmask"]

_MAX_HEADER = 14


def unmask(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes:
    """XOR `data` with the masking key, `data` starting `offset` bytes into the frame payload.

    One big-integer XOR instead of a Python loop: a 64 KiB command unmasks in microseconds.
    """
    n = len(data)
    if n == 0:
        return b""
    shift = offset % 4
    key = mask[shift:] + mask[:shift] if shift else mask
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little"
    )


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame (server-to-client when `mask` is None), for the few the proxy writes."""
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        header = bytes([0x80 | opcode, n | bit])
    elif n < 1 << 16:
        header = bytes([0x80 | opcode, 126 | bit]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 127 | bit]) + n.to_bytes(8, "big")
    if mask is None:
        return header + payload
    return header + mask + unmask(payload, mask)


class Message(NamedTuple):
    """One complete text or binary message.

    `start` and `end` are stream offsets (bytes fed before, counting from 0): its first header
    starts at `start` and its last payload byte is at `end - 1`. Control frames sent between
    its fragments lie inside that range too.
    """

    opcode: int  # OP_TEXT or OP_BINARY
    start: int
    end: int
    length: int  # payload bytes over all its frames
    head: bytes  # the first min(length, capture) payload bytes, unmasked
    # Of a message longer than capture: its last bytes after the head, at most tail_capture
    # (so head + tail is the whole payload when it is at most capture + tail_capture).
    tail: bytes
    frames: int  # data frames it came in (1 unless fragmented)

    @property
    def complete(self) -> bool:
        """True when `head` holds the whole payload."""
        return len(self.head) == self.length


class MessageScanner:
    """Follows the messages of one direction of a WebSocket byte stream.

    masked / allow_rsv: as for `FrameScanner`. capture: payload bytes kept from the start of
    each data message (`Message.head`); tail_capture: bytes kept from the end of a longer one.
    Counters: `frames`, `messages`, `bytes_seen`, `close_seen`; `last_boundary` is the latest
    stream offset that lies between messages (and outside any frame).
    """

    def __init__(self, *, masked: bool | None = None, capture: int = 256,
                 tail_capture: int = 0, allow_rsv: bool = False) -> None:
        self._rules = FrameScanner(masked=masked, allow_rsv=allow_rsv)
        self._capture = capture
        self._tail_capture = tail_capture
        self._partial = b""  # the start of a header split across chunks
        self.bytes_seen = 0
        self.last_boundary = 0
        # The open frame: its payload has not all arrived yet (_remaining > 0).
        self._remaining = 0
        self._f_opcode = 0
        self._f_fin = False
        self._f_mask: bytes | None = None
        self._f_done = 0  # payload bytes of the open frame consumed so far
        self._f_length = 0
        # The open message: begun, its final frame not ended yet.
        self._in_message = False
        self._m_start = 0
        self._m_opcode = OP_TEXT
        self._m_length = 0  # payload bytes of its frames that have ended
        self._m_frames = 0
        self._head = b""
        self._tail = b""

    @property
    def frames(self) -> int:
        return self._rules.frames

    @property
    def messages(self) -> int:
        return self._rules.messages

    @property
    def close_seen(self) -> bool:
        return self._rules.close_seen

    def safe_until(self, hold_limit: int) -> int:
        """How far the bytes fed so far may be forwarded if no small message may leave in part.

        All of them, unless they end inside a header or control frame between messages, or
        inside a data message whose payload (as far as its headers tell) is at most
        `hold_limit` bytes: then where that header, frame or message starts. A proxy that may
        still drop such a message must not have sent its beginning; a longer message is never
        held back.
        """
        seen = self.bytes_seen
        if self.last_boundary == seen:
            return seen
        if not self._in_message:
            return self.last_boundary
        size = self._m_length
        if self._remaining and self._f_opcode < 0x8:
            size += self._f_length
        return self._m_start if size <= hold_limit else seen

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Feed the next chunk; returns the messages that completed inside it, in order.

        Raises FrameError if the stream breaks WebSocket framing (and again on later calls).
        """
        if self._rules.error is not None:
            raise FrameError(self._rules.error)
        n = len(data)
        base = self.bytes_seen
        self.bytes_seen = base + n
        done: list[Message] = []
        pos = self._consume(data, 0, base, done) if self._remaining else 0
        while pos < n:
            if self._partial:  # rare: a header split across chunks; join at most 14 bytes
                have = len(self._partial)
                buf = self._partial + bytes(data[pos : pos + _MAX_HEADER - have])
                parsed = self._rules.parse_header(buf, 0)
                if parsed is None:
                    self._partial = buf
                    return done
                self._partial = b""
                pos += parsed[0] - have
            else:
                parsed = self._rules.parse_header(data, pos)
                if parsed is None:
                    self._partial = bytes(data[pos:])
                    return done
                pos += parsed[0]
            header_len, fin, _, opcode, mask, length = parsed
            self._remaining = length
            self._f_opcode, self._f_fin, self._f_mask = opcode, fin, mask
            self._f_done, self._f_length = 0, length
            if opcode in (OP_TEXT, OP_BINARY):  # the rules checked it starts one
                self._in_message = True
                self._m_start = base + pos - header_len
                self._m_opcode = opcode
                self._m_length = self._m_frames = 0
                self._head = self._tail = b""
            pos = self._consume(data, pos, base, done)
        return done

    def _consume(self, data: bytes | bytearray | memoryview, pos: int, base: int,
                 done: list[Message]) -> int:
        """Take the open frame's payload bytes from data[pos:]; returns the new position."""
        take = min(self._remaining, len(data) - pos)
        opcode = self._f_opcode
        if take and opcode < 0x8:  # text, binary or continuation
            self._capture_from(data, pos, take)
        pos += take
        self._f_done += take
        self._remaining -= take
        if self._remaining:
            return pos  # the payload goes on in the next chunk
        end = base + pos
        if opcode >= 0x8:  # a control frame
            if not self._in_message:
                self.last_boundary = end
            return pos
        self._m_length += self._f_length
        self._m_frames += 1
        if self._f_fin:
            head = self._head
            tail = self._tail if self._m_length > len(head) else b""
            done.append(Message(self._m_opcode, self._m_start, end, self._m_length, head, tail,
                                self._m_frames))
            self._in_message = False
            self._head = self._tail = b""
            self.last_boundary = end
        return pos

    def _capture_from(self, data: bytes | bytearray | memoryview, pos: int, take: int) -> None:
        need = self._capture - len(self._head)
        mask = self._f_mask
        if need > 0:
            k = min(take, need)
            raw = data[pos : pos + k]
            piece = bytes(raw) if mask is None else unmask(raw, mask, self._f_done)
            self._head = self._head + piece if self._head else piece
            if k == take:
                return
            pos, take, skipped = pos + k, take - k, k
        else:
            skipped = 0
        if self._tail_capture:
            k = min(take, self._tail_capture)
            raw = data[pos + take - k : pos + take]
            offset = self._f_done + skipped + take - k
            piece = bytes(raw) if mask is None else unmask(raw, mask, offset)
            self._tail = (self._tail + piece)[-self._tail_capture :]
