"""The SSH path to a daemon on another machine: ``ssh HOST browserctl dial-stdio`` as the byte pipe.

A client with ``host="ssh://[user@]host[:port]"`` starts the system ``ssh`` (so the user's
``~/.ssh/config``, agent and known hosts apply; ``$BROWSERD_SSH_COMMAND`` replaces the ``ssh``
command line, as ``GIT_SSH_COMMAND`` does for git) with one end of a socketpair as its stdin and
stdout. The transports speak to that end exactly as to the daemon's Unix socket; only
connecting and closing differ, and they are here.

The same ssh process is the master of a control socket in a private directory, so CDP
endpoints are reached through local forwards added to it (``ssh -O forward``): one SSH
connection per client, loopback on both sides. Closing the link ends ssh (SIGTERM, then
SIGKILL) and with it every forward. Nothing here runs in the background: a client that is
never closed leaves an ssh whose stdin is gone when the interpreter exits, and ssh then ends.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import weakref
from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import attrs

from .errors import DaemonUnavailable, InvalidHost

__all__ = ["REMOTE_ENV", "SSH_COMMAND_ENV", "SshLink", "SshTarget", "proxy_address",
           "run_far_browserctl"]

SSH_COMMAND_ENV = "BROWSERD_SSH_COMMAND"
REMOTE_ENV = "BROWSERD_REMOTE_BROWSERCTL"
_STDERR_TAIL = 600  # characters of ssh's stderr quoted in an error
_FORWARD_TRIES = 3
_TERM_WAIT_S = 1.0
_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9a-f:.]+")  # a name, an IPv4 or an IPv6 address
_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")


@attrs.frozen
class SshTarget:
    """Where ``ssh://[user@]host[:port]`` points."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, url: str) -> SshTarget:
        """Parse an ``ssh://`` URL; InvalidHost names what is wrong with it."""
        hint = "Write it as ssh://[user@]host[:port], e.g. ssh://me@build1 or ssh://build1:2222."
        parts = urlsplit(url)
        if parts.scheme != "ssh":
            raise InvalidHost.make(f"{url!r} is not an ssh:// URL", hint)
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
            raise InvalidHost.make(f"{url!r} has more than [user@]host[:port]", hint)
        try:
            port = parts.port
        except ValueError:
            raise InvalidHost.make(f"{url!r} has a bad port", hint) from None
        host, user = parts.hostname or "", parts.username
        if not _HOST.fullmatch(host) or host.startswith("-"):
            raise InvalidHost.make(f"{url!r} names no valid host", hint)
        if user is not None and not _USER.fullmatch(user):
            raise InvalidHost.make(f"{url!r} names no valid user", hint)
        return cls(host, user or None, port)

    @property
    def destination(self) -> str:
        """The ``[user@]host`` argument of ssh."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"ssh://{self.user + '@' if self.user else ''}{host}{port}"


def ssh_command(environ: Mapping[str, str]) -> list[str]:
    """The ssh command line to start with: ``$BROWSERD_SSH_COMMAND`` split as a shell does, or
    ``ssh``."""
    words = shlex.split(environ.get(SSH_COMMAND_ENV, ""))
    return words or ["ssh"]


def run_far_browserctl(target: SshTarget, words: list[str], *, remote_browserctl: str | None,
                       connect_timeout: float,
                       environ: Mapping[str, str] | None = None) -> int:
    """Run ``browserctl WORDS`` on the far host (for commands about that machine, such as
    ``doctor``), its output printed here as it comes; returns its exit status (ssh's own
    failures are 255, and ssh has said why on stderr)."""
    env = os.environ if environ is None else environ
    argv = ssh_command(env)
    if target.port:
        argv += ["-p", str(target.port)]
    argv += [*_unattended(connect_timeout), "--", target.destination,
             " ".join([_far_browserctl(remote_browserctl, env), *map(shlex.quote, words)])]
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, check=False).returncode
    except OSError as exc:
        raise _cannot_run(argv[0], target, exc) from None


def _far_browserctl(remote_browserctl: str | None, environ: Mapping[str, str]) -> str:
    """The far ``browserctl``: the one given, else ``$BROWSERD_REMOTE_BROWSERCTL``, else
    ``browserctl`` on the far PATH."""
    return remote_browserctl or environ.get(REMOTE_ENV, "") or "browserctl"


def _unattended(connect_timeout: float) -> list[str]:
    """The options of every ssh started here: no prompt, a bounded connect, and no
    RemoteCommand or RequestTTY of the user's config (they would clash with ours)."""
    return ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(math.ceil(connect_timeout), 1)}",
            "-o", "RemoteCommand=none", "-T"]


def _cannot_run(program: str, target: SshTarget, exc: OSError) -> DaemonUnavailable:
    return DaemonUnavailable.make(
        f"cannot run {program!r} to reach {target}: {exc.strerror or exc}",
        "Install OpenSSH's client (apt install openssh-client), or point "
        f"{SSH_COMMAND_ENV} at an ssh command.",
        {"host": str(target)},
    )


