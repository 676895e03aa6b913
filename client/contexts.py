"""Which daemon a client talks to: a local socket or a far host, chosen as docker chooses.

Order: an explicit ``host`` > an explicit socket path > ``$BROWSERD_HOST`` >
``$BROWSERD_SOCKET`` > the context named by ``$BROWSERD_CONTEXT``, else the current context >
the local socket's default path (:mod:`browserd.client.paths`). A host is ``ssh://[user@]host
[:port]`` or ``unix:///path/to.sock``.

Contexts are named hosts kept in ``$XDG_CONFIG_HOME/browserd/contexts.json`` (default
``~/.config``), with the current one: ``browserctl context create/ls/use/rm``. The context
``default`` is always there and means the local socket; it cannot be changed.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .errors import ContextError, InvalidHost
from .paths import SOCKET_ENV
from .paths import socket_path as resolve_socket_path
from .ssh import REMOTE_ENV, SshTarget

__all__ = ["CONTEXT_ENV", "HOST_ENV", "ContextStore", "Destination", "destination"]

HOST_ENV = "BROWSERD_HOST"
CONTEXT_ENV = "BROWSERD_CONTEXT"
DEFAULT = "default"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NAME_HINT = ("A context name is 1-64 letters, digits, '.', '_' or '-', starting with a letter "
              "or digit.")


@attrs.frozen
class Destination:
    """Where a client connects: ``socket_path`` here, or ``ssh`` (with the far
    ``browserctl`` to run there)."""

    socket_path: Path | None = None
    ssh: SshTarget | None = None
    remote_browserctl: str | None = None

    def __str__(self) -> str:
        return str(self.ssh) if self.ssh is not None else f"unix://{self.socket_path}"


def parse_host(host: str, *, remote_browserctl: str | None = None) -> Destination:
    """A Destination for ``ssh://...`` or ``unix:///path``; InvalidHost otherwise."""
    if host.startswith("ssh://"):
        return Destination(ssh=SshTarget.parse(host), remote_browserctl=remote_browserctl)
    if host.startswith("unix://"):
        path = host[len("unix://"):]
        if os.path.isabs(path):
            return Destination(socket_path=Path(path))
    raise InvalidHost.make(
        f"{host!r} is not a daemon address",
        "Write ssh://[user@]host[:port] for a daemon on another machine, or "
        "unix:///path/to/browserd.sock for a local socket.",
    )


def destination(
    host: str | None = None,
    socket_path: str | os.PathLike[str] | None = None,
    *,
    remote_browserctl: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Destination:
    """Where to connect, by the order of this module's docstring."""
    env = os.environ if environ is None else environ
    remote = remote_browserctl or env.get(REMOTE_ENV) or None
    if host:
        return parse_host(host, remote_browserctl=remote)
    if socket_path is not None and os.fspath(socket_path):
        return Destination(socket_path=Path(socket_path))
    if env.get(HOST_ENV):
        return parse_host(env[HOST_ENV], remote_browserctl=remote)
    if not env.get(SOCKET_ENV):
        store = ContextStore.from_env(env)
        name = env.get(CONTEXT_ENV) or store.current()
        if name and name != DEFAULT:
            entry = store.get(name)
            return parse_host(entry["host"],
                              remote_browserctl=remote or entry.get("remote_browserctl"))
    return Destination(socket_path=resolve_socket_path(None, environ=env))


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ContextError.make(f"{name!r} is not a valid context name", _NAME_HINT)
    return name


@attrs.define
class ContextStore:
    """The contexts file: ``{"current": NAME | null, "contexts": {NAME: {host, ...}}}``."""

    path: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ContextStore:
        env = os.environ if environ is None else environ
        xdg = env.get("XDG_CONFIG_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else Path(env.get("HOME") or Path.home()) / ".config"
        return cls(base / "browserd" / "contexts.json")

    def _load(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"current": None, "contexts": {}}
        except (OSError, ValueError) as exc:
            raise ContextError.make(f"cannot read {self.path}: {exc}",
                                    "Fix or delete that file.") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("contexts", {}), dict):
            raise ContextError.make(f"{self.path} is not a contexts file",
                                    "Fix or delete that file.")
        doc.setdefault("contexts", {})
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".contexts.")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(doc, out, indent=2, sort_keys=True)
                out.write("\n")
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    def current(self) -> str | None:
        value = self._load().get("current")
        return value if isinstance(value, str) else None

    def list(self) -> dict[str, dict[str, Any]]:
        """Every context by name, ``default`` (the local socket) first."""
        contexts: dict[str, dict[str, Any]] = {DEFAULT: {"host": "", "description":
                                                         "the local daemon's socket"}}
        contexts.update(self._load()["contexts"])
        return contexts

    def get(self, name: str) -> dict[str, Any]:
        entry = self._load()["contexts"].get(check_name(name))
        if not isinstance(entry, dict) or not isinstance(entry.get("host"), str):
            raise ContextError.make(f"no context named {name!r}",
                                    "List them with `browserctl context ls`.")
        return entry

    def create(self, name: str, host: str, *, description: str = "",
               remote_browserctl: str | None = None) -> dict[str, Any]:
        check_name(name)
        parse_host(host)  # refused now, not at first use
        doc = self._load()
        if name == DEFAULT or name in doc["contexts"]:
            raise ContextError.make(f"a context named {name!r} exists already",
                                    f"Pick another name, or `browserctl context rm {name}` first.")
        entry: dict[str, Any] = {"host": host, "description": description}
        if remote_browserctl:
            entry["remote_browserctl"] = remote_browserctl
        doc["contexts"][name] = entry
        self._save(doc)
        return entry

    def use(self, name: str) -> None:
        """Make ``name`` current (``default``: the local socket)."""
        doc = self._load()
        if name != DEFAULT:
            self.get(name)
        doc["current"] = None if name == DEFAULT else name
        self._save(doc)

    def remove(self, name: str) -> None:
        doc = self._load()
        self.get(name)
        if doc.get("current") == name:
            raise ContextError.make(f"context {name!r} is the current one",
                                    "Switch first: browserctl context use default.")
        del doc["contexts"][name]
        self._save(doc)
