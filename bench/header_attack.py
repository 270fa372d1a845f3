"""Does a header attack move other clients' latency? Normal load with and without one, in the same run.

Starts the stack (Redis, simulator, one worker per provider, `--api-processes` API processes) and runs
the same open-loop load twice through `POST /api/v1/llm/chat/completions` (`bench/loadgen.py`, its own
process; latency from the scheduled send time): first alone, then while an attacker (this file with
`--attacker`, another process, at the lowest CPU priority unless `--attacker-nice 0`: a real attacker's
CPU is not the server's) does what issue 14 reproduced:

- slowloris: `--slow` connections (5,000), each sending a request head one byte a second and never
  finishing it, and opening a new connection whenever the server cuts one;
- at 3 s, one request whose header is 100 MB, sent as fast as the server takes it, watching for an
  answer (as a browser or curl would); at 6 s, four at once that do not look for an answer until they
  have sent their 100 MB (or the server has cut them).

Meanwhile it samples the API server processes' VmRSS every 20 ms. It prints the figures, then one JSON
line: p50/p99 of the normal requests without and with the attack, errors, RSS before and at most during
the attack, the slow connections the attacker held at once and how long the server let one live, and
how long the 100 MB headers took to be answered. Every normal answer must be a 200; a run with errors
exits with status 1. Takes ~45 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/header_attack.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.loadgen as loadgen
from bench.connection_spread import api_server_pids
from bench.overhead import MARKER, cpu_seconds, gateway_body, machine_busy_seconds, percentile, stack_processes
from devstack.stack import Stack

MB = 1024 * 1024


def raise_open_files_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"ulimit -n: hard limit {hard} < {needed} connections needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# ---------------------------------------------------------------- the attacker (its own process)


class Slow(asyncio.Protocol):
    """One slowloris connection: what the server answered and when it closed."""

    def __init__(self, attack: Attacker) -> None:
        self.attack = attack
        self.transport: asyncio.Transport | None = None
        self.opened = 0.0
        self.answer = b""
        self.slot = attack.next_slot()  # which tenth of a second it sends its byte in

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.opened = time.monotonic()
        self.attack.open.add(self)
        self.attack.peak = max(self.attack.peak, len(self.attack.open))
        transport.write(b"GET /api/v1/llm/jobs/x HTTP/1.1\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.answer += data

    def connection_lost(self, exc: Exception | None) -> None:
        attack = self.attack
        attack.open.discard(self)
        if attack.stopping:
            return
        attack.cut += 1
        attack.lifetimes.append(time.monotonic() - self.opened)
        status = self.answer[9:12].decode(errors="replace") if self.answer.startswith(b"HTTP/1.1 ") else "none"
        attack.statuses[status] = attack.statuses.get(status, 0) + 1
        attack.reconnect()


@dataclass
class Attacker:
    host: str
    port: int
    slow: int
    duration_s: float
    open: set[Slow] = field(default_factory=set)
    peak: int = 0
    cut: int = 0
    lifetimes: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    connect_errors: int = 0
    headers: list[dict[str, Any]] = field(default_factory=list)
    stopping: bool = False
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    slots: int = 0

    def next_slot(self) -> int:
        self.slots += 1
        return self.slots % 10

    def reconnect(self) -> None:
        task = asyncio.get_running_loop().create_task(self.connect())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def connect(self) -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: Slow(self), self.host, self.port)
        except OSError:
            self.connect_errors += 1

    async def drip(self) -> None:
        """One byte a second on every open connection: a tenth of them every 100 ms."""
        tick = 0
        while not self.stopping:
            await asyncio.sleep(0.1)
            tick += 1
            for conn in list(self.open):
                if conn.slot == tick % 10 and conn.transport is not None and not conn.transport.is_closing():
                    conn.transport.write(b"x")

    async def big_header(self, watch: bool) -> None:
        """A request with a 100 MB header; the answer's status and when it came, the bytes sent."""
        chunk = b"a" * (64 * 1024)
        started = time.monotonic()
        sent = 0
        answer = b""
        answered_after: float | None = None
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(b"GET /api/v1/llm/jobs/x HTTP/1.1\r\nhost: gateway\r\nx-attack: ")
        read = asyncio.ensure_future(reader.read(65536))
        try:
            while sent < 100 * MB:
                if watch and read.done():
                    break
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
        except OSError:  # cut by the server (a reset, or a broken pipe)
            pass
        cut_after = time.monotonic() - started
        try:
            answer = await asyncio.wait_for(read, 5)
            answered_after = time.monotonic() - started
        except (TimeoutError, OSError):
            pass
        writer.close()
        self.headers.append(
            {
                "watching": watch,
                "status": answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else None,
                "answered_ms": None if answered_after is None else round(1000 * answered_after, 1),
                "sent_mb": round(sent / MB, 2),
                "sending_ended_ms": round(1000 * cut_after, 1),
            }
        )

    async def run(self) -> dict[str, Any]:
        start = time.monotonic()
        drip = asyncio.ensure_future(self.drip())
        for i in range(0, self.slow, 250):  # a ramp: the listen backlog takes what is not accepted yet
            await asyncio.gather(*(self.connect() for _ in range(min(250, self.slow - i))))
        opened_in = time.monotonic() - start
        await asyncio.sleep(max(0.0, 3 - (time.monotonic() - start)))
        await self.big_header(watch=True)
        await asyncio.sleep(max(0.0, 6 - (time.monotonic() - start)))
        await asyncio.gather(*(self.big_header(watch=False) for _ in range(4)))
        await asyncio.sleep(max(0.0, self.duration_s - (time.monotonic() - start)))
        self.stopping = True
        drip.cancel()
        for conn in list(self.open):
            if conn.transport is not None:
                conn.transport.close()
        return {
            "slow_opened_in_s": round(opened_in, 2),
            "slow_peak_open": self.peak,
            "slow_cut_by_server": self.cut,
            "slow_cut_statuses": self.statuses,
            "slow_max_lifetime_s": round(max(self.lifetimes, default=0.0), 2),
            "slow_connect_errors": self.connect_errors,
            "headers": self.headers,
            "attacker_cpu_s": time.process_time(),
        }


