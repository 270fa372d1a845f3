"""Failover under steady load: what clients see when the primary provider breaks mid-run.

Starts the stack (failover on, primary openai, simulator latency 20 ms) and sends synchronous
completions through the API on a fixed schedule (open loop, default 50/s). A few seconds in, the
simulated openai starts failing, in two scenarios run one after the other (breakers and simulator
reset in between):

- 503: every openai completion answers 503;
- hang: every openai completion hangs (never answers). A call then only ends at the provider read
  timeout, which this run sets to PROVIDER_READ_TIMEOUT_S=2 (default 120). The trade-off: the
  read timeout bounds how long a hung provider can hold a request before the gateway fails it over,
  but it also cuts off any legitimate answer slower than that (long generations with a high
  maxTokens can take tens of seconds without streaming). Choose it from the slowest answer you
  expect; clients that need long generations can pass their own `timeout`, the provider call is
  still bounded by this setting.

Per scenario it prints:
- client_errors: answers other than 200 (target 0: failover hides the fault);
- p99 during the switch: latency (from the scheduled send time) of the requests sent between the
  fault and the moment traffic went straight to the secondary (at least the first second);
- seconds_to_direct: from the fault until every later request was served by anthropic without
  trying openai first (the breaker opened and the API's routing view learnt of it).

Ends with ONE JSON line: client_errors_503, p99_ms_switch_503, seconds_to_direct_503,
client_errors_hang, p99_ms_switch_hang, seconds_to_direct_hang.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/failover.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import redis

from devstack.procs import wait_until
from devstack.stack import Stack
from shared.breaker import reset_sync

CHAT = "/api/v1/llm/chat/completions"
MIN_SWITCH_WINDOW_S = 1.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Sample:
    sent: float  # scheduled send time, seconds from the start of the run
    latency_ms: float
    status: int
    providers: list[str] = field(default_factory=list)  # providers tried, in order
    server_ms: float = 0.0  # the gateway's own latencyMs: from enqueue to the stored answer


async def run_load(
    client: httpx.AsyncClient, rate: float, duration_s: float, fault_at: float, fault: Any
) -> list[Sample]:
    samples: list[Sample] = []
    tasks: set[asyncio.Task[None]] = set()
    started = time.perf_counter()

    async def fire(i: int, scheduled: float) -> None:
        body = {"messages": [{"role": "user", "content": f"request {i}"}], "maxTokens": 50}
        try:
            resp = await client.post(CHAT, json=body)
            status = resp.status_code
            data = resp.json().get("data") if status == 200 else None
        except httpx.HTTPError:
            status, data = 0, None
        latency = (time.perf_counter() - scheduled) * 1000
        tried = [a["provider"] for a in data.get("attempts", [])] if data else []
        server = float(data.get("latencyMs") or 0) if data else 0.0
        samples.append(Sample(scheduled - started, latency, status, tried, server))

    faulted = False
    for i in range(int(rate * duration_s)):
        scheduled = started + i / rate
        if not faulted and scheduled - started >= fault_at:
            await asyncio.to_thread(fault)
            faulted = True
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(fire(i, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return samples


def timeline(samples: list[Sample]) -> None:
    """Per second of send time: requests, errors, p50/p99 latency, and which providers were tried."""
    by_second: dict[int, list[Sample]] = {}
    for s in samples:
        by_second.setdefault(int(s.sent), []).append(s)
    for second, group in sorted(by_second.items()):
        lat = [s.latency_ms for s in group]
        paths: dict[str, int] = {}
        for s in group:
            key = ">".join(s.providers) or f"HTTP {s.status}"
            paths[key] = paths.get(key, 0) + 1
        errors = sum(s.status != 200 for s in group)
        print(
            f"    {second:3d}s  n={len(group):3d} err={errors:2d}  "
            f"p50 {percentile(lat, 50):6.0f} ms  p99 {percentile(lat, 99):6.0f} ms  "
            f"(gateway p99 {percentile([s.server_ms for s in group], 99):6.0f} ms)  {paths}"
        )


def analyse(name: str, samples: list[Sample], fault_at: float, secondary: str, show: bool) -> dict[str, float]:
    samples.sort(key=lambda s: s.sent)
    after = [s for s in samples if s.sent >= fault_at]
    before = [s for s in samples if s.sent < fault_at]
    # the first request from which on every request went straight to the secondary
    direct_from = len(after)
    for i in range(len(after) - 1, -1, -1):
        if after[i].status == 200 and after[i].providers == [secondary]:
            direct_from = i
        else:
            break
    to_direct = (after[direct_from].sent - fault_at) if direct_from < len(after) else float("inf")
    window_end = fault_at + max(to_direct, MIN_SWITCH_WINDOW_S)
    switch = [s for s in after if s.sent <= window_end]
    errors = [s for s in samples if s.status != 200]
    detoured = sum(1 for s in after if s.providers[:1] == ["openai"])
    ok_before = [s.latency_ms for s in before if s.status == 200]
    steady_after = [s.latency_ms for s in after if s.sent > window_end and s.status == 200]
    print(f"--- {name}: {len(samples)} requests, fault at {fault_at:.1f}s")
    if show:
        timeline(samples)
    print(f"  client errors: {len(errors)} {sorted({s.status for s in errors}) if errors else ''}")
    print(f"  before the fault: p50 {percentile(ok_before, 50):.0f} ms, p99 {percentile(ok_before, 99):.0f} ms")
    print(
        f"  during the switch ({len(switch)} requests sent in the first {window_end - fault_at:.2f}s): "
        f"p50 {percentile([s.latency_ms for s in switch], 50):.0f} ms, "
        f"p99 {percentile([s.latency_ms for s in switch], 99):.0f} ms, "
        f"max {max((s.latency_ms for s in switch), default=float('nan')):.0f} ms"
    )
    print(f"  requests that tried openai after the fault: {detoured}")
    print(f"  straight to {secondary} from {to_direct:.3f}s after the fault")
    print(f"  after the switch: p50 {percentile(steady_after, 50):.0f} ms, p99 {percentile(steady_after, 99):.0f} ms")
    return {
        "client_errors": float(len(errors)),
        "p99_ms_switch": round(percentile([s.latency_ms for s in switch], 99), 1),
        "seconds_to_direct": round(to_direct, 3),
    }


def reset(stack: Stack, r: redis.Redis) -> None:
    stack.sim("POST", "/_control/reset").raise_for_status()
    reset_sync(r)
    with stack.client() as c:
        wait_until(lambda: not c.get("/api/v1/llm/status").json()["data"]["routing"]["avoiding"], 10, "routing reset")


async def scenario(stack: Stack, args: argparse.Namespace, name: str, rule: dict[str, Any]) -> dict[str, float]:
    def fault() -> None:
        stack.sim("POST", "/_control/faults", json={"provider": "openai", **rule}).raise_for_status()

    headers = {"Authorization": f"Bearer {stack.token()}"}
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=60, limits=limits) as client:
        for _ in range(20):  # warm the connections and the workers
            await client.post(CHAT, json={"messages": [{"role": "user", "content": "warm up"}]})
        samples = await run_load(client, args.rate, args.seconds, args.fault_at, fault)
    return analyse(name, samples, args.fault_at, "anthropic", args.timeline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (open loop)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each scenario's run")
    parser.add_argument("--fault-at", type=float, default=5.0, help="seconds into the run the primary breaks")
    parser.add_argument("--read-timeout", type=float, default=2.0, help="PROVIDER_READ_TIMEOUT_S")
    parser.add_argument("--timeline", action="store_true", help="print each second of each run")
    args = parser.parse_args()

    stack = Stack()
    try:
        stack.start(
            workers=1,
            latency_ms=20,
            PRIMARY_LLM_PROVIDER="openai",
            ENABLE_LLM_FAILOVER="true",
            PROVIDER_READ_TIMEOUT_S=str(args.read_timeout),
            LOG_LEVEL="ERROR",
        )
        r = redis.Redis.from_url(stack.redis_url)
        print(
            f"rate {args.rate:g}/s for {args.seconds:g}s per scenario, openai breaks at {args.fault_at:g}s; "
            f"breaker: defaults (5 failures in a row, 30 s cooldown); read timeout {args.read_timeout:g}s"
        )
        results = {}
        for name, rule in (("503", {"mode": "status", "status": 503}), ("hang", {"mode": "hang"})):
            reset(stack, r)
            results[name] = asyncio.run(scenario(stack, args, name, rule))
        reset(stack, r)
        r.close()
    except BaseException:
        for proc in stack.group.procs:
            print(f"----- {proc.name} -----\n{proc.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        stack.stop()
    line: dict[str, float | int | None] = {}
    for name in ("503", "hang"):
        figures = results[name]
        line[f"client_errors_{name}"] = int(figures["client_errors"])
        line[f"p99_ms_switch_{name}"] = figures["p99_ms_switch"]
        direct = figures["seconds_to_direct"]
        line[f"seconds_to_direct_{name}"] = direct if direct != float("inf") else None  # never went direct
    print(json.dumps(line))


if __name__ == "__main__":
    main()
