#!/bin/sh
# Make sure an OpenSSH server binary and the client are at hand: the tests of the SSH path
# (tests/test_ssh.py) and its bench scenario start their own sshd on a loopback port, with
# their own keys and config (tests/sshd.py).
#
# The server is never installed as a service. Debian's openssh-server package enables and
# starts the system's sshd on every machine whose init is systemd (port 22, open to the
# network), which running tests must not do. Instead, as root on Debian/Ubuntu, its package
# is downloaded and unpacked into DIR (default .venv/openssh; nothing runs from it but the
# tests' own sshd), with the client and the one library sshd needs beyond the client's
# (libwrap0) installed from the distribution; neither starts anything. sshd running as
# root also needs its privilege-separation user, `sshd`, which is created if missing (a
# system account with no shell and no home, as the package would make).
#
# Usage: scripts/ensure-ssh.sh [DIR]
set -eu

dir=${1:-.venv/openssh}
sshd="$dir/usr/sbin/sshd"

have_client() {
    command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1
}

if [ -x "$sshd" ] && have_client; then
    exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-ssh: unpacking Debian's openssh-server into $dir (not installed as a service)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openssh-client libwrap0 >/dev/null
    work=$(mktemp -d)  # 0700, root's: nobody else can swap the package before it is unpacked
    trap 'rm -rf "$work"' EXIT
    # Downloaded as root into that directory (not by apt's _apt user, who cannot write there).
    (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root openssh-server)
    mkdir -p "$dir"  # (never removed here: DIR is the caller's to choose)
    dpkg-deb -x "$work"/openssh-server_*.deb "$dir"
    if ! getent passwd sshd >/dev/null; then
        useradd --system --no-create-home --home-dir /run/sshd --shell /usr/sbin/nologin sshd
    fi
    "$sshd" -V 2>&1 | head -n 1 >&2
    exit 0
fi

if [ -x /usr/sbin/sshd ] && have_client; then
    exit 0  # not root: the system's sshd, which tests/sshd.py falls back to
fi

cat >&2 <<'MSG'
ensure-ssh: no OpenSSH server binary for the SSH tests. Either run `make test` as root on
Debian/Ubuntu (it unpacks one into .venv/openssh, without a service), or install OpenSSH:
  - Debian/Ubuntu:  sudo apt-get install openssh-server openssh-client
    (on a machine whose init is systemd, this also enables the system's sshd)
MSG
exit 1
