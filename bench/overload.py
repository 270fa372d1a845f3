"""Overload: offered twice what the box serves, does the gateway shed or drown?

Starts its own stack (the simulator answering after `--latency-ms`, 20 ms) and, with the load
generator of `bench/overhead.py` (`bench/loadgen.py`, its own process), measures in turn:

1. `capacity_rps`: synchronous completions per second with `--concurrency` (64) in flight, every
   answer a 200 (closed loop: the box's own pace);
2. `unloaded_p99_ms`: p99 latency of an open loop at a quarter of that capacity (the box well within
   what it serves);
3. the overload: an open loop at twice the capacity for `--seconds` (20 s), each request with a
   deadline of `--deadline-s` (its `timeout`), latency from the *scheduled* send time. Each answer is
   a 200 (served: within the deadline or not), a refusal (429 or 503, which must carry Retry-After)
   or anything else (a timeout: a 504, a dropped connection);
4. recovery: the quarter-capacity loop again at once; its p99 next to the unloaded one.

`goodput_ratio` is 200s within the deadline per second over `capacity_rps`; `admitted_p99_ms` the p99
of the 200s under overload; `refusal_p99_ms` the p99 of the refusals' latency; `timeouts` every
answer that was neither (targets: goodput >= 0.9, admitted p99 <= 5x unloaded p99, refusal p99 <= 20
ms, timeouts = 0). The last line is one JSON object with exactly these keys:
`capacity_rps`, `offered_rps`, `goodput_ratio`, `admitted_p99_ms`, `unloaded_p99_ms`,
`refusal_p99_ms`, `timeouts`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/overload.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.loadgen as loadgen
from bench.overhead import BENCH_ENV, MARKER, MESSAGES, machine_busy_seconds, percentile
from devstack.stack import Stack

COMPLETIONS = "/api/v1/llm/chat/completions"
REFUSALS = ("429", "503")


def body(deadline_s: float) -> str:
    payload = {"messages": MESSAGES, "model": "gpt-4", "maxTokens": 150, "provider": "openai", "timeout": deadline_s}
    return json.dumps(payload, separators=(",", ":"))


def spec(stack: Stack, deadline_s: float, **load: Any) -> dict[str, Any]:
    host, port = stack.api_url.removeprefix("http://").split(":")
    return {
        "host": host,
        "port": int(port),
        "path": COMPLETIONS,
        "body": body(deadline_s),
        "marker": MARKER,
        "headers": {"Authorization": f"Bearer {stack.token()}"},
        **load,
    }


def other_cores(run: dict[str, Any], busy_before: float) -> float:
    """Cores the whole machine was busy during a run (the box's noise shows up here)."""
    return (machine_busy_seconds() - busy_before) / max(float(run["elapsed_s"]), 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-processes", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="worker processes per provider")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="simulator latency")
    parser.add_argument("--concurrency", type=int, default=64, help="in flight while measuring capacity")
    parser.add_argument("--capacity-requests", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the 2x load is offered")
    parser.add_argument("--deadline-s", type=float, default=2.0, help="each overload request's timeout")
    parser.add_argument("--factor", type=float, default=2.0, help="offered load over capacity")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra gateway environment (repeatable)"
    )
    args = parser.parse_args(argv)
    env = {**BENCH_ENV, "ENABLE_LLM_CACHING": "false", **dict(item.split("=", 1) for item in args.env)}

    stack = Stack()
    try:
        stack.start(workers=args.workers, latency_ms=args.latency_ms, api_processes=args.api_processes, **env)
        print(
            f"shape: {args.api_processes} API process(es), {args.workers} worker(s) per provider, simulator"
            f" latency {args.latency_ms:g} ms, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
            f"{', env ' + ' '.join(args.env) if args.env else ''}"
        )
        busy = machine_busy_seconds()
        cap = loadgen.run_load(
            spec(
                stack,
                30.0,
                mode="closed",
                concurrency=args.concurrency,
                requests=args.capacity_requests,
                warmup_requests=500,
            )
        )
        capacity = cap["completed"] / cap["elapsed_s"]
        print(
            f"[capacity] c{args.concurrency}: {capacity:.0f} req/s served ({other_cores(cap, busy):.2f} cores busy),"
            f" {cap['errors']} not (refused: the box is busy beyond what the run offers)"
        )

        light = {"mode": "open", "rate": capacity / 4, "duration_s": 8.0, "warmup_s": 1.0}
        unloaded = loadgen.run_load(spec(stack, 30.0, **light))
        unloaded_p99 = percentile(unloaded["latencies_ms"], 99)
        print(f"[unloaded] {capacity / 4:.0f} req/s: p99 {unloaded_p99:.1f} ms, errors {unloaded['errors']}")

        offered = capacity * args.factor
        busy = machine_busy_seconds()
        over = loadgen.run_load(
            spec(stack, args.deadline_s, mode="open", rate=offered, duration_s=args.seconds),
            timeout=args.seconds + 120,
        )
        refused = [v for status in REFUSALS for v in over["non_200_latencies_ms"].get(status, [])]
        served = over["latencies_ms"]
        in_time = [v for v in served if v <= args.deadline_s * 1000]
        timeouts = over["errors"] - len(refused)
        goodput = len(in_time) / args.seconds
        print(
            f"[overload] offered {offered:.0f} req/s for {args.seconds:g} s ({other_cores(over, busy):.2f} cores busy):"
            f" {len(served)} served ({len(in_time)} within {args.deadline_s:g} s), {len(refused)} refused,"
            f" {timeouts} other; statuses { ({k: len(v) for k, v in over['non_200_latencies_ms'].items()}) }"
        )
        if timeouts:
            print(f"  samples: {over['error_samples'][:3]}")

        recovery = loadgen.run_load(spec(stack, 30.0, mode="open", rate=capacity / 4, duration_s=5.0))
        print(
            f"[recovery] {capacity / 4:.0f} req/s right after: p99 {percentile(recovery['latencies_ms'], 99):.1f} ms,"
            f" errors {recovery['errors']}"
        )
    finally:
        stack.stop()

    line = {
        "capacity_rps": round(capacity, 1),
        "offered_rps": round(offered, 1),
        "goodput_ratio": round(goodput / capacity, 3),
        "admitted_p99_ms": round(percentile(served, 99), 1),
        "unloaded_p99_ms": round(unloaded_p99, 1),
        "refusal_p99_ms": round(percentile(refused, 99), 1) if refused else None,
        "timeouts": timeouts,
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
