"""Invocations end to end: a real daemon, chromium-headless-shell, pages served by the test.

Each action through the async client, the status machine (wait=false, cancel, timeout,
failure), the run's log and counts, the exclusive-lease lock, and the latency of evaluate.
"""

from __future__ import annotations

import socket
import statistics
import time

import pytest
import trio

from browserd.client import errors
from browserd.daemon.cdp_client import open_cdp

from .conftest import Launched, artifact_bytes, eventually, png_size


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_navigate_evaluate_content(launched: Launched, site: str) -> None:
    invocations = launched.runtime.invocations
    with trio.fail_after(60):
        nav = await invocations.create("navigate", {"url": f"{site}/"})
        assert nav.status == "succeeded" and nav.error is None
        assert nav.output == {"url": f"{site}/", "title": "browserd control"}
        assert nav.started_at and nav.finished_at and nav.target_id

        value = await invocations.create("evaluate", {"expression": "({n: 6 * 7, s: 'x'})"})
        assert value.output == {"n": 42, "s": "x"}
        awaited = await invocations.create(
            "evaluate", {"expression": "new Promise(r => setTimeout(() => r([1, 2]), 50))"})
        assert awaited.output == [1, 2]
        undefined = await invocations.create("evaluate", {"expression": "undefined"})
        assert undefined.output is None

        html = await invocations.create("content", {"format": "html"})
        assert "<h1 id=\"greeting\">hello</h1>" in html.output
        text = await invocations.create("content", {"format": "text"})
        assert text.output.split("\n")[0] == "hello" and "second line" in text.output

        run = await launched.runtime.current_run()
        assert run.counts["invocations"] == 6
        events = await run.events.list(types=["invocation.*"])
        assert [e.type for e in events] == ["invocation.created", "invocation.succeeded"] * 6
        created = events[0]
        assert created.data["action"] == "navigate" and created.actor is not None
        assert events[1].data["invocation_id"] == nav.id
        assert events[1].target == {"kind": "page", "id": nav.target_id}


async def test_screenshot_and_pdf_become_artifacts(launched: Launched, site: str) -> None:
    invocations = launched.runtime.invocations
    with trio.fail_after(60):
        await invocations.create("navigate", {"url": f"{site}/tall"})
        shot = await invocations.create("screenshot")
        artifact = shot.output["artifact"]
        assert artifact["kind"] == "screenshot" and artifact["content_type"] == "image/png"
        data = artifact_bytes(launched.daemon, artifact)
        assert len(data) == artifact["size_bytes"]
        width, height = png_size(data)
        assert height < 1000, "the viewport only"

        full = await invocations.create("screenshot", {"full_page": True})
        full_size = png_size(artifact_bytes(launched.daemon, full.output["artifact"]))
        assert full_size[0] == width and full_size[1] >= 3000

        pdf = await invocations.create("pdf")
        pdf_artifact = pdf.output["artifact"]
        assert pdf_artifact["kind"] == "pdf"
        assert artifact_bytes(launched.daemon, pdf_artifact).startswith(b"%PDF-")

        run = await launched.runtime.current_run()
        assert run.counts["artifacts"] == 3
        succeeded = await run.events.list(types=["invocation.succeeded"])
        assert [e.data.get("artifact_id") for e in succeeded][1:] == [
            artifact["id"], full.output["artifact"]["id"], pdf_artifact["id"]]


