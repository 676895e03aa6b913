"""Artifacts: the store, downloads becoming artifacts, and reading them back.

Real daemon, real Chromium (headless-shell where full chromium is not needed), real
Playwright, and files served by the test. Downloads are checked end to end: Playwright's own
download (its folder, `download.path()`, `save_as()`) keeps working while the daemon keeps a
copy, and a download nobody set a folder for lands in the run's artifacts directly.
"""

from __future__ import annotations

import hashlib
import http.server
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import sync_playwright

from browserd.client import AsyncClient, Client, errors
from browserd.daemon.base.errors import ApiError
from browserd.daemon.cdp.client import open_cdp
from browserd.daemon.core.artifacts import ArtifactStore, safe_file_name
from browserd.daemon.core.registry import Registry
from browserd.daemon.core.runtime import Runtime
from browserd.daemon.service import Daemon
from browserd.daemon.services.downloads import DownloadTracker

from .conftest import DaemonProcess
from .test_observer import launch, lease_url, open_page, start_daemon, wait_for

REPORT = os.urandom(2 * 1024 * 1024 + 12345)  # over two 1 MiB chunks
REPORT_NAME = "Q3 report.csv"
SLOW_CHUNKS, SLOW_CHUNK_BYTES, SLOW_PAUSE_S = 6, 64 * 1024, 0.45


@pytest.fixture
def files_site() -> Iterator[str]:
    """A page with download links, the file behind them, and a slowly streamed file."""
    page = (f'<!doctype html><title>downloads</title>'
            f'<a id=dl download="{REPORT_NAME}" href="/files/report">report</a>'
            f'<a id=slow download="slow.bin" href="/files/slow">slow</a>').encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/files/slow":
                self._head("application/octet-stream", SLOW_CHUNKS * SLOW_CHUNK_BYTES)
                for _ in range(SLOW_CHUNKS):
                    self.wfile.write(b"s" * SLOW_CHUNK_BYTES)
                    self.wfile.flush()
                    time.sleep(SLOW_PAUSE_S)
                return
            body = REPORT if self.path == "/files/report" else page
            self._head("text/csv" if body is REPORT else "text/html", len(body))
            self.wfile.write(body)

        def _head(self, content_type: str, length: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(length))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def finished_download(name: str) -> Any:
    return lambda e: (e["type"] == "download" and e["status"] in ("finished", "failed")
                      and e["data"].get("name") == name)


# -- the store ---------------------------------------------------------------------------


def test_safe_file_name() -> None:
    assert safe_file_name("Q3 report.pdf") == "Q3 report.pdf"
    assert safe_file_name("../../etc/passwd") == "passwd"
    assert safe_file_name("a\\b\\c.txt") == "c.txt"
    assert safe_file_name("..") == "artifact" and safe_file_name("") == "artifact"
    assert safe_file_name(".hidden") == "hidden"
    assert safe_file_name("tab\there\n.txt") == "tab_here_.txt"
    long = safe_file_name("é" * 300 + ".tar.gz")
    assert long.endswith(".gz") and len(long.encode()) <= 200


async def test_store_add_list_read_and_reload(short_dir: Path) -> None:
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, short_dir)
        reg = daemon.registry
        with trio.fail_after(60):
            rt = await launch(reg)
            assert rt.run is not None
            run = rt.run
            first = await reg.artifacts.add(rt, kind="file", name="../x/notes.txt", data=b"hi")
            source = short_dir / "big.bin"
            source.write_bytes(REPORT)
            second = await reg.artifacts.add(rt, kind="download", name="big.bin",
                                             source=source, link=True)
            assert source.read_bytes() == REPORT, "a linked or copied source stays"
            assert first["name"] == "../x/notes.txt"
            assert first["path"] == f"artifacts/{first['id']}/notes.txt"
            assert first["content_type"] == "text/plain" and first["size_bytes"] == 2
            assert second["sha256"] == hashlib.sha256(REPORT).hexdigest()
            on_disk = reg.state_dir / "runs" / run.id / second["path"]
            assert on_disk.read_bytes() == REPORT
            assert [a["id"] for a in reg.artifacts.list(run)] == [second["id"], first["id"]]
            assert reg.artifacts.list(run, kind="file") == [first]
            assert run.counts["artifacts"] == 2
            created = await reg.list_events(run, 0, 1000, ["artifact.created"])
            assert [e["data"] for e in created] == [first, second]

            data, eof = await reg.artifacts.read(run, second["id"], 0, 1024 * 1024)
            assert data == REPORT[: 1024 * 1024] and not eof
            data, eof = await reg.artifacts.read(run, second["id"], 2 * 1024 * 1024, 1 << 20)
            assert data == REPORT[2 * 1024 * 1024:] and eof

            await reg.stop(rt)
            # The index is the run's log: a fresh store (a restarted daemon) sees the same.
            assert ArtifactStore(reg.state_dir).list(run) == reg.artifacts.list(run)
            with pytest.raises(ApiError) as not_found:
                ArtifactStore(reg.state_dir).get(run, "art_nope")
            assert not_found.value.code == "artifact.not_found"
            with pytest.raises(ApiError) as ended:
                await reg.artifacts.add(rt, kind="file", name="late.txt", data=b"")
            assert ended.value.code == "runtime.no_active_run"
        daemon.stop()


