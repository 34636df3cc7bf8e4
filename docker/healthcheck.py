"""Container health check without curl: exit 0 when URL answers 2xx within the timeout.

    python docker/healthcheck.py http://127.0.0.1:8000/readyz [timeout_s]

The gateway's /readyz answers 200 only once its bundles are loaded and Redis is reachable;
TorchServe's /ping answers 200 when its frontend is up.
"""
from __future__ import annotations

import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: healthcheck.py URL [timeout_s]", file=sys.stderr)
        return 2
    timeout = float(argv[1]) if len(argv) > 1 else 3.0
    try:
        with urllib.request.urlopen(argv[0], timeout=timeout) as response:
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
