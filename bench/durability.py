"""What each REDIS_DURABILITY mode costs, and what it loses when Redis is SIGKILLed right after
acknowledging a burst of async jobs.

Per mode, a stack of its own (Redis with AOF; for `replica` a replica too, its own AOF, and the mode's
WAIT; the simulator, a worker per provider, the API):
1. c1: synchronous chat completions one at a time through the gateway (`bench/loadgen.py`, the
   machinery of bench/overhead.py); `added_p50_ms_c1` is the mode's p50 minus `everysec`'s, measured
   in the same run (everysec first, so its own figure is 0);
2. the workers are stopped (so that acknowledged jobs stay in Redis as acknowledged), a burst of
   async jobs is sent (`--burst` jobs, `--concurrency` at a time), and the moment the last 202 is
   in, the primary is SIGKILLed;
3. `everysec`, `always`: Redis is restarted on its AOF; `replica`: the replica is promoted (REPLICAOF
   NO ONE), as Sentinel would. `lost_after_sigkill` counts the acknowledged jobs whose request record
   is not there.

Note what a SIGKILL of Redis can and cannot show: Redis writes the AOF (write(2)) before it answers,
so what the process loses is only what it had not handed to the kernel; the second of writes
`everysec` risks is lost when the *machine* goes down (kernel panic, power) before the next fsync,
which no process kill on a live machine reproduces. The last line is one JSON object: per mode,
`acked`, `lost_after_sigkill`, `added_p50_ms_c1`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/durability.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import redis

import bench.loadgen as loadgen
from bench.overhead import BENCH_ENV, MARKER, gateway_body, percentile
from devstack.procs import Proc, start_redis
from devstack.redis_ha import start_replica
from devstack.stack import PROVIDERS, Stack
from shared import keys

MODES = ("everysec", "always", "replica")
JOB = {"messages": [{"role": "user", "content": "keep me"}], "provider": "openai"}


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def c1_latencies(stack: Stack, requests: int) -> list[float]:
    host, port = stack.api_url.removeprefix("http://").rsplit(":", 1)
    spec = {
        "host": host,
        "port": int(port),
        "path": "/api/v1/llm/chat/completions",
        "headers": {"Authorization": f"Bearer {stack.token()}"},
        "body": gateway_body(),
        "marker": MARKER,
        "mode": "closed",
        "concurrency": 1,
        "requests": requests,
        "warmup_requests": 50,
    }
    result = loadgen.run_load(spec)
    if result["errors"]:
        raise RuntimeError(f"c1 errors: {result['error_samples']}")
    latencies: list[float] = result["latencies_ms"]
    return latencies


async def burst(stack: Stack, jobs: int, concurrency: int) -> list[str]:
    """Send `jobs` async jobs, `concurrency` at a time; the ids of those acknowledged (202)."""
    acked: list[str] = []
    todo = iter(range(jobs))
    headers = {"Authorization": f"Bearer {stack.token()}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, limits=limits, timeout=30) as client:

        async def sender() -> None:
            for _ in todo:
                resp = await client.post("/api/v1/llm/jobs", json=JOB)
                if resp.status_code == 202:
                    acked.append(resp.json()["data"]["id"])

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    return acked


def present(url: str, ids: list[str]) -> int:
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for rid in ids:
            pipe.exists(keys.request(rid))
        return sum(int(x) for x in pipe.execute())
    finally:
        client.close()


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack()
    try:
        fsync = "always" if mode == "always" else "everysec"
        primary, url = start_redis(stack.group, appendonly=True, appendfsync=fsync)
        replica_url = ""
        if mode == "replica":
            _, replica_url = start_replica(stack.group, port_of(url))
        stack.start(redis_url=url, workers=1, latency_ms=args.latency_ms, REDIS_DURABILITY=mode, **BENCH_ENV)
        latencies = c1_latencies(stack, args.requests)
        for procs in stack.workers.values():
            for proc in procs:
                proc.stop()
        acked = asyncio.run(burst(stack, args.burst, args.concurrency))
        primary.kill(signal.SIGKILL)  # right after the last 202
        primary.popen.wait(10)
        if mode == "replica":
            promoted = redis.Redis.from_url(replica_url)
            promoted.execute_command("REPLICAOF", "NO", "ONE")
            promoted.close()
            survivor = replica_url
        else:
            _restart(stack, url, fsync)
            survivor = url
        kept = present(survivor, acked)
        return {"p50": percentile(latencies, 50), "acked": len(acked), "lost_after_sigkill": len(acked) - kept}
    finally:
        stack.stop()


def _restart(stack: Stack, url: str, fsync: str) -> Proc:
    proc, _ = start_redis(stack.group, port_of(url), appendonly=True, appendfsync=fsync)
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500, help="c1 requests measured per mode")
    parser.add_argument("--burst", type=int, default=2000, help="async jobs acknowledged before the SIGKILL")
    parser.add_argument("--concurrency", type=int, default=32, help="jobs in flight during the burst")
    parser.add_argument("--latency-ms", type=float, default=5.0, help="the simulator's latency")
    args = parser.parse_args(argv)
    assert set(PROVIDERS) == {"openai", "anthropic"}
    figures = {}
    for mode in MODES:
        figures[mode] = run_mode(mode, args)
        f = figures[mode]
        print(f"{mode:9s} c1 p50 {f['p50']:.2f} ms  acked {f['acked']}  lost after SIGKILL {f['lost_after_sigkill']}")
    base = figures["everysec"]["p50"]
    line = {
        mode: {
            "acked": f["acked"],
            "lost_after_sigkill": f["lost_after_sigkill"],
            "added_p50_ms_c1": round(f["p50"] - base, 3),
        }
        for mode, f in figures.items()
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
