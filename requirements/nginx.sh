#!/usr/bin/env bash
# The load balancer the replicas' test puts in front of two servers (tests/e2e/test_nginx_replicas.py,
# docs/replicas.md): Debian's nginx, installed with apt-get as root. Quick when it is already there.
# The test runs nginx as its own process with its own config; the package's service is not needed.
# Usage: bash requirements/nginx.sh
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "requirements/nginx.sh: nginx is missing; run this as root (it uses apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends nginx >/dev/null
[ -x /usr/sbin/nginx ]