# -- downloads ---------------------------------------------------------------------------


def playwright_download(cdp_url: str, page_url: str, save_to: Path) -> dict[str, Any]:
    """Download through Playwright over CDP, as a user would; report what Playwright saw."""
    with sync_playwright() as pw:
        browser = pw.chromium.connect_over_cdp(cdp_url, timeout=20_000)
        page = browser.contexts[0].new_page()
        page.goto(page_url)
        with page.expect_download(timeout=20_000) as info:
            page.click("#dl")
        download = info.value
        path = download.path()  # waits for the download to finish
        seen = {"name": download.suggested_filename, "path": str(path),
                "data": Path(path).read_bytes()}
        download.save_as(save_to)
        page.close()
        browser.close()  # over CDP: the transport closes, the browser stays
    return seen


async def test_playwright_download_is_kept_and_still_works_for_playwright(
    short_dir: Path, files_site: str
) -> None:
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, short_dir)
        reg = daemon.registry
        with trio.fail_after(90):
            rt = await launch(reg)
            assert rt.run is not None
            run = rt.run
            saved_as = short_dir / "saved.csv"
            seen = await trio.to_thread.run_sync(playwright_download, lease_url(reg, rt),
                                                 f"{files_site}/", saved_as)
            finished = await wait_for(reg, rt, finished_download(REPORT_NAME))

            # Playwright's side: its folder, path() and save_as() all work.
            assert seen["name"] == REPORT_NAME
            assert seen["data"] == REPORT and saved_as.read_bytes() == REPORT
            assert not Path(seen["path"]).is_relative_to(reg.state_dir)
            # The daemon's side: an artifact under the real name, same bytes.
            assert finished["status"] == "finished", finished
            assert finished["data"]["client_path"] == seen["path"]
            [artifact] = reg.artifacts.list(run, kind="download")
            assert artifact["id"] == finished["data"]["artifact_id"]
            assert artifact["name"] == REPORT_NAME
            assert artifact["path"].endswith(f"/{REPORT_NAME}")
            assert artifact["sha256"] == hashlib.sha256(REPORT).hexdigest()
            assert artifact["size_bytes"] == len(REPORT)
            started = await wait_for(reg, rt, lambda e: e["type"] == "download"
                                     and e["status"] == "started")
            assert started["data"]["suggested_filename"] == REPORT_NAME
            assert started["target"]["kind"] == "page"
            assert started["seq"] < finished["seq"]

            # Playwright has gone, and Chromium dropped its download folder with it: the
            # daemon takes downloads back, so the next one (no client folder) still lands.
            with trio.fail_after(10):
                while rt.open_sockets:  # noqa: ASYNC110 (the detach lands on its own)
                    await trio.sleep(0.05)
            await trio.sleep(0.6)  # the daemon's claim (a CDP call) lands meanwhile
            await click_download(reg, rt, f"{files_site}/", "dl")
            second = await wait_for(reg, rt, lambda e: e["type"] == "download"
                                    and e["status"] in ("finished", "failed")
                                    and e["seq"] > finished["seq"])
            assert second["status"] == "finished", second
            assert "client_path" not in second["data"]
            assert len(reg.artifacts.list(run, kind="download")) == 2
            await reg.stop(rt)
        daemon.stop()


