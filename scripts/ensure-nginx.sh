#!/usr/bin/env bash
# Make sure Debian's nginx is there: the provider transports' tests start one of their own, in front of
# the simulator (tests/integration/test_provider_transport_nginx.py), on ports of its own.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
echo "nginx is missing; installing Debian's package" >&2
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null
