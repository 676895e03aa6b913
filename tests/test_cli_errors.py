"""browserctl against a real daemon: it says what went wrong in its own terms (the browser's
last lines for a failed launch, flags in hints, the holder of a profile, JSON errors with
--json), and its spaces, connections and completion commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from browserd.client import cli

from .conftest import BIN, DaemonProcess


def test_a_failed_launch_shows_the_browsers_own_words(shell_daemon: DaemonProcess,
                                                     tmp_path: Path) -> None:
    fake = tmp_path / "fake-browser"
    fake.write_text("#!/bin/sh\necho 'Missing X server or $DISPLAY' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {**shell_daemon.env, "BROWSERD_BROWSER": str(fake)}
    # browser.executable in the config wins over $BROWSERD_BROWSER: use a config without it.
    (shell_daemon.base / "config.toml").write_text("")
    shell_daemon.stop()
    shell_daemon.env = env
    shell_daemon.start()
    done = shell_daemon.ctl("launch", "headful", "--headful", check=False)
    assert done.returncode == 1
    assert "error: browser.launch_failed:" in done.stderr
    assert "browser output (last lines):" in done.stderr
    assert "  Missing X server or $DISPLAY" in done.stderr
    as_json = shell_daemon.ctl("launch", "headful", "--json", check=False)
    assert as_json.returncode == 1 and as_json.stdout == ""
    error = json.loads(as_json.stderr)["error"]
    assert error["code"] == "browser.launch_failed"
    assert "Missing X server or $DISPLAY" in error["data"]["stderr_tail"]
    assert error["hint"]


def test_hints_name_flags_and_the_profile_holder(shell_daemon: DaemonProcess) -> None:
    ctl = shell_daemon.ctl
    ctl("launch", "crm", "--profile", "bot")
    busy = ctl("rm", "crm", check=False)
    assert busy.returncode == 1 and "runtime.not_stopped" in busy.stderr
    assert "--force" in busy.stderr and "force=true" not in busy.stderr
    held = ctl("launch", "other", "--profile", "bot", check=False)
    assert held.returncode == 1
    assert "is in use by runtime default/crm (run run_" in held.stderr
    assert "browserctl profiles clone bot NEW" in held.stderr
    missing = ctl("launch", "x", "--space", "nowhere", check=False)
    assert "browserctl spaces create nowhere" in missing.stderr
    ctl("stop", "crm")


def test_launching_a_running_runtime_with_other_options_warns(shell_daemon: DaemonProcess
                                                              ) -> None:
    ctl = shell_daemon.ctl
    ctl("launch", "crm", "--memory-limit", "1024")
    again = ctl("launch", "crm", "--memory-limit", "2048", "--idle-timeout", "60")
    assert "warning: memory_limit_mb=2048 was not applied" in again.stderr
    assert "warning: idle_timeout_s=60.0 was not applied" in again.stderr
    quiet = ctl("launch", "crm")  # nothing asked for: nothing to warn about
    assert "warning" not in quiet.stderr
    ctl("stop", "crm")


def test_spaces_and_connections(shell_daemon: DaemonProcess) -> None:
    ctl = shell_daemon.ctl
    assert "sales" in ctl("spaces", "create", "sales").stdout
    names = [s["name"] for s in json.loads(ctl("spaces", "--json").stdout)]
    assert names == ["default", "sales"]
    ctl("launch", "crm", "--space", "sales")
    not_empty = ctl("spaces", "rm", "sales", check=False)
    assert not_empty.returncode == 1 and "space.not_empty" in not_empty.stderr
    ctl("connect", "crm", "--space", "sales", "--label", "first")
    leases = json.loads(ctl("connections", "crm", "--space", "sales", "--json").stdout)
    assert [(c["label"], c["status"]) for c in leases] == [("first", "active")]
    assert "first" in ctl("connections", "crm", "--space", "sales").stdout
    revoked = ctl("connections", "crm", "rm", leases[0]["id"], "--force", "--space", "sales")
    assert f"revoked {leases[0]['id']}" in revoked.stdout
    again = json.loads(ctl("connections", "crm", "ls", "--space", "sales", "--json").stdout)
    assert again[0]["status"] == "revoked"
    ctl("rm", "crm", "--space", "sales", "--force")
    ctl("spaces", "rm", "sales")
    assert "sales" not in ctl("spaces").stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_cover_every_command(shell: str, tmp_path: Path) -> None:
    done = subprocess.run([str(BIN / "browserctl"), "completion", shell], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    script = done.stdout
    flags = ("-l profile", "-l force") if shell == "fish" else ("--profile", "--force")
    for word in ("launch", "connections", "spaces", "doctor", *flags):
        assert word in script, word
    if shell == "bash" and shutil.which("bash"):
        # Load it in a real bash and ask for completions as TAB would.
        probe = tmp_path / "probe.sh"
        probe.write_text(script + "\nCOMP_WORDS=(browserctl la); COMP_CWORD=1\n"
                         "_browserctl_complete; echo \"${COMPREPLY[@]}\"\n"
                         "COMP_WORDS=(browserctl profiles c); COMP_CWORD=2\n"
                         "_browserctl_complete; echo \"${COMPREPLY[@]}\"\n"
                         "COMP_WORDS=(browserctl launch crm --prof); COMP_CWORD=3\n"
                         "_browserctl_complete; echo \"${COMPREPLY[@]}\"\n")
        out = subprocess.run(["bash", str(probe)], capture_output=True, text=True,
                             timeout=30, env={**os.environ}).stdout.splitlines()
        assert out == ["launch", "clone", "--profile"], out
    assert cli.main(["completion", shell]) == 0