def attacker_main() -> None:
    spec = json.loads(sys.stdin.read())
    # an attacker's CPU is on its own machine; here it shares the box, so by default it runs at the
    # lowest priority, taking from the measured stack only what the stack leaves idle
    os.nice(int(spec["nice"]))
    raise_open_files_limit(int(spec["slow"]) + 200)
    import uvloop

    attack = Attacker(spec["host"], int(spec["port"]), int(spec["slow"]), float(spec["duration_s"]))
    sys.stdout.write(json.dumps(uvloop.run(attack.run())))


# ---------------------------------------------------------------- the bench


@dataclass
class RssWatch:
    pids: list[int]
    peak: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def total(self) -> int:
        out = 0
        for pid in self.pids:
            with open(f"/proc/{pid}/status") as f:
                out += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        return out

    def __enter__(self) -> RssWatch:
        self.peak = self.total()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self.total())

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


@dataclass
class CpuBracket:
    """CPU seconds of the stack's processes and of the whole machine over one phase."""

    pids: dict[str, int]
    stack_s: dict[str, float] = field(default_factory=dict)
    machine_s: float = 0.0
    wall_s: float = 0.0

    def __enter__(self) -> CpuBracket:
        self._stack0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine0 = machine_busy_seconds()
        self._wall0 = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.stack_s = {name: cpu_seconds(pid) - self._stack0[name] for name, pid in self.pids.items()}
        self.machine_s = machine_busy_seconds() - self._machine0
        self.wall_s = time.monotonic() - self._wall0

    def report(self, load_cpu_s: float) -> float:
        """Prints the API's CPU and the cores others used; returns the API servers' CPU seconds."""
        api = sum(v for k, v in self.stack_s.items() if k.startswith("api") and k != "api-supervisor")
        others = max(0.0, self.machine_s - sum(self.stack_s.values()) - load_cpu_s) / self.wall_s
        print(f"  API CPU {api:.2f} s over {self.wall_s:.1f} s; other processes of the box: {others:.2f} cores")
        return api


