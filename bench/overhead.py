"""What the gateway adds on top of the provider: the same load direct to the simulator and through it.

Starts the stack (Redis, simulator with a fixed latency, workers, API) and, for each load, runs it
first direct to the simulator's OpenAI route, then through `POST /api/v1/llm/chat/completions`
(`provider: openai`), with the same load generator (`bench/loadgen.py`, its own process):

- c1: one request at a time;
- open loop: a steady rate (200/s) for a fixed time, latency from the scheduled send time;
- c64: 64 requests in flight, completions per second.

"Added" latency is gateway percentile minus direct percentile. Every answer must be a 200; errors
are printed and make the run invalid (exit status 1). After each load it prints where the time
goes: each stack process's CPU time and system calls per request, Redis round trips and commands
per request, and the CPU other processes on the box took meanwhile (a noisy box skews everything).
The last line is one JSON object with exactly the issue's keys.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/overhead.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import redis

import bench.loadgen as loadgen
from bench.connection_spread import api_server_pids, children, cmdline
from devstack.stack import Stack

CLK_TCK = os.sysconf("SC_CLK_TCK")
MARKER = "#00000000"
PROMPT = f"Hello, how are you? {MARKER}"
# The limits (SPEC: 60 requests/min per provider) would refuse most of this load: raise them so the
# limiter still runs on every request but never refuses. --env overrides any of these.
UNLIMITED = "100000000"
BENCH_ENV = {
    name: UNLIMITED
    for name in (
        "RATE_LIMIT_GLOBAL_RPM",
        "RATE_LIMIT_GLOBAL_TPM",
        "RATE_LIMIT_OPENAI_RPM",
        "RATE_LIMIT_OPENAI_TPM",
        "RATE_LIMIT_ANTHROPIC_RPM",
        "RATE_LIMIT_ANTHROPIC_TPM",
        "TENANT_DEFAULT_RPM",
        "TENANT_DEFAULT_TPM",
    )
}
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": PROMPT},
]


def gateway_body() -> str:
    body = {"messages": MESSAGES, "model": "gpt-4", "maxTokens": 150, "temperature": 0.7, "provider": "openai"}
    return json.dumps(body, separators=(",", ":"))


def direct_body() -> str:
    body = {"model": "gpt-4", "messages": MESSAGES, "max_tokens": 150, "temperature": 0.7}
    return json.dumps(body, separators=(",", ":"))


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# ---------------------------------------------------------------- CPU time of the stack's processes


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads) so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except FileNotFoundError:
        return 0.0
    fields = data[data.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def stack_processes(stack: Stack) -> dict[str, int]:
    """name -> pid of every process of the stack, API server children by their own names."""
    named: dict[str, int] = {}
    for proc in stack.group.procs:
        if proc is stack.api:
            servers = api_server_pids(proc)
            if servers == [proc.popen.pid]:
                named["api"] = proc.popen.pid
            else:
                named.update({f"api-{i}": pid for i, pid in enumerate(servers)})
                named["api-supervisor"] = proc.popen.pid
        else:
            name = "redis" if proc.name.startswith("redis") else proc.name
            named[name] = proc.popen.pid
            for child in children(proc.popen.pid):  # none expected; counted if a process forks
                named[f"{name}/{child}:{cmdline(child)[:30]}"] = child
    return named


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent not idle so far (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def syscalls(pid: int) -> int:
    """read + write system calls of one process so far (/proc/<pid>/io): a proxy for round trips."""
    try:
        with open(f"/proc/{pid}/io") as f:
            counts = dict(line.split(": ") for line in f.read().splitlines())
    except (FileNotFoundError, PermissionError):
        return 0
    return int(counts["syscr"]) + int(counts["syscw"])


@dataclass
class Counters:
    """Cumulative counters of the stack; `b - a` gives what a window spent."""

    cpu_s: dict[str, float]  # per stack process
    syscalls: dict[str, int]  # per stack process
    machine_s: float  # busy CPU time of the whole machine
    redis_calls: dict[str, int]  # Redis's command calls (incl. those inside scripts) and reads processed

    @classmethod
    def take(cls, pids: dict[str, int], r: redis.Redis) -> Counters:
        stats: dict[str, Any] = r.info("commandstats")  # type: ignore[assignment]
        counts = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
        info: dict[str, Any] = r.info("stats")  # type: ignore[assignment]
        counts[READS] = int(info.get("total_reads_processed", 0))
        return cls(
            {name: cpu_seconds(pid) for name, pid in pids.items()},
            {name: syscalls(pid) for name, pid in pids.items()},
            machine_busy_seconds(),
            counts,
        )

    def __add__(self, other: Counters) -> Counters:
        """Two windows' spending together."""
        return Counters(
            {k: self.cpu_s.get(k, 0.0) + other.cpu_s.get(k, 0.0) for k in self.cpu_s | other.cpu_s},
            {k: self.syscalls.get(k, 0) + other.syscalls.get(k, 0) for k in self.syscalls | other.syscalls},
            self.machine_s + other.machine_s,
            {k: self.redis_calls.get(k, 0) + other.redis_calls.get(k, 0) for k in self.redis_calls | other.redis_calls},
        )

    def __sub__(self, before: Counters) -> Counters:
        return Counters(
            {k: v - before.cpu_s.get(k, 0.0) for k, v in self.cpu_s.items()},
            {k: v - before.syscalls.get(k, 0) for k, v in self.syscalls.items()},
            self.machine_s - before.machine_s,
            {
                k: v - before.redis_calls.get(k, 0)
                for k, v in self.redis_calls.items()
                if v != before.redis_calls.get(k, 0)
            },
        )


