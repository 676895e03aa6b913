"""A throwaway OpenSSH server on a free loopback port, for the SSH path (tests and bench).

Everything is its own, in one directory: a host key, a client key authorized for the current
user, an sshd_config (public keys only, no PAM, forwarding to loopback allowed) and the known
hosts file the client uses. ``ssh_command`` is what BROWSERD_SSH_COMMAND is set to, so the
user's own ~/.ssh never plays a part. Sessions get ``session_env`` through sshd's SetEnv (the
far daemon's socket, here). The server runs in the foreground (-D) as the test's child, and
``stop`` ends and reaps it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# scripts/ensure-ssh.sh unpacks Debian's sshd into the venv (never a service); else the
# system's.
_UNPACKED = Path(sys.prefix) / "openssh" / "usr" / "sbin" / "sshd"
SSHD = str(_UNPACKED) if _UNPACKED.exists() else "/usr/sbin/sshd"


def sshd_available() -> str | None:
    """None if sshd and ssh-keygen can run here; else why not."""
    for program in (SSHD, shutil.which("ssh-keygen"), shutil.which("ssh")):
        if program is None or not os.access(program, os.X_OK):
            return "OpenSSH is not installed (scripts/ensure-ssh.sh installs it)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Sshd:
    """sshd -D -f <own config> on 127.0.0.1:<free port>."""

    def __init__(self, base: Path, session_env: dict[str, str] | None = None) -> None:
        self.base = base
        self.session_env = session_env or {}
        self.port = 0
        self.user = getpass.getuser()
        self.client_key = base / "id_ed25519"
        self.known_hosts = base / "known_hosts"
        self.log = base / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def ssh_command(self, *, known_hosts: Path | None = None, key: Path | None = None) -> str:
        """The ssh command line for BROWSERD_SSH_COMMAND: our key, our known hosts, no config."""
        return (f"ssh -F none -i {key or self.client_key} -o IdentitiesOnly=yes "
                f"-o UserKnownHostsFile={known_hosts or self.known_hosts} "
                "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes "
                "-o LogLevel=ERROR")

    def start(self, timeout_s: float = 10.0) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        host_key = self.base / "host_ed25519"
        for key in (host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True, timeout=30)
        (self.base / "authorized_keys").write_text(
            (self.base / "id_ed25519.pub").read_text())
        self.port = free_port()
        env_lines = "".join(f"SetEnv {k}={v}\n" for k, v in self.session_env.items())
        config = self.base / "sshd_config"
        config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {host_key}\n"
            f"PidFile {self.base / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.base / 'authorized_keys'}\n"
            "StrictModes no\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "AllowTcpForwarding local\n"
            "GatewayPorts no\n"
            "X11Forwarding no\n"
            "PrintMotd no\n"
            "LogLevel VERBOSE\n"
            f"{env_lines}"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation dir
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(self.log)],
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not _listening(self.port):
            if self.proc.poll() is not None:
                raise AssertionError(f"sshd exited ({self.proc.returncode}):\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"sshd did not listen within {timeout_s} s:\n{self.logs()}")
            time.sleep(0.05)
        public = (self.base / "host_ed25519.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n")

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
