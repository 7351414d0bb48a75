#!/usr/bin/env bash
# Install a headless Chromium for the `browser` tests (tests/test_browser.py).
# Idempotent and quiet; never fails the caller: on any problem it prints a note and exits 0,
# and the browser tests then skip.
set -u

find_chromium() {
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if path="$(find_chromium)"; then
    echo "install_browser: chromium already present at $path"
    exit 0
fi

if [ "$(id -u)" != "0" ]; then
    echo "install_browser: note: chromium not found and not running as root; install it with" \
         "'sudo apt-get install -y chromium' (browser tests will skip meanwhile)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: note: chromium not found and apt-get unavailable; browser tests will skip"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq >/dev/null 2>&1 \
    && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; then
    if path="$(find_chromium)"; then
        echo "install_browser: installed chromium at $path"
        exit 0
    fi
fi
echo "install_browser: note: could not install chromium (apt failed); browser tests will skip"
exit 0
