"""The daemon's one CDP connection per run (cdp/browser_link.py): the observer, the network
rules and the control link share it, each with sessions of its own."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from .conftest import Launched, eventually


def established_to(port: int) -> int:
    """How many TCP connections this process holds to 127.0.0.1:`port` (the daemon runs in
    the test's own process; the browser's end of each has `port` as its local port)."""
    inodes = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    ours = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:[") and link[8:-1] in inodes:
            ours += 1
    return ours


async def test_one_connection_per_run_with_block_rules_and_invocations(
        launched: Launched, site: str) -> None:
    with trio.fail_after(60):
        runtime = await launched.bd.runtimes.browser.launch(
            name="lean", config={"block": {"resource_types": ["image"]}})
        done = await runtime.invocations.create("navigate", {"url": f"{site}/"})
        assert done.status == "succeeded"
        for name, rt_id in (("crm", launched.runtime.id), ("lean", runtime.id)):
            process = launched.daemon.registry.runtimes[rt_id].process
            assert process is not None
            # The observer, the control link (with an invocation's session) and, on "lean",
            # the block rules: one connection.
            assert established_to(process.endpoint.port) == 1, name


async def test_an_invocations_console_message_is_recorded_once(launched: Launched) -> None:
    """The observer's and an invocation's sessions on a page are separate: the message the
    invocation's evaluate logs is recorded once, for its page, not again for its session."""
    with trio.fail_after(60):
        done = await launched.runtime.invocations.create(
            "evaluate", {"expression": "console.error('once-' + 6 * 7); 1"})
        assert done.output == 1
        run = await launched.runtime.current_run()

        async def ours() -> list[dict[str, object]]:
            events = await run.events.list(types=["console.message"])
            return [{"text": e.data["text"], "target": e.target} for e in events
                    if e.data.get("text") == "once-42"]

        await eventually(ours, lambda found: len(found) >= 1)
        await trio.sleep(1)  # a second copy would come from the same burst of events
        found = await ours()
        assert len(found) == 1, found
        target = found[0]["target"]
        assert isinstance(target, dict) and target["id"] == done.target_id
