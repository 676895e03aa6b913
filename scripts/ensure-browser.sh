#!/bin/sh
# Make sure a Chromium that browserd can drive is installed (the discovery order of docs/configuration.md).
# As root on Debian/Ubuntu it installs the distribution's packages; otherwise it says how.
set -eu

have_browser() {
    if [ -n "${BROWSERD_BROWSER:-}" ] && [ -x "${BROWSERD_BROWSER}" ]; then return 0; fi
    command -v chromium >/dev/null 2>&1 && command -v chromium-headless-shell >/dev/null 2>&1
}

if have_browser; then exit 0; fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-browser: installing Debian's chromium and chromium-headless-shell" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-headless-shell >/dev/null
    exit 0
fi

cat >&2 <<'MSG'
ensure-browser: no Chromium found. Pick one:
  - Debian/Ubuntu:  sudo apt-get install chromium chromium-headless-shell
  - any system:     point BROWSERD_BROWSER (or browser.executable in the config) at a
                    Chrome/Chromium binary
MSG
exit 1
