"""Giving freed memory back to the system, so the daemon's RSS follows its load down.

A burst of clients (fifty RPC connections, a hundred CDP sockets) frees its buffers when it
ends, but glibc's allocator keeps most of those pages: receive buffers of 256 KiB are allocated
and shrunk on every read, which fragments the heap, and free chunks in the middle of it are
never returned. Without help a daemon that once served a burst keeps that peak RSS for good
(measured here: +30% after half a minute of load, all of it given back by one malloc_trim). So every
TRIM_INTERVAL_S the daemon asks glibc to return its free pages; a trim of a heap of tens of MiB
takes well under a millisecond. Where there is no malloc_trim (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

import trio

__all__ = ["TRIM_INTERVAL_S", "release_free_memory"]

log = logging.getLogger("browserd")

TRIM_INTERVAL_S = 10.0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


async def release_free_memory(
    interval_s: float = TRIM_INTERVAL_S,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled: every `interval_s`, return the allocator's free pages."""
    trim = _malloc_trim()
    task_status.started()
    if trim is None:
        log.debug("no malloc_trim in this C library: freed memory stays with the daemon")
        return
    while True:
        await trio.sleep(interval_s)
        trim(0)
