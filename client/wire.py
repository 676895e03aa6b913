"""Sans-io msgpack-RPC: bytes in, typed messages out; messages in, bytes out.

A :class:`Connection` never touches a socket and never awaits (the h11/wsproto
model). Feed what the socket gave you with :meth:`Connection.receive_data`
(``b""`` means EOF), then call :meth:`Connection.next_event` until it returns
:data:`NEED_DATA` or :data:`CLOSED`. The ``send_*`` methods return the bytes to
write. The framing (docs/api.md, Transport and framing)::

    request       [0, msgid, method, [params]]   params: an array holding one map (or empty)
    response      [1, msgid, error, result]      error is nil on success
    notification  [2, method, [payload]]

Two kinds of bad input are told apart:

* A frame the msgpack decoder rejects (garbage, invalid UTF-8, nesting deeper
  than the decoder's stack, a frame larger than ``max_buffer_size``) leaves the
  stream out of sync: :meth:`~Connection.next_event` raises
  :class:`RemoteProtocolError` (``rpc.parse_error`` or ``rpc.too_large``) now
  and on every later call, and the connection must end.
* A well-framed object that is not a valid message comes out as
  :class:`InvalidMessage`; the stream is still in sync, so a server answers
  with ``msg.error`` (when ``msg.msgid`` is known) and goes on reading.
"""

from __future__ import annotations

import enum
from typing import Any, Final, Literal, TypeAlias

import attrs
import msgpack

REQUEST: Final = 0
RESPONSE: Final = 1
NOTIFICATION: Final = 2

DEFAULT_MAX_BUFFER: Final = 16 * 1024 * 1024
_PACKER_KEEP: Final = 1024 * 1024  # past this, a frame's encoding buffer is not kept
_PACK_ERRORS = (TypeError, ValueError, OverflowError)  # Packer.pack on what it cannot encode
# Arrays and maps are allocated at their declared size as soon as the header is
# read, before their elements arrive; this cap bounds what a few header bytes
# can make the decoder reserve. Lists in the API are paginated far below it.
DEFAULT_MAX_CONTAINER_LEN: Final = 1 << 16
MAX_MSGID: Final = 2**32 - 1
_PARSE_HINT: Final = (
    "send msgpack (use_bin_type=True, valid UTF-8 strings, no ext types) framed as "
    "[0, msgid, method, [params]]; the browserd client does this"
)


_OUT_OF_DATA = object()  # what the decoder's iterator gives when it needs more bytes


class Sentinel(enum.Enum):
    """The two non-message results of :meth:`Connection.next_event`."""

    NEED_DATA = "NEED_DATA"
    CLOSED = "CLOSED"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Sentinel.NEED_DATA
"""No complete message is buffered: call ``receive_data`` with more bytes."""
CLOSED: Final = Sentinel.CLOSED
"""The peer sent EOF on a frame boundary; nothing more will arrive."""


