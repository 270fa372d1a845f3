"""`python -m devstack.wait_ready URL [SECONDS]`: exit 0 once URL answers below 500."""

from __future__ import annotations

import sys

from devstack.procs import http_ok, wait_until


def main() -> None:
    url = sys.argv[1]
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    wait_until(lambda: http_ok(url), timeout, url)


if __name__ == "__main__":
    main()
