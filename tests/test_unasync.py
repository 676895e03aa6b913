"""scripts/unasync.py: the blocking client is generated from the async one, and kept current.

`make lint` runs `--check`; this runs it too, so a stale client/_sync/ fails the tests, and
checks that a stale file is caught and that the rewrite does what the twins rely on.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import REPO

SCRIPT = REPO / "scripts" / "unasync.py"


@pytest.fixture(scope="module")
def unasync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_files_are_current() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_stale_file_is_caught_and_rewritten(unasync: ModuleType, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "_sync"
    shutil.copytree(REPO / "client" / "_sync", target)
    monkeypatch.setattr(unasync, "TARGET", target)
    monkeypatch.setattr(unasync, "REPO", tmp_path)
    assert unasync.main(["--check"]) == 0
    resources = target / "resources.py"
    resources.write_text(resources.read_text().replace("def refresh", "def reload", 1))
    assert unasync.main(["--check"]) == 1
    assert "def reload" in resources.read_text(), "--check changes nothing"
    assert unasync.main([]) == 0
    assert unasync.main(["--check"]) == 0


def test_the_rewrite(unasync: ModuleType) -> None:
    source = '''from collections.abc import AsyncGenerator, Collection
from .transport import AsyncTransport, Subscription


class AsyncThing:
    """``async with AsyncThing() as t:`` then ``await t.aclose()``."""

    async def __aenter__(self) -> AsyncThing:
        return self

    async def follow(self) -> AsyncGenerator[Event, None]:
        async with contextlib.aclosing(self.events()) as events:
            async for event in events:
                yield await self.load(event)
'''
    assert unasync.unasync(source) == '''from collections.abc import Collection, Generator
from .transport import Subscription, Transport


class Thing:
    """``with Thing() as t:`` then ``t.close()``."""

    def __enter__(self) -> Thing:
        return self

    def follow(self) -> Generator[Event, None, None]:
        with contextlib.closing(self.events()) as events:
            for event in events:
                yield self.load(event)
'''
