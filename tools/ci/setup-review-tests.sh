#!/usr/bin/env bash
# Installs what wanrt-review's browser test needs on a fresh Debian machine (run as root).
# Idempotent: does nothing when /usr/bin/chromium and /usr/bin/chromedriver are present.
#   Debian packages: chromium (the browser), chromium-driver (its WebDriver server).
# The test drives chromedriver over the W3C WebDriver protocol itself (no npm packages,
# no browser downloads).
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "setup-review-tests: chromium and chromedriver already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup-review-tests: run as root (apt-get install chromium chromium-driver)" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# apt may be busy (another install running): wait for its lock instead of failing.
for i in 1 2 3; do
    if $SUDO apt-get update -o DPkg::Lock::Timeout=600 && \
       $SUDO apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends chromium chromium-driver; then
        break
    fi
    echo "setup-review-tests: apt-get failed (try $i), retrying in 10 s" >&2
    sleep 10
    if [ "$i" -eq 3 ]; then exit 1; fi
done

/usr/bin/chromium --version
/usr/bin/chromedriver --version
