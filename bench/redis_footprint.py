"""What each request leaves in Redis, with and without the log store (issue 14, item 5).

Runs the real stack (devstack.stack.Stack: Redis, simulator, one worker per provider, the API) twice,
once with `LOG_STORE_URL` (a fresh PostgreSQL database, dropped after) and once without, sends
`--requests` synchronous completions through the API (closed loop, bench/loadgen.py) after a warm-up,
waits for the logs to settle (with the store: every entry written and the stream drained), and reads
Redis' `used_memory` before and after. Prints one JSON line:

  {"bytes_per_request_redis": {"with_log_store": ..., "without_log_store": ...},
   "redis_used_memory_mb_after_50k": ...,   # with the log store: the production set-up
   "log_rows_in_store": ...}                # = 2 x requests (a request and a response log each)

and, on stderr, where the bytes go (per key kind, sampled with MEMORY USAGE).
`python bench/redis_footprint.py --requests 5000` for a quick run (default 50,000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/redis_footprint.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

import bench.loadgen as loadgen
from bench.overhead import MARKER, gateway_body
from devstack.postgres import fresh_database, postgres_server
from devstack.stack import Stack
from shared import keys
from shared.log_store import PgLogStore

WARMUP = 200
ID = re.compile(r"\{[0-9a-f]{32}\}|[0-9a-f]{32}(\.\d+)?|:\d+$")


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def store_rows(url: str) -> int:
    async def count() -> int:
        store = PgLogStore(url, retention_s=30 * 86400)
        try:
            return await store.count()
        finally:
            await store.aclose()

    return asyncio.run(count())


def load(stack: Stack, requests: int, concurrency: int) -> None:
    host, port = stack.api_url.removeprefix("http://").rsplit(":", 1)
    spec = {
        "mode": "closed",
        "concurrency": concurrency,
        "requests": requests,
        "host": host,
        "port": int(port),
        "path": "/api/v1/llm/chat/completions",
        "headers": {"Authorization": f"Bearer {stack.token(ttl_s=86400)}"},
        "body": gateway_body(),
        "marker": MARKER,
    }
    out = loadgen.run_load(spec, timeout=max(300.0, requests / 20))
    if out["errors"]:
        raise RuntimeError(f"{out['errors']} requests failed: {out['error_samples']}")


def breakdown(r: redis.Redis) -> dict[str, dict[str, int]]:
    """Bytes per key kind (ids folded), counted over every key: MEMORY USAGE of each."""
    kinds: dict[str, dict[str, int]] = {}
    for key in r.scan_iter(count=1000):
        kind = ID.sub("<id>", key.decode())
        slot = kinds.setdefault(kind, {"keys": 0, "bytes": 0})
        slot["keys"] += 1
        slot["bytes"] += int(r.memory_usage(key, samples=0) or 0)
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]["bytes"])[:8])


def measure(requests: int, concurrency: int, store_url: str | None) -> dict[str, Any]:
    env = {"LOG_STORE_URL": store_url} if store_url else {}
    stack = Stack()
    try:
        stack.start(workers=1, latency_ms=1, **env)
        r = redis.Redis.from_url(stack.redis_url)
        total = 2 * (WARMUP + requests)

        def settled(n: int) -> bool:
            if store_url:
                return r.xlen(keys.request_logs()) == 0 and store_rows(store_url) == n
            return int(r.xlen(keys.request_logs())) == n

        load(stack, WARMUP, concurrency)
        wait_for(lambda: settled(2 * WARMUP), 60, "warm-up logs")
        before = int(r.info("memory")["used_memory"])
        load(stack, requests, concurrency)
        wait_for(lambda: settled(total), 120 + requests / 100, "logs")
        after = int(r.info("memory")["used_memory"])
        print(json.dumps({"log_store": bool(store_url), "keys": breakdown(r)}), file=sys.stderr)
        r.close()
        return {
            "bytes_per_request": round((after - before) / requests),
            "used_memory_mb": round(after / 2**20, 1),
            "rows": store_rows(store_url) - 2 * WARMUP if store_url else 0,
        }
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50_000, help="requests measured per run (default 50000)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections of the closed loop")
    args = parser.parse_args()
    without = measure(args.requests, args.concurrency, None)
    with postgres_server() as port, fresh_database(port, "gateway_footprint") as url:
        with_store = measure(args.requests, args.concurrency, url)
    print(
        json.dumps(
            {
                "bytes_per_request_redis": {
                    "with_log_store": with_store["bytes_per_request"],
                    "without_log_store": without["bytes_per_request"],
                },
                "redis_used_memory_mb_after_50k": with_store["used_memory_mb"],
                "log_rows_in_store": with_store["rows"],
            }
        )
    )


if __name__ == "__main__":
    main()
