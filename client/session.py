"""The client's half of an RPC connection, without I/O: calls in flight, subscriptions, and
what each message from the daemon does to them.

Each connection drives one :class:`Session` (``_async/transport.py`` on anyio,
``_sync/line.py`` on a blocking socket): it hands it the bytes it reads and writes the
frames it gives back. Waiting is the connection's too: it waits for :attr:`Call.ready` (its
reply is in) or :attr:`Feed.ready` (a payload is waiting, or the stream ended) by reading and
feeding bytes until it is. A caller that has the connection to itself reads for its own call
alone (:meth:`Session.start_own_call`): it takes the frames from :attr:`Session.codec` and
hands every one but its plain result to :meth:`Session.own_frame`. A Session is not
thread-safe: a blocking line that threads share calls it under one lock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from . import wire
from ._version import __version__
from .errors import BrowserdError, ConnectionLost, InvalidRequest, error_from_wire

API_MIN = API_MAX = 1
SUBSCRIPTION_QUEUE = 1024  # payloads kept for a subscriber that is not reading
START_HINT = "Start the daemon with `browserd` (or `make run`), or point BROWSERD_SOCKET at it."
LOST_HINT = "The daemon may have stopped or restarted; check `browserctl status`, then reconnect."


def lost_hint(host: str | None) -> str:
    """The hint of a lost connection; ``host``: the ``ssh://`` host it went through."""
    if host is None:
        return LOST_HINT
    return (f"ssh to {host} ended (the network, sshd or ssh itself), or the daemon there "
            f"stopped; check `browserctl --host {host} status`, then reconnect.")


def hello_params(client_name: str) -> dict[str, Any]:
    return {
        "client": {"name": client_name, "version": __version__},
        "api": {"min": API_MIN, "max": API_MAX},
    }


def fresh(error: BrowserdError) -> BrowserdError:
    """A new instance per raise: one shared instance would pile up tracebacks."""
    return type(error)(error.code, error.message, error.hint, error.data)


@attrs.define(eq=False)
class Feed:
    """What one subscription received and nobody took yet; ``ended_reason`` once it ended
    (``cancelled``, ``run_ended``, ``overflow``, ``connection_closed``)."""

    id: str
    payloads: deque[dict[str, Any]] = attrs.field(factory=deque)
    ended_reason: str | None = None

    @property
    def ready(self) -> bool:
        """A payload is waiting, or the stream has ended: a reader can stop waiting."""
        return bool(self.payloads) or self.ended_reason is not None

    def end(self, reason: str) -> None:
        if self.ended_reason is None:
            self.ended_reason = reason


class Call:
    """One request waiting for its response; ``ready`` once ``result`` or ``error`` is set.

    A plain slotted class: one is made per call, on the hot path."""

    __slots__ = ("abandoned", "error", "feed", "ready", "result", "sent", "subscribe")

    def __init__(self, subscribe: bool = False) -> None:
        self.subscribe = subscribe
        self.sent = False  # the request is out, or its rest is queued: the daemon will get it
        self.ready = False
        self.abandoned = False  # a subscribe whose caller gave up before the reply came
        self.result: Any = None
        self.error: BrowserdError | None = None
        self.feed: Feed | None = None


