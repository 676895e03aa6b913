"""The README's first Python example runs as written, against a real daemon (it once failed
at its first line: the space it used did not exist)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, DaemonProcess


def first_python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert blocks, "the README has no Python example"
    return str(blocks[0])


def test_the_first_python_example_runs(daemon_process: DaemonProcess, tmp_path: Path) -> None:
    example = first_python_example()
    assert "Client()" in example
    done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=daemon_process.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "runtime.lifecycle" in done.stdout
    assert daemon_process.ctl("ls", "--space", "sales").stdout.count("stopped") == 1
