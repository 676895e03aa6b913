"""browserctl: argument parsing, output formatting, and error reporting without a daemon."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from browserd.client import cli, cli_format
from browserd.client.records import Event, ProfileRecord, RuntimeRecord, RuntimeStats


def test_launch_options() -> None:
    args = cli.parse_args(
        [
            "launch", "crm", "--space", "sales", "--profile", "crm-bot", "--headful",
            "--restart", "on-failure", "--idle-timeout", "30", "--max-lifetime", "3600",
            "--arg=--window-size=800,600", "--arg", "x", "--meta", "job=123",
            "--meta", "note=a=b",
        ]
    )  # fmt: skip
    assert args.fn is cli.cmd_launch
    assert (args.name, args.space, args.profile) == ("crm", "sales", "crm-bot")
    assert args.headful and args.restart == "on-failure"
    assert (args.idle_timeout, args.max_lifetime) == (30.0, 3600.0)
    assert args.arg == ["--window-size=800,600", "x"]
    assert args.meta == {"job": "123", "note": "a=b"}
    assert (args.socket, args.json) == (None, False)


def test_defaults() -> None:
    args = cli.parse_args(["launch", "crm"])
    assert (args.space, args.profile, args.headful, args.restart) == ("default", None, False, None)
    assert (args.meta, args.arg) == (None, None)
    args = cli.parse_args(["connect", "crm"])
    assert (args.ttl, args.exclusive, args.label, args.http) == (600.0, False, None, False)
    args = cli.parse_args(["ls"])
    assert (args.space, args.status) == (None, None)


def test_global_options_before_or_after_the_command() -> None:
    for argv in (
        ["--socket", "/s.sock", "--json", "events", "crm", "--type", "a", "--type", "b"],
        ["events", "crm", "--type", "a", "--json", "--type", "b", "--socket", "/s.sock"],
    ):
        args = cli.parse_args(argv)
        assert (args.socket, args.json, args.type, args.after) == ("/s.sock", True, ["a", "b"], 0)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["launch"],
        ["launch", "crm", "--meta", "novalue"],
        ["launch", "crm", "--restart", "always"],
        ["launch", "crm", "--idle-timeout", "-5"],
        ["connect", "crm", "--ttl", "soon"],
        ["ls", "--status", "sleeping"],
        ["events", "crm", "--after", "x"],
        ["launch", "crm", "--memory-limit", "10"],
        ["launch", "crm", "--memory-limit", "1.5"],
        ["launch", "crm", "--wait", "-1"],
        ["profiles", "show"],
        ["profiles", "clone", "bot"],
        ["profiles", "frobnicate"],
        ["stats", "--interval", "0"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_table_aligns_columns() -> None:
    text = cli_format.table(("NAME", "STATUS"), [("crm", "active"), ("a-longer-name", None)])
    assert text.splitlines() == [
        "NAME           STATUS",
        "crm            active",
        "a-longer-name  -",
    ]
    assert cli_format.table(None, [("k", 1)]) == "k  1"


def test_event_timeline() -> None:
    events = [
        Event(seq=1, time="2026-11-28T09:44:51.123456Z", type="runtime.lifecycle",
              status="active", data={"pid": 42}),
        Event(seq=12, time="2026-11-28T09:44:52.000001Z", type="connection.command",
              data={"method": "Page.navigate", "url": "https://example.com/" + "x" * 100}),
    ]  # fmt: skip
    lines = cli_format.event_table(events).splitlines()
    assert lines[0].split() == ["TIME", "SEQ", "TYPE", "STATUS", "DATA"]
    assert lines[1].startswith("2026-11-28 09:44:51.123  1    runtime.lifecycle   active  pid=42")
    assert lines[2].startswith("2026-11-28 09:44:52.000  12   connection.command  -       method=")
    assert lines[2].endswith("...")
    assert len(lines[2]) < 140


def test_short_data() -> None:
    assert cli_format.short_data({"a": 1, "b": "x"}) == 'a=1 b="x"'
    assert cli_format.short_data({"a": "y" * 200}, width=20) == 'a="yyyyyyyyyyyyyy...'


def test_missing_daemon_is_one_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--socket", str(tmp_path / "none.sock"), "status"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == f"error: client.daemon_unavailable: no daemon socket at {tmp_path}/none.sock"
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in err


def test_stale_socket_file_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))  # bound, never listening: what a crashed daemon leaves behind
    assert cli.main(["ls", "--socket", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: client.daemon_unavailable: nothing is listening on")


def test_supervision_options() -> None:
    args = cli.parse_args(["launch", "crm", "--memory-limit", "512", "--wait", "30"])
    assert (args.memory_limit, args.wait) == (512, 30.0)
    args = cli.parse_args(["launch", "crm", "--wait", "0"])
    assert (args.memory_limit, args.wait) == (None, 0.0)
    args = cli.parse_args(["stats"])
    assert args.fn is cli.cmd_stats
    assert (args.names, args.space, args.no_stream, args.interval) == ([], None, False, 2.0)
    args = cli.parse_args(["stats", "a", "b", "--space", "lab", "--no-stream", "--json"])
    assert (args.names, args.space, args.no_stream, args.json) == (["a", "b"], "lab", True, True)


def test_profiles_subcommands() -> None:
    assert cli.parse_args(["profiles"]).fn is cli.cmd_profiles
    assert cli.parse_args(["profiles", "ls", "--json"]).json
    args = cli.parse_args(["profiles", "show", "bot"])
    assert (args.fn, args.profile) == (cli.cmd_profile_show, "bot")
    args = cli.parse_args(["profiles", "rm", "bot", "--socket", "/s.sock"])
    assert (args.fn, args.profile, args.socket) == (cli.cmd_profile_rm, "bot", "/s.sock")
    args = cli.parse_args(["--json", "profiles", "clone", "bot", "bot2"])
    assert (args.fn, args.profile, args.to) == (cli.cmd_profile_clone, "bot", "bot2")
    assert args.json


def test_human_bytes() -> None:
    human = cli_format.human_bytes
    assert (human(None), human(0), human(1023), human(1024)) == (None, "0 B", "1023 B", "1.0 KiB")
    assert human(438_976_512) == "418.6 MiB"
    assert human(3 * 2**30) == "3.0 GiB" and human(2**50) == "1024.0 TiB"


def test_profile_table() -> None:
    profiles = [
        ProfileRecord(name="crm-bot", size_bytes=1_800_918,
                      last_used_at="2026-11-28T10:06:45.110000Z",
                      in_use_by={"runtime_id": "rt_1", "space": "sales", "name": "crm"}),
        ProfileRecord(name="spare", size_bytes=512, in_use_by=None),
        ProfileRecord(name="copying", in_use_by={"operation": "clone", "to": "x"}),
    ]  # fmt: skip
    assert cli_format.profile_table(profiles).splitlines() == [
        "NAME     SIZE     IN-USE-BY  LAST-USED",
        "crm-bot  1.7 MiB  sales/crm  2026-11-28 10:06:45.110",
        "spare    512 B    -          -",
        "copying  0 B      (clone)    -",
    ]
    details = cli_format.profile_details(profiles[0]).splitlines()
    assert "size        1.7 MiB (1800918 bytes)" in details
    assert "in use by   sales/crm" in details


def test_stats_table_and_document() -> None:
    active = RuntimeRecord(id="rt_1", space="default", name="crm", status="active")
    stopped = RuntimeRecord(id="rt_2", space="lab", name="old", status="stopped")
    wire = {"runtime_id": "rt_1", "name": "crm", "space": "default", "cpu_percent": 12.25,
            "memory_bytes": 45 * 2**20, "rss_bytes": 150 * 2**20, "processes": 6, "targets": 1,
            "sampled_at": "2026-11-28T10:06:46.822312Z"}  # fmt: skip
    rows = [(active, RuntimeStats.from_wire(wire)), (stopped, None)]
    # MEM is the tree's PSS (memory_bytes), not its summed RSS
    assert cli_format.stats_table(rows).splitlines() == [
        "NAME  SPACE    CPU %  MEM       PROCS  TARGETS",
        "crm   default  12.2%  45.0 MiB  6      1",
        "old   lab      -      -         -      -",
    ]
    assert cli_format.stats_document(rows) == [
        {**wire, "status": "active"},
        {"runtime_id": "rt_2", "name": "old", "space": "lab", "cpu_percent": None,
         "memory_bytes": None, "rss_bytes": None, "processes": None, "targets": None,
         "sampled_at": None, "status": "stopped"},
    ]  # fmt: skip
    # A daemon that predates memory_bytes: MEM shows its summed RSS
    older = {key: value for key, value in wire.items() if key != "memory_bytes"}
    assert "150.0 MiB" in cli_format.stats_table([(active, RuntimeStats.from_wire(older))])
    assert cli_format.stats_table([]) == "NAME  SPACE  CPU %  MEM  PROCS  TARGETS"