def summarize(name: str, result: dict[str, Any]) -> tuple[float, float]:
    lat = result["latencies_ms"]
    slowest = sorted(result.get("timeline", []), key=lambda t: -t[1])[:5]
    print("  slowest (s into the measured window, ms):", [(round(t, 2), round(ms)) for t, ms in slowest])
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    print(
        f"  {name:15s} n={result['completed']:5d} errors={result['errors']} p50={p50:7.2f} ms p99={p99:7.2f} ms"
        f" max={max(lat, default=float('nan')):7.2f} ms"
    )
    for sample in result["error_samples"]:
        print(f"    {sample}")
    return p50, p99


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attacker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=50.0, help="normal requests per second (open loop)")
    parser.add_argument("--seconds", type=float, default=12.0, help="measured seconds of each phase")
    parser.add_argument("--slow", type=int, default=5000, help="slowloris connections held at once")
    parser.add_argument("--api-processes", type=int, default=1)
    parser.add_argument("--attacker-nice", type=int, default=19, help="the attacker's niceness (0: compete)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the simulator's latency")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra gateway environment (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.attacker:
        attacker_main()
        return 0
    env = dict(item.split("=", 1) for item in args.env)
    t0 = time.monotonic()
    stack = Stack()
    try:
        stack.start(workers=1, latency_ms=args.latency_ms, api_processes=args.api_processes, **env)
        assert stack.api is not None
        servers = api_server_pids(stack.api)
        host, port = stack.api_url.removeprefix("http://").rsplit(":", 1)
        load = {
            "host": host,
            "port": int(port),
            "path": "/api/v1/llm/chat/completions",
            "headers": {"Authorization": f"Bearer {stack.token()}"},
            "body": gateway_body(),
            "marker": MARKER,
            "mode": "open",
            "rate": args.rate,
            "duration_s": args.seconds,
            "warmup_s": 2.0,
            "timeline": True,
        }
        print(
            f"shape: {args.api_processes} API process(es), one worker per provider, simulator latency"
            f" {args.latency_ms:g} ms, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start,"
            f" ulimit -n {resource.getrlimit(resource.RLIMIT_NOFILE)}"
        )
        print(f"\n[without attack] {args.rate:g} req/s for {args.seconds:g} s (after 2 s warm-up)")
        pids = stack_processes(stack)
        with RssWatch(servers) as quiet_rss, CpuBracket(pids) as calm_cpu:
            calm = loadgen.run_load(load, timeout=args.seconds + 60)
        calm_p = summarize("normal", calm)
        calm_api_cpu = calm_cpu.report(float(calm["loadgen_cpu_s"]))

        print(f"\n[with attack] the same load, {args.slow} slow connections, 100 MB headers at 3 s and 6 s")
        spec = {
            "host": host,
            "port": int(port),
            "slow": args.slow,
            "duration_s": args.seconds + 2.5,
            "nice": args.attacker_nice,
        }
        with (
            RssWatch(servers) as attack_rss,
            CpuBracket(pids) as attack_cpu,
            subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--attacker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            ) as attacker,
        ):
            assert attacker.stdin is not None and attacker.stdout is not None
            attacker.stdin.write(json.dumps(spec).encode())
            attacker.stdin.close()
            attacked = loadgen.run_load(load, timeout=args.seconds + 60)
            attack = json.loads(attacker.stdout.read() or b"{}")
            attacker.wait(30)
        attacked_p = summarize("normal", attacked)
        attack_api_cpu = attack_cpu.report(float(attacked["loadgen_cpu_s"]) + float(attack.get("attacker_cpu_s", 0)))
        for name in ("slow_opened_in_s", "slow_peak_open", "slow_cut_by_server", "slow_cut_statuses"):
            print(f"  {name}: {attack.get(name)}")
        print(f"  slow_max_lifetime_s: {attack.get('slow_max_lifetime_s')}")
        for h in attack.get("headers", []):
            print(f"  100 MB header: {h}")
        print(
            f"  API RSS: {quiet_rss.peak / MB:.1f} MB at most without the attack,"
            f" {attack_rss.peak / MB:.1f} MB at most with it"
        )
    except BaseException:
        for proc in stack.group.procs:
            print(f"----- {proc.name} log -----\n{proc.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        stack.stop()
    headers = attack.get("headers", [])
    errors = calm["errors"] + attacked["errors"]
    print(f"\nerrors: {errors} ({'valid' if errors == 0 else 'INVALID'} run); took {time.monotonic() - t0:.0f} s")
    summary = {
        "p50_ms_without_attack": round(calm_p[0], 2),
        "p99_ms_without_attack": round(calm_p[1], 2),
        "p50_ms_with_attack": round(attacked_p[0], 2),
        "p99_ms_with_attack": round(attacked_p[1], 2),
        "normal_errors": errors,
        "api_cpu_s_without_attack": round(calm_api_cpu, 2),
        "api_cpu_s_with_attack": round(attack_api_cpu, 2),
        "api_rss_mb_without_attack": round(quiet_rss.peak / MB, 1),
        "api_rss_mb_max_with_attack": round(attack_rss.peak / MB, 1),
        "slow_peak_open": attack.get("slow_peak_open"),
        "slow_max_lifetime_s": attack.get("slow_max_lifetime_s"),
        "header_statuses": [h["status"] for h in headers],
        # the one that watches for an answer: when it came; the four that do not: when their sending ended
        "header_431_ms": next((h["answered_ms"] for h in headers if h["watching"]), None),
        "blind_headers_sending_ended_max_ms": max(
            (h["sending_ended_ms"] for h in headers if not h["watching"]), default=None
        ),
    }
    print(json.dumps(summary))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
