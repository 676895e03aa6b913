"""The user data directory of each run's browser: a persistent profile held for the run, or
an ephemeral directory made for it and removed after it (in a worker thread, which a stop
waits for)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import trio

from ..base.model import RunRecord
from ..browser.profiles import ProfileStore
from ..store.roots import remove_tree
from .runtime import Runtime

__all__ = ["RunProfiles"]


class RunProfiles:
    """`acquire` at a run's start, `release` at its end; `removal` while an ephemeral one goes."""

    def __init__(self, state_dir: Path, profiles: ProfileStore,
                 nursery: Callable[[], trio.Nursery]) -> None:
        """`nursery`: where removals run (the registry's, once it serves)."""
        self.ephemeral_root = state_dir / "ephemeral"
        self.profiles = profiles
        self._nursery = nursery
        # runtime id -> the removal of its last ephemeral profile, while it runs (stop waits)
        self._removals: dict[str, trio.Event] = {}

    def acquire(self, rt: Runtime, run: RunRecord) -> None:
        """Give the run its browser's user data dir: the runtime's profile, held for the
        run (`profile.in_use` if another holds it), or a fresh ephemeral directory."""
        name = rt.record.profile
        if name is None:
            rt.user_data_dir = self.ephemeral_root / run.id
            rt.user_data_dir.mkdir(mode=0o700, parents=True)
            rt.ephemeral = True
            return
        rt.held_profile = self.profiles.acquire(name, {
            "runtime_id": rt.id, "space": rt.record.space, "name": rt.record.name,
            "run_id": run.id, "daemon_pid": os.getpid(),
        })
        rt.user_data_dir, rt.ephemeral = rt.held_profile.user_data_dir, False

    def release(self, rt: Runtime) -> None:
        """The run has ended: let its profile go, or remove its ephemeral directory."""
        if rt.held_profile is not None:
            self.profiles.release(rt.held_profile)
            rt.held_profile = None
        if rt.ephemeral and rt.user_data_dir is not None:
            self._remove_ephemeral(rt.id, rt.user_data_dir)
        rt.user_data_dir, rt.ephemeral = None, False

    def _remove_ephemeral(self, runtime_id: str, user_data_dir: Path) -> None:
        """The run's profile is gone from its path now; its files go in a worker thread.

        A used profile holds thousands of files: removing them on the event loop stalled every
        client for tens of milliseconds per stop. The rename is one syscall, so the path is
        free at once; `stop` waits for the removal (its next launch then does not compete
        with it); the removal is shielded, so a shutting-down daemon still finishes it (and
        start-up removes whatever a crash left in ephemeral/).
        """
        root = self.ephemeral_root
        doomed = user_data_dir.with_name(f".removing-{user_data_dir.name}")
        try:
            user_data_dir.rename(doomed)
        except OSError:
            doomed = user_data_dir  # gone already, or a rename refused: remove it in place
        removed = trio.Event()
        self._removals[runtime_id] = removed

        async def remove() -> None:
            try:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(remove_tree, doomed, root)
            finally:
                removed.set()
                if self._removals.get(runtime_id) is removed:
                    del self._removals[runtime_id]

        try:
            self._nursery().start_soon(remove)
        except RuntimeError:  # the nursery has closed (daemon exiting)
            remove_tree(doomed, root)
            removed.set()

    def removal(self, runtime_id: str) -> trio.Event | None:
        """The removal of the runtime's last ephemeral profile, while it runs."""
        return self._removals.get(runtime_id)
