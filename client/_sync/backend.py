"""The blocking side of ``_async/backend.py``: blocking file work runs in place."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_blocking(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)``, here and now."""
    return fn(*args)
