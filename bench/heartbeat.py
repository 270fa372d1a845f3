"""The workers' lease heartbeat: its real period and lateness, idle and under load.

A job's lease lapses (and another worker may retake it, calling the provider a second time) when its
worker's heartbeat misses a whole lease; the lease (`WORKER_LEASE_S`) and the heartbeat (a third of
it) are chosen from what this measures. Starts its own stack (`--lease-s`, 1.5 s by default so that
a run sees many beats: the heartbeat's lateness is in milliseconds, whatever the lease) and records
each beat as the workers stamp it (their score in `llm:workers:<provider>`, polled every 5 ms):
first idle, then while `bench/loadgen.py` keeps `--concurrency` (64) synchronous completions in
flight through the gateway.

The last line is one JSON object: `nominal_ms` (the heartbeat's interval), and for the idle and the
loaded phase `*_period_p50_ms`, `*_period_p99_ms`, `*_period_max_ms` (between two beats of one
worker) and `loaded_late_max_ms` (the longest period minus the nominal interval: how much of a lease
the loop's own delays can eat).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/heartbeat.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

import bench.loadgen as loadgen
from bench.overhead import BENCH_ENV, MARKER, gateway_body, percentile
from devstack.stack import Stack
from shared import keys


def beats(r: redis.Redis, seconds: float) -> list[float]:
    """Periods (ms) between consecutive beats of each OpenAI worker during `seconds`."""
    last: dict[str, float] = {}
    periods: list[float] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        for worker, score in r.zrange(keys.worker_heartbeat("openai"), 0, -1, withscores=True):  # type: ignore[union-attr]
            before = last.get(worker)
            if before is not None and score > before:
                periods.append(score - before)
            last[worker] = score
        time.sleep(0.005)
    return periods


def figures(name: str, periods: list[float]) -> dict[str, float]:
    return {
        f"{name}_period_p50_ms": round(percentile(periods, 50), 1),
        f"{name}_period_p99_ms": round(percentile(periods, 99), 1),
        f"{name}_period_max_ms": round(max(periods), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lease-s", type=float, default=1.5)
    parser.add_argument("--seconds", type=float, default=20.0, help="each phase")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    nominal = args.lease_s * 1000 / 3

    stack = Stack()
    try:
        env = {**BENCH_ENV, "WORKER_LEASE_S": str(args.lease_s)}
        stack.start(workers=2, latency_ms=args.latency_ms, api_processes=1, **env)
        r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        idle = beats(r, args.seconds)
        host, port = stack.api_url.removeprefix("http://").split(":")
        spec = {
            "host": host,
            "port": int(port),
            "path": "/api/v1/llm/chat/completions",
            "body": gateway_body(),
            "marker": MARKER,
            "headers": {"Authorization": f"Bearer {stack.token()}"},
            "mode": "closed",
            "concurrency": args.concurrency,
        }
        load = threading.Thread(target=lambda: _load(spec, args.seconds), daemon=True)
        load.start()
        time.sleep(2)  # the load reaches its pace
        loaded = beats(r, args.seconds - 4)
        load.join(args.seconds + 60)
        r.close()
    finally:
        stack.stop()
    print(f"nominal interval {nominal:.0f} ms (lease {args.lease_s:g} s / 3)")
    print(f"idle:   {len(idle)} periods, p50 {percentile(idle, 50):.1f} ms, max {max(idle):.1f} ms")
    print(f"loaded: {len(loaded)} periods, p50 {percentile(loaded, 50):.1f} ms, max {max(loaded):.1f} ms")
    line = {
        "nominal_ms": round(nominal, 1),
        **figures("idle", idle),
        **figures("loaded", loaded),
        "loaded_late_max_ms": round(max(loaded) - nominal, 1),
    }
    print(json.dumps(line))
    return 0


def _load(spec: dict[str, object], seconds: float) -> None:
    """Keep the closed loop running for `seconds` (a fresh loadgen process per slice)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        loadgen.run_load({**spec, "requests": 2000}, timeout=120)


if __name__ == "__main__":
    raise SystemExit(main())
