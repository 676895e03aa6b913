"""The daemon's own CDP connection to a browser (observer, invocations, graceful close).

    async with open_cdp(endpoint.ws_url) as cdp:
        version = await cdp.call("Browser.getVersion")
        async for event in cdp.events:            # CdpEvent(method, params, session_id)
            ...

One reader task owns the socket's receive side: responses go to the waiting `call` by id,
events go to `events`. Errors keep trio's meanings: `trio.BrokenResourceError` when the
browser (or the network) ended the connection, `trio.ClosedResourceError` when we closed it,
`trio.TooSlowError` when a call ran out of time, `CdpError` when the browser answered with an
error. The handshake sends no Origin header: Chromium refuses upgrades from origins that are
not allow-listed, and we never allow-list any.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import attrs
import trio
import trio_websocket

__all__ = ["CdpConnection", "CdpError", "CdpEvent", "open_cdp"]

log = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 256 * 1024 * 1024  # full-page screenshots and DOM snapshots run to tens of MiB
MESSAGE_QUEUE_SIZE = 64
RECEIVE_BUFFER_SIZE = 64 * 1024
DEFAULT_CALL_TIMEOUT_S = 30.0


class CdpError(Exception):
    """The browser answered a command with an error object."""

    def __init__(self, code: int, message: str, data: Any = None, *, method: str = "") -> None:
        super().__init__(f"{method}: {message} ({code})" if method else f"{message} ({code})")
        self.code = code
        self.message = message
        self.data = data
        self.method = method


class CdpEvent(NamedTuple):
    method: str
    params: dict[str, Any]
    session_id: str | None


@attrs.define
class _Waiter:
    done: trio.Event = attrs.Factory(trio.Event)
    response: dict[str, Any] | None = None


class CdpConnection:
    """One WebSocket to a CDP target. Made by `open_cdp`; `call` may be used concurrently."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, max_buffered_events: float) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._broken: str | None = None  # why the peer ended the connection
        self._closed = False
        self._events_in, self.events = trio.open_memory_channel[CdpEvent](max_buffered_events)
        self.events_dropped = 0

    @property
    def is_open(self) -> bool:
        return self._broken is None and not self._closed

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout_s: float | None = DEFAULT_CALL_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Send one command and return its `result`; raises CdpError if the browser refused it."""
        self._check_open()
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        waiter = self._waiters[msg_id] = _Waiter()
        try:
            with trio.fail_after(math.inf if timeout_s is None else timeout_s):
                try:
                    await self._ws.send_message(json.dumps(message))
                except trio_websocket.ConnectionClosed as exc:
                    self._check_open()
                    raise trio.BrokenResourceError(f"CDP connection closed: {exc}") from None
                await waiter.done.wait()
        finally:
            del self._waiters[msg_id]
        response = waiter.response
        if response is None:
            self._check_open()
            raise trio.BrokenResourceError("CDP connection lost")  # pragma: no cover
        if "error" in response:
            error = response["error"]
            raise CdpError(
                int(error.get("code", 0)), str(error.get("message", "")), error.get("data"),
                method=method,
            )
        result = response.get("result", {})
        return result if isinstance(result, dict) else {"value": result}

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this CDP connection was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError(f"CDP connection lost: {self._broken}")

    async def _read_loop(self) -> None:
        try:
            while True:
                try:
                    text = await self._ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    self._broken = str(exc.reason or "closed by peer")
                    return
                self._dispatch(text)
                # Not held while waiting for the next one: a message may be megabytes.
                del text
        finally:
            if self._broken is None and not self._closed:
                self._broken = "reader stopped"
            for waiter in self._waiters.values():
                waiter.done.set()  # response stays None: the caller raises
            self._events_in.close()

    def _dispatch(self, text: str | bytes) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            log.warning("ignoring a CDP message that is not JSON: %.80r", text)
            return
        if not isinstance(message, dict):
            return
        msg_id = message.get("id")
        if msg_id is not None:
            waiter = self._waiters.get(msg_id)
            if waiter is not None:  # else its caller gave up (timeout, cancel)
                waiter.response = message
                waiter.done.set()
            return
        method = message.get("method")
        if isinstance(method, str):
            params = message.get("params")
            event = CdpEvent(method, params if isinstance(params, dict) else {},
                             message.get("sessionId"))
            try:
                self._events_in.send_nowait(event)
            except trio.WouldBlock:
                # Never block the reader: a stalled consumer must not stall every response.
                self.events_dropped += 1
                if self.events_dropped == 1 or self.events_dropped % 1000 == 0:
                    log.warning("CDP event queue full: %d events dropped", self.events_dropped)


@asynccontextmanager
async def open_cdp(
    ws_url: str,
    *,
    connect_timeout_s: float = 10.0,
    disconnect_timeout_s: float = 2.0,
    max_message_size: int = MAX_MESSAGE_SIZE,
    max_buffered_events: float = 10_000,
) -> AsyncIterator[CdpConnection]:
    """Connect to a CDP WebSocket URL (a browser or page target) for the block's duration.

    Raises trio_websocket.HandshakeError (ConnectionRejected, ConnectionTimeout) when the
    connection cannot be made. Events beyond `max_buffered_events` unread are dropped and
    counted in `events_dropped` rather than stall responses.
    """
    async with trio_websocket.open_websocket_url(
        ws_url,
        message_queue_size=MESSAGE_QUEUE_SIZE,
        max_message_size=max_message_size,
        receive_buffer_size=RECEIVE_BUFFER_SIZE,
        connect_timeout=connect_timeout_s,
        disconnect_timeout=disconnect_timeout_s,
    ) as ws:
        cdp = CdpConnection(ws, max_buffered_events)
        body_error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cdp._read_loop)
            try:
                yield cdp
            except BaseException as exc:
                # Re-raised below, outside the nursery, so the caller sees its own exception
                # rather than an exception group.
                body_error = exc
            finally:
                cdp._closed = True
                nursery.cancel_scope.cancel()
        if body_error is not None:
            raise body_error
