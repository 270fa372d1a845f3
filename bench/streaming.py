"""What the gateway adds to a stream: the same streams direct to the simulator and through the gateway.

Starts the stack (Redis, simulator with a fixed latency, workers, API), then runs each load direct to
the simulator's OpenAI route and through the gateway (`POST /api/v1/llm/chat/completions` with
`"stream": true`, or `/v1/chat/completions` with `--route openai`) in alternating rounds (direct,
gateway, gateway, direct, ...), so the box's drift hits both sides alike. The client is
`bench/sse_load.py` (its own process): it times each read and checks every stream afterwards (every
chunk, in order, each once, a clean end) against the text the simulator sends.

- c1: one stream at a time; time to first token (send -> first content chunk), gateway minus direct.
- c128: 128 concurrent streams of 100 chunks 20 ms apart: the gaps between consecutive chunks (p99,
  gateway minus direct), content chunks per second (gateway / direct), streams complete and in order.
- max: no gap between chunks, increasing concurrency, chunks per second within a fixed window.

During the gateway's c1 and c128 rounds it samples the API processes' TCP connections to Redis
(/proc/<pid>/fd against /proc/net/tcp). After the c128 and best max loads it prints each stack
process's CPU time per stream. The last line is one JSON object with the issue's keys (and a few more).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/streaming.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

import bench.sse_load as sse_load
from bench.connection_spread import api_server_pids, established_inodes, socket_inodes
from bench.overhead import MARKER, MESSAGES, PROMPT, Load, cpu_table, percentile, run_load, stack_processes
from devstack.stack import Stack

REPLY_TOKENS = 100  # 400 characters: up to 400 chunks


def body(route: str) -> str:
    if route == "gateway":
        spec = {"messages": MESSAGES, "model": "gpt-4", "maxTokens": 150, "provider": "openai", "stream": True}
    else:
        spec = {"model": "gpt-4", "messages": MESSAGES, "max_tokens": 150, "stream": True}
    return json.dumps(spec, separators=(",", ":"))


class RedisConnections:
    """The most TCP connections to Redis each API process held while sampling."""

    def __init__(self, api_pids: list[int], redis_port: int) -> None:
        self.api_pids = api_pids
        self.redis_port = redis_port
        self.most: dict[int, int] = {}

    def sample(self) -> None:
        live = established_inodes(self.redis_port, remote=True)
        for pid in self.api_pids:
            self.most[pid] = max(self.most.get(pid, 0), len(socket_inodes(pid) & live))

    def take(self) -> dict[int, int]:
        most, self.most = self.most, {}
        return most


class StreamBench:
    def __init__(self, stack: Stack, route: str) -> None:
        assert stack.api is not None
        self.stack = stack
        self.pids = stack_processes(stack)
        self.redis = redis.Redis.from_url(stack.redis_url)
        sim_host, sim_port = stack.sim_url.removeprefix("http://").rsplit(":", 1)
        api_host, api_port = stack.api_url.removeprefix("http://").rsplit(":", 1)
        common = {"marker": MARKER, "prompt": PROMPT, "reply_tokens": REPLY_TOKENS, "mode": "closed"}
        self.targets: dict[str, dict[str, Any]] = {
            "direct": {
                **common,
                "host": sim_host,
                "port": int(sim_port),
                "path": "/openai/v1/chat/completions",
                "headers": {"Authorization": f"Bearer {stack.env['OPENAI_API_KEY']}"},
                "body": body("openai"),
                "format": "openai",
            },
            "gateway": {
                **common,
                "host": api_host,
                "port": int(api_port),
                "path": "/api/v1/llm/chat/completions" if route == "gateway" else "/v1/chat/completions",
                "headers": {"Authorization": f"Bearer {stack.token()}"},
                "body": body(route),
                "format": route,
            },
        }
        redis_port = int(stack.redis_url.rsplit(":", 1)[1].split("/")[0])
        self.connections = RedisConnections(api_server_pids(stack.api), redis_port)
        self.errors = 0
        self.other_cores = 0.0
        self.chunks = 0
        self.runs = 0

    def close(self) -> None:
        self.redis.close()

    def configure(self, chunks: int, interval_ms: float) -> None:
        self.chunks = chunks
        config = {"provider": "openai", "reply_tokens": REPLY_TOKENS, "stream_chunks": chunks}
        resp = self.stack.sim("POST", "/_control/config", json={**config, "stream_interval_ms": interval_ms})
        resp.raise_for_status()

    def run(self, side: str, load: dict[str, Any]) -> Load:
        during = self.connections.sample if side == "gateway" else None
        # each run's prompts numbered apart from the others' (the 8-digit marker: 100 runs of up to 1M)
        spec = {**self.targets[side], "chunks": self.chunks, "counter_from": self.runs * 10**6, **load}
        self.runs += 1
        run = run_load(spec, self.pids, self.redis, side, script=str(sse_load.__file__), during=during)
        self.other_cores = max(self.other_cores, run.other_cores)
        if run.result["errors"]:
            self.errors += run.result["errors"]
            print(f"  ERRORS ({side}): {run.result['errors']}")
            for sample in run.result["error_samples"]:
                print(f"    {sample}")
        return run

    def rounds(self, n: int, load: dict[str, Any], first_warmup: int) -> dict[str, list[Load]]:
        """`n` rounds per side, alternating (d g, g d, ...); the first round of each side warms up first."""
        runs: dict[str, list[Load]] = {"direct": [], "gateway": []}
        for i in range(n):
            for side in ("direct", "gateway") if i % 2 == 0 else ("gateway", "direct"):
                runs[side].append(self.run(side, {**load, "warmup_requests": first_warmup if i == 0 else 0}))
        return runs


def joined(runs: list[Load], key: str) -> list[float]:
    return [v for run in runs for v in run.result[key]]


def chunk_rate(runs: list[Load], key: str = "chunks", seconds: str = "elapsed_s") -> float:
    return float(sum(r.result[key] for r in runs)) / sum(float(r.result[seconds]) for r in runs)


def merged(runs: list[Load]) -> Load:
    """The runs of one side as one load (for the CPU table)."""
    first = runs[0]
    spent = first.spent
    for run in runs[1:]:
        spent = spent + run.spent
    result = {
        "completed": sum(r.result["completed"] for r in runs),
        "elapsed_s": sum(float(r.result["elapsed_s"]) for r in runs),
        "loadgen_cpu_s": sum(float(r.result["loadgen_cpu_s"]) for r in runs),
    }
    return Load(first.side, result, spent)


def spread(values: list[float]) -> str:
    return "  ".join(f"p{p}={percentile(values, p):7.2f}" for p in (50, 90, 99)) + f"  max={max(values):7.2f} ms"


def dump_logs(stack: Stack) -> None:
    for proc in stack.group.procs:
        print(f"----- {proc.name} log -----\n{proc.log()[-3000:]}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-processes", type=int, default=1, help="API server processes")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per provider")
    parser.add_argument("--route", choices=("gateway", "openai"), default="gateway", help="the gateway's route")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="simulator latency before the first byte")
    parser.add_argument("--c1-streams", type=int, default=400, help="c1 streams per side")
    parser.add_argument("--c1-chunks", type=int, default=4)
    parser.add_argument("--c1-interval-ms", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=4, help="rounds per side (c1 and c128)")
    parser.add_argument("--max-concurrency", default="16,64,256", help="concurrencies tried with no gap")
    parser.add_argument("--max-seconds", type=float, default=3.0, help="window of each max load")
    parser.add_argument("--short", action="store_true", help="a quick run: fewer streams and rounds")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra gateway environment (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.short:
        args.c1_streams, args.rounds, args.max_concurrency, args.max_seconds = 80, 2, "32,128", 2.0
    # the max phase opens up to 256 streams at once: above the shedding bound (API_MAX_IN_FLIGHT, 128
    # requests whose answer has not begun), which would refuse some; this benchmark measures streaming
    extra_env = {"API_MAX_IN_FLIGHT": "1024", **dict(item.split("=", 1) for item in args.env)}

    t0 = time.monotonic()
    stack = Stack()
    try:
        stack.start(workers=args.workers, latency_ms=args.latency_ms, api_processes=args.api_processes, **extra_env)
        bench = StreamBench(stack, args.route)
        print(
            f"shape: {len(bench.connections.api_pids)} API process(es), {args.workers} worker(s) per provider,"
            f" simulator latency {args.latency_ms:g} ms, route {bench.targets['gateway']['path']},"
            f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start"
            f"{', env ' + ' '.join(args.env) if args.env else ''}"
        )

        per_round = max(1, args.c1_streams // args.rounds)
        print(
            f"\n[c1] one stream at a time, {args.c1_chunks} chunks {args.c1_interval_ms:g} ms apart,"
            f" {args.rounds} rounds of {per_round} per side"
        )
        bench.configure(args.c1_chunks, args.c1_interval_ms)
        c1 = bench.rounds(args.rounds, {"concurrency": 1, "requests": per_round}, first_warmup=30)
        redis_c1 = bench.connections.take()
        ttft = {side: joined(runs, "ttft_ms") for side, runs in c1.items()}
        for side in ("direct", "gateway"):
            print(f"  {side:8s} TTFT {spread(ttft[side])}")
        ttft_added = {p: percentile(ttft["gateway"], p) - percentile(ttft["direct"], p) for p in (50, 99)}
        print(f"  added    TTFT p50={ttft_added[50]:+7.2f} ms  p99={ttft_added[99]:+7.2f} ms")
        print(f"  API connections to Redis (most while streaming): {redis_c1}")

        conc = args.concurrency
        print(
            f"\n[c{conc}] {conc} concurrent streams of {args.chunks} chunks {args.interval_ms:g} ms apart,"
            f" {args.rounds} rounds per side"
        )
        bench.configure(args.chunks, args.interval_ms)
        cc = bench.rounds(args.rounds, {"concurrency": conc, "requests": conc}, first_warmup=conc)
        redis_cc = bench.connections.take()
        gaps = {side: joined(runs, "gaps_ms") for side, runs in cc.items()}
        rate = {side: chunk_rate(runs) for side, runs in cc.items()}
        for side in ("direct", "gateway"):
            per_round_rates = ", ".join(f"{chunk_rate([r]):.0f}" for r in cc[side])
            print(f"  {side:8s} gap  {spread(gaps[side])}   chunks/s {rate[side]:.0f} (rounds: {per_round_rates})")
        gap_added = percentile(gaps["gateway"], 99) - percentile(gaps["direct"], 99)
        streams_ok = [r.result["completed"] for r in cc["gateway"]]
        print(
            f"  added    gap p99={gap_added:+7.2f} ms   chunks/s ratio {rate['gateway'] / rate['direct']:.3f}"
            f"   gateway streams complete and in order per round: {streams_ok} of {conc}"
        )
        print(f"  API connections to Redis (most while streaming): {redis_cc}")
        cpu_table(merged(cc["direct"]), merged(cc["gateway"]))

        print(f"\n[max] no gap between {args.chunks} chunks, {args.max_seconds:g} s windows")
        bench.configure(args.chunks, 0.0)
        best: tuple[float, int, Load, Load] | None = None
        for level in (int(c) for c in args.max_concurrency.split(",")):
            load = {"concurrency": level, "duration_s": args.max_seconds, "warmup_requests": level}
            d = bench.run("direct", load)
            g = bench.run("gateway", load)
            d_rate, g_rate = (chunk_rate([r], "window_chunks", "window_s") for r in (d, g))
            print(f"  c{level:<4d} chunks/s direct {d_rate:7.0f}  gateway {g_rate:7.0f}  ({g_rate / d_rate:.2f})")
            if best is None or g_rate > best[0]:
                best = (g_rate, level, d, g)
        assert best is not None
        print(f"  best through the gateway: {best[0]:.0f} chunks/s at c{best[1]}")
        cpu_table(best[2], best[3])
        bench.close()
        if bench.errors:  # what the stack said about them
            dump_logs(stack)
    except BaseException:
        dump_logs(stack)
        raise
    finally:
        stack.stop()

    verdict = "valid run" if bench.errors == 0 else "INVALID run"
    print(f"\nerrors: {bench.errors} ({verdict}); took {time.monotonic() - t0:.0f} s")
    quiet = "quiet box" if bench.other_cores < 0.2 else "NOISY box: figures disturbed by other processes"
    print(f"other processes used up to {bench.other_cores:.2f} cores during a measurement ({quiet})")
    summary = {
        "ttft_added_p50_ms_c1": round(ttft_added[50], 3),
        "ttft_added_p99_ms_c1": round(ttft_added[99], 3),
        "chunk_gap_added_p99_ms_c128": round(gap_added, 3),
        "chunks_per_s_ratio_c128": round(rate["gateway"] / rate["direct"], 3),
        "streams_ok_c128": min(streams_ok),
        "redis_connections_per_api_process": {"c1": max(redis_c1.values()), "c128": max(redis_cc.values())},
        "chunks_per_s_max": {"chunks_per_s": round(best[0], 1), "concurrency": best[1]},
        "direct_ttft_p50_ms_c1": round(percentile(ttft["direct"], 50), 3),
        "direct_gap_p99_ms_c128": round(percentile(gaps["direct"], 99), 3),
        "direct_chunks_per_s_c128": round(rate["direct"], 1),
        "api_processes": len(bench.connections.api_pids),
        "workers_per_provider": args.workers,
    }
    print(json.dumps(summary))
    return 0 if bench.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
