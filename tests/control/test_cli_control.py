"""`browserctl invoke`, `tabs` and `files` against a real `browserd` subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from browserd.client.cli import parse_args
from browserd.client.cli_control import _param

from ..conftest import DaemonProcess
from .conftest import png_size


def test_params_parse_as_json_when_they_can() -> None:
    assert _param("full_page=true") == ("full_page", True)
    assert _param("n=3") == ("n", 3)
    assert _param("url=http://x/?a=b") == ("url", "http://x/?a=b")
    assert _param("expression=document.title") == ("expression", "document.title")
    assert _param("expression=1") == ("expression", "1"), "JavaScript stays text"
    args = parse_args(["invoke", "crm", "screenshot", "--param", "full_page=true", "-o", "x.png"])
    assert args.param == [("full_page", True)] and args.output == "x.png"
    with pytest.raises(SystemExit):
        parse_args(["invoke", "crm", "dance"])


def test_invoke_tabs_files(shell_process: DaemonProcess, site: str, tmp_path: Path) -> None:
    ctl = shell_process.ctl
    ctl("launch", "crm")

    done = ctl("invoke", "crm", "navigate", "--param", f"url={site}/tall")
    assert "succeeded" in done.stderr and "tall page" in done.stdout
    # Only the result on stdout: `T=$(browserctl invoke ...)` holds the value.
    evaluated = ctl("invoke", "crm", "evaluate", "--param", "expression=6*7")
    assert evaluated.stdout == "42\n"
    assert evaluated.stderr.split()[1:] == ["evaluate", "succeeded"]
    title = ctl("invoke", "crm", "evaluate", "--param", "expression=document.title").stdout
    assert title == "tall page\n"

    shot = tmp_path / "shot.png"
    saved = ctl("invoke", "crm", "screenshot", "--param", "full_page=true", "-o", str(shot))
    assert "saved" in saved.stderr and saved.stdout == ""
    assert png_size(shot.read_bytes())[1] >= 3000
    text = tmp_path / "page.txt"
    ctl("invoke", "crm", "content", "--param", "format=text", "-o", str(text))
    assert text.read_text().strip() == "tall"

    record = json.loads(ctl("invoke", "crm", "evaluate", "--param", "expression=1",
                            "--no-wait", "--json").stdout)
    assert record["status"] in ("queued", "running", "succeeded")
    failed = ctl("invoke", "crm", "evaluate", "--param", "expression=nope()", check=False)
    assert failed.returncode == 1 and "invocation.failed" in failed.stderr
    assert "Traceback" not in failed.stderr

    tabs = json.loads(ctl("tabs", "crm", "--json").stdout)
    assert len(tabs) == 1 and tabs[0]["active"]
    opened = json.loads(ctl("tabs", "crm", "--new", f"{site}/other", "--json").stdout)
    listing = ctl("tabs", "crm").stdout
    assert opened["id"] in listing and "*" in listing
    ctl("tabs", "crm", "--activate", tabs[0]["id"])
    assert json.loads(ctl("tabs", "crm", "--json").stdout)[0]["active"]
    ctl("tabs", "crm", "--close", opened["id"])
    assert [t["id"] for t in json.loads(ctl("tabs", "crm", "--json").stdout)] == [tabs[0]["id"]]
    missing = ctl("tabs", "crm", "--close", "NO-SUCH", check=False)
    assert missing.returncode == 1 and "target.not_found" in missing.stderr

    local = tmp_path / "notes.txt"
    local.write_text("staged by browserctl")
    assert "staged docs/notes.txt" in ctl("files", "crm", "--put", str(local),
                                          "--as", "docs/notes.txt").stdout
    files = json.loads(ctl("files", "crm", "--json").stdout)
    assert [f["path"] for f in files] == ["docs/notes.txt"]
    collected = json.loads(ctl("files", "crm", "--collect", "docs/notes.txt", "--json").stdout)
    assert collected["artifact"]["kind"] == "file"
    bad = ctl("files", "crm", "--collect", "../runtime.json", check=False)
    assert bad.returncode == 1 and "runtime_file.path_invalid" in bad.stderr

    origin = ctl("connect", "crm", "--browser-url").stdout.strip()
    assert origin.startswith("http://127.0.0.1:") and origin.count("/") == 2

    ctl("stop", "crm")
