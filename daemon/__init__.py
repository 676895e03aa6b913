"""browserd daemon: supervises Chromium runtimes and serves the msgpack-RPC API."""

__version__ = "0.1.0"
