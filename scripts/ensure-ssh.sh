#!/bin/sh
# Make sure OpenSSH's server and client are installed: the tests of the SSH path
# (tests/test_ssh.py) and its bench scenario start their own sshd on a loopback port.
# As root on Debian/Ubuntu it installs the distribution's packages; otherwise it says how.
# The tests run their own sshd, with their own config. Beware: on a machine whose init is
# systemd, Debian's openssh-server package enables and starts the system's sshd as well.
set -eu

if [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-ssh: installing Debian's openssh-server and openssh-client" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openssh-server openssh-client >/dev/null
    exit 0
fi

cat >&2 <<'MSG'
ensure-ssh: OpenSSH's server is not installed (the SSH tests run their own sshd; the package
also enables the system's sshd where systemd runs). Install it:
  - Debian/Ubuntu:  sudo apt-get install openssh-server openssh-client
MSG
exit 1
