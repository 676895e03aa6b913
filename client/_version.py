"""The one place the version is written: the distribution's (pyproject.toml reads it), the
daemon's and the client's."""

__version__ = "0.1.0"
