"""sd_notify(3) in pure Python: tell the service manager how the daemon is doing.

One datagram of newline-separated ``KEY=VALUE`` lines goes to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). Without that variable every
call is a no-op, so the daemon runs the same under systemd, under a test and in a terminal.

The variables are read once, at start, and removed from the environment: nothing the daemon
starts later (a browser, ``chromium --version``) may talk to the service manager in its name.
Sending never blocks and never raises: as sd_notify(3) advises, a lost notification is not the
daemon's problem to solve.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

import attrs

__all__ = ["NOTIFY_ENV", "Notifier"]

log = logging.getLogger(__name__)

# The variables of the notify and watchdog protocols (sd_notify(3), sd_watchdog_enabled(3)).
NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@attrs.frozen
class Notifier:
    """Where notifications go (None: nowhere) and the watchdog interval asked for (if any)."""

    address: str | None = None
    watchdog_usec: int | None = None

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, *,
                     unset: bool = True) -> Notifier:
        """Read ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``/``$WATCHDOG_PID``, then remove them.

        The watchdog is honoured only when ``$WATCHDOG_PID`` is unset or names this process
        (a variable inherited from a parent that was watched is not ours to answer).
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address and not address.startswith(("/", "@")):
            # Newer managers also speak vsock; this daemon only ever runs beside its manager.
            log.warning("ignoring NOTIFY_SOCKET=%s: not a Unix socket address", address)
            address = ""
        watchdog = _watchdog_usec(env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID"))
        if unset:
            for name in NOTIFY_ENV:
                env.pop(name, None)
        return cls(address or None, watchdog)

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """The manager's watchdog timeout in seconds; ping at least twice within it."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 1e6

    def send(self, *lines: str) -> bool:
        """Send one notification of ``KEY=VALUE`` lines; True if it was handed to the kernel."""
        if self.address is None or not lines:
            return False
        if any("\n" in line for line in lines):
            raise ValueError("a notification line may not contain a newline")
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        except OSError as exc:
            log.debug("cannot open a notify socket: %s", exc)
            return False
        with sock:
            try:
                # MSG_DONTWAIT: a manager that stopped reading must never stall the event loop.
                sock.sendto("\n".join(lines).encode(), socket.MSG_DONTWAIT, target)
            except OSError as exc:
                log.debug("notification %s not sent: %s", lines[0], exc)
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: the socket is bound and the state reconciled."""
        return self.send("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """``STATUS=``: one line a human reads in ``systemctl status``."""
        return self.send(f"STATUS={_one_line(text)}")

    def watchdog(self, status: str | None = None) -> bool:
        """``WATCHDOG=1``: a health round passed."""
        return self.send("WATCHDOG=1", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: an orderly shutdown has begun."""
        return self.send("STOPPING=1", *_status(status))

    def extend_timeout(self, seconds: float, status: str | None = None) -> bool:
        """``EXTEND_TIMEOUT_USEC=``: the current phase (here: stopping) needs this much more
        time from now; send it again before it runs out."""
        return self.send(f"EXTEND_TIMEOUT_USEC={round(seconds * 1e6)}", *_status(status))


def _watchdog_usec(usec: str | None, pid: str | None) -> int | None:
    if not usec:
        return None
    try:
        value = int(usec)
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", usec, pid)
        return None
    return value if value > 0 else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _status(text: str | None) -> tuple[str, ...]:
    return (f"STATUS={_one_line(text)}",) if text else ()
