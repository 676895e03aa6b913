"""What a proxied CDP socket says, read without decoding the big messages (sans-io).

`CommandTracker` follows one socket. The proxy hands it each client-to-browser message (whole
when it is small, else its first and last bytes) and the first bytes of each browser-to-client
message. It pairs every command with its response by id, as Chromium answers each socket's ids
separately, and returns records for `connection.command` events:

    {"id", "method", "session_id", "duration_ms", "outcome": "ok" | "error" | "no_response"
     | "detached", "error"?: {"code", "message"}, "request_bytes"?, "response_bytes"?}

Chromium writes a response as `{"id":N,"result":...}` or `{"id":N,"error":{"code":C,
"message":...}}` and an event as `{"method":"X",...}`, so a few hundred bytes of the head tell
all the recorder needs; a 20 MiB screenshot is never parsed.

Levels (config `events.record_commands`): "off" records nothing (the tracker still reads
commands: the close policy and download folders need them), "commands" records each command,
"all" adds message sizes and counts the browser's events by method.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from .ws_frames import OP_TEXT
from .ws_messages import Message

__all__ = ["LEVELS", "Command", "CommandTracker", "parse_command"]

LEVELS = ("off", "commands", "all")
REQUEST_CAPTURE = 64 * 1024  # client commands up to this size are read whole
REQUEST_TAIL = 512  # of a longer command, the end is read too (Puppeteer puts the id last)
RESPONSE_CAPTURE = 256  # the head of each browser message the recorder reads
MAX_PENDING = 4096  # commands awaiting an answer per socket; past it the oldest is dropped
# Commands whose params the daemon needs (the rest are never decoded).
PARAMS_WANTED = frozenset({"Browser.setDownloadBehavior", "Page.setDownloadBehavior"})

_RESPONSE = re.compile(rb'\{"id":(\d+),"(result|error)"')
_ERROR = re.compile(rb'"error":\{"code":(-?\d+),"message":"((?:[^"\\]|\\.)*)')
_EVENT = re.compile(rb'\{"method":"([^"\\]{1,200})"')
# The key orders clients use: Playwright {"id","method","params","sessionId"}, Puppeteer
# {"method","params","sessionId","id"}. The end of the top-level object is the only place
# where `"id":N}` or `"sessionId":"S"}` can stand right before the last brace.
_HEAD_ID_METHOD = re.compile(rb'\{"id":(\d+),"method":"([^"\\]{1,200})"')
_HEAD_METHOD = re.compile(rb'\{"method":"([^"\\]{1,200})"')
_TAIL_ID = re.compile(rb'"id":(\d+)\}$')
_TAIL_SESSION = re.compile(rb'"sessionId":"([^"\\]{1,200})"(?:,"id":\d+)?\}$')
_TAIL_SCAN = 300  # bytes at the end where those two are looked for


class Command(NamedTuple):
    """One client command as the proxy read it."""

    id: int | None
    method: str
    session_id: str | None
    size: int  # payload bytes
    params: dict[str, Any] | None  # decoded only for PARAMS_WANTED (and a whole message)
    partial: bool = False  # longer than REQUEST_CAPTURE: read from its head and tail

    def reply(self, result: dict[str, Any] | None = None) -> bytes:
        """A success response to this command, as Chromium would write it (JSON text)."""
        doc: dict[str, Any] = {"id": self.id, "result": result or {}}
        if self.session_id is not None:
            doc["sessionId"] = self.session_id
        return json.dumps(doc, separators=(",", ":")).encode()


def parse_command(message: Message) -> Command | None:
    """The command in a client message, or None if it holds none (binary, not JSON, no
    method). Commands in the usual key orders are read with two anchored regexes; others
    (when whole) with json.loads."""
    if message.opcode != OP_TEXT:
        return None
    complete = message.complete
    head = message.head
    tail = message.tail
    if len(tail) < _TAIL_SCAN:  # head + tail is the whole message then
        tail = (head + tail)[-_TAIL_SCAN:]
    msg_id: int | None
    if (match := _HEAD_ID_METHOD.match(head)) is not None:
        msg_id, method = int(match.group(1)), match.group(2).decode("utf-8", "replace")
    elif (match := _HEAD_METHOD.match(head)) is not None:
        id_match = _TAIL_ID.search(tail)
        msg_id = int(id_match.group(1)) if id_match else None
        method = match.group(1).decode("utf-8", "replace")
    elif complete:
        return _parse_whole(message)
    else:
        return None
    session = _TAIL_SESSION.search(tail)
    params = None
    if method in PARAMS_WANTED and complete:
        params = _params_of(head)
    return Command(
        id=msg_id,
        method=method,
        session_id=session.group(1).decode("utf-8", "replace") if session else None,
        size=message.length,
        params=params,
        partial=not complete,
    )


def _parse_whole(message: Message) -> Command | None:
    try:
        doc = json.loads(message.head)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("method"), str):
        return None
    msg_id, session, params = doc.get("id"), doc.get("sessionId"), doc.get("params")
    return Command(
        id=msg_id if type(msg_id) is int else None,
        method=doc["method"],
        session_id=session if isinstance(session, str) else None,
        size=message.length,
        params=params if isinstance(params, dict) else None,
    )


def _params_of(head: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(head)
    except ValueError:
        return None
    params = doc.get("params") if isinstance(doc, dict) else None
    return params if isinstance(params, dict) else None


class CommandTracker:
    """Pairs one socket's commands with the browser's responses; see the module docstring."""

    def __init__(self, level: str = "commands",
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self.level = level
        self._clock = clock
        # id -> (method, session_id, request bytes, when it was seen)
        self._pending: dict[int, tuple[str, str | None, int, float]] = {}
        self.commands = 0
        self.dropped = 0  # commands forgotten unanswered because too many were pending
        self.events: dict[str, int] = {}  # browser events by method ("all" only)

    @property
    def recording(self) -> bool:
        return self.level != "off"

    def client_message(self, message: Message) -> Command | None:
        """Read one client message; the command in it (None if it holds none)."""
        command = parse_command(message)
        if command is None:
            return None
        self.commands += 1
        if self.level != "off" and command.id is not None:
            if len(self._pending) >= MAX_PENDING:
                del self._pending[next(iter(self._pending))]  # the oldest
                self.dropped += 1
            self._pending[command.id] = (
                command.method, command.session_id, command.size, self._clock()
            )
        return command

    def browser_message(self, message: Message) -> dict[str, Any] | None:
        """Read the head of one browser message; the finished command's record, if it is a
        response to one this tracker saw."""
        head = message.head
        match = _RESPONSE.match(head)
        if match is None:
            if self.level == "all" and (event := _EVENT.match(head)) is not None:
                method = event.group(1).decode("utf-8", "replace")
                self.events[method] = self.events.get(method, 0) + 1
            return None
        msg_id = int(match.group(1))
        pending = self._pending.pop(msg_id, None)
        if pending is None:
            return None
        record = self._record(msg_id, pending, "ok")
        if match.group(2) == b"error":
            record["outcome"] = "error"
            record["error"] = _error_of(head)
        if self.level == "all":
            record["response_bytes"] = message.length
        return record

    def answered_here(self, command: Command) -> dict[str, Any] | None:
        """The record of a command the proxy answered itself (outcome "detached")."""
        if command.id is None or self.level == "off":
            return None
        pending = self._pending.pop(command.id, None)
        if pending is None:
            return None
        return self._record(command.id, pending, "detached")

    def unanswered(self) -> list[dict[str, Any]]:
        """Records of the commands still waiting when the socket closed (and forget them)."""
        records = [self._record(i, p, "no_response") for i, p in self._pending.items()]
        self._pending.clear()
        return records

    def _record(self, msg_id: int, pending: tuple[str, str | None, int, float],
                outcome: str) -> dict[str, Any]:
        method, session_id, size, sent_at = pending
        record: dict[str, Any] = {
            "id": msg_id,
            "method": method,
            "session_id": session_id,
            "duration_ms": round((self._clock() - sent_at) * 1000, 3),
            "outcome": outcome,
        }
        if self.level == "all":
            record["request_bytes"] = size
        return record


def _error_of(head: bytes) -> dict[str, Any]:
    match = _ERROR.search(head)
    if match is None:
        return {"code": None, "message": None}
    text = match.group(2)
    message: str | None = None
    for _ in range(3):  # the head limit may cut the message inside an escape: back off
        try:
            message = json.loads(b'"' + text + b'"')
            break
        except ValueError:
            text = text[: max(0, text.rfind(b"\\"))]
    return {"code": int(match.group(1)), "message": message}
