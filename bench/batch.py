"""Batch throughput, and what a draining batch does to synchronous latency.

Starts the stack (simulator latency 0, limits unshaped; per provider, by default, one worker taking
interactive jobs and two batch-only workers, see `--batch-workers`), then:
1. alone: synchronous requests at a steady rate (default 20/s) for `--sync-seconds`, latency from
   each request's scheduled send time (open loop);
2. batch: submits `--prompts` prompts (OpenAI Batch JSONL, streamed upload) and, while the batch
   drains, sends the same synchronous load; end to end = from the start of the upload until the
   batch has ended and its results are downloaded (every line checked: one per prompt).

Prints the figures, then ONE JSON line: {"prompts_per_s", "sync_p99_ms_during_batch", "sync_p99_ms_alone"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/batch.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import orjson

from bench.overhead import cpu_seconds, stack_processes
from devstack.stack import PROVIDERS, Stack

BATCHES = "/api/v1/llm/batches"
_sent = 0


def sync_body() -> dict[str, object]:
    """A distinct prompt each time: the response cache must not answer for the provider."""
    global _sent
    _sent += 1
    return {
        "messages": [{"role": "user", "content": f"Hello, how are you? #{_sent}"}],
        "model": "gpt-4",
        "maxTokens": 50,
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def prompts(n: int) -> Iterator[bytes]:
    chunk: list[bytes] = []
    for i in range(n):
        line = {
            "custom_id": f"p{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4",
                "messages": [{"role": "user", "content": f"Prompt number {i}"}],
                "max_tokens": 50,
            },
        }
        chunk.append(orjson.dumps(line) + b"\n")
        if len(chunk) == 1000:
            yield b"".join(chunk)
            chunk = []
    if chunk:
        yield b"".join(chunk)


class SyncLoad:
    """A steady open-loop rate of synchronous requests; latencies (ms) from the scheduled send time."""

    def __init__(self, client: httpx.AsyncClient, rate: float) -> None:
        self.client = client
        self.rate = rate
        self.latencies: list[float] = []
        self.sent_at: list[float] = []  # each latency's scheduled send time (perf_counter), for diagnostics
        self.errors: list[str] = []

    async def run(self, stop: asyncio.Event, max_s: float) -> None:
        start = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        i = 0
        while not stop.is_set():
            due = start + i / self.rate
            if due - start > max_s:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            tasks.append(asyncio.create_task(self._one(due)))
            i += 1
        await asyncio.gather(*tasks)

    async def _one(self, due: float) -> None:
        try:
            resp = await self.client.post("/api/v1/llm/chat/completions", json=sync_body())
        except httpx.HTTPError as exc:
            self.errors.append(f"{type(exc).__name__} after {time.perf_counter() - due:.1f}s")
            return
        if resp.status_code != 200:
            job = resp.json().get("error", {}).get("jobId") if resp.status_code == 504 else None
            if job:  # what became of it, for the report
                later = await self.client.get(f"/api/v1/llm/jobs/{job}")
                self.errors.append(f"504 for job {job}; the job then: {later.text[:300]}")
            else:
                self.errors.append(f"{resp.status_code} {resp.text[:200]}")
            return
        self.latencies.append((time.perf_counter() - due) * 1000)
        self.sent_at.append(due)


def print_phases(sync: SyncLoad, started: float, uploaded: float, ended: float) -> None:
    """Diagnostics: sync latency while the batch uploads and while it drains, and the slowest requests."""
    for name, lo, hi in (("upload", started, uploaded), ("drain", uploaded, ended)):
        part = [ms for ms, at in zip(sync.latencies, sync.sent_at, strict=True) if lo <= at < hi]
        if part:
            p50, p99 = percentile(part, 50), percentile(part, 99)
            print(f"  sync during {name}: n={len(part)} p50={p50:.1f} ms p99={p99:.1f} ms")
    slowest = sorted(zip(sync.latencies, sync.sent_at, strict=True), reverse=True)[:5]
    print("  slowest sync (ms @ s from upload start):", ", ".join(f"{ms:.0f}@{at - started:.1f}" for ms, at in slowest))


async def run_batch(client: httpx.AsyncClient, n: int, sync: SyncLoad, max_s: float) -> tuple[float, int]:
    # the upload is made before the clock starts, and its streaming gives this loop back between
    # chunks: the synchronous load shares the loop and must be sent on time
    parts = list(prompts(n))
    started = time.perf_counter()
    stop = asyncio.Event()
    load = asyncio.create_task(sync.run(stop, max_s))

    async def upload() -> AsyncIterator[bytes]:
        for part in parts:
            yield part
            await asyncio.sleep(0)

    resp = await client.post(BATCHES, content=upload(), headers={"Content-Type": "application/jsonl"}, timeout=300)
    resp.raise_for_status()
    batch_id = resp.json()["data"]["id"]
    uploaded = time.perf_counter()
    while True:
        data = (await client.get(f"{BATCHES}/{batch_id}", params={"wait": 30}, timeout=60)).json()["data"]
        if data["status"] in ("completed", "failed", "cancelled", "expired"):
            break
    ended = time.perf_counter()
    stop.set()
    lines = 0
    seen: set[bytes] = set()
    async with client.stream("GET", f"{BATCHES}/{batch_id}/results", timeout=300) as results:
        buf = b""
        async for chunk in results.aiter_bytes():
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for line in complete:
                seen.add(orjson.loads(line)["custom_id"].encode())
                lines += 1
    elapsed = time.perf_counter() - started
    await load
    print_phases(sync, started, uploaded, ended)
    counts = data["requestCounts"]
    print(
        f"batch {batch_id}: {data['status']}, {counts['completed']} completed, {counts['failed']} failed,"
        f" {lines} result lines ({len(seen)} distinct), upload {uploaded - started:.2f}s, total {elapsed:.2f}s"
    )
    if data["status"] != "completed" or lines != n or len(seen) != n or counts["failed"]:
        print("INVALID RUN: not every prompt ended in exactly one successful line", file=sys.stderr)
        sys.exit(1)
    return elapsed, lines


async def measure(stack: Stack, args: argparse.Namespace) -> dict[str, float]:
    token = stack.token(sub="bench")
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    # the batch script and the service sending synchronous requests are different clients (their own
    # connections): the upload must not hold the connection a synchronous request would reuse
    async with (
        httpx.AsyncClient(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=90, limits=limits
        ) as client,
        httpx.AsyncClient(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=90
        ) as batch_client,
    ):
        warm = SyncLoad(client, args.sync_rate)
        await warm.run(asyncio.Event(), 2.0)

        alone = SyncLoad(client, args.sync_rate)
        await alone.run(asyncio.Event(), args.sync_seconds)

        during = SyncLoad(client, args.sync_rate)
        procs = stack_processes(stack)
        cpu_before = {name: cpu_seconds(pid) for name, pid in procs.items()}
        elapsed, lines = await run_batch(batch_client, args.prompts, during, max_s=600)
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in procs.items()}

    for name, load in (("alone", alone), ("during batch", during)):
        if load.errors:
            print(f"sync {name}: {len(load.errors)} errors, e.g. {load.errors[0]}", file=sys.stderr)
            sys.exit(1)
        print(
            f"sync {name}: n={len(load.latencies)} p50={percentile(load.latencies, 50):.1f} ms"
            f" p99={percentile(load.latencies, 99):.1f} ms max={max(load.latencies):.1f} ms"
        )
    rate = lines / elapsed
    # CPU per prompt tells where the time goes, and the ceiling of this machine, whatever else runs on it
    per_prompt = {name: used * 1e6 / lines for name, used in cpu.items() if used > 0}
    total = sum(per_prompt.values())
    print(
        "CPU per prompt (batch phase, sync load included): "
        + ", ".join(f"{n} {us:.0f} us" for n, us in per_prompt.items())
    )
    print(f"  total {total:.0f} us: {os.cpu_count()} cores serve at most {os.cpu_count() * 1e6 / total:.0f} prompts/s")
    print(f"batch: {lines} prompts in {elapsed:.2f}s end to end = {rate:.0f} prompts/s")
    return {
        "prompts_per_s": round(rate, 1),
        "sync_p99_ms_during_batch": round(percentile(during.latencies, 99), 2),
        "sync_p99_ms_alone": round(percentile(alone.latencies, 99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--sync-rate", type=float, default=20.0)
    parser.add_argument("--sync-seconds", type=float, default=15.0, help="length of the sync-alone phase")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per provider")
    parser.add_argument(
        "--batch-workers",
        type=int,
        default=2,
        help="batch-only worker processes per provider (WORKER_JOB_KINDS=batch, niced); the --workers ones"
        " then take interactive jobs only. 0: the --workers ones take every kind",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra gateway environment (repeatable)"
    )
    args = parser.parse_args()
    extra_env = {"LOG_LEVEL": "WARNING", **dict(item.split("=", 1) for item in args.env)}
    if args.batch_workers:
        extra_env["WORKER_JOB_KINDS"] = "interactive"
    stack = Stack()
    try:
        stack.start(workers=args.workers, latency_ms=0, **extra_env)
        for provider in PROVIDERS:
            for _ in range(args.batch_workers):
                stack.start_worker(provider, {"WORKER_JOB_KINDS": "batch"})
        stack.wait_workers({p: args.workers + args.batch_workers for p in PROVIDERS})
        shape = f" + {args.batch_workers} batch-only" if args.batch_workers else ""
        print(f"stack: {args.workers} worker(s){shape}/provider, simulator latency 0, env {extra_env}")
        result = asyncio.run(measure(stack, args))
    except BaseException:
        for proc in stack.group.procs:
            if "redis" not in proc.name:
                print(f"----- {proc.name} -----\n{proc.log()[-2000:]}", file=sys.stderr)
        raise
    finally:
        stack.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
