#!/bin/sh
# Make sure `python3 -m venv` works (Debian ships venv support as a separate package).
set -eu
if python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-python: installing python3-venv" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq python3-venv >/dev/null
    exit 0
fi
echo "ensure-python: python3 cannot create virtual environments; install python3-venv" >&2
exit 1
