#!/usr/bin/env bash
# The headless browser the chat page's test drives (tests/e2e/test_chat_page.py):
# Debian's chromium, installed with apt-get as root. Quick when it is already there.
# Usage: bash requirements/browser.sh
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "requirements/browser.sh: chromium is missing; run this as root (it uses apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
