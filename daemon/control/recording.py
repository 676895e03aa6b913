"""Run recordings: the screencast of a recorded run's active page, kept as an artifact.

A run records when it was launched with `record=True` (or config `record.default`). The
recorder is a run service and a viewer like any other (view.py): the runtime's screencast
runs for the whole run, with the recording's caps (JPEG `record.quality`, at most
`record.max_side` pixels a side), and every viewer of the runtime shares it. It keeps at
most `record.max_fps` frames a second (the newest one when several came in between) and
stops keeping frames once the file reaches `record.budget_mb` (`recording.budget_reached`
in the run's log). As the run ends, the file becomes an artifact of kind `recording`.

The file, `recording.frames`, has one line per frame: a JSON header, a tab, the JPEG in
base64 (as Chromium sends it), a newline. The header is `{"at": epoch ms, "target": page id,
"w": width, "h": height}`, so an index is read without decoding any picture (`read_index`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import IO, Any

import attrs
import trio

from ..base.config import RecordConfig
from ..base.errors import ApiError
from ..core.artifacts import ArtifactStore
from ..core.runtime import Runtime
from .view import Viewer, Views

__all__ = ["FILE_NAME", "Recorder", "Recording", "frame_at", "read_index"]

log = logging.getLogger(__name__)

FILE_NAME = "recording.frames"
CONTENT_TYPE = "application/x-browserd-recording"


@attrs.define(eq=False)
class Recording:
    """One run's recording while it is written."""

    artifact_id: str
    path: Path
    budget: int
    frames: int = 0
    size: int = 0
    truncated: bool = False
    _file: IO[bytes] | None = None
    _digest: Any = attrs.Factory(hashlib.sha256)
    _lock: threading.Lock = attrs.Factory(threading.Lock)  # a write against the end

    def open(self) -> None:  # in a worker thread
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, line: bytes) -> bool:  # in a worker thread; False once over the budget
        with self._lock:
            if self._file is None or self.size + len(line) > self.budget:
                return False
            self._file.write(line)
            self._digest.update(line)
            self.size += len(line)
            self.frames += 1
            return True

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    @property
    def sha256(self) -> str:
        return str(self._digest.hexdigest())


class Recorder:
    """The run service that records the runs that ask for it."""

    def __init__(self, views: Views, artifacts: ArtifactStore, config: RecordConfig) -> None:
        self.views = views
        self.artifacts = artifacts
        self.config = config
        self.live: dict[str, Recording] = {}  # run id -> its recording, while it runs

    def wanted(self, rt: Runtime) -> bool:
        record = rt.record.config.record
        return self.config.default if record is None else record

    async def attend(self, rt: Runtime) -> None:
        if not self.wanted(rt) or rt.run is None:
            return
        run = rt.run
        artifact_id, directory = self.artifacts.new_dir(run)
        recording = Recording(artifact_id, directory / FILE_NAME,
                              budget=self.config.budget_mb * 1024 * 1024)
        await trio.to_thread.run_sync(recording.open)
        self.live[run.id] = recording
        side = self.config.max_side
        self.views.settings[rt.id] = {"format": "jpeg", "quality": self.config.quality,
                                      "maxWidth": side, "maxHeight": side, "everyNthFrame": 1}
        try:
            async with self.views.watch(rt, control=False) as viewer:
                await self._keep_frames(rt, recording, viewer)
        except ApiError as exc:  # no control link: the browser is going away
            log.info("recording of run %s ended: %s", run.id, exc.message)

    async def _keep_frames(self, rt: Runtime, recording: Recording, viewer: Viewer) -> None:
        interval = 1.0 / self.config.max_fps
        while True:
            await viewer.wait_news(1.0)
            frame = viewer.frame
            viewer.frame = viewer.tabs = None
            if frame is None:
                continue
            message = json.loads(frame)
            meta = message.get("meta") or {}
            header = {"at": round(time.time() * 1000, 1), "target": message.get("target"),
                      "w": meta.get("deviceWidth"), "h": meta.get("deviceHeight")}
            line = (json.dumps(header).encode() + b"\t" + str(message["data"]).encode()
                    + b"\n")
            if not await trio.to_thread.run_sync(recording.write, line):
                recording.truncated = True
                if rt.log is not None:
                    rt.log.append("recording.budget_reached",
                                  {"artifact_id": recording.artifact_id,
                                   "bytes": recording.size, "frames": recording.frames})
                await trio.sleep_forever()  # the screencast goes on for the viewers
            await trio.sleep(interval)  # the frame rate cap: the newest frame after it

    def run_ending(self, rt: Runtime) -> None:
        """A run end hook: the run's recording becomes its artifact (if it has frames)."""
        if rt.run is None or (recording := self.live.pop(rt.run.id, None)) is None:
            return
        self.views.settings.pop(rt.id, None)
        recording.close()
        if recording.frames == 0:
            return
        self.artifacts.register_nowait(
            rt, artifact_id=recording.artifact_id, kind="recording", dest=recording.path,
            size=recording.size, sha256=recording.sha256, content_type=CONTENT_TYPE,
            extra={"frames": recording.frames, "truncated": recording.truncated})


# -- reading a recording (worker threads) ----------------------------------------------------


def read_index(path: Path) -> list[dict[str, Any]]:
    """Each frame's header, with `offset` and `length` of its line in the file."""
    index = []
    offset = 0
    with open(path, "rb") as file:
        for line in file:
            head, tab, _ = line.partition(b"\t")
            if tab and line.endswith(b"\n"):  # a line cut by a crash is left out
                try:
                    header = json.loads(head)
                except ValueError:
                    header = None
                if isinstance(header, dict):
                    index.append({**header, "offset": offset, "length": len(line)})
            offset += len(line)
    return index


def frame_at(path: Path, entry: dict[str, Any]) -> bytes:
    """The JPEG bytes of one frame of the index."""
    with open(path, "rb") as file:
        file.seek(int(entry["offset"]))
        line = file.read(int(entry["length"]))
    return base64.b64decode(line.partition(b"\t")[2].strip())