@attrs.define(eq=False)
class SshLink:
    """One ssh process: the byte pipe to the far daemon and the master of the forwards."""

    target: SshTarget
    command: list[str]
    remote_browserctl: str
    _dir: str | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _stderr: IO[bytes] | None = None
    # Removes the control directory of a link nobody closed, when it is collected or the
    # interpreter exits (ssh itself ends then: its stdin closes).
    _leftover: weakref.finalize[Any, Any] | None = None
    _forwards: dict[tuple[str, int], int] = attrs.field(factory=dict)
    _origins: dict[str, tuple[str, int]] = attrs.field(factory=dict)  # lease id -> its forward

    @classmethod
    def from_env(cls, target: SshTarget, *, remote_browserctl: str | None = None,
                 environ: Mapping[str, str] | None = None) -> SshLink:
        """A link with the ssh command of ``$BROWSERD_SSH_COMMAND`` and the far
        ``browserctl`` given (else ``$BROWSERD_REMOTE_BROWSERCTL``, else ``browserctl``)."""
        env = os.environ if environ is None else environ
        return cls(target, ssh_command(env), _far_browserctl(remote_browserctl, env))

    @property
    def control_path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "ctl")

    def _base(self) -> list[str]:
        base = [*self.command, "-o", f"ControlPath={self.control_path}"]
        if self.target.port:
            base += ["-p", str(self.target.port)]
        return base

    def start(self, connect_timeout: float) -> socket.socket:
        """Start ssh; returns this side's end of its stdin/stdout (non-blocking)."""
        # 0700: the control socket's home. In /tmp, not $TMPDIR: a socket path has at most
        # 107 bytes, and some TMPDIRs (macOS) leave too little of them.
        self._dir = tempfile.mkdtemp(prefix="browserd-ssh-",
                                     dir="/tmp" if os.path.isdir("/tmp") else None)
        self._leftover = weakref.finalize(self, shutil.rmtree, self._dir, True)
        argv = [*self._base(), *_unattended(connect_timeout),
                "-o", "ControlMaster=yes", "-o", "ControlPersist=no",
                "--", self.target.destination, f"{self.remote_browserctl} dial-stdio"]
        ours, theirs = socket.socketpair()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (kept while ssh runs)
        try:
            # Its own session: ^C in the terminal interrupts this program, which then closes
            # ssh in order, instead of killing ssh under a call.
            self._proc = subprocess.Popen(argv, stdin=theirs.fileno(), stdout=theirs.fileno(),
                                          stderr=self._stderr,
                                          start_new_session=True)
        except OSError as exc:
            ours.close()
            self.close()
            raise _cannot_run(self.command[0], self.target, exc) from None
        finally:
            theirs.close()
        ours.setblocking(False)
        return ours

    def exit_status(self) -> int | None:
        """ssh's exit status, or None while it runs."""
        return None if self._proc is None else self._proc.poll()

    def failure(self, timed_out: float | None = None) -> DaemonUnavailable:
        """Why the daemon could not be reached: ssh's exit status and the end of its stderr,
        with a hint for the usual causes. ``timed_out``: the connect timeout that expired."""
        status = self.exit_status()
        tail = self._stderr_tail()
        where = str(self.target)
        if timed_out is not None and status is None:
            what = f"no answer from the daemon on {where} through ssh within {timed_out:g} s"
        else:
            what = f"could not reach the daemon on {where} through ssh (exit status {status})"
        message = f"{what}: {tail}" if tail else what
        data = {"host": where, "exit_status": status, "stderr": tail}
        return DaemonUnavailable.make(message, self._hint(status, tail), data)

    def _hint(self, status: int | None, tail: str) -> str:
        port = f"-p {self.target.port} " if self.target.port else ""
        dest = f"{port}{self.target.destination}"  # as typed after `ssh`
        lowered = tail.lower()
        if "daemon_unavailable" in lowered:  # the far browserctl ran, and said so
            return (f"browserd is not running on {self.target.host} (or not at the socket its "
                    "browserctl looks for): start it there, e.g. systemctl --user start browserd.")
        if status == 127 or "command not found" in lowered:  # the far shell's word for it
            return (f"{self.remote_browserctl!r} was not found on {self.target.host}: install "
                    f"browserd there, or set {REMOTE_ENV} to its path on that machine (for "
                    "example ~/.local/bin/browserctl).")
        if "host key" in lowered:  # verification failed, or none is known for the host
            return (f"ssh does not know {self.target.host}'s host key (or it changed): connect "
                    f"once with `ssh {dest}` to check and accept it.")
        if "permission denied" in lowered:
            return (f"ssh could not log in to {dest} without asking: load the key into "
                    "ssh-agent or name it in ~/.ssh/config (IdentityFile), and check "
                    f"authorized_keys on {self.target.host}.")
        if any(word in lowered for word in ("connection refused", "could not resolve",
                                            "timed out", "no route", "unreachable")):
            return (f"Check the host name and port, and that sshd runs on {self.target.host} "
                    f"(try `ssh {dest} true`).")
        return f"Run `ssh {dest} {self.remote_browserctl} dial-stdio` by hand to see what fails."

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            size = self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(size - 4 * _STDERR_TAIL, 0))
            text = self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(lines)[-_STDERR_TAIL:]

    # -- forwards ------------------------------------------------------------------------

    def forward(self, remote_host: str, remote_port: int, timeout: float) -> int:
        """A local loopback port forwarded to ``remote_host:remote_port`` on the far side
        (made once per address); DaemonUnavailable if ssh refuses."""
        key = (remote_host, remote_port)
        if key in self._forwards:
            return self._forwards[key]
        error = ""
        for _ in range(_FORWARD_TRIES):  # a free port may be taken before ssh binds it
            local = _free_port()
            spec = f"127.0.0.1:{local}:{remote_host}:{remote_port}"
            try:
                done = self._control("forward", spec, timeout)
            except subprocess.TimeoutExpired:
                error = f"no answer from ssh within {timeout:g} s"
                break
            except OSError as exc:
                error = str(exc)
                break
            if done.returncode == 0:
                self._forwards[key] = local
                return local
            error = done.stderr.decode("utf-8", "replace").strip()
        raise DaemonUnavailable.make(
            f"ssh refused to forward a local port to {remote_host}:{remote_port} on "
            f"{self.target}: {error}",
            "Check that the far sshd allows TCP forwarding (AllowTcpForwarding local or yes), "
            "and that this client is still connected.",
            {"host": str(self.target)},
        )

    def unforward(self, remote_host: str, remote_port: int, timeout: float) -> None:
        """Close the forward to that address, if there is one (best effort)."""
        local = self._forwards.pop((remote_host, remote_port), None)
        if local is not None and self.exit_status() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._control("cancel", f"127.0.0.1:{local}:{remote_host}:{remote_port}",
                              timeout)

    def _control(self, op: str, spec: str, timeout: float) -> subprocess.CompletedProcess[bytes]:
        argv = [*self._base(), "-O", op, "-L", spec, "--", self.target.destination]
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)

    def localize(self, endpoint: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The endpoint with every URL pointing at a local forward of its far address."""
        out = dict(endpoint)
        for key in ("url", "http_url", "browser_url"):
            value = endpoint.get(key)
            if isinstance(value, str) and value:
                out[key] = self.localize_url(value, timeout)
        return out

    def localize_url(self, url: str, timeout: float) -> str:
        """``url`` with its host and port replaced by a local forward of them."""
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            return url
        local = self.forward(parts.hostname, parts.port, timeout)
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{local}"))

    def localize_lease(self, lease: dict[str, Any], timeout: float) -> dict[str, Any]:
        """A ``connections.create`` result with its endpoint made local (see :meth:`localize`);
        the forward of the lease's own origin is remembered, to close with the lease."""
        endpoint = lease.get("endpoint")
        if not isinstance(endpoint, dict):
            return lease
        origin = urlsplit(str(endpoint.get("browser_url") or ""))
        local = self.localize(endpoint, timeout)
        if origin.hostname and origin.port and isinstance(lease.get("id"), str):
            self._origins[lease["id"]] = (origin.hostname, origin.port)
        return {**lease, "endpoint": local}

    def forget_origin(self, lease_id: str, timeout: float) -> None:
        """The lease is revoked: close the forward of its origin (its far listener is gone)."""
        address = self._origins.pop(lease_id, None)
        if address is not None:
            self.unforward(*address, timeout)

    # -- closing -------------------------------------------------------------------------

    def terminate(self) -> None:
        """Ask ssh to end (SIGTERM); every forward ends with it."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """End ssh (SIGKILL if SIGTERM was not enough by now), reap it, remove the control
        directory. Waits at most a moment: call :meth:`terminate` first and let it go."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(_TERM_WAIT_S)
        self._forwards.clear()
        self._origins.clear()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._leftover is not None:
            self._leftover()  # removes the control directory, once
            self._leftover = None
        self._dir = None

    def close_now(self) -> None:
        """:meth:`terminate`, a short wait for ssh to end on its own, then :meth:`close`."""
        self.terminate()
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(_TERM_WAIT_S)
        self.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


def proxy_address(status: Any) -> tuple[str, int] | None:
    """The far CDP proxy's (host, port), from a ``daemon.status`` result."""
    base = status.get("cdp_base_url") if isinstance(status, dict) else None
    if not isinstance(base, str):
        return None
    parts = urlsplit(base)
    if parts.hostname is None or parts.port is None:
        return None
    return parts.hostname, parts.port


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