def make_error(
    code: str, message: str, hint: str = "", data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build a wire error object ``{code, message, hint, data}``."""
    return {"code": code, "message": message, "hint": hint, "data": data or {}}


# The message classes are plain attrs classes, not frozen ones: one is built per message
# on both sides of every call, and a frozen one costs twice as much to build. Nothing
# changes a message once decoded.


@attrs.define
class Request:
    """``[0, msgid, method, [params]]``; wire params ``[]`` arrive as ``{}``."""

    msgid: int
    method: str
    params: dict[str, Any]


@attrs.define
class Response:
    """``[1, msgid, error, result]``; ``error`` is ``None`` on success."""

    msgid: int
    error: dict[str, Any] | None
    result: Any


@attrs.define
class Notification:
    """``[2, method, [payload]]``; wire payload ``[]`` arrives as ``{}``."""

    method: str
    payload: dict[str, Any]


@attrs.define
class InvalidMessage:
    """A well-framed object that is not a valid message; the stream is still in sync.

    ``msgid`` is set when the object carried a readable request/response id, so
    a server can answer ``error`` to that request.
    """

    msgid: int | None
    error: dict[str, Any]


Message: TypeAlias = Request | Response | Notification
Event: TypeAlias = Request | Response | Notification | InvalidMessage


class ProtocolError(Exception):
    """A protocol violation; ``error`` is the wire error object describing it."""

    def __init__(
        self, code: str, message: str, hint: str = "", data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.data = data or {}

    @property
    def error(self) -> dict[str, Any]:
        return make_error(self.code, self.message, self.hint, self.data)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class RemoteProtocolError(ProtocolError):
    """The peer broke the framing (garbage, too large): the connection must end."""


class LocalProtocolError(ProtocolError):
    """We tried to send something that cannot be encoded (or is too large to be received)."""


def _invalid(msgid: int | None, message: str) -> InvalidMessage:
    hint = "send [0, msgid, method, [params]] with a uint32 msgid, a str method and one map"
    return InvalidMessage(msgid, make_error("rpc.invalid_request", message, hint))


def _show(value: object) -> str:
    """A short description of a peer's value: repr() of a deeply nested container would
    recurse past Python's limit, and of a long one would flood the error message."""
    if value is None or type(value) in (bool, int, float):
        return repr(value)
    if type(value) in (str, bytes):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"({type(value).__name__})"


def _is_msgid(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_MSGID


def _single_map(value: object) -> dict[str, Any] | None:
    """``[]`` -> ``{}``, ``[map]`` -> map, anything else -> None."""
    if type(value) is not list or len(value) > 1:
        return None
    if not value:
        return {}
    inner = value[0]
    return inner if type(inner) is dict else None


def to_event(obj: Any, bad_keys: bool = False) -> Event:
    """Classify one decoded frame (``bad_keys``: its maps had keys that are not strings, or
    ext types). Every check for "well-framed but invalid" lives here."""
    if type(obj) is not list or not obj:
        return _invalid(None, "a message must be a non-empty array")
    kind = obj[0]
    if type(kind) is not int or kind not in (REQUEST, RESPONSE, NOTIFICATION):
        return _invalid(None, f"unknown message type {_show(kind)}")
    msgid: int | None = None
    if kind != NOTIFICATION and len(obj) > 1 and _is_msgid(obj[1]):
        msgid = obj[1]
    expected = 3 if kind == NOTIFICATION else 4
    if len(obj) != expected:
        return _invalid(msgid, f"message type {kind} needs {expected} elements, got {len(obj)}")
    if kind != NOTIFICATION and msgid is None:
        return _invalid(None, f"msgid must be an integer in 0..{MAX_MSGID}")
    if bad_keys:
        return _invalid(msgid, "map keys must be strings")
    if kind == RESPONSE:
        error = obj[2]
        if error is not None and type(error) is not dict:
            return _invalid(msgid, "response error must be nil or a map")
        assert msgid is not None
        return Response(msgid, error, obj[3])
    method = obj[2] if kind == REQUEST else obj[1]
    if type(method) is not str:
        return _invalid(msgid, "method must be a string")
    params = _single_map(obj[3] if kind == REQUEST else obj[2])
    if params is None:
        return _invalid(msgid, "params must be an array holding zero or one map")
    if kind == REQUEST:
        assert msgid is not None
        return Request(msgid, method, params)
    return Notification(method, params)


class Connection:
    """One side of a msgpack-RPC byte stream. Not thread-safe; does no I/O."""

    def __init__(
        self,
        max_buffer_size: int = DEFAULT_MAX_BUFFER,
        *,
        max_container_len: int = DEFAULT_MAX_CONTAINER_LEN,
        check_map_keys: bool = True,
    ) -> None:
        """``check_map_keys=False`` is for a peer that is trusted to send string keys (a
        client reading its own daemon): maps are then built by the decoder itself, several
        times faster than through the checking hook, and a frame with a key that is not a
        string ends the stream (:class:`RemoteProtocolError`, ``rpc.parse_error``) instead of
        coming out as an :class:`InvalidMessage`."""
        if max_buffer_size < 1:
            raise ValueError("max_buffer_size must be positive")
        self._max_buffer_size = max_buffer_size
        container_len = min(max_container_len, max_buffer_size)
        keys: dict[str, Any] = {"strict_map_key": True}
        if check_map_keys:
            # Keys are checked by _pairs_hook instead: the decoder's own check
            # (and dict() on an unhashable key) raises mid-frame, which would
            # lose sync, while a hook can flag the frame and let it finish.
            keys = {"strict_map_key": False, "object_pairs_hook": self._pairs_hook}
        self._unpacker = msgpack.Unpacker(
            raw=False,
            max_buffer_size=max_buffer_size,
            max_array_len=container_len,
            max_map_len=container_len,
            ext_hook=self._ext_hook,
            **keys,
        )
        self._packer = msgpack.Packer(use_bin_type=True, datetime=False)
        self._large = min(_PACKER_KEEP, max_buffer_size)  # a frame past this needs a look
        # Bytes received but not yet fed to the decoder. Feeding stops where the
        # current frame would pass max_buffer_size, so a large chunk of many small
        # frames is fed piecewise while one frame can never exceed the bound.
        self._pending = bytearray()
        self._fed = 0  # total bytes fed to the decoder
        # Stream offset where the current frame starts. The decoder's tell() also
        # counts bytes of a partly decoded frame (it parses incrementally), so the
        # frame's size so far is _fed - _frame_start, not _fed - tell().
        self._frame_start = 0
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._bad_keys = False  # set by the hooks while decoding the current frame

    @property
    def max_buffer_size(self) -> int:
        return self._max_buffer_size

    # -- receiving -------------------------------------------------------------

    def receive_data(self, data: bytes | memoryview) -> None:
        """Add bytes read from the peer (copied: the caller may reuse its buffer); ``b""``
        means the peer closed its side."""
        if not data:
            self._eof = True
        elif self._eof:
            raise RuntimeError("receive_data() after EOF")
        elif not self._pending and len(data) <= self._max_buffer_size - (
                self._fed - self._frame_start):
            self._unpacker.feed(data)  # the usual case: it fits, no copy through _pending
            self._fed += len(data)
        else:
            self._pending += data

    def next_event(self) -> Event | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        """Return the next message, :data:`NEED_DATA` or :data:`CLOSED`.

        Raises :class:`RemoteProtocolError` when the stream cannot be decoded; the
        connection is then dead and every later call raises the same error.
        """
        frame = self.next_frame()
        if frame is NEED_DATA or frame is CLOSED or type(frame) is InvalidMessage:
            return frame
        return to_event(frame)

    def next_frame(self) -> Any:
        """The next frame as decoded, before it is read as a message (:meth:`next_event` is
        this and :func:`to_event`), :data:`NEED_DATA` or :data:`CLOSED`; raises as
        :meth:`next_event` does. A frame already known to be invalid (a map key that is not
        a string, an ext type) comes out as its :class:`InvalidMessage`.

        For a peer's hot path: it may take its usual message from the frame itself, and
        hands every other frame to :func:`to_event`.
        """
        if self._error is not None:
            raise self._error
        if self._fed == self._frame_start and not self._pending and not self._eof:
            return NEED_DATA  # every byte fed so far made whole messages, all taken
        while True:
            try:
                # next() with a default, not unpack(): "out of data" then costs no exception,
                # and it is the answer to every other call on a busy connection.
                obj = next(self._unpacker, _OUT_OF_DATA)
            except (msgpack.StackError, msgpack.BufferFull, ValueError) as exc:
                self._error = self._undecodable(exc)
                raise self._error from None
            if obj is _OUT_OF_DATA:
                if self._pending:
                    try:
                        self._feed_pending()
                    except RemoteProtocolError as exc:
                        self._error = exc
                        raise
                    continue
                if not self._eof:
                    return NEED_DATA
                if self._fed != self._frame_start:
                    self._error = RemoteProtocolError(
                        "rpc.parse_error",
                        "connection closed in the middle of a message",
                        "send whole msgpack frames before closing the connection",
                    )
                    raise self._error
                return CLOSED
            self._frame_start = self._unpacker.tell()
            if self._bad_keys:
                self._bad_keys = False
                return to_event(obj, bad_keys=True)
            return obj

    def _undecodable(self, exc: Exception) -> RemoteProtocolError:
        """The error for what the decoder raised: the stream is out of sync for good."""
        if isinstance(exc, msgpack.StackError):
            return RemoteProtocolError(
                "rpc.too_large",
                "message nested too deeply",
                "keep arrays and maps nested well under 1000 levels",
            )
        if isinstance(exc, msgpack.BufferFull):  # not expected: _feed_pending keeps the bound
            return self._too_large()
        # The decoder's length limits and bad bytes both arrive as ValueError
        # (FormatError, UnicodeDecodeError, "N exceeds max_array_len(M)").
        if "exceeds max_" in str(exc):
            return RemoteProtocolError(
                "rpc.too_large", f"message too large: {exc}", self._limit_hint()
            )
        detail = str(exc) or type(exc).__name__
        return RemoteProtocolError(
            "rpc.parse_error", f"undecodable msgpack data ({detail})", _PARSE_HINT
        )

    def _feed_pending(self) -> None:
        """Move pending bytes (there are some) into the decoder, up to its bound."""
        room = self._max_buffer_size - (self._fed - self._frame_start)
        if room <= 0:
            raise self._too_large()
        chunk = self._pending[:room]
        del self._pending[:room]
        self._unpacker.feed(chunk)
        self._fed += len(chunk)

    def _too_large(self) -> RemoteProtocolError:
        return RemoteProtocolError(
            "rpc.too_large",
            f"message larger than {self._max_buffer_size} bytes",
            self._limit_hint(),
        )

    def _limit_hint(self) -> str:
        return (
            f"messages are limited to {self._max_buffer_size} bytes; "
            "page through large lists and read large data in chunks"
        )

    def _pairs_hook(self, pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
        try:
            result = dict(pairs)
        except TypeError:  # unhashable key (array or map)
            self._bad_keys = True
            return {}
        if result and set(map(type, result)) != {str}:
            self._bad_keys = True
        return result

    def _ext_hook(self, code: int, data: bytes) -> None:
        # Extension types are not part of the protocol; treat them like a bad key
        # so the frame is reported as invalid once it is complete.
        self._bad_keys = True

    # -- sending ---------------------------------------------------------------

    def send_request(self, msgid: int, method: str, params: dict[str, Any]) -> bytes:
        """Encode ``[0, msgid, method, [params]]``."""
        # A good request passes one test (a client sends one per call); the checks that say
        # what is wrong run when it fails.
        if type(msgid) is int and 0 <= msgid <= MAX_MSGID and type(method) is str and (
                isinstance(params, dict)):
            try:  # _pack, written out for the one call a client makes per request
                frame: bytes = self._packer.pack([REQUEST, msgid, method, [params]])
            except _PACK_ERRORS:
                pass  # _pack below says what cannot be encoded
            else:
                if len(frame) <= self._large:
                    return frame
        else:
            _check_msgid(msgid)
            _check_method(method)
            _check_map(params, "params")
        return self._pack([REQUEST, msgid, method, [params]], "rpc.invalid_params")

    def send_response(self, msgid: int, error: dict[str, Any] | None, result: Any) -> bytes:
        """Encode ``[1, msgid, error, result]``."""
        _check_msgid(msgid)
        if error is not None:
            _check_map(error, "error")
        return self._pack([RESPONSE, msgid, error, result], "rpc.internal_error")

    def send_notification(self, method: str, payload: dict[str, Any]) -> bytes:
        """Encode ``[2, method, [payload]]``."""
        _check_method(method)
        _check_map(payload, "payload")
        return self._pack([NOTIFICATION, method, [payload]], "rpc.internal_error")

    def _pack(self, message: list[Any], code: str) -> bytes:
        try:
            frame: bytes = self._packer.pack(message)
        except _PACK_ERRORS as exc:
            # Packer keeps no partial state after a failure (autoreset).
            raise LocalProtocolError(code, f"cannot encode message: {exc}") from None
        if len(frame) > self._large:
            self._large_frame(len(frame))
        return frame

    def _large_frame(self, size: int) -> None:
        if size > _PACKER_KEEP:
            # A Packer keeps its buffer at the largest size it ever packed: one 8 MiB reply
            # would hold 8 MiB for the connection's life. A fresh one costs microseconds.
            self._packer = msgpack.Packer(use_bin_type=True, datetime=False)
        if size > self._max_buffer_size:
            raise LocalProtocolError(
                "rpc.too_large",
                f"message of {size} bytes exceeds the {self._max_buffer_size} byte limit",
                self._limit_hint(),
            )


def _check_msgid(msgid: object) -> None:
    if not _is_msgid(msgid):
        raise LocalProtocolError(
            "rpc.invalid_request", f"msgid must be an integer in 0..{MAX_MSGID}, not {msgid!r}"
        )


def _check_method(method: object) -> None:
    if type(method) is not str:
        raise LocalProtocolError("rpc.invalid_request", f"method must be a str, not {method!r}")


def _check_map(value: object, what: str) -> None:
    if not isinstance(value, dict):
        raise LocalProtocolError("rpc.invalid_request", f"{what} must be a dict, not {value!r}")