async def click_download(registry: Registry, rt: Runtime, page_url: str, link: str) -> None:
    """Open the page from a raw CDP client (through a lease) and click a download link."""
    async with open_cdp(lease_url(registry, rt)) as cdp:
        _, session = await open_page(cdp, page_url)
        with trio.fail_after(10):
            while True:
                ready = await cdp.call("Runtime.evaluate", {
                    "expression": f"!!document.getElementById('{link}')"}, session_id=session)
                if ready["result"].get("value"):
                    break
                await trio.sleep(0.05)
        await cdp.call("Runtime.evaluate", {
            "expression": f"document.getElementById('{link}').click()"}, session_id=session)


async def test_download_without_client_folder_lands_in_artifacts(
    short_dir: Path, files_site: str
) -> None:
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, short_dir)
        reg = daemon.registry
        with trio.fail_after(90):
            rt = await launch(reg)
            assert rt.run is not None
            run = rt.run
            await click_download(reg, rt, f"{files_site}/", "slow")
            finished = await wait_for(reg, rt, finished_download("slow.bin"), timeout_s=30)
            events = await reg.list_events(run, 0, 100_000, ["download"])
            await reg.stop(rt)
        daemon.stop()
    assert finished["status"] == "finished", finished
    [artifact] = ArtifactStore(reg.state_dir).list(run)
    assert artifact["kind"] == "download" and artifact["name"] == "slow.bin"
    assert artifact["size_bytes"] == SLOW_CHUNKS * SLOW_CHUNK_BYTES
    assert artifact["sha256"] == hashlib.sha256(
        b"s" * SLOW_CHUNKS * SLOW_CHUNK_BYTES).hexdigest()
    artifacts_dir = reg.state_dir / "runs" / run.id / "artifacts"
    assert (artifacts_dir / artifact["id"] / "slow.bin").is_file()
    assert not (artifacts_dir / ".incoming").exists(), "staged straight into place"
    # started, progress at most once a second, finished
    statuses = [e["status"] for e in events]
    assert statuses[0] == "started" and statuses[-1] == "finished"
    progress = [e for e in events if e["status"] == "progress"]
    assert progress, "a download of ~2.7 s reports progress"
    elapsed = SLOW_CHUNKS * SLOW_PAUSE_S
    assert len(progress) <= elapsed + 1
    times = [_epoch(e["time"]) for e in progress]
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times)), times


def _epoch(rfc3339: str) -> float:
    return datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


async def test_a_client_folder_set_first_is_mirrored_not_overridden(
    short_dir: Path, files_site: str
) -> None:
    """The proxy reported a client's download folder before the daemon set its own (a client
    faster than the observer): the daemon's claim keeps the client's folder in force."""
    client_folder = short_dir / "client-downloads"
    client_folder.mkdir()
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, short_dir)
        reg = daemon.registry
        with trio.fail_after(60):
            rt = await launch(reg)
            assert rt.process is not None
            reg.download_behaviors[rt.id] = {"behavior": "allow",
                                             "downloadPath": str(client_folder)}
            # The client that set the folder stays connected while it downloads (when the
            # last client socket closes, the daemon takes downloads back).
            async with open_cdp(lease_url(reg, rt)), \
                    open_cdp(rt.process.endpoint.ws_url) as cdp, \
                    trio.open_nursery() as claims:
                # A second claim as the observer makes it at start.
                await DownloadTracker(reg, rt, cdp, lambda *a, **k: None, claims).claim()
                await click_download(reg, rt, f"{files_site}/", "dl")
                finished = await wait_for(reg, rt, finished_download(REPORT_NAME))
            await reg.stop(rt)
        daemon.stop()
    assert finished["status"] == "finished", finished
    assert (client_folder / REPORT_NAME).read_bytes() == REPORT, "the client's folder and name"
    assert finished["data"]["client_path"] == str(client_folder / REPORT_NAME)


# -- reading artifacts back: the client and browserctl -----------------------------------