class Session:
    """Calls, subscriptions and the wire codec of one connection."""

    def __init__(self, max_buffer_size: int = wire.DEFAULT_MAX_BUFFER, *,
                 lost_hint: str = LOST_HINT) -> None:
        self._lost_hint = lost_hint  # what to do once the connection is gone
        # The daemon is trusted to send string keys: the decoder builds maps natively.
        self.codec = wire.Connection(max_buffer_size, check_map_keys=False)
        """The wire codec; a caller with the connection to itself reads its own reply from it
        (:meth:`start_own_call`)."""
        self._calls: dict[int, Call] = {}
        self._feeds: dict[str, Feed] = {}
        self._next_msgid = 1
        self.closed_error: BrowserdError | None = None
        """Set once the connection is gone; every later call raises (a fresh copy of) it."""
        self._fatal: BrowserdError | None = None  # the daemon's last word (rpc.error)

    # -- sending -------------------------------------------------------------------------

    def start_call(
        self, method: str, params: dict[str, Any], *, subscribe: bool = False
    ) -> tuple[int, Call, bytes]:
        """Register a call: its msgid, its Call, and the frame to write."""
        if self.closed_error is not None:
            raise fresh(self.closed_error)
        calls = self._calls
        msgid = self._next_msgid
        if msgid < wire.MAX_MSGID and msgid not in calls:
            self._next_msgid = msgid + 1  # the usual case, without a call of its own
        else:
            msgid = self._allocate_msgid()
        frame = self._encode(msgid, method, params)
        call = calls[msgid] = Call(subscribe)
        return msgid, call, frame

    @staticmethod
    def finish_call(call: Call) -> Any:
        """The result of a ready call (its Feed, for a subscribe), or raise its error.

        The call left the table when its reply came, so this needs no lock."""
        if call.error is not None:
            raise call.error
        return call.feed if call.subscribe else call.result

    def forget(self, msgid: int, call: Call) -> None:
        """The caller gave up (cancelled, interrupted); a late reply is dropped."""
        if self._calls.get(msgid) is call:
            del self._calls[msgid]

    def abandon_subscribe(self, msgid: int, call: Call) -> bytes:
        """The caller of a subscribe gave up after sending it: the daemon may be streaming
        already, and nobody would read it or cancel it. Returns the cancel to write now if
        the reply is in, else marks the call so the reply, when it comes, is cancelled."""
        if call.ready:
            return self.cancel_subscription(call.feed.id) if call.feed is not None else b""
        call.abandoned = True
        return b""

    def cancel_subscription(self, subscription_id: str) -> bytes:
        """End a subscription here at once; the frame telling the daemon (its reply is
        dropped), or ``b""`` when the connection is gone."""
        feed = self._feeds.pop(subscription_id, None)
        if feed is not None:
            feed.end("cancelled")
        if self.closed_error is not None:
            return b""
        return self._encode(
            self._allocate_msgid(), "subscriptions.cancel", {"subscription": subscription_id}
        )

    def _encode(self, msgid: int, method: str, params: dict[str, Any]) -> bytes:
        try:
            return self.codec.send_request(msgid, method, params)
        except wire.LocalProtocolError as exc:
            raise error_from_wire(exc.error) from None

    def _allocate_msgid(self) -> int:
        msgid = self._next_msgid
        self._next_msgid = 1 if msgid >= wire.MAX_MSGID else msgid + 1
        while msgid in self._calls:  # wrapped around onto a call still waiting: skip it
            msgid = self._next_msgid
            self._next_msgid = 1 if msgid >= wire.MAX_MSGID else msgid + 1
        return msgid

    # -- receiving -----------------------------------------------------------------------

    def receive_data(self, data: bytes | memoryview) -> bytes:
        """Take bytes read from the daemon (``b""``: it closed) and settle every call and
        subscription they answer. Returns frames to write (cancels), often ``b""``."""
        out = b""
        next_frame, calls = self.codec.next_frame, self._calls
        try:
            self.codec.receive_data(data)
            while True:
                frame = next_frame()
                if frame is wire.NEED_DATA:
                    return out
                if frame is wire.CLOSED:
                    self._read_frame(frame)
                    return out
                # The usual message, a result for a plain call waiting here, is taken from
                # the frame itself: no event is built for it (the client's hot path).
                if (type(frame) is list and len(frame) == 4 and frame[0] == wire.RESPONSE
                        and frame[2] is None and type(frame[1]) is int):
                    call = calls.get(frame[1])
                    if call is not None and not (call.subscribe or call.abandoned):
                        del calls[frame[1]]
                        call.result = frame[3]
                        call.ready = True
                        continue
                out += self._read_frame(frame)
        except wire.RemoteProtocolError as exc:
            self._broken(exc)
        return out

    # -- a call read by its own caller ---------------------------------------------------

    def start_own_call(self, method: str, params: dict[str, Any]) -> tuple[int, bytes]:
        """A call whose caller has the connection to itself: its msgid and the frame to
        write. The caller reads the frames that follow from :attr:`codec` itself: its plain
        result is ``[RESPONSE, msgid, None, result]``, and every other frame goes to
        :meth:`own_frame`. The call is not in the table (its usual reply never touches it);
        another frame puts it there while that frame is read."""
        if self.closed_error is not None:
            raise fresh(self.closed_error)
        msgid = self._next_msgid
        if msgid < wire.MAX_MSGID and msgid not in self._calls:
            self._next_msgid = msgid + 1
        else:
            msgid = self._allocate_msgid()
        try:
            return msgid, self.codec.send_request(msgid, method, params)
        except wire.LocalProtocolError as exc:
            raise error_from_wire(exc.error) from None

    def own_frame(self, msgid: int, frame: Any) -> Any:
        """Settle a frame read for own call ``msgid`` that is not its plain reply (its error,
        a notification, a late reply to a call given up, the end): the call's result when
        this settles it (raises its error), else ``wire.NEED_DATA``: read on."""
        # Read in full, with the call in the table meanwhile. It has nothing to write back:
        # only subscriptions do (a cancel), and a caller with the connection to itself has
        # none on it.
        call = self._calls[msgid] = Call()
        try:
            self._read_frame(frame)
        finally:
            if self._calls.get(msgid) is call:
                del self._calls[msgid]
        return self.finish_call(call) if call.ready else wire.NEED_DATA

    def protocol_error(self, exc: wire.RemoteProtocolError) -> BrowserdError:
        """The daemon broke the protocol (the codec raised ``exc``): the connection is
        gone; the error to raise."""
        self._broken(exc)
        return fresh(self.closed_error)  # type: ignore[arg-type]

    def _read_frame(self, frame: Any) -> bytes:
        """Settle what one frame (not the hot path's) says; frames to write, often ``b""``."""
        if frame is wire.CLOSED:
            self.connection_gone(
                ConnectionLost.make("the daemon closed the connection", self._lost_hint))
            return b""
        return self._dispatch(frame if type(frame) is wire.InvalidMessage
                              else wire.to_event(frame))

    def _broken(self, exc: wire.RemoteProtocolError) -> None:
        self.connection_gone(ConnectionLost.make(
            f"the daemon broke the protocol ({exc.code}: {exc.message})",
            "This is a bug in browserd or a version mismatch; please report it.",
        ))

    def _dispatch(self, event: wire.Event) -> bytes:
        if type(event) is wire.Response:
            call = self._calls.pop(event.msgid, None)  # answered: out of the table
            if call is None:
                return b""  # its caller gave up, or a cancel sent without waiting
            if call.abandoned:
                sub_id = _subscription_id(event.result)
                if event.error is None and sub_id is not None:
                    return self._encode(self._allocate_msgid(), "subscriptions.cancel",
                                        {"subscription": sub_id})
                return b""
            if event.error is not None:
                call.error = error_from_wire(event.error)
            else:
                call.result = event.result
                if call.subscribe:
                    # Registered before the next message is read: notifications for this
                    # subscription may follow the response immediately.
                    call.feed, call.error = self._register(event.result)
            call.ready = True
        elif isinstance(event, wire.Notification):
            return self._notify(event.method, event.payload)
        elif isinstance(event, wire.InvalidMessage) and event.msgid is not None:
            call = self._calls.pop(event.msgid, None)
            if call is not None and not call.abandoned:
                call.error = InvalidRequest.make(
                    f"the daemon sent an invalid response: {event.error.get('message')}",
                    "This is a bug in browserd or a version mismatch; please report it.",
                )
                call.ready = True
        # Requests from the daemon and invalid messages without msgid mean nothing here.
        return b""

    def _register(self, result: Any) -> tuple[Feed | None, BrowserdError | None]:
        sub_id = _subscription_id(result)
        if sub_id is None:
            return None, InvalidRequest.make("the daemon's reply names no subscription")
        feed = Feed(sub_id)
        self._feeds[sub_id] = feed
        return feed, None

    def _notify(self, method: str, payload: dict[str, Any]) -> bytes:
        if method == "rpc.error":
            # The daemon's last word before it closes this connection.
            self._fatal = error_from_wire(payload.get("error"))
            return b""
        sub_id = payload.get("subscription")
        feed = self._feeds.get(sub_id) if isinstance(sub_id, str) else None
        if feed is None:
            return b""
        if method == "subscription.ended":
            reason = payload.get("reason")
            del self._feeds[feed.id]
            feed.end(reason if isinstance(reason, str) else "cancelled")
            return b""
        if len(feed.payloads) >= SUBSCRIPTION_QUEUE:
            # Nobody waits on one slow subscriber: that would stall every call. The laggard
            # gets `overflow` (after what it has) and resubscribes from its last seq.
            feed.end("overflow")
            return self.cancel_subscription(feed.id)
        feed.payloads.append(payload)
        return b""

    def connection_gone(self, error: BrowserdError) -> None:
        """Fail every call in flight and end every subscription; later calls raise ``error``
        (or the daemon's last word, when it sent one)."""
        if self.closed_error is None:
            self.closed_error = self._fatal or error
        for call in self._calls.values():  # every call in the table is waiting
            call.error = fresh(self.closed_error)
            call.ready = True
        self._calls.clear()
        for feed in self._feeds.values():
            feed.end("connection_closed")
        self._feeds.clear()

    def transport_error(self, exc: BaseException) -> BrowserdError:
        """The connection broke under a read or a write (``exc``); the error for callers."""
        self.connection_gone(
            ConnectionLost.make(f"the connection to the daemon broke: {exc}",
                                self._lost_hint)
        )
        assert self.closed_error is not None
        return fresh(self.closed_error)


def _subscription_id(result: Any) -> str | None:
    sub_id = result.get("subscription") if isinstance(result, dict) else None
    return sub_id if isinstance(sub_id, str) else None
