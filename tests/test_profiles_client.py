"""Profiles through the Client and browserctl: list, show, clone, delete, and who holds one.

A real `browserd` subprocess on chromium-headless-shell. A profile held by a running runtime
refuses clone and delete (`profile.in_use`); a clone is a real copy of the browser's state:
a runtime launched on it reads what the original's browser stored.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import sync_playwright

from browserd.client import Client, Profile, Runtime, errors

from .conftest import DaemonProcess
from .test_tour import web_page  # noqa: F401  (a fixture)


def local_storage(runtime: Runtime, page_url: str, value: str | None = None) -> str | None:
    """Read (and first write, if `value` is given) localStorage["login"] of `page_url`."""
    conn = runtime.connections.create(ttl_s=60)
    assert conn.endpoint is not None
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(conn.endpoint.url, timeout=20_000)
        page = browser.contexts[0].new_page()
        page.goto(page_url)
        if value is not None:
            page.evaluate("v => localStorage.setItem('login', v)", value)
        stored: str | None = page.evaluate("localStorage.getItem('login')")
        page.close()
        browser.close()  # over CDP: closes the transport, the browser stays up
    return stored


def test_profiles_through_the_client(shell_daemon: DaemonProcess, web_page: str) -> None:  # noqa: F811
    profiles_dir = shell_daemon.state_dir / "profiles"
    with Client(shell_daemon.socket) as bd:
        assert bd.profiles.list() == []
        with pytest.raises(errors.ProfileNotFound):
            bd.profiles.get("crm-bot")

        first = bd.runtimes.browser.launch("first", profile="crm-bot")
        assert local_storage(first, web_page, "token-123") == "token-123"

        [listed] = bd.profiles.list()
        assert isinstance(listed, Profile) and listed.name == "crm-bot"
        assert listed.size_bytes > 0
        holder = listed.in_use_by
        assert holder is not None
        assert (holder["runtime_id"], holder["space"], holder["name"], holder["run_id"]) == (
            first.id, "default", "first", first.active_run_id,
        )  # fmt: skip
        profile = bd.profiles.get("crm-bot")
        assert profile.in_use_by == holder and profile.last_used_at

        # Held by a running browser: a copy could tear mid-write, a delete pull the floor.
        with pytest.raises(errors.ProfileInUse) as refused:
            profile.clone("crm-bot-2")
        assert refused.value.data["holder"]["runtime_id"] == first.id
        with pytest.raises(errors.ProfileInUse):
            bd.profiles.delete("crm-bot")
        with pytest.raises(errors.ProfileNotFound):
            bd.profiles.get("crm-bot-2")
        assert (profiles_dir / "crm-bot" / "user-data").is_dir()

        first.stop()  # Browser.close flushes the profile to disk
        assert profile.refresh().in_use_by is None

        copy = profile.clone("crm-bot-2")
        assert isinstance(copy, Profile)
        assert (copy.name, copy.in_use_by) == ("crm-bot-2", None)
        assert copy.size_bytes > 0
        with pytest.raises(errors.ProfileExists) as exists:
            bd.profiles.clone("crm-bot", "crm-bot-2")
        assert exists.value.code == "profile.exists"

        # The clone carries the original's state, and both run at once: two profiles now.
        second = bd.runtimes.browser.launch("second", profile="crm-bot-2")
        first = bd.runtimes.browser.launch("first", profile="crm-bot")
        assert local_storage(second, web_page) == "token-123"
        assert copy.refresh().in_use_by is not None
        assert copy.in_use_by["name"] == "second"  # type: ignore[index]
        assert profile.refresh().in_use_by["name"] == "first"  # type: ignore[index]
        second.stop()
        first.stop()

        bd.profiles.delete("crm-bot")
        assert [p.name for p in bd.profiles.list()] == ["crm-bot-2"]
        assert not (profiles_dir / "crm-bot").exists()
        with pytest.raises(errors.ProfileNotFound):
            profile.refresh()
        copy.delete()
        assert bd.profiles.list() == []


def test_profiles_through_browserctl(shell_daemon: DaemonProcess, bd: Client) -> None:
    ctl = shell_daemon.ctl
    assert ctl("profiles").stdout.strip() == "no profiles"
    crm = bd.runtimes.browser.launch("crm", profile="bot")

    header, row = ctl("profiles").stdout.splitlines()
    assert header.split() == ["NAME", "SIZE", "IN-USE-BY", "LAST-USED"]
    assert row.split()[0] == "bot" and row.split()[3] == "default/crm"
    shown = dict(re.split(r"\s{2,}", line, maxsplit=1)
                 for line in ctl("profiles", "show", "bot").stdout.splitlines())
    assert shown["in use by"] == "default/crm" and shown["runtime id"].startswith("rt_")
    [listed] = json.loads(ctl("profiles", "ls", "--json").stdout)
    assert listed["name"] == "bot" and listed["in_use_by"]["name"] == "crm"

    for argv in (("profiles", "clone", "bot", "bot2"), ("profiles", "rm", "bot")):
        refused = ctl(*argv, check=False)
        assert refused.returncode == 1, refused
        assert refused.stderr.startswith("error: profile.in_use: ")
        assert "hint: " in refused.stderr and "Traceback" not in refused.stderr
    assert (shell_daemon.state_dir / "profiles" / "bot" / "user-data").is_dir()

    crm.stop()
    assert ctl("profiles", "clone", "bot", "bot2").stdout.strip() == "cloned profile bot to bot2"
    again = ctl("--json", "profiles", "clone", "bot", "bot2", check=False)
    assert again.returncode == 1  # with --json, the error is JSON too
    assert json.loads(again.stderr)["error"]["code"] == "profile.exists"

    crm2 = bd.runtimes.browser.launch("crm2", profile="bot2")
    shown_json = json.loads(ctl("profiles", "show", "bot2", "--json").stdout)
    assert shown_json["in_use_by"]["name"] == "crm2" and shown_json["size_bytes"] > 0
    crm2.stop()

    assert ctl("profiles", "rm", "bot").stdout.strip() == "deleted profile bot"
    assert json.loads(ctl("profiles", "rm", "bot2", "--json").stdout) == {
        "deleted": True, "name": "bot2",
    }  # fmt: skip
    gone = ctl("profiles", "show", "bot", check=False)
    assert gone.returncode == 1 and gone.stderr.startswith("error: profile.not_found: ")
    assert json.loads(ctl("profiles", "--json").stdout) == []
