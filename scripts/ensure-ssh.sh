#!/bin/sh
# Make sure OpenSSH's server and client are installed: the tests of the SSH path
# (tests/test_ssh.py) and its bench scenario start their own sshd on a loopback port.
# As root on Debian/Ubuntu it installs the distribution's packages; otherwise it says how.
# Installing does not start a system sshd here: the tests run their own, with their own config.
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
ensure-ssh: OpenSSH's server is not installed (the SSH tests run their own sshd). Install it:
  - Debian/Ubuntu:  sudo apt-get install openssh-server openssh-client
MSG
exit 1