READS = "(reads processed)"  # Redis's count of client reads: about one per round trip (a pipeline is one)


# ---------------------------------------------------------------- one load, run in its own process


@dataclass
class Load:
    side: str  # "direct" | "gateway"
    result: dict[str, Any]
    spent: Counters  # over the measured window

    @property
    def cpu_s(self) -> dict[str, float]:
        return self.spent.cpu_s

    @property
    def latencies(self) -> list[float]:
        lat: list[float] = self.result["latencies_ms"]
        return lat

    @property
    def rps(self) -> float:
        return float(self.result["completed"]) / float(self.result["elapsed_s"])

    @property
    def other_cores(self) -> float:
        """Cores used by processes that are neither the stack nor the load generator."""
        ours = sum(self.cpu_s.values()) + float(self.result["loadgen_cpu_s"])
        return max(0.0, self.spent.machine_s - ours) / float(self.result["elapsed_s"])


def run_load(
    spec: dict[str, Any],
    pids: dict[str, int],
    r: redis.Redis,
    side: str,
    script: str = str(loadgen.__file__),
    during: Callable[[], None] | None = None,
) -> Load:
    """Run a load generator process (`script`: loadgen.py or one speaking its protocol); bracket its
    measured window (after its warm-up) with CPU snapshots. `during` runs every 50 ms in a thread
    while the window lasts (to sample what only exists under load)."""
    with subprocess.Popen(
        [sys.executable, script, "--announce"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(json.dumps(spec).encode())
        proc.stdin.close()
        line = proc.stdout.readline()
        before = Counters.take(pids, r)
        if line.strip() != b"measuring":
            raise RuntimeError(f"loadgen: {line!r} {proc.stderr.read().decode(errors='replace')[-2000:]}")
        with sampling(during):
            out = proc.stdout.read()
        after = Counters.take(pids, r)
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise RuntimeError(f"loadgen failed: {err.decode(errors='replace')[-2000:]}")
    try:
        return Load(side, json.loads(out), after - before)
    except json.JSONDecodeError as exc:
        raise RuntimeError(
            f"loadgen's result: {exc}, {len(out)} bytes: ...{out[exc.pos - 100 : exc.pos + 100]!r}"
        ) from exc


@contextlib.contextmanager
def sampling(sample: Callable[[], None] | None, every_s: float = 0.05) -> Iterator[None]:
    """Call `sample()` every `every_s` in a thread while the block runs."""
    if sample is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            sample()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Bench:
    def __init__(self, stack: Stack, pids: dict[str, int]) -> None:
        self.stack = stack
        self.pids = pids
        sim_host, sim_port = stack.sim_url.removeprefix("http://").rsplit(":", 1)
        api_host, api_port = stack.api_url.removeprefix("http://").rsplit(":", 1)
        key = stack.env["OPENAI_API_KEY"]
        self.targets = {
            "direct": {
                "host": sim_host,
                "port": int(sim_port),
                "path": "/openai/v1/chat/completions",
                "headers": {"Authorization": f"Bearer {key}"},
                "body": direct_body(),
                "marker": MARKER,
            },
            "gateway": {
                "host": api_host,
                "port": int(api_port),
                "path": "/api/v1/llm/chat/completions",
                "headers": {"Authorization": f"Bearer {stack.token()}"},
                "body": gateway_body(),
                "marker": MARKER,
            },
        }
        self.errors = 0
        self.other_cores = 0.0  # the most any measurement had to share the box with
        self.redis = redis.Redis.from_url(stack.redis_url)

    def close(self) -> None:
        self.redis.close()

    def run(self, side: str, load: dict[str, Any]) -> Load:
        return run_load({**self.targets[side], **load}, self.pids, self.redis, side)

    def both(self, load: dict[str, Any]) -> tuple[Load, Load]:
        direct = self.run("direct", load)
        gateway = self.run("gateway", load)
        for run in (direct, gateway):
            self.other_cores = max(self.other_cores, run.other_cores)
            if run.result["errors"]:
                self.errors += run.result["errors"]
                print(f"  ERRORS ({run.side}): {run.result['errors']}")
                for sample in run.result["error_samples"]:
                    print(f"    {sample}")
        return direct, gateway


def latency_line(direct: Load, gateway: Load) -> tuple[float, float]:
    d50, d99 = percentile(direct.latencies, 50), percentile(direct.latencies, 99)
    g50, g99 = percentile(gateway.latencies, 50), percentile(gateway.latencies, 99)
    for run, p50, p99 in ((direct, d50, d99), (gateway, g50, g99)):
        r = run.result
        print(
            f"  {run.side:8s} n={r['completed']:5d} errors={r['errors']} p50={p50:7.2f} ms  p99={p99:7.2f} ms"
            f"  max={max(run.latencies, default=float('nan')):7.2f} ms  ({run.rps:.0f} req/s,"
            f" {r['connections_opened']} connections)"
        )
    print(
        f"  added    p50={g50 - d50:+7.2f} ms  p99={g99 - d99:+7.2f} ms"
        f"   ratio p50 {g50 / d50:.2f}x  p99 {g99 / d99:.2f}x"
    )
    return g50 - d50, g99 - d99


def cpu_table(direct: Load, gateway: Load) -> None:
    """Where the time goes: CPU and system calls per request of each process, Redis work per request."""
    n_d, n_g = max(1, direct.result["completed"]), max(1, gateway.result["completed"])
    elapsed_g = float(gateway.result["elapsed_s"])

    def row(name: str, d: float, g: float, calls: str = "") -> None:
        print(f"    {name:22s} {1000 * d / n_d:6.3f} | {1000 * g / n_g:6.3f}   {g / elapsed_g:4.2f} cores  {calls}")

    print("  CPU ms per request (direct | gateway), cores busy and read+write syscalls per request (gateway):")
    for name in sorted(gateway.cpu_s, key=lambda n: -gateway.cpu_s[n]):
        d, g = direct.cpu_s.get(name, 0.0), gateway.cpu_s[name]
        if d or g:
            row(name, d, g, f"{gateway.spent.syscalls.get(name, 0) / n_g:5.1f}")
    row("stack total", sum(direct.cpu_s.values()), sum(gateway.cpu_s.values()))
    row("loadgen", direct.result["loadgen_cpu_s"], gateway.result["loadgen_cpu_s"])
    # anything else on the box competes for the same cores: a busy neighbour makes the run noisy
    row(
        "other processes",
        direct.other_cores * float(direct.result["elapsed_s"]),
        gateway.other_cores * float(gateway.result["elapsed_s"]),
    )
    cmds = dict(gateway.spent.redis_calls)
    reads = cmds.pop(READS, 0)
    top = sorted(((k, n) for k, n in cmds.items() if n > 0), key=lambda kv: -kv[1])[:10]
    print(
        f"  Redis per gateway request: {reads / n_g:.1f} client reads (~round trips),"
        f" {sum(cmds.values()) / n_g:.1f} commands incl. inside scripts: "
        + ", ".join(f"{name} {calls / n_g:.1f}" for name, calls in top)
    )


def observability_ab(args: argparse.Namespace, extra_env: dict[str, str], rounds: int = 4) -> tuple[float, int]:
    """What metrics, request logs and alerts add: gateway c1 latency with OBSERVABILITY_ENABLED on
    and off. Both stacks stay up and are measured in alternating rounds, so drift on a shared machine
    hits both sides alike. Returns (added p50 ms, errors)."""
    per_round = max(50, args.c1_requests // 2)
    print(f"\n[observability on/off] gateway c1, {rounds} alternating rounds of {per_round} requests per side")
    stacks: dict[str, Stack] = {}
    benches: dict[str, Bench] = {}
    latencies: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, dict[str, float]] = {"on": {}, "off": {}}
    done = {"on": 0, "off": 0}
    errors = 0
    try:
        for side, flag in (("on", "true"), ("off", "false")):
            stacks[side] = Stack()
            stacks[side].start(
                workers=args.workers,
                latency_ms=args.latency_ms,
                api_processes=args.api_processes,
                **{**extra_env, "OBSERVABILITY_ENABLED": flag},
            )
        benches.update({side: Bench(s, stack_processes(s)) for side, s in stacks.items()})
        load = {"mode": "closed", "concurrency": 1, "requests": per_round, "warmup_requests": 20}
        for i in range(rounds):
            for side in ("on", "off") if i % 2 == 0 else ("off", "on"):
                bench = benches[side]
                run = bench.run("gateway", load)
                errors += run.result["errors"]
                latencies[side] += run.latencies
                done[side] += run.result["completed"]
                for name, seconds in run.cpu_s.items():
                    group = name.split("-")[0]  # worker-openai-0 -> worker, api-0 -> api, redis
                    cpu[side][group] = cpu[side].get(group, 0.0) + seconds
    finally:
        for bench in benches.values():
            bench.close()
        for s in stacks.values():
            s.stop()
    p50 = {side: percentile(values, 50) for side, values in latencies.items()}
    p99 = {side: percentile(values, 99) for side, values in latencies.items()}
    for side in ("on", "off"):
        per_request = ", ".join(
            f"{group} {1000 * seconds / max(done[side], 1):.3f}" for group, seconds in sorted(cpu[side].items())
        )
        print(
            f"  {side:3s} n={done[side]:5d} p50={p50[side]:7.2f} ms  p99={p99[side]:7.2f} ms  CPU ms/req: {per_request}"
        )
    added = p50["on"] - p50["off"]
    print(f"  observability adds p50 {added:+.3f} ms, p99 {p99['on'] - p99['off']:+.3f} ms (target p50 <= 0.5 ms)")
    return added, errors


class ConsolePoller:
    """What an open console's overview asks of the API: the overview and the last hour's series every
    2 s (console.js REFRESH_MS), each provider's /metrics every 10 s (TTFT). A thread of this process."""

    REFRESH_S = 2.0
    TTFT_EVERY_S = 10.0

    def __init__(self, stack: Stack) -> None:
        self.client = stack.client("admin", "console-viewer", timeout=10)
        self.stop_event = threading.Event()
        self.polls = 0
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name="console-poller", daemon=True)

    def __enter__(self) -> ConsolePoller:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        self.thread.join()

    def _run(self) -> None:
        last_ttft = 0.0
        while not self.stop_event.is_set():
            paths = ["/api/v1/llm/console/overview", "/api/v1/llm/console/series?period=hour"]
            if time.monotonic() - last_ttft >= self.TTFT_EVERY_S:
                last_ttft = time.monotonic()
                paths += [f"/api/v1/llm/metrics?period=hour&provider={p}" for p in ("openai", "anthropic")]
            for path in paths:
                try:
                    ok = self.client.get(path).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.polls += 1
                self.failures += 0 if ok else 1
            self.stop_event.wait(self.REFRESH_S)


def console_ab(args: argparse.Namespace, extra_env: dict[str, str], rounds: int = 4) -> tuple[float, int]:
    """What an open console costs the chat path: gateway c1 on one stack, in alternating rounds with a
    console refreshing (`ConsolePoller`) and without. Returns (added p50 ms, errors)."""
    per_round = max(50, args.c1_requests // 2)
    print(f"\n[console open/closed] gateway c1, {rounds} alternating rounds of {per_round} requests per side")
    stack = Stack()
    latencies: dict[str, list[float]] = {"open": [], "closed": []}
    api_cpu: dict[str, float] = {"open": 0.0, "closed": 0.0}
    done = {"open": 0, "closed": 0}
    errors = polls = 0
    try:
        stack.start(workers=args.workers, latency_ms=args.latency_ms, api_processes=args.api_processes, **extra_env)
        bench = Bench(stack, stack_processes(stack))
        load = {"mode": "closed", "concurrency": 1, "requests": per_round, "warmup_requests": 20}
        for i in range(rounds):
            for side in ("open", "closed") if i % 2 == 0 else ("closed", "open"):
                if side == "open":
                    with ConsolePoller(stack) as poller:
                        run = bench.run("gateway", load)
                    polls += poller.polls
                    errors += poller.failures
                else:
                    run = bench.run("gateway", load)
                errors += run.result["errors"]
                latencies[side] += run.latencies
                done[side] += run.result["completed"]
                api_cpu[side] += sum(v for k, v in run.cpu_s.items() if k.startswith("api"))
        bench.close()
    finally:
        stack.stop()
    p50 = {side: percentile(values, 50) for side, values in latencies.items()}
    p99 = {side: percentile(values, 99) for side, values in latencies.items()}
    for side in ("open", "closed"):
        print(
            f"  console {side:6s} n={done[side]:5d} p50={p50[side]:7.2f} ms  p99={p99[side]:7.2f} ms"
            f"  API CPU ms/req {1000 * api_cpu[side] / max(done[side], 1):.3f}"
        )
    added = p50["open"] - p50["closed"]
    print(f"  an open console adds p50 {added:+.3f} ms, p99 {p99['open'] - p99['closed']:+.3f} ms ({polls} polls)")
    return added, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The best c64 throughput measured on the 2-core box: one worker process saturates first (it takes
    # the largest share of CPU per request); a second API process added nothing measurable.
    parser.add_argument("--api-processes", type=int, default=1, help="API server processes (1 or 2)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per provider (1 or 2)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="simulator latency")
    parser.add_argument("--c1-requests", type=int, default=300)
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests per second")
    parser.add_argument("--rate-seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--concurrent-requests", type=int, default=5000)
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra gateway environment (repeatable)"
    )
    parser.add_argument(
        "--observability-ab",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure c1 with metrics/logs/alerts on and off (OBSERVABILITY_ENABLED)",
    )
    parser.add_argument(
        "--console-ab",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also measure c1 with the web console open and refreshing, and without (same stack)",
    )
    parser.add_argument("--only-console-ab", action="store_true", help="measure the console A/B alone")
    args = parser.parse_args(argv)
    extra_env = {**BENCH_ENV, **dict(item.split("=", 1) for item in args.env)}

    t0 = time.monotonic()
    if args.only_console_ab:
        added, errors = console_ab(args, extra_env)
        print(json.dumps({"console_added_p50_ms": round(added, 3), "errors": errors}))
        return 0 if errors == 0 else 1
    stack = Stack()
    try:
        stack.start(workers=args.workers, latency_ms=args.latency_ms, api_processes=args.api_processes, **extra_env)
        pids = stack_processes(stack)
        print(
            f"shape: {args.api_processes} API process(es), {args.workers} worker(s) per provider,"
            f" simulator latency {args.latency_ms:g} ms, {os.cpu_count()} CPUs,"
            f" load average {os.getloadavg()[0]:.2f} at start"
            f"{', env ' + ' '.join(args.env) if args.env else ''}"
        )
        print("rate limits and tenant quotas raised so none refuses (the limiter still runs on every request)")
        bench = Bench(stack, pids)

        print(f"\n[c1] one request at a time, {args.c1_requests} requests (after 50 warm-up)")
        c1 = bench.both({"mode": "closed", "concurrency": 1, "requests": args.c1_requests, "warmup_requests": 50})
        added_c1 = latency_line(*c1)
        cpu_table(*c1)

        print(f"\n[open loop] {args.rate:g} req/s for {args.rate_seconds:g} s (after 2 s warm-up), from scheduled time")
        rate_load = {"mode": "open", "rate": args.rate, "duration_s": args.rate_seconds, "warmup_s": 2.0}
        rated = bench.both(rate_load)
        added_rate = latency_line(*rated)
        cpu_table(*rated)

        n, conc = args.concurrent_requests, args.concurrency
        print(f"\n[c{conc}] {conc} in flight, {n} requests (after {conc * 10} warm-up)")
        direct, gateway = bench.both(
            {"mode": "closed", "concurrency": conc, "requests": n, "warmup_requests": conc * 10}
        )
        latency_line(direct, gateway)
        print(
            f"  throughput: direct {direct.rps:.0f} req/s, gateway {gateway.rps:.0f} req/s"
            f" ({gateway.rps / direct.rps:.2f} of direct); ideal at this latency"
            f" {conc / (args.latency_ms / 1000):.0f} req/s"
        )
        cpu_table(direct, gateway)
        bench.close()
    except BaseException:
        for proc in stack.group.procs:
            print(f"----- {proc.name} log -----\n{proc.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        stack.stop()

    observability_added: float | None = None
    if args.observability_ab:
        observability_added, ab_errors = observability_ab(args, extra_env)
        bench.errors += ab_errors

    console_added: float | None = None
    if args.console_ab:
        console_added, console_errors = console_ab(args, extra_env)
        bench.errors += console_errors

    verdict = "valid run" if bench.errors == 0 else "INVALID run"
    print(f"\nerrors: {bench.errors} ({verdict}); took {time.monotonic() - t0:.0f} s")
    quiet = "quiet box" if bench.other_cores < 0.2 else "NOISY box: figures disturbed by other processes"
    print(f"other processes used up to {bench.other_cores:.2f} cores during a measurement ({quiet})")
    summary = {
        "added_p50_ms_c1": round(added_c1[0], 3),
        "added_p99_ms_c1": round(added_c1[1], 3),
        "added_p50_ms_200rps": round(added_rate[0], 3),
        "added_p99_ms_200rps": round(added_rate[1], 3),
        "gateway_rps_c64": round(gateway.rps, 1),
        "direct_rps_c64": round(direct.rps, 1),
    }
    if observability_added is not None:  # its own line: the last line holds exactly the keys
        print(json.dumps({"observability_added_p50_ms": round(observability_added, 3)}))
    if console_added is not None:
        print(json.dumps({"console_added_p50_ms": round(console_added, 3)}))
    print(json.dumps(summary))
    return 0 if bench.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
