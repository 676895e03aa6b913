"""The socket path rule shared by the daemon and the clients."""

from __future__ import annotations

from pathlib import Path

from browserd.client.paths import default_socket_path, socket_path


def test_explicit_path_wins(tmp_path: Path) -> None:
    env = {"BROWSERD_SOCKET": "/env.sock", "XDG_RUNTIME_DIR": "/xdg"}
    assert socket_path(tmp_path / "s.sock", environ=env) == tmp_path / "s.sock"
    assert socket_path(str(tmp_path / "s.sock"), environ=env) == tmp_path / "s.sock"


def test_env_socket_beats_xdg() -> None:
    env = {"BROWSERD_SOCKET": "/env.sock", "XDG_RUNTIME_DIR": "/xdg"}
    assert socket_path(None, environ=env) == Path("/env.sock")
    assert socket_path("", environ=env) == Path("/env.sock")


def test_xdg_runtime_dir() -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/1000", "BROWSERD_SOCKET": ""}
    assert socket_path(environ=env) == Path("/run/user/1000/browserd/browserd.sock")


def test_relative_xdg_runtime_dir_is_ignored(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": "relative/dir"}
    path = default_socket_path(environ=env, uid=4242, run_user_root=tmp_path)
    assert path == Path("/tmp/browserd-4242/browserd.sock")


def test_run_user_dir_when_xdg_unset(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    path = default_socket_path(environ={}, uid=4242, run_user_root=tmp_path)
    assert path == tmp_path / "4242" / "browserd" / "browserd.sock"


def test_tmp_fallback_without_run_user_dir(tmp_path: Path) -> None:
    path = default_socket_path(environ={}, uid=4242, run_user_root=tmp_path)
    assert path == Path("/tmp/browserd-4242/browserd.sock")
