"""Invocations end to end: a real daemon, chromium-headless-shell, pages served by the test.

Each action through the async client, the status machine (wait=false, cancel, timeout,
failure), the run's log and counts, the exclusive-lease lock, and the latency of evaluate.
"""

from __future__ import annotations

import json
import socket
import statistics
import time

import pytest
import trio

from browserd.client import AsyncInvocation, errors, wire
from browserd.daemon.cdp.client import open_cdp
from browserd.daemon.control.invocations import MAX_KEPT_BYTES
from browserd.daemon.control.outputs import MAX_INLINE_BYTES, wire_size
from browserd.daemon.rpc.methods.invocations import LIST_PAGE_BYTES

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
        assert again.params == first.params == {**params, "await_promise": True}
        stored = launched.daemon.api.control.idempotency.lookup("invocations.create", "inc-1")
        assert stored["id"] == first.id and "params" not in stored, \
            "the store keeps the record without the params (a replay has them)"
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


# -- outputs and what the daemon keeps --------------------------------------------------------

BIG_TEXT = "'ab'.repeat(300000) + '\\u00e9\\u{1F600}'"  # 600 KB, with non-ASCII at the end


async def test_a_large_output_is_kept_as_an_artifact_and_read_back(launched: Launched) -> None:
    runtime, daemon, bd = launched.runtime, launched.daemon, launched.bd
    invocations = runtime.invocations
    value = "ab" * 300_000 + "\u00e9\U0001F600"
    with trio.fail_after(60):
        big = await invocations.create("evaluate", {"expression": BIG_TEXT})
        assert big.output == value, "a waited-for call gives the value itself"
        assert big.output_truncated and big.raw["output"]["truncated"] is True
        artifact = big.output_artifact
        assert artifact is not None and big.raw["output"] == {"artifact": artifact,
                                                              "truncated": True}
        assert artifact["kind"] == "output" and artifact["name"] == f"evaluate-{big.id}.json"
        assert artifact["content_type"] == "application/json"
        assert json.loads(artifact_bytes(daemon, artifact)) == value

        structured = await invocations.create("evaluate", {
            "expression": "Array.from({length: 20000}, (_, i) => ({i, s: 'v' + i}))"})
        assert structured.output_truncated and len(structured.output) == 20000
        assert structured.output[19999] == {"i": 19999, "s": "v19999"}

        # content is stored as the page's HTML or text itself.
        await invocations.create("evaluate", {
            "expression": "document.body.innerHTML = '<p>' + 'word '.repeat(40000); 1"})
        html = await invocations.create("content", {"format": "html"})
        assert html.output_truncated and html.output.startswith("<html><head></head><body><p>")
        assert html.output_artifact is not None
        assert html.output_artifact["name"] == f"content-{html.id}.html"
        assert html.output_artifact["content_type"] == "text/html; charset=utf-8"
        assert artifact_bytes(daemon, html.output_artifact).decode() == html.output
        text = await invocations.create("content", {"format": "text"})
        assert text.output_truncated and text.output.startswith("word word")
        assert text.output_artifact is not None
        assert text.output_artifact["name"] == f"content-{text.id}.txt"

        # Small outputs stay inline; a value shaped like the stub is only a value.
        lookalike = await invocations.create(
            "evaluate", {"expression": "({artifact: {id: 'art_x'}, truncated: true})"})
        assert lookalike.output == {"artifact": {"id": "art_x"}, "truncated": True}
        assert not lookalike.output_truncated and lookalike.output_artifact is None
        assert lookalike.raw["output_truncated"] is False

        # The kept record is small. get and refresh read the value back; list does not, and
        # read_output() does for any record.
        record = await bd.call("invocations.get", {"id": big.id})
        assert record["output"] == {"artifact": artifact, "truncated": True}
        assert wire_size(record) < 4096 < MAX_INLINE_BYTES
        assert (await invocations.get(big.id)).output == value
        listed = {inv.id: inv for inv in await invocations.list()}
        assert listed[big.id].output == {"artifact": artifact, "truncated": True}
        assert await listed[big.id].read_output() == value
        assert await listed[lookalike.id].read_output() == lookalike.output
        queued = await invocations.create("evaluate", {"expression": BIG_TEXT}, wait=False)
        done = await eventually(queued.refresh, lambda inv: inv.finished)
        assert done.output == value

        run = await runtime.current_run()
        outputs = await run.artifacts.list(kind="output")
        assert len(outputs) == 5 and outputs[-1].id == artifact["id"]
        succeeded = await run.events.list(types=["invocation.succeeded"])
        assert [e.data.get("artifact_id") for e in succeeded if e.data["invocation_id"]
                == big.id] == [artifact["id"]]


async def test_kept_records_have_a_byte_budget_and_list_pages_fit_a_frame(
        launched: Launched) -> None:
    runtime, bd = launched.runtime, launched.bd
    kept = launched.daemon.api.control.invocations
    # Params are kept too: an expression may be 1 MiB. 36 such records are 36 MiB, over the
    # budget of 32 MiB and over twice the 16 MiB frame a list reply must fit in.
    expression = "1" + " " * ((1 << 20) - 2)
    ids = []
    with trio.fail_after(120):
        for _ in range(36):
            inv = await bd.call("invocations.create", {"runtime_id": runtime.id,
                                                       "action": "evaluate",
                                                       "params": {"expression": expression}})
            ids.append(inv["id"])
        assert kept.kept_bytes <= MAX_KEPT_BYTES
        with pytest.raises(errors.InvocationNotFound):
            await runtime.invocations.get(ids[0])  # the oldest went first
        assert (await runtime.invocations.get(ids[-1])).id == ids[-1]

        pages, cursor, seen = [], None, []
        while True:
            page = await bd.call("invocations.list", {"runtime_id": runtime.id, "limit": 1000,
                                                      **({"cursor": cursor} if cursor else {})})
            size = len(wire.Connection().send_response(1, None, page))
            assert size <= LIST_PAGE_BYTES + 64 * 1024, size
            pages.append(size)
            seen += [record["id"] for record in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(pages) > 1 and seen == sorted(seen, reverse=True)
        assert seen[0] == ids[-1] and set(seen) <= set(ids) and len(seen) >= 28
        every = await runtime.invocations.list()
        assert [inv.id for inv in every] == seen
        assert all(isinstance(inv, AsyncInvocation) for inv in every)


async def test_a_huge_error_message_is_cut(launched: Launched) -> None:
    with trio.fail_after(60), pytest.raises(errors.InvocationFailed) as failed:
        await launched.runtime.invocations.create(
            "evaluate", {"expression": "throw new Error('x'.repeat(1 << 20))"})
    message = failed.value.message
    assert message.startswith("the expression threw: Error: xxx") and message.endswith("[cut]")
    assert len(message) < 4200
    assert failed.value.data["invocation"]["error"]["message"] == message