async def test_failures_raise_their_codes_and_are_recorded(launched: Launched) -> None:
    invocations = launched.runtime.invocations
    with trio.fail_after(60):
        with pytest.raises(errors.InvocationFailed) as failed:
            await invocations.create("evaluate", {"expression": "throw new Error('boom')"})
        assert "boom" in failed.value.message
        record = failed.value.data["invocation"]
        assert record["status"] == "failed" and record["error"]["code"] == "invocation.failed"

        with pytest.raises(errors.InvocationFailed) as bad_url:
            await invocations.create("navigate", {"url": f"http://127.0.0.1:{closed_port()}/"})
        assert "ERR_CONNECTION_REFUSED" in bad_url.value.message

        started = trio.current_time()
        with pytest.raises(errors.InvocationTimedOut):
            # A busy loop: the daemon must also stop the script, or the page stays hung.
            await invocations.create("evaluate", {"expression": "while (true) {}"},
                                     timeout_s=0.5)
        assert trio.current_time() - started < 5
        after = await invocations.create("evaluate", {"expression": "'alive'"}, timeout_s=10)
        assert after.output == "alive", "the page answers again after the timeout"

        # Bad params never make an invocation.
        with pytest.raises(errors.InvalidParams) as missing:
            await invocations.create("navigate", {})
        assert missing.value.data["field"] == "params.url"
        with pytest.raises(errors.InvalidParams):
            await invocations.create("evaluate", {"expression": "1", "bogus": True})
        with pytest.raises(errors.InvalidParams):
            await invocations.create("dance")
        with pytest.raises(errors.TargetNotFound):
            await invocations.create("content", target_id="NO-SUCH-TARGET")

        listed = await invocations.list()
        assert [i.status for i in listed] == ["succeeded", "timed_out", "failed", "failed"]
        timed_out = await invocations.list(status="timed_out")
        assert len(timed_out) == 1 and timed_out[0].error is not None
        assert timed_out[0].error["code"] == "invocation.timed_out"
        run = await launched.runtime.current_run()
        types = [e.type for e in await run.events.list(types=["invocation.*"])]
        assert types.count("invocation.created") == 4
        assert types.count("invocation.failed") == 2 and "invocation.timed_out" in types


async def test_no_wait_get_and_cancel(launched: Launched) -> None:
    invocations = launched.runtime.invocations
    with trio.fail_after(60):
        # The first holds the runtime's turn, so the second waits in the queue behind it.
        slow = await invocations.create(
            "evaluate", {"expression": "new Promise(r => setTimeout(() => r('slow'), 60000))"},
            wait=False, timeout_s=120)
        assert slow.status in ("queued", "running")
        queued = await invocations.create("evaluate", {"expression": "1"}, wait=False)
        assert queued.status == "queued"
        await eventually(slow.refresh, lambda inv: inv.status == "running")
        assert (await queued.refresh()).status == "queued"

        cancelled = await queued.cancel()
        assert cancelled.status == "cancelled" and cancelled.started_at is None
        await slow.cancel()
        assert slow.status == "cancelled" and slow.error is not None
        assert slow.error["code"] == "invocation.cancelled"
        again = await slow.cancel()  # cancelling a finished one changes nothing
        assert again.status == "cancelled"

        quick = await invocations.create("evaluate", {"expression": "2 + 2"}, wait=False)
        await eventually(quick.refresh, lambda inv: inv.finished)
        assert quick.status == "succeeded" and quick.output == 4
        assert (await invocations.get(quick.id)).output == 4
        with pytest.raises(errors.InvocationNotFound):
            await invocations.get("inv_nope")


async def test_the_task_belongs_to_the_daemon_not_the_request(launched: Launched) -> None:
    """A waiting client that goes away does not stop its invocation."""
    invocations = launched.runtime.invocations
    with trio.fail_after(60):
        with trio.move_on_after(0.3):
            await invocations.create(
                "evaluate", {"expression": "new Promise(r => setTimeout(() => r(7), 800))"})
        pending = await invocations.list()
        assert pending[0].status == "running"
        await eventually(pending[0].refresh, lambda inv: inv.finished)
        assert pending[0].status == "succeeded" and pending[0].output == 7


