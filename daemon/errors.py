"""The daemon's one exception family: every error a client can see carries a stable code."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error reported to the client as a wire error object {code, message, hint, data}."""

    def __init__(
        self, code: str, message: str, *, hint: str = "", data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.data = data or {}

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint, "data": self.data}
