"""Distributed rate limiting under a backlog: do several workers together keep to the limit, and use it?

Starts Redis, the simulator and N OpenAI worker processes (devstack) with one limit for OpenAI and
the gateway as a whole (default 6,000 requests/min and 600K tokens/min), then enqueues a backlog of
jobs (default 3,000, about 30 s of work) DIRECTLY through `shared.queue.RequestQueue`, as the API
would, from this process at a lower CPU priority (nice 10), so the load generator takes next to
nothing from the stack it measures. The API (and so the tenant quotas) is not in the path: this
measures the workers' shared buckets.

From the simulator's arrival timestamps it prints the most calls seen in any 1 s and any 10 s window
against the limit, and the utilisation: (calls - burst) / (limit x span from first to last call),
which is 1.0 for a full bucket spent at once followed by calls at exactly the limit. The target is an
overshoot no larger than the bucket's burst and a utilisation of at least 95%. Also prints Redis script
runs per job (all scripts, from Redis' command stats): waiting calls must not hammer Redis.
The last line is one JSON object.

    python bench/ratelimit.py [--jobs 3000] [--rpm 6000] [--tpm 600000] [--burst-s 0.5] [--workers 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/ratelimit.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from devstack.procs import start_redis, wait_until
from devstack.stack import Stack
from plumbing.redis_connection import connect
from shared import keys
from shared.admission import build_payload
from shared.queue import RequestQueue
from shared.schemas import ChatRequest
from shared.settings import Settings


def most_in_window(times: list[float], window: float) -> int:
    """The most arrivals in any half-open window [t, t + window)."""
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


async def enqueue_backlog(redis_url: str, n: int, label: str = "backlog job") -> list[str]:
    r = connect(redis_url)
    queue = RequestQueue(r)
    settings = Settings(redis_url=redis_url)
    payloads = [
        build_payload(
            ChatRequest.model_validate(
                {"messages": [{"role": "user", "content": f"{label} {i}"}], "provider": "openai", "maxTokens": 64}
            ),
            settings,
            kind="async",
        )
        for i in range(n)
    ]
    for start in range(0, n, 200):
        await asyncio.gather(*(queue.enqueue(p) for p in payloads[start : start + 200]))
    await r.aclose()
    return [p.request_id for p in payloads]


def all_succeeded(client: redis.Redis, ids: list[str]) -> bool:
    return all(client.hget(keys.request(r), "status") == "succeeded" for r in ids)


def warm_up(redis_url: str, client: redis.Redis, workers: int) -> None:
    """Let every worker serve a few calls first: a process's first call pays one-off costs (lazy
    imports, compiled patterns, connections) that would stall the start of the measured backlog.
    Then wait for the buckets to be full again (a full bucket's key expires)."""
    seen: set[str] = set()
    for _ in range(30):
        ids = asyncio.run(enqueue_backlog(redis_url, 10, "warm-up"))
        wait_until(partial(all_succeeded, client, ids), 60, "warm-up jobs")
        seen.update(str(client.hget(keys.request(r), "worker")) for r in ids)
        if len(seen) >= workers:
            break
    else:
        print(f"warning: only {len(seen)} of {workers} workers took warm-up jobs")
    buckets = [keys.rate_bucket(scope, unit) for scope in ("global", "provider:openai") for unit in ("req", "tok")]
    wait_until(lambda: not client.exists(*buckets), 30, "buckets full again")


def evalsha_calls(client: redis.Redis) -> int:
    """Script runs so far (Redis counts EVALSHA per command, not per script)."""
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def run(args: argparse.Namespace) -> dict[str, Any]:
    limit_rps = args.rpm / 60
    burst = max(limit_rps * args.burst_s, 1.0)
    stack = Stack()
    try:
        _, redis_url = start_redis(stack.group)
        stack.start_simulator(latency_ms=args.latency_ms)
        stack.configure(
            redis_url,
            RATE_LIMIT_GLOBAL_RPM=str(args.rpm),
            RATE_LIMIT_GLOBAL_TPM=str(args.tpm),
            RATE_LIMIT_OPENAI_RPM=str(args.rpm),
            RATE_LIMIT_OPENAI_TPM=str(args.tpm),
            RATE_LIMIT_BURST_S=str(args.burst_s),
            # its probes reach the simulator unshaped (they are not completions) and would be counted
            HEALTH_MONITOR_ENABLED="false",
        )
        for _ in range(args.workers):
            stack.start_worker("openai")
        stack.wait_workers({"openai": args.workers})
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        warm_up(redis_url, client, args.workers)
        stack.sim("POST", "/_control/reset")
        evalsha_before = evalsha_calls(client)

        # the load generator yields the CPU to the stack it measures (the stack was started before)
        os.nice(10)
        started = time.perf_counter()
        ids = asyncio.run(enqueue_backlog(redis_url, args.jobs))
        enqueued_s = time.perf_counter() - started

        def served() -> bool:
            stats = stack.sim("GET", "/_control/stats", params={"arrivals": "0"}).json()["openai"]
            return int(stats["requests"]) >= int(args.jobs)

        def succeeded() -> int:
            pipe = client.pipeline(transaction=False)
            for rid in ids:
                pipe.hget(keys.request(rid), "status")
            return sum(1 for status in pipe.execute() if status == "succeeded")

        wait_until(served, args.jobs / limit_rps * 3 + 60, f"{args.jobs} calls at the simulator")
        wait_until(lambda: succeeded() >= len(ids), 30, "every job's outcome stored")
        n_ok = succeeded()
        evalsha = evalsha_calls(client) - evalsha_before
        times = sorted(stack.sim("GET", "/_control/stats").json()["openai"]["arrivals"])
        client.close()
    finally:
        stack.stop()

    span = times[-1] - times[0]
    max_1s = most_in_window(times, 1.0)
    max_10s = most_in_window(times, 10.0)
    utilisation = (len(times) - burst) / (limit_rps * span)
    print(
        f"limit {limit_rps:g} calls/s ({args.rpm}/min, {args.tpm}/min tokens), bucket of {burst:g} calls "
        f"(RATE_LIMIT_BURST_S={args.burst_s:g}), {args.workers} worker processes"
    )
    print(f"backlog: {args.jobs} jobs enqueued directly through RequestQueue in {enqueued_s:.2f} s")
    print(f"served: {len(times)} calls in {span:.2f} s, {n_ok}/{args.jobs} jobs succeeded")
    print(
        f"most calls in any 1 s: {max_1s} (limit {limit_rps:g} + burst {burst:g} = {limit_rps + burst:g})"
        f"  overshoot {max_1s - limit_rps:+g}"
    )
    print(
        f"most calls in any 10 s: {max_10s} = {max_10s / 10:g}/s (limit {limit_rps:g} + burst/10 "
        f"{burst / 10:g} = {limit_rps + burst / 10:g}/s)"
    )
    print(f"utilisation: {utilisation:.3f} (target >= 0.95)")
    # per job: enqueue, a share of a claim, finish, the token reconcile and the metrics record are one
    # script run each; the limit script adds one per admitted call plus one per refill a gate lost
    print(f"script runs per job: {evalsha / args.jobs:.2f} (queue, limits, reconcile, metrics together)")
    return {
        "limit_rps": round(limit_rps, 3),
        "burst": round(burst, 3),
        "max_rate_1s": float(max_1s),
        "max_rate_10s": round(max_10s / 10, 3),
        "utilisation": round(utilisation, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rpm", type=int, default=6000)
    parser.add_argument("--tpm", type=int, default=600_000)
    parser.add_argument("--burst-s", type=float, default=0.5, help="seconds of refill a full bucket holds")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    result = run(parser.parse_args())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
