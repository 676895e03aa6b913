"""The daemon log: one line per event, sd-daemon priority prefixes when stderr is the journal,
levels per area from the config."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from browserd.daemon.base.config import LogLevelsConfig
from browserd.daemon.system.logs import AREAS, LineFormatter, Throttled, journal_stream, setup

from .conftest import REPO, DaemonProcess


def record(level: int, message: str, name: str = "browserd.rpc",
           exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord(name, level, __file__, 1, message, None, exc_info)


def test_journal_lines_carry_the_priority_and_no_timestamp() -> None:
    fmt = LineFormatter(journal=True)
    assert fmt.format(record(logging.DEBUG, "d")) == "<7>browserd.rpc: d"
    assert fmt.format(record(logging.INFO, "i")) == "<6>browserd.rpc: i"
    assert fmt.format(record(logging.WARNING, "w")) == "<4>browserd.rpc: w"
    assert fmt.format(record(logging.ERROR, "e")) == "<3>browserd.rpc: e"
    assert fmt.format(record(logging.CRITICAL, "c")) == "<2>browserd.rpc: c"


def test_terminal_lines_carry_a_utc_timestamp_and_the_level() -> None:
    line = LineFormatter(journal=False).format(record(logging.WARNING, "careful"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING browserd\.rpc: careful",
                        line)


def test_one_event_is_one_line_even_with_a_traceback() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError as exc:
        caught = exc
    line = LineFormatter(journal=True).format(record(logging.ERROR, "two\nlines", exc=caught))
    assert "\n" not in line
    assert line.startswith("<3>browserd.rpc: two\\nlines | Traceback (most recent call last):")
    assert line.endswith("ValueError: bad\\nvalue")


def test_journal_stream_must_name_our_stderr(tmp_path: Path) -> None:
    path = tmp_path / "stream"
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        assert journal_stream(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        # Inherited by a process whose stderr went elsewhere: not the journal.
        assert not journal_stream(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not journal_stream(stream, {"JOURNAL_STREAM": "garbage"})
        assert not journal_stream(stream, {})


@pytest.fixture
def saved_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name in logging.root.manager.loggerDict:
        if name.startswith("browserd"):
            logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.mark.usefixtures("saved_logging")
def test_area_levels_override_the_daemon_level(tmp_path: Path) -> None:
    with open(tmp_path / "log", "w") as stream:
        setup("info", {"rpc": "debug", "supervisor": "error"}, stream=stream, environ={})
        logging.getLogger("browserd.daemon.rpc.server").debug("rpc detail")
        logging.getLogger("browserd.daemon.core.registry").debug("registry detail")
        logging.getLogger("browserd.daemon.browser.process").warning("supervisor warning")
        logging.getLogger("browserd.daemon.browser.process_tree").error("supervisor error")
        logging.getLogger("browserd.daemon.service").info("daemon info")
    text = (tmp_path / "log").read_text()
    assert "rpc detail" in text and "registry detail" not in text
    assert "supervisor warning" not in text and "supervisor error" in text
    assert "daemon info" in text
    assert len(text.splitlines()) == 3


@pytest.mark.usefixtures("saved_logging")
def test_an_area_covers_every_module_it_names(tmp_path: Path) -> None:
    """Each area's modules log under names the area sets; a module of one area is not moved
    by another area's level (retention, a service, follows `registry` when that is set)."""
    with open(tmp_path / "log", "w") as stream:
        setup("warning", {"registry": "debug", "services": "error", "cdp_proxy": "info"},
              stream=stream, environ={})
        logging.getLogger("browserd.daemon.store.state_writer").debug("state writer detail")
        logging.getLogger("browserd.daemon.core.run_supervisor").debug("supervisor detail")
        logging.getLogger("browserd.daemon.services.retention").debug("retention detail")
        logging.getLogger("browserd.daemon.services.observer").warning("observer warning")
        logging.getLogger("browserd.daemon.cdp.http_front").info("front info")
        logging.getLogger("browserd.daemon.cdp.client").info("client info")
    text = (tmp_path / "log").read_text()
    for shown in ("state writer detail", "supervisor detail", "retention detail",
                  "front info"):
        assert shown in text, text
    assert "observer warning" not in text and "client info" not in text


def test_every_area_is_a_config_key_and_names_modules_that_exist() -> None:
    assert set(AREAS) == {field.name for field in attrs.fields(LogLevelsConfig)}
    daemon = REPO / "daemon"
    for area, names in AREAS.items():
        for name in names:
            parts = name.split(".")[2:]
            path = daemon.joinpath(*parts)
            assert path.is_dir() or path.with_suffix(".py").is_file(), (area, name)


def test_the_daemon_writes_journal_lines_under_systemd(short_dir: Path) -> None:
    running = DaemonProcess(short_dir)
    running.log.touch()  # the daemon's stderr: tell it that this file is the journal stream
    st = running.log.stat()
    running.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    running.start()
    assert running.stop() == 0
    lines = running.log.read_text().splitlines()
    assert lines and all(re.match(r"<[2-7]>browserd[\w.]*: ", line) for line in lines), lines
    assert "<6>browserd.daemon.service: browserd serving on" in "\n".join(lines)


def test_the_daemon_writes_terminal_lines_elsewhere(short_dir: Path) -> None:
    running = DaemonProcess(short_dir, {"BROWSERD_LOG_LEVEL": "warning"})
    running.env.pop("JOURNAL_STREAM", None)
    running.start()
    assert running.stop() == 0
    assert running.log.read_text() == ""  # info lines held back at level warning
    running = DaemonProcess(short_dir)
    running.start()
    assert running.stop() == 0
    lines = running.log.read_text().splitlines()
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z (INFO|WARNING) ", x) for x in lines)


def test_throttled_lines_come_at_most_once_an_interval_and_count_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("browserd.test.throttled")
    throttled = Throttled(logger, interval_s=0.2)
    caplog.set_level(logging.WARNING, logger=logger.name)
    for i in range(500):
        throttled.log(logging.WARNING, "refused #%d", i)
    assert [r.getMessage() for r in caplog.records] == ["refused #0"]
    time.sleep(0.25)
    throttled.log(logging.WARNING, "refused #%d", 500)
    assert caplog.records[-1].getMessage() == (
        "refused #500 (and 499 more like it since the last such line)")
    throttled.log(logging.DEBUG, "below the level: neither written nor counted")
    assert len(caplog.records) == 2