async def test_client_lists_reads_and_downloads(short_dir: Path, files_site: str) -> None:
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await start_daemon(nursery, short_dir)
        reg = daemon.registry
        with trio.fail_after(90):
            rt = await launch(reg, "arts")
            note = await reg.artifacts.add(rt, kind="file", name="note.txt", data=b"note")
            await click_download(reg, rt, f"{files_site}/", "dl")
            await wait_for(reg, rt, finished_download(REPORT_NAME))
            async with AsyncClient(daemon.config.socket) as bd:
                runtime = await bd.runtimes.get("arts")
                run = await runtime.current_run()
                listed = await run.artifacts.list()
                assert [a.kind for a in listed] == ["download", "file"], "newest first"
                assert [a.id for a in await run.artifacts.list(kind="file")] == [note["id"]]
                report = listed[0]
                assert report.name == REPORT_NAME and report.size_bytes == len(REPORT)

                chunks, offset = [], 0
                while True:
                    chunk = await run.artifacts.read(report.id, offset, 1024 * 1024)
                    chunks.append(chunk)
                    offset += len(chunk.data)
                    if chunk.eof:
                        break
                assert [len(c.data) for c in chunks] == [1 << 20, 1 << 20, len(REPORT) - 2**21]
                assert b"".join(c.data for c in chunks) == REPORT
                past = await run.artifacts.read(report.id, len(REPORT) + 10)
                assert past.data == b"" and past.eof

                saved = await run.artifacts.download(report.id, short_dir)
                assert saved == short_dir / REPORT_NAME and saved.read_bytes() == REPORT
                named = await run.artifacts.download(note["id"], short_dir / "n.txt")
                assert named.read_bytes() == b"note"
                # A name taken in the directory gets a suffix, never an overwrite.
                again = await run.artifacts.download(report.id, short_dir)
                assert again == short_dir / "Q3 report (1).csv" and again.read_bytes() == REPORT
                assert saved.read_bytes() == REPORT
                # A trailing slash means a directory, created if missing (not a file "new").
                fresh = await run.artifacts.download(note["id"], f"{short_dir}/new/")
                assert fresh == short_dir / "new" / "note.txt" and fresh.read_bytes() == b"note"
                assert not list((short_dir / "new").glob(".*partial"))

                with pytest.raises(errors.InvalidParams):
                    await run.artifacts.read(report.id, 0, 9 * 1024 * 1024)
                with pytest.raises(errors.ArtifactNotFound):
                    await run.artifacts.read("art_missing")
                with pytest.raises(errors.ArtifactNotFound):
                    await run.artifacts.download("art_missing", short_dir)
                with pytest.raises(errors.RunNotFound):
                    await bd.call("runs.artifacts.list", {"run_id": "run_missing"})
            await reg.stop(rt)
        daemon.stop()


def test_browserctl_artifacts(daemon_process: DaemonProcess, files_site: str) -> None:
    with Client(daemon_process.socket) as bd:
        runtime = bd.runtimes.browser.launch(name="dl")
        conn = runtime.connections.create(ttl_s=60)
        assert conn.endpoint is not None
        url = conn.endpoint.url

        async def click() -> None:
            async with open_cdp(url) as cdp:
                _, session = await open_page(cdp, f"{files_site}/")
                clicked = False
                with trio.fail_after(20):
                    while not clicked:  # once the page has loaded
                        result = await cdp.call("Runtime.evaluate", {"expression": (
                            "(() => { const a = document.getElementById('dl');"
                            " a?.click(); return !!a; })()")}, session_id=session)
                        clicked = bool(result["result"].get("value"))
                        await trio.sleep(0.05)

        trio.run(click)
        run = runtime.current_run()
        deadline = time.monotonic() + 20
        while not run.artifacts.list():
            assert time.monotonic() < deadline, "the download never became an artifact"
            time.sleep(0.05)

        listed = json.loads(daemon_process.ctl("artifacts", "dl", "--json").stdout)
        assert listed[0]["name"] == REPORT_NAME and listed[0]["kind"] == "download"
        table = daemon_process.ctl("artifacts", "dl", "--kind", "download").stdout
        assert listed[0]["id"] in table and REPORT_NAME in table and run.id in table

        out = daemon_process.base / "out.csv"
        got = daemon_process.ctl("artifacts", "dl", "--get", listed[0]["id"], "-o", str(out))
        assert out.read_bytes() == REPORT and "saved" in got.stdout
        missing = daemon_process.ctl("artifacts", "dl", "--get", "art_nope", check=False)
        assert missing.returncode == 1 and "artifact.not_found" in missing.stderr
        assert "Traceback" not in missing.stderr
        runtime.stop()
    # After the run: --run still finds it.
    again = json.loads(daemon_process.ctl("artifacts", "dl", "--run", run.id, "--json").stdout)
    assert [a["id"] for a in again] == [a["id"] for a in listed]