async def test_targets_and_the_active_page(launched: Launched, site: str) -> None:
    runtime = launched.runtime
    with trio.fail_after(60):
        first = (await runtime.targets.list())[0]
        await runtime.invocations.create("navigate", {"url": f"{site}/"})
        second = await runtime.targets.create(f"{site}/other")
        assert second.active
        await eventually(runtime.targets.list,  # loaded: the title is there
                         lambda pages: any(p.title == "other page" for p in pages))
        title = "document.title"
        assert (await runtime.invocations.create("evaluate", {"expression": title})).output \
            == "other page", "the page created last is the active one"
        await runtime.targets.activate(first.id)
        assert (await runtime.invocations.create("evaluate", {"expression": title})).output \
            == "browserd control"
        on_second = await runtime.invocations.create("evaluate", {"expression": title},
                                                     target_id=second.id)
        assert on_second.output == "other page" and on_second.target_id == second.id


async def test_an_exclusive_lease_locks_out_invocations(launched: Launched) -> None:
    runtime = launched.runtime
    with trio.fail_after(60):
        lease = await runtime.connections.create(exclusive=True, ttl_s=60)
        with pytest.raises(errors.ControllerBusy) as busy:
            await runtime.invocations.create("evaluate", {"expression": "1"})
        assert busy.value.data["connection_id"] == lease.id
        with pytest.raises(errors.ControllerBusy):
            await runtime.targets.create()
        assert len(await runtime.targets.list()) >= 1, "listing is still allowed"
        await lease.delete()
        assert (await runtime.invocations.create("evaluate", {"expression": "1"})).output == 1


async def test_invocations_on_a_stopped_runtime(launched: Launched) -> None:
    runtime = launched.runtime
    with trio.fail_after(60):
        slow = await runtime.invocations.create(
            "evaluate", {"expression": "new Promise(() => {})"}, wait=False, timeout_s=60)
        await runtime.stop()
        finished = await slow.refresh()
        assert finished.status in ("cancelled", "failed"), finished.status
        with pytest.raises(errors.RuntimeNotActive):
            await runtime.invocations.create("evaluate", {"expression": "1"})


async def test_idempotent_invocations(launched: Launched) -> None:
    invocations = launched.runtime.invocations
    with trio.fail_after(60):
        params = {"expression": "window.__n = (window.__n || 0) + 1"}
        first = await invocations.create("evaluate", params, idempotency_key="inc-1")
        again = await invocations.create("evaluate", params, idempotency_key="inc-1")
        assert again.id == first.id and again.output == first.output == 1
        check = await invocations.create("evaluate", {"expression": "window.__n"})
        assert check.output == 1, "the replay did not run the action again"
        with pytest.raises(errors.IdempotencyConflict):
            await invocations.create("evaluate", {"expression": "2"}, idempotency_key="inc-1")


async def test_evaluate_latency(launched: Launched) -> None:
    """Measured, not asserted tightly: the daemon's share of an evaluate round trip."""
    runtime = launched.runtime
    with trio.fail_after(60):
        await runtime.invocations.create("evaluate", {"expression": "1"})  # attach once
        through_daemon = []
        for _ in range(50):
            started = time.perf_counter()
            await runtime.invocations.create("evaluate", {"expression": "1 + 1"})
            through_daemon.append(time.perf_counter() - started)
        lease = await runtime.connections.create(ttl_s=60)
        assert lease.endpoint is not None
        pages = await runtime.targets.list()
        direct = []
        async with open_cdp(lease.endpoint.url) as cdp:
            session = (await cdp.call("Target.attachToTarget",
                                      {"targetId": pages[0].id, "flatten": True}))["sessionId"]
            for _ in range(50):
                started = time.perf_counter()
                await cdp.call("Runtime.evaluate", {"expression": "1 + 1", "returnByValue": True},
                               session_id=session)
                direct.append(time.perf_counter() - started)
        median_ms = statistics.median(through_daemon) * 1000
        direct_ms = statistics.median(direct) * 1000
        print(f"\nevaluate via invocations.create: median {median_ms:.2f} ms; "
              f"raw CDP through a lease: median {direct_ms:.2f} ms")
        assert median_ms < 100
