"""The blocking Client's control surface (the async one is driven by the other tests here)."""

from __future__ import annotations

import pytest

from browserd.client import Client, Invocation, errors

from ..conftest import DaemonProcess


def test_blocking_invocations_targets_files_and_leases(shell_process: DaemonProcess,
                                                      site: str) -> None:
    with Client(shell_process.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="crm")

        nav = runtime.invocations.create("navigate", {"url": f"{site}/"})
        assert isinstance(nav, Invocation) and nav.output["title"] == "browserd control"
        slow = runtime.invocations.create(
            "evaluate", {"expression": "new Promise(() => {})"}, wait=False, timeout_s=60)
        assert slow.status in ("queued", "running")
        assert runtime.invocations.get(slow.id).id == slow.id
        assert slow.cancel().status == "cancelled", "cancel refreshes the object"
        assert slow.refresh().error is not None
        assert [i.id for i in runtime.invocations.list()] == [slow.id, nav.id]
        assert [i.id for i in runtime.invocations.list(status="succeeded")] == [nav.id]
        with pytest.raises(errors.InvocationTimedOut) as timed_out:
            runtime.invocations.create("evaluate", {"expression": "new Promise(() => {})"},
                                       timeout_s=0.2)
        assert timed_out.value.data["invocation"]["status"] == "timed_out"
        assert runtime.invocations.cancel(nav.id).status == "succeeded"
        # An output over 64 KiB is an artifact of the run; the blocking client reads it back.
        big = runtime.invocations.create("evaluate", {"expression": "'xy'.repeat(100000)"})
        assert big.output == "xy" * 100_000 and big.output_truncated
        assert big.refresh().output == "xy" * 100_000, "refresh reads it back too"
        listed = runtime.invocations.list(limit=1)[0]
        assert listed.id == big.id and listed.output == big.raw["output"]
        assert listed.read_output() == "xy" * 100_000

        first = runtime.targets.list()[0]
        second = runtime.targets.create(f"{site}/other")
        assert second.active and runtime.targets.activate(first.id).active
        runtime.targets.close(second.id)
        assert [t.id for t in runtime.targets.list()] == [first.id]

        staged = runtime.files.stage("a/b.txt", b"bee")
        assert staged.size_bytes == 3
        assert [f.path for f in runtime.files.list(sha256=True)] == ["a/b.txt"]
        collected = runtime.files.collect("a/b.txt")
        assert collected.file.sha256 == collected.artifact["sha256"]

        lease = runtime.connections.create(ttl_s=60)
        assert lease.endpoint is not None and lease.endpoint.browser_url
        got = runtime.connections.get(lease.id)
        assert got.id == lease.id and got.endpoint is None and got.open_sockets == 0
        revoked = runtime.connections.delete(lease.id)
        assert (revoked.id, revoked.status) == (lease.id, "revoked")
        assert runtime.connections.delete(lease.id, force=True).status == "revoked"
        assert runtime.current_run().counts["invocations"] == 4
        runtime.stop()
