"""Replays of recorded runs: the run's frames with its events beside them.

    GET /replay/<run_id>/<token>              the page
    GET /replay/<run_id>/<token>/data         {run, frames [{at, target, w, h}], events, ...}
    GET /replay/<run_id>/<token>/frame/<n>    frame n, image/jpeg

A replay's token is an HMAC of the run id under a secret made at the daemon's start
(`ReplayAccess`), so `runs.replay` can hand out a URL per run with nothing stored, and every
URL stops working when the daemon restarts. The frames come from the run's `recording`
artifact, or from the recording being written while the run is live.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ..base.errors import ApiError
from ..base.model import RunRecord, parse_time
from ..control.recording import Recorder, frame_at, read_index
from ..core.registry import Registry

__all__ = ["ReplayAccess", "Replays"]

MAX_EVENTS = 20_000  # of a run's events on the timeline (the first ones)
_CACHED_INDEXES = 8
# Too frequent to be worth a place on the timeline (its figures are in the dashboard).
_LEFT_OUT = frozenset({"resource.sample"})


class ReplayAccess:
    """The per-run tokens of replay URLs."""

    def __init__(self, base_url: Callable[[], str]) -> None:
        self._secret = secrets.token_bytes(32)
        self._base_url = base_url

    def token(self, run_id: str) -> str:
        digest = hmac.new(self._secret, run_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def url(self, run_id: str) -> str:
        return f"{self._base_url()}/replay/{run_id}/{self.token(run_id)}"

    def check(self, run_id: str, token: str) -> bool:
        return hmac.compare_digest(self.token(run_id), token)


class Replays:
    """What a replay page reads: a run's frame index, frames and timeline."""

    def __init__(self, registry: Registry, recorder: Recorder) -> None:
        self._registry = registry
        self._recorder = recorder
        # run id -> (file size when read, index): a live recording's index is read again
        # once the file has grown.
        self._indexes: collections.OrderedDict[str, tuple[int, list[dict[str, Any]]]] = (
            collections.OrderedDict())

    async def recording_path(self, run: RunRecord) -> Path | None:
        live = self._recorder.live.get(run.id)
        if live is not None:
            return live.path
        store = self._registry.artifacts
        await store.load(run)
        records = store.list(run, "recording")
        return store.path_of(run, records[0]) if records else None

    async def index(self, run: RunRecord) -> list[dict[str, Any]]:
        path = await self.recording_path(run)
        if path is None:
            return []
        try:
            size = (await trio.Path(path).stat()).st_size
        except OSError:
            return []
        cached = self._indexes.get(run.id)
        if cached is not None and cached[0] == size:
            self._indexes.move_to_end(run.id)
            return cached[1]
        index = await trio.to_thread.run_sync(read_index, path)
        self._indexes[run.id] = (size, index)
        while len(self._indexes) > _CACHED_INDEXES:
            self._indexes.popitem(last=False)
        return index

    async def frame(self, run: RunRecord, n: int) -> bytes:
        index = await self.index(run)
        path = await self.recording_path(run)
        if not 0 <= n < len(index) or path is None:
            raise ApiError("artifact.not_found", f"Run {run.id} has no frame {n}.",
                           hint="Ask the replay's data for its frames.", data={"frame": n})
        entry = index[n]
        return await trio.to_thread.run_sync(frame_at, path, entry)

    async def data(self, run_id: str) -> dict[str, Any]:
        run = self._registry.live_counts(self._registry.get_run(run_id))
        index = await self.index(run)
        events = await self._registry.list_events(run, 0, MAX_EVENTS, None)
        timeline = []
        for event in events:
            if event.get("type") in _LEFT_OUT:
                continue
            try:
                at = parse_time(str(event.get("time"))).timestamp() * 1000
            except ValueError:
                continue
            timeline.append({**event, "at": round(at, 1)})
        frames = [{key: entry.get(key) for key in ("at", "target", "w", "h")}
                  for entry in index]
        return {"run": run.to_wire(), "frames": frames, "events": timeline,
                "recording": {"live": run.id in self._recorder.live,
                              "frames": len(frames)}}
