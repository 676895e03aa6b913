"""browserd daemon: supervises Chromium runtimes and serves the msgpack-RPC API."""

from browserd.client._version import __version__

__all__ = ["__version__"]
