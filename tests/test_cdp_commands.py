"""CommandTracker and parse_command: CDP messages in, command records out (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from browserd.daemon.cdp.commands import (
    MAX_PENDING,
    REQUEST_CAPTURE,
    REQUEST_TAIL,
    CommandTracker,
    parse_command,
)
from browserd.daemon.cdp.ws_frames import OP_BINARY, OP_TEXT
from browserd.daemon.cdp.ws_messages import Message, MessageScanner, encode_frame


def message(doc: Any, *, raw: bytes | None = None, capture: int = REQUEST_CAPTURE,
            opcode: int = OP_TEXT) -> Message:
    """A client message as the proxy's scanner hands it over (masked on the wire)."""
    payload = raw if raw is not None else json.dumps(doc, separators=(",", ":")).encode()
    wire = encode_frame(opcode, payload, mask=b"\x11\x22\x33\x44")
    scanner = MessageScanner(masked=True, capture=capture, tail_capture=REQUEST_TAIL)
    (msg,) = scanner.receive_data(wire)
    return msg


def reply(raw: bytes) -> Message:
    (msg,) = MessageScanner(masked=False, capture=256).receive_data(encode_frame(OP_TEXT, raw))
    return msg


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_playwright_and_puppeteer_key_orders() -> None:
    playwright = {"id": 3, "method": "Page.navigate", "params": {"url": "x"}, "sessionId": "S1"}
    puppeteer = {"method": "Page.navigate", "params": {"url": "x"}, "sessionId": "S1", "id": 3}
    other = {"sessionId": "S1", "params": {"id": 99}, "id": 3, "method": "Page.navigate"}
    for doc in (playwright, puppeteer, other):
        command = parse_command(message(doc))
        assert command is not None
        assert (command.id, command.method, command.session_id) == (3, "Page.navigate", "S1")
        if doc is not other:  # the usual orders are read without decoding the params
            assert command.params is None
    nested = {"method": "Runtime.evaluate", "params": {"a": {"id": 5, "sessionId": "no"}}}
    command = parse_command(message(nested))
    assert command is not None and command.id is None and command.session_id is None


def test_non_commands_are_ignored() -> None:
    assert parse_command(message(None, raw=b"not json")) is None
    assert parse_command(message({"id": 1})) is None  # no method
    assert parse_command(message([1, 2])) is None
    assert parse_command(message({"id": 1, "method": "X"}, opcode=OP_BINARY)) is None


def test_download_params_are_decoded() -> None:
    doc = {"id": 9, "method": "Browser.setDownloadBehavior",
           "params": {"behavior": "allow", "downloadPath": "/tmp/dl", "eventsEnabled": True}}
    command = parse_command(message(doc))
    assert command is not None and command.params == doc["params"]


def test_a_long_command_is_read_from_its_head_and_tail() -> None:
    big = "z" * (REQUEST_CAPTURE + 10_000)
    for doc in ({"id": 4, "method": "Runtime.evaluate", "params": {"expression": big},
                 "sessionId": "S9"},
                {"method": "Runtime.evaluate", "params": {"expression": big},
                 "sessionId": "S9", "id": 4}):
        command = parse_command(message(doc))
        assert command is not None and command.partial
        assert (command.id, command.method, command.session_id) == (4, "Runtime.evaluate", "S9")
        assert command.size > REQUEST_CAPTURE


def test_responses_pair_with_commands_by_id() -> None:
    clock = Clock()
    tracker = CommandTracker("commands", clock=clock)
    tracker.client_message(message({"id": 1, "method": "A.a", "sessionId": "S"}))
    tracker.client_message(message({"id": 2, "method": "B.b"}))
    clock.now += 0.0125
    assert tracker.browser_message(reply(b'{"method":"Page.loadEventFired","params":{}}')) is None
    record = tracker.browser_message(reply(b'{"id":2,"result":{}}'))
    assert record == {"id": 2, "method": "B.b", "session_id": None, "duration_ms": 12.5,
                      "outcome": "ok"}
    error = tracker.browser_message(reply(
        b'{"id":1,"error":{"code":-32601,"message":"\'A.a\' wasn\'t found"},"sessionId":"S"}'
    ))
    assert error is not None and error["outcome"] == "error" and error["session_id"] == "S"
    assert error["error"] == {"code": -32601, "message": "'A.a' wasn't found"}
    assert tracker.browser_message(reply(b'{"id":2,"result":{}}')) is None  # answered once
    assert tracker.commands == 2 and tracker.unanswered() == []


def test_error_message_cut_by_the_head_limit() -> None:
    tracker = CommandTracker("commands")
    tracker.client_message(message({"id": 5, "method": "X.y"}))
    text = "é" * 400
    raw = json.dumps({"id": 5, "error": {"code": -32000, "message": text}},
                     separators=(",", ":")).encode()
    record = tracker.browser_message(reply(raw))
    assert record is not None and record["error"]["code"] == -32000
    assert text.startswith(record["error"]["message"][:10])


def test_level_all_adds_sizes_and_event_counts() -> None:
    tracker = CommandTracker("all")
    tracker.client_message(message({"id": 1, "method": "A.a", "params": {"k": "v" * 50}}))
    tracker.browser_message(reply(b'{"method":"Network.requestWillBeSent","params":{}}'))
    tracker.browser_message(reply(b'{"method":"Network.requestWillBeSent","params":{}}'))
    record = tracker.browser_message(reply(b'{"id":1,"result":{"value":1}}'))
    assert record is not None
    assert record["request_bytes"] > 50 and record["response_bytes"] == 29
    assert tracker.events == {"Network.requestWillBeSent": 2}


def test_level_off_reads_commands_but_records_nothing() -> None:
    tracker = CommandTracker("off")
    command = tracker.client_message(message({"id": 1, "method": "Browser.close"}))
    assert command is not None and command.method == "Browser.close"
    assert tracker.browser_message(reply(b'{"id":1,"result":{}}')) is None
    assert tracker.answered_here(command) is None and tracker.unanswered() == []


def test_unanswered_and_detached_commands() -> None:
    tracker = CommandTracker("commands")
    close = tracker.client_message(message({"id": 7, "method": "Browser.close", "sessionId": "B"}))
    tracker.client_message(message({"id": 8, "method": "Page.enable"}))
    assert close is not None
    assert json.loads(close.reply()) == {"id": 7, "result": {}, "sessionId": "B"}
    detached = tracker.answered_here(close)
    assert detached is not None and detached["outcome"] == "detached"
    (left,) = tracker.unanswered()
    assert left["method"] == "Page.enable" and left["outcome"] == "no_response"


def test_pending_commands_are_bounded() -> None:
    tracker = CommandTracker("commands")
    for i in range(MAX_PENDING + 10):
        tracker.client_message(message({"id": i, "method": "Runtime.evaluate"}))
    assert tracker.dropped == 10
    assert tracker.browser_message(reply(b'{"id":0,"result":{}}')) is None  # forgotten
    assert len(tracker.unanswered()) == MAX_PENDING


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError):
        CommandTracker("everything")
