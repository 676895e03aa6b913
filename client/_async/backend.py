"""What the generated blocking twin does differently, beyond dropping ``await``: blocking file
work here runs in a worker thread, so it never stalls the event loop. (``_sync/backend.py``
runs it in place.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread

T = TypeVar("T")


async def run_blocking(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a worker thread."""
    return await anyio.to_thread.run_sync(fn, *args)
