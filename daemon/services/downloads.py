"""Downloads of a run: `download` events and one artifact per finished download.

Part of the observer (observer.py), on the daemon's connection to the browser (the run's
`BrowserLink`): `Browser.setDownloadBehavior` there, and its browser-level download events.

What Chromium 156 does with two CDP connections (measured with probes against chromium and
chromium-headless-shell; tests/test_artifacts.py checks what this design relies on):

- `Browser.setDownloadBehavior` is per browser context (no `browserContextId` = the default
  context), and the last setter wins: a client that sets its own `downloadPath` after the daemon
  gets its files there, and vice versa.
- `Browser.downloadWillBegin`/`downloadProgress` go to every connection that ever called
  setDownloadBehavior with `eventsEnabled: true`, whoever set the behaviour in force: the
  daemon sees a client's downloads once it has set a behaviour itself.
- The final `downloadProgress` (`state: completed`) carries `filePath`, where the file is, so the
  daemon finds a client's files without knowing its folder. With `allowAndName` the file is
  named by the download's guid; with `allow`, by its suggested name.
- When the connection that set the behaviour in force disconnects, Chromium resets the context
  to the default behaviour: headless-shell then cancels downloads, chromium saves them to
  ~/Downloads. A connection that disconnects after someone else set a newer behaviour changes
  nothing.
- A new browser context has the default behaviour until someone sets one for it.

Hence the design: the daemon sets `allowAndName` into the run's staging folder
(`<run>/artifacts/.incoming`, on the artifacts' filesystem, so a finished file is renamed into
place, never copied) when it connects, and again whenever the runtime's last client socket
closes (the client's behaviour may have died with it). A client such as Playwright that sets
its own folder keeps getting its files there (`download.path()` and `save_as()` work); the
daemon hard-links (or copies) the finished file into the run's artifacts. If a client set its
behaviour before the daemon connected, the proxy reports it in
`registry.download_behaviors[runtime_id]` and the daemon mirrors it rather than override it.
Downloads in browser contexts the clients create follow those clients' settings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from ..base.errors import ApiError
from ..cdp.client import CdpConnection, CdpError
from ..core.artifacts import ArtifactStore
from ..core.runtime import Runtime
from ..store.lost_downloads import STAGING_DIR

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0  # at most one `download` progress event per download per second


class DownloadHost(Protocol):
    """What the observer and its downloads use of the registry."""

    artifacts: ArtifactStore
    # runtime id -> the download behaviour a client set before the daemon (the proxy's note)
    download_behaviors: dict[str, dict[str, Any]]


@attrs.define
class _Download:
    guid: str
    url: str
    name: str
    target: dict[str, Any] | None
    last_progress: float = 0.0


class DownloadTracker:
    """The download side of one run's observer."""

    def __init__(self, registry: DownloadHost, rt: Runtime, cdp: CdpConnection,
                 emit: Any, nursery: trio.Nursery) -> None:
        assert rt.run is not None
        self.registry = registry
        self.rt = rt
        self.run = rt.run
        self.cdp = cdp
        self._emit = emit  # observer's emit(type, data, status=, target=)
        self._nursery = nursery
        self.staging = registry.artifacts.artifacts_dir(rt.run) / STAGING_DIR
        self._downloads: dict[str, _Download] = {}

    # ------------------------------------------------------------------ behaviour

    async def claim(self) -> None:
        """Set the daemon's download behaviour (or mirror a client's that came first)."""
        try:
            await trio.to_thread.run_sync(lambda: self.staging.mkdir(mode=0o700, parents=True,
                                                                     exist_ok=True))
        except OSError as exc:  # the run is ending and its staging dir going with it
            log.info("download staging unavailable for %s: %s", self.rt.id, exc)
            return
        client = self.registry.download_behaviors.get(self.rt.id)
        if client is not None:
            params = {**client, "eventsEnabled": True}
        else:
            params = {"behavior": "allowAndName", "downloadPath": str(self.staging),
                      "eventsEnabled": True}
        await self.cdp.call("Browser.setDownloadBehavior", params)

    async def watch_clients(self) -> None:
        """Take downloads back whenever the runtime's last client socket closes."""
        while True:
            await self.rt.last_socket_closed.park()
            while True:
                before = self.rt.last_activity
                self.registry.download_behaviors.pop(self.rt.id, None)
                try:
                    await self.claim()
                except CdpError as exc:
                    log.warning("could not reset download behaviour of %s: %s", self.rt.id,
                                exc)
                except (trio.BrokenResourceError, trio.ClosedResourceError,
                        trio.TooSlowError):
                    return  # the browser is going away
                # A client that came and went while this claim was on its way closed its
                # socket unseen (attach and detach both move last_activity): claim again.
                if self.rt.open_sockets or self.rt.last_activity == before:
                    break

    async def cleanup(self) -> None:
        """Remove the staging folder if nothing is left in it."""
        def remove() -> None:
            try:
                self.staging.rmdir()
            except OSError:
                pass  # absent, or holds a partial file of a download the run ended under

        await trio.to_thread.run_sync(remove)

    # ------------------------------------------------------------------ events

    def will_begin(self, params: dict[str, Any], target: dict[str, Any] | None) -> None:
        guid = str(params.get("guid", ""))
        name = str(params.get("suggestedFilename") or "download")
        download = _Download(guid, str(params.get("url", "")), name, target)
        self._downloads[guid] = download
        self._emit("download", {"guid": guid, "url": download.url, "suggested_filename": name,
                                "frame_id": params.get("frameId")},
                   status="started", target=target)

    def progress(self, params: dict[str, Any]) -> None:
        guid = str(params.get("guid", ""))
        download = self._downloads.get(guid)
        if download is None:
            return  # began before the daemon was listening
        state = params.get("state")
        sizes = {"received_bytes": params.get("receivedBytes"),
                 "total_bytes": params.get("totalBytes")}
        if state == "inProgress":
            now = trio.current_time()
            if now - download.last_progress >= PROGRESS_INTERVAL_S:
                download.last_progress = now
                self._emit("download", {"guid": guid, **sizes}, status="progress",
                           target=download.target)
        elif state == "completed":
            del self._downloads[guid]
            path = params.get("filePath")
            self._nursery.start_soon(self._finish, download,
                                     Path(path) if isinstance(path, str) else None, sizes)
        elif state == "canceled":
            del self._downloads[guid]
            self._emit("download", {"guid": guid, "name": download.name, "reason": "canceled",
                                    **sizes}, status="failed", target=download.target)

    async def _finish(self, download: _Download, path: Path | None,
                      sizes: dict[str, Any]) -> None:
        source = path or self._guess_path(download)
        ours = source.parent == self.staging
        failure: str | None = None
        record: dict[str, Any] | None = None
        try:
            record = await self.registry.artifacts.add(
                self.rt, kind="download", name=download.name, source=source,
                move=ours, link=not ours, run=self.run, target=download.target,
            )
        except FileNotFoundError:
            failure = "the finished file was gone before the daemon could keep it"
        except OSError as exc:
            failure = f"could not store the file: {exc.strerror or exc}"
        except ApiError:
            return  # the run ended meanwhile: nothing to record it in
        if record is None:
            self._emit("download", {"guid": download.guid, "name": download.name,
                                    "reason": failure, **sizes},
                       status="failed", target=download.target)
            return
        data = {"guid": download.guid, "name": download.name, "artifact_id": record["id"],
                "size_bytes": record["size_bytes"], "sha256": record["sha256"]}
        if not ours:
            data["client_path"] = str(source)  # where the client's own file stays
        self._emit("download", data, status="finished", target=download.target)

    def _guess_path(self, download: _Download) -> Path:
        """Where the file is when the browser did not say (Chromium before filePath)."""
        client = self.registry.download_behaviors.get(self.rt.id)
        if client is None or not client.get("downloadPath"):
            return self.staging / download.guid
        folder = Path(str(client["downloadPath"]))
        if client.get("behavior") == "allow":
            return folder / download.name
        return folder / download.guid
