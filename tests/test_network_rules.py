"""A runtime whose `block` rules the browser refuses is not launched: a real daemon in-process
and a real Chromium, made to refuse by a resource type it does not know (the names a user can
give all map to types it knows, so the test swaps one mapping for the length of the test)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from browserd.daemon.base.errors import ApiError
from browserd.daemon.base.runtime_config import parse_runtime_config
from browserd.daemon.core.runtime import LaunchOptions
from browserd.daemon.service import Daemon, serve
from browserd.daemon.services import network_rules

from .conftest import HEADLESS_SHELL, assert_no_processes, make_config

BLOCK_IMAGES = {"block": {"resource_types": ["image"]}}


async def test_rules_the_browser_refuses_fail_the_launch_and_leave_nothing(
        short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(network_rules.RESOURCE_TYPES, "image", "NoSuchResourceType")
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve, make_config(short_dir,
                                                                executable=HEADLESS_SHELL))
        reg = daemon.registry
        options = LaunchOptions(runtime=parse_runtime_config(BLOCK_IMAGES))
        with trio.fail_after(60):
            with pytest.raises(ApiError) as caught:
                await reg.launch("default", "lean", options, None)
        error = caught.value
        assert error.code == "browser.launch_failed"
        assert error.data["reason"] == "rules_failed"
        assert error.data["block"] == {"resource_types": ["image"], "url_patterns": []}
        assert "NoSuchResourceType" in error.message  # the browser's own words

        rt = reg.find_runtime("default", "lean")
        assert rt is not None and rt.process is None and rt.run is not None
        assert rt.record.status == "failed"
        run = rt.run
        assert (run.status, run.end_reason) == ("failed", "launch_failed")
        assert run.failure is not None and run.failure["reason"] == "rules_failed"
        events = await reg.list_events(run, 0, 1000, None)
        types = [event["type"] for event in events]
        assert "network.rules_failed" in types
        assert types[-1] == "runtime.lifecycle" and "active" not in {
            event.get("status") for event in events}
        assert_no_processes(short_dir / "state")

        # The same runtime launches once the rules can be put in force.
        monkeypatch.undo()
        with trio.fail_after(60):
            rt, _, _ = await reg.launch("default", "lean", options, None)
            assert rt.run is not None and rt.run.status == "active"
            await reg.stop(rt)
        daemon.stop()
    assert_no_processes(short_dir / "state")
