"""The proxy credentials of each runtime (config.proxy's username and password): in a 0600
file beside its runtime.json, outside its file area, removed with the runtime's directory;
only the daemon reads them (to hand them to the run's proxy relay)."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from ..base.runtime_config import ProxyCredentials
from ..store import storage

__all__ = ["ProxyCredentialStore"]


class ProxyCredentialStore:
    def __init__(self, runtimes_dir: Path) -> None:
        self.runtimes_dir = runtimes_dir

    def _path(self, runtime_id: str) -> Path:
        # mode 0600: mkstemp's, kept by the atomic write
        return self.runtimes_dir / runtime_id / "proxy-credentials.json"

    async def set(self, runtime_id: str, credentials: ProxyCredentials | None) -> None:
        """Keep (or, with None, forget) the runtime's credentials."""
        path = self._path(runtime_id)
        if credentials is None:
            path.unlink(missing_ok=True)
            return
        payload = {"username": credentials.username, "password": credentials.password}
        await trio.to_thread.run_sync(storage.write_json_atomic, path, payload)

    def get(self, runtime_id: str) -> ProxyCredentials | None:
        try:
            with open(self._path(runtime_id)) as f:
                obj = json.load(f)
        except FileNotFoundError:
            return None
        return ProxyCredentials(obj["username"], obj["password"])
