"""The chaos soak: mixed traffic for `--minutes` while processes die, pause and Redis crashes, with a
ledger of everything the gateway acknowledged, checked at the end.

Starts its own stack: Redis with AOF (`appendonly yes`), the simulator (`--latency-ms`, 20 ms), two
workers per provider (a supervisor loop here restarts any that dies), `api.serve --processes 2`
(whose own supervisor restarts a child that dies). Then, for the whole run:

- traffic at a steady offered rate, each kind its own open loop: synchronous completions
  (`--sync-rps`), async jobs (`--async-rps`), a batch of `--batch-lines` every `--batch-every-s`,
  streamed completions (`--stream-rps`: acknowledged by their 200, answered by their last event,
  their deltas checked against it);
- a driver, at random times drawn from `--seed` (printed), SIGKILLs a worker, SIGKILLs one API
  server process, SIGKILLs Redis and starts it again on its AOF, SIGSTOPs a worker for 2.5 leases
  and SIGCONTs it, and has the simulator throw bursts of 5xx, 429 with retry-after, hangs and
  dropped connections; at least one of each per run;
- bad input at the edges, twice per run (`--edge-runs`): bodies at and just over MAX_BODY_BYTES, invalid UTF-8,
  JSON nested 10,000 deep, a 64 KB header, a slowloris (headers one byte per second), a client that
  never reads its answers, a batch line of 1 MB. Each must get its 4xx (or, for the slow ones, its
  connection closed within API_HEADER_TIMEOUT_S + 2 s, or API_KEEP_ALIVE_S + 5 s for the client that
  never reads); a wrong answer makes the run fail (exit status 1) and is printed. The client that
  never reads is not cut today (KNOWN_GAPS): uvicorn holds its connection and the answers queued on
  it for good; the soak reports it, and its test does not count it;
- RSS and open descriptors of every gateway process (API server children and supervisor, workers,
  Redis) sampled every 5 s while the traffic runs, from `--warmup-s` after the process started; a
  process's growth is the highest sample of its last window over the highest of its first (a window
  is a minute, or a quarter of the run if shorter): descriptors follow the connections the load
  holds, so single samples would measure the load's moment, not a leak. Redis is printed but left
  out of the maxima: its memory is the data it keeps (each request's record for RESULT_TTL_S).

The ledger holds every request the gateway acknowledged: a synchronous 200 (its answer), a 504
naming its job (the job exists: it must end too), a 202 with an id, each line of an accepted batch.
After the traffic stops, the chaos stops (paused workers resumed, faults cleared, dead processes
restarted) and every entry is read back (`GET /jobs/{id}`, the batch's results) until it ends or
`--settle-s` passes. `ended`: ended once, with a result or a typed error its caller can fetch;
`lost`: unknown to the gateway; `stuck`: not ended by then; `answered_twice`: an answer read twice
that changed (the synchronous answer against the stored one, an async job's first terminal read
against its last), or a batch with two result lines for one item. `upstream_calls_twice`: gateway
requests the simulator received more than once, whatever the reason (retries after the injected
faults, failover hops, calls under way on a paused or killed worker retaken by another: the human
lines split out the fenced ones).

The last line is one JSON object with exactly the issue's keys: `minutes`, `seed`, `accepted`,
`ended`, `lost`, `answered_twice`, `stuck`, `upstream_calls_twice`, `worker_kills`, `api_kills`,
`redis_kills`, `pauses`, `p99_ms_sync`, `rss_growth_pct_max`, `fd_growth_pct_max`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/chaos.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import orjson
import redis

from bench.connection_spread import api_server_pids
from bench.overhead import BENCH_ENV, percentile
from devstack.procs import Proc, free_port, start_redis, wait_until
from devstack.stack import Stack
from shared import keys
from shared.batches import TERMINAL as BATCH_TERMINAL

# Bad input the gateway does not answer as it must yet (printed as BAD by every run; see the docstring)
KNOWN_GAPS = frozenset({"a client that never reads"})
CHAT = "/api/v1/llm/chat/completions"
JOBS = "/api/v1/llm/jobs"
BATCHES = "/api/v1/llm/batches"
TERMINAL = ("succeeded", "failed", "cancelled")
LEASE_S = 2.0
MAX_BODY_BYTES = 64 * 1024
HEADER_TIMEOUT_S = 5.0
KEEP_ALIVE_S = 10
SOAK_ENV = {
    **BENCH_ENV,
    "ENABLE_LLM_CACHING": "false",  # every request reaches a worker (a cache hit proves nothing here)
    "WORKER_LEASE_S": str(LEASE_S),
    "RETRY_BASE_DELAY_S": "0.05",
    "PROVIDER_READ_TIMEOUT_S": "10",
    "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    "API_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "API_KEEP_ALIVE_S": str(KEEP_ALIVE_S),
    "BREAKER_FAILURE_THRESHOLD": "1000000",  # the bursts must reach the workers, not trip breakers
    "BREAKER_MIN_REQUESTS": "1000000",
    "HEALTH_MIN_REQUESTS": "1000000",
    "PROVIDER_KEY_COOLDOWN_S": "0",
}


# ---------------------------------------------------------------------------------------- the ledger


@dataclass
class Entry:
    """One acknowledged request. `answer`: the first answer its caller saw (None: not seen yet)."""

    kind: str
    answer: Any = None


@dataclass
class Ledger:
    jobs: dict[str, Entry] = field(default_factory=dict)  # request id -> entry
    batches: dict[str, set[str]] = field(default_factory=dict)  # batch id -> its items' custom ids
    sync_ms: list[float] = field(default_factory=list)
    refused: Counter[int] = field(default_factory=Counter)  # not acknowledged, by status

    @property
    def accepted(self) -> int:
        return len(self.jobs) + sum(len(items) for items in self.batches.values())


# --------------------------------------------------------------------------------------- traffic


def prompt(rng: random.Random) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"chaos {rng.getrandbits(48):x}"}], "maxTokens": 16}


async def open_loop(rate: float, stop: asyncio.Event, one: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """`one()` at `rate` per second, on schedule whatever the answers do, until `stop`."""
    tasks: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    n = 0
    while not stop.is_set():
        n += 1
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            if stop.is_set():
                break
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks, return_exceptions=True)


class Traffic:
    def __init__(self, api: httpx.AsyncClient, ledger: Ledger, rng: random.Random) -> None:
        self.api = api
        self.ledger = ledger
        self.rng = rng

    async def sync_one(self) -> None:
        body = {**prompt(self.rng), "provider": self.rng.choice(("openai", "anthropic")), "timeout": 30}
        started = time.monotonic()
        try:
            resp = await self.api.post(CHAT, json=body, timeout=40)
        except httpx.HTTPError:
            self.ledger.refused[0] += 1  # no answer: nothing acknowledged (an API process died under it)
            return
        if resp.status_code == 200:
            data = resp.json()["data"]
            self.ledger.sync_ms.append((time.monotonic() - started) * 1000)
            self.ledger.jobs[data["id"]] = Entry("sync", {"status": "succeeded", "result": data})
        elif resp.status_code == 504 and (job := resp.json()["error"].get("jobId")):
            self.ledger.jobs[job] = Entry("sync-timeout")
        else:
            self.ledger.refused[resp.status_code] += 1

    async def async_one(self) -> None:
        body = {**prompt(self.rng), "provider": self.rng.choice(("openai", "anthropic"))}
        try:
            resp = await self.api.post(JOBS, json=body, timeout=20)
        except httpx.HTTPError:
            self.ledger.refused[0] += 1
            return
        if resp.status_code == 202:
            self.ledger.jobs[resp.json()["data"]["id"]] = Entry("async")
        else:
            self.ledger.refused[resp.status_code] += 1

    async def batch_one(self, lines: int) -> None:
        tag = f"{self.rng.getrandbits(32):08x}"
        items = [{"customId": f"{tag}-{i}", **prompt(self.rng)} for i in range(lines)]
        try:
            resp = await self.api.post(BATCHES, content=orjson.dumps(items), timeout=30)
        except httpx.HTTPError:
            self.ledger.refused[0] += 1
            return
        if resp.status_code == 201:
            self.ledger.batches[resp.json()["data"]["id"]] = {item["customId"] for item in items}
        else:
            self.ledger.refused[resp.status_code] += 1

    async def stream_one(self) -> None:
        """A streamed completion: acknowledged by its 200 (the request's id in X-Gateway-Request-Id);
        what its caller was told is its last event, `done` or `error` (none: the connection was cut,
        an API process killed under it, and the record must still end). Its deltas must add up to the
        answer of its `done`."""
        body = {**prompt(self.rng), "provider": self.rng.choice(("openai", "anthropic")), "stream": True}
        try:
            async with self.api.stream("POST", CHAT, json=body, timeout=40) as resp:
                if resp.status_code != 200:
                    self.ledger.refused[resp.status_code] += 1
                    return
                entry = self.ledger.jobs[resp.headers["x-gateway-request-id"]] = Entry("stream")
                text, last = "", None
                async for event in _sse_events(resp.aiter_lines()):
                    last = event
                    if event.get("event") == "delta":
                        text += orjson.loads(event["data"]).get("content") or ""
        except httpx.HTTPError:
            return  # cut: the ledger's entry (if acknowledged) has no answer, the record must end
        if last is None or last.get("event") not in ("done", "error"):
            return
        data = orjson.loads(last["data"])
        if last["event"] == "done":
            entry.answer = {"status": "succeeded", "result": data, "error": None}
            if text != data.get("content"):
                entry.answer["result"] = {**data, "content": f"deltas {text!r} != done {data.get('content')!r}"}
        else:
            error = data.get("error") or {}
            status = "cancelled" if error.get("type") == "cancelled_error" else "failed"
            entry.answer = {"status": status, "result": None, "error": error}


async def _sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    event: dict[str, str] = {}
    async for line in lines:
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value[1:] if value.startswith(" ") else value


# ------------------------------------------------------------------------------------ the processes


@dataclass
class Chaos:
    """The stack's processes as the driver sees them, and what it did to them."""

    stack: Stack
    redis_port: int
    paused: set[int] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    redis_down: bool = False

    def redis_proc(self) -> Proc:
        return next(p for p in reversed(self.stack.group.procs) if p.name == f"redis-{self.redis_port}")

    def live_workers(self, provider: str) -> list[Proc]:
        return [p for p in self.stack.workers[provider] if p.alive() and p.popen.pid not in self.paused]

    async def supervise_workers(self, stop: asyncio.Event) -> None:
        """Start a worker in place of each one that died (SIGKILLed), as a process manager would."""
        while not stop.is_set():
            for provider, procs in self.stack.workers.items():
                for dead in [p for p in procs if not p.alive()]:
                    procs.remove(dead)
                    await asyncio.to_thread(self.stack.start_worker, provider)
            await asyncio.sleep(0.5)

    async def kill_worker(self, rng: random.Random) -> None:
        candidates = self.live_workers("openai") + self.live_workers("anthropic")
        if candidates:
            rng.choice(candidates).kill(signal.SIGKILL)
            self.counts["worker_kills"] += 1

    async def kill_api(self, rng: random.Random) -> None:
        assert self.stack.api is not None
        servers = [pid for pid in api_server_pids(self.stack.api) if pid != self.stack.api.popen.pid]
        if servers:
            os.kill(rng.choice(servers), signal.SIGKILL)
            self.counts["api_kills"] += 1

    async def kill_redis(self, down_s: float) -> None:
        if self.redis_down:
            return
        self.redis_down = True
        try:
            self.redis_proc().kill(signal.SIGKILL)
            await asyncio.to_thread(self.redis_proc().popen.wait, 10)
            self.counts["redis_kills"] += 1
            await asyncio.sleep(down_s)
            await asyncio.to_thread(start_redis, self.stack.group, self.redis_port, appendonly=True)
        finally:
            self.redis_down = False

    async def pause_worker(self, rng: random.Random, seconds: float) -> None:
        candidates = self.live_workers("openai") + self.live_workers("anthropic")
        if not candidates:
            return
        proc = rng.choice(candidates)
        self.paused.add(proc.popen.pid)
        proc.kill(signal.SIGSTOP)
        self.counts["pauses"] += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            proc.kill(signal.SIGCONT)
            self.paused.discard(proc.popen.pid)

    async def fault(self, rng: random.Random, mode: str) -> None:
        provider = rng.choice(("openai", "anthropic"))
        rule: dict[str, Any] = {
            "5xx": {"mode": "status", "status": 503, "count": 20},
            "429": {"mode": "status", "status": 429, "retry_after": 1, "count": 10},
            "hang": {"mode": "hang", "seconds": 3, "count": 5},
            "drop": {"mode": "drop", "count": 10},
        }[mode]
        with contextlib.suppress(httpx.HTTPError):
            await asyncio.to_thread(self.stack.sim, "POST", "/_control/faults", json={"provider": provider, **rule})
            self.counts[f"fault_{mode}"] += 1


def schedule(rng: random.Random, seconds: float) -> list[tuple[float, str]]:
    """When each disturbance happens: per minute about one of each kill and pause, half a Redis kill
    and three fault bursts; at least one of each; none in the first or last tenth of the run."""
    minutes = seconds / 60
    per_kind = {
        "kill_worker": max(1, round(minutes)),
        "kill_api": max(1, round(minutes)),
        "kill_redis": max(1, round(minutes / 2)),
        "pause": max(1, round(minutes)),
        **{f"fault_{m}": max(1, round(minutes * 3 / 4)) for m in ("5xx", "429", "hang", "drop")},
    }
    events = [(rng.uniform(0.1, 0.9) * seconds, kind) for kind, n in per_kind.items() for _ in range(n)]
    return sorted(events)


async def drive(chaos: Chaos, rng: random.Random, seconds: float, stop: asyncio.Event) -> None:
    started = time.monotonic()
    running: set[asyncio.Task[None]] = set()
    for at, kind in schedule(rng, seconds):
        delay = started + at - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
        if stop.is_set():
            break
        print(f"  t={time.monotonic() - started:6.1f}s {kind}", flush=True)
        action: Awaitable[None]
        if kind == "kill_worker":
            action = chaos.kill_worker(rng)
        elif kind == "kill_api":
            action = chaos.kill_api(rng)
        elif kind == "kill_redis":
            action = chaos.kill_redis(down_s=rng.uniform(1.0, 3.0))
        elif kind == "pause":
            action = chaos.pause_worker(rng, seconds=2.5 * LEASE_S)
        else:
            action = chaos.fault(rng, kind.removeprefix("fault_"))
        task = asyncio.ensure_future(action)
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running, return_exceptions=True)


# ------------------------------------------------------------------------------- processes' growth


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def gateway_pids(chaos: Chaos) -> dict[int, str]:
    stack = chaos.stack
    assert stack.api is not None
    named = {pid: "api" for pid in api_server_pids(stack.api)}
    named[stack.api.popen.pid] = "api-supervisor"
    for provider, procs in stack.workers.items():
        named.update({p.popen.pid: f"worker-{provider}" for p in procs if p.alive()})
    with contextlib.suppress(StopIteration):
        if chaos.redis_proc().alive():
            named[chaos.redis_proc().popen.pid] = "redis"
    return named


@dataclass
class Growth:
    warmup_s: float
    window_s: float
    born: dict[int, float] = field(default_factory=dict)  # pid -> first seen (monotonic)
    samples: dict[int, list[tuple[float, int, int]]] = field(default_factory=dict)  # pid -> (time, rss, fds)
    names: dict[int, str] = field(default_factory=dict)

    async def sample(self, chaos: Chaos, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            for pid, name in gateway_pids(chaos).items():
                if pid in chaos.paused:
                    continue
                self.names[pid] = name
                self.born.setdefault(pid, now)
                try:
                    figures = (now, rss_kb(pid), fds(pid))
                except (FileNotFoundError, ProcessLookupError):
                    continue
                if now - self.born[pid] >= self.warmup_s:
                    self.samples.setdefault(pid, []).append(figures)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await stop.wait()

    def windows(self, pid: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """The highest (rss, fds) of the process's first and last windows (None: too short-lived)."""
        taken = self.samples.get(pid, [])
        if len(taken) < 2 or taken[-1][0] - taken[0][0] < 2 * self.window_s:
            return None
        first = [t for t in taken if t[0] - taken[0][0] < self.window_s]
        last = [t for t in taken if taken[-1][0] - t[0] < self.window_s]
        return (max(t[1] for t in first), max(t[2] for t in first)), (
            max(t[1] for t in last),
            max(t[2] for t in last),
        )

    def max_pct(self, index: int) -> float:
        pcts = []
        for pid in self.samples:
            seen = self.windows(pid)
            if seen is not None and self.names[pid] != "redis":
                first, last = seen
                pcts.append(100 * (last[index] - first[index]) / max(first[index], 1))
        return max(pcts, default=0.0)

    def report(self) -> None:
        for pid in sorted(self.samples, key=lambda p: self.names[p]):
            seen = self.windows(pid)
            if seen is not None:
                (rss0, fds0), (rss1, fds1) = seen
                print(
                    f"    {self.names[pid]:16s} pid {pid:7d}: RSS {rss0 / 1024:6.1f} -> {rss1 / 1024:6.1f} MB,"
                    f" fds {fds0:4d} -> {fds1:4d}"
                )


# ------------------------------------------------------------------------------------- bad input


def _raw(port: int, data: bytes, read_bound_s: float) -> bytes:
    """Send `data` on a fresh connection and read until the server closes it or `read_bound_s`."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_bound_s) as sock:
        sock.sendall(data)
        return _read_until_closed(sock, read_bound_s)


def _read_until_closed(sock: socket.socket, bound_s: float) -> bytes:
    got = b""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:
            return got + b"<reset>"
        if not chunk:
            return got + b"<closed>"
        got += chunk
    return got


def _status(raw: bytes) -> int:
    parts = raw.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def bad_input(stack: Stack) -> list[tuple[str, bool, str]]:
    """Each edge case and whether it got its answer. Blocking: run it in a thread."""
    port = int(stack.api_url.rsplit(":", 1)[1])
    token = stack.token()
    auth = f"Authorization: Bearer {token}\r\n".encode()

    def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n"
        ).encode()
        for _ in range(5):  # a 503 with Retry-After is the gateway at capacity, not its answer to this input
            raw = _raw(port, head + auth + extra + b"\r\n" + body, 30)
            if _status(raw) != 503 or b"retry-after: " not in raw.lower():
                break
            time.sleep(1)
        return raw

    out: list[tuple[str, bool, str]] = []

    def check(name: str, raw: bytes, ok: Callable[[int], bool]) -> None:
        status = _status(raw)
        out.append((name, ok(status), f"{status} {raw[:120]!r}"))

    base = orjson.dumps({"messages": [{"role": "user", "content": "edge"}], "maxTokens": 8})
    at_limit = base[:-1] + b" " * (MAX_BODY_BYTES - len(base)) + b"}"
    check("body at MAX_BODY_BYTES", post(CHAT, at_limit), lambda s: s == 200)
    check("body over MAX_BODY_BYTES", post(CHAT, at_limit + b" "), lambda s: s == 413)
    check(
        "invalid UTF-8",
        post(CHAT, b'{"messages":[{"role":"user","content":"\xff\xfe\xfa"}]}'),
        lambda s: s in (400, 422),
    )
    nested = b'{"messages":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    check("JSON nested 10,000 deep", post(CHAT, nested), lambda s: s in (400, 422))
    check("64 KB header", post(CHAT, base, b"X-Big: " + b"a" * 65536 + b"\r\n"), lambda s: s == 431)
    line = orjson.dumps({"customId": "big", "messages": [{"role": "user", "content": "x" * (1 << 20)}]})
    check("batch line of 1 MB", post(BATCHES, b"[" + line + b"]"), lambda s: s in (400, 413))

    # slowloris: its head one byte a second; closed (408) within the header timeout and a margin
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        answer = b""
        for byte in b"POST /api/v1/llm/chat/completions HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(1.0)
            with contextlib.suppress(TimeoutError):
                chunk = sock.recv(4096)
                answer += chunk or b"<closed>"
                if not chunk or b"<closed>" in answer:
                    break
            if time.monotonic() - started > HEADER_TIMEOUT_S + 5:
                break
        answer += _read_until_closed(sock, 1.0)
    took = time.monotonic() - started
    out.append(
        (
            "slowloris",
            b"<closed>" in answer and took <= HEADER_TIMEOUT_S + 2,
            f"{_status(answer)} after {took:.1f} s",
        )
    )

    # a client that never reads: 200 pipelined requests for the (large) OpenAPI document, not one
    # answer read; its connection must not be held open for good (closed within keep-alive + 5 s)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.settimeout(0.5)
        with contextlib.suppress(OSError):
            for _ in range(200):
                sock.sendall(request)
        time.sleep(KEEP_ALIVE_S + 5)  # the client that never reads: what is tested is this silence
        answer = _read_until_closed(sock, 10)
    out.append(
        (
            "a client that never reads",
            answer.endswith((b"<closed>", b"<reset>")),
            f"{len(answer)} bytes, {'closed' if answer.endswith((b'<closed>', b'<reset>')) else 'still open'}"
            f" after {time.monotonic() - started:.0f} s",
        )
    )
    return out


# ------------------------------------------------------------------------------------ the end check


@dataclass
class Verdict:
    ended: int = 0
    lost: int = 0
    stuck: int = 0
    answered_twice: int = 0
    samples: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        if len(self.samples) < 10:
            self.samples.append(what)


def _view(data: dict[str, Any]) -> dict[str, Any]:
    return {"status": data.get("status"), "result": data.get("result"), "error": data.get("error")}


async def check_job(api: httpx.AsyncClient, rid: str, entry: Entry, deadline: float, v: Verdict) -> None:
    while True:
        left = deadline - time.monotonic()
        try:
            resp = await api.get(f"{JOBS}/{rid}", params={"wait": max(min(left, 20), 0)}, timeout=30)
        except httpx.HTTPError:
            resp = None
        if resp is not None and resp.status_code == 404:
            v.lost += 1
            v.note(f"lost {entry.kind} {rid}")
            return
        if resp is not None and resp.status_code == 200:
            view = _view(resp.json()["data"])
            if view["status"] in TERMINAL:
                if view["status"] == "failed" and not (view["error"] or {}).get("type"):
                    v.note(f"untyped error {rid}: {view}")
                if entry.answer is None:
                    entry.answer = view
                    continue  # read once more: a second answer would change it
                if entry.answer["status"] != view["status"] or _result(entry.answer) != _result(view):
                    v.answered_twice += 1
                    v.note(f"answered twice {entry.kind} {rid}")
                v.ended += 1
                return
        if time.monotonic() >= deadline:
            v.stuck += 1
            v.note(f"stuck {entry.kind} {rid}: {resp.status_code if resp is not None else 'no answer'}")
            return
        await asyncio.sleep(0.5)


def _result(view: dict[str, Any]) -> Any:
    """What a caller was told: the answer's content and usage, or the error's type."""
    result = view.get("result") or {}
    return (result.get("content"), result.get("usage"), result.get("attempts"), (view.get("error") or {}).get("type"))


async def check_batch(api: httpx.AsyncClient, batch_id: str, items: set[str], deadline: float, v: Verdict) -> None:
    status = None
    while time.monotonic() < deadline:
        try:
            resp = await api.get(f"{BATCHES}/{batch_id}", params={"wait": 10}, timeout=30)
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
            continue
        if resp.status_code == 404:
            break
        status = resp.json()["data"]["status"]
        if status in BATCH_TERMINAL:
            break
    try:
        resp = await api.get(f"{BATCHES}/{batch_id}/results", timeout=60)
        lines = [orjson.loads(line) for line in resp.content.splitlines() if line] if resp.status_code == 200 else []
    except httpx.HTTPError:
        lines = []
    seen = Counter(line["custom_id"] for line in lines)
    for item in items:
        if seen[item] == 0:
            if status is None:
                v.lost += 1
                v.note(f"lost batch item {batch_id}/{item}")
            else:
                v.stuck += 1
                v.note(f"stuck batch item {batch_id}/{item} ({status})")
        else:
            v.ended += 1
            if seen[item] > 1:
                v.answered_twice += 1
                v.note(f"two lines for {batch_id}/{item}")


# ------------------------------------------------------------------------------------------- run


async def upstream_calls(stack: Stack, seen: dict[int, str], stop: asyncio.Event) -> None:
    """Collect the simulator's recorded completion calls (it keeps the last 1,000) by request id."""
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            resp = await asyncio.to_thread(stack.sim, "GET", "/_control/requests", params={"limit": "1000"})
            for r in resp.json()["requests"]:
                rid = r["headers"].get("x-request-id")
                if rid and r["path"].endswith(("/chat/completions", "/messages")):
                    seen[r["seq"]] = rid
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await stop.wait()


async def soak(args: argparse.Namespace) -> tuple[dict[str, Any], list[tuple[str, bool, str]]]:
    """Run the soak; its JSON line's figures and the bad input's (name, answered as it must, detail)."""
    rng = random.Random(args.seed)
    stack = Stack()
    port = free_port()
    try:
        _, url = start_redis(stack.group, port, appendonly=True)
        stack.start(redis_url=url, workers=2, latency_ms=args.latency_ms, api_processes=2, **SOAK_ENV)
        chaos = Chaos(stack, port)
        ledger = Ledger()
        seconds = args.minutes * 60
        growth = Growth(args.warmup_s, window_s=min(60.0, (seconds - args.warmup_s) / 4))
        calls: dict[int, str] = {}
        stop_traffic, stop_side = asyncio.Event(), asyncio.Event()
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
        async with httpx.AsyncClient(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token()}"}, limits=limits
        ) as api:
            traffic = Traffic(api, ledger, rng)
            side = [
                asyncio.create_task(chaos.supervise_workers(stop_side)),
                asyncio.create_task(growth.sample(chaos, stop_traffic)),
                asyncio.create_task(upstream_calls(stack, calls, stop_side)),
            ]
            loads = [
                asyncio.create_task(open_loop(args.sync_rps, stop_traffic, traffic.sync_one)),
                asyncio.create_task(open_loop(args.async_rps, stop_traffic, traffic.async_one)),
                asyncio.create_task(
                    open_loop(1 / args.batch_every_s, stop_traffic, lambda: traffic.batch_one(args.batch_lines))
                ),
                asyncio.create_task(open_loop(args.stream_rps, stop_traffic, traffic.stream_one)),
            ]
            driver = asyncio.create_task(drive(chaos, rng, seconds, stop_traffic))
            edges = [
                asyncio.create_task(_later(seconds * share, asyncio.to_thread(bad_input, stack)))
                for share in ((0.3, 0.7) if args.edge_runs > 1 else (0.4,))[: args.edge_runs]
            ]
            await asyncio.sleep(seconds)
            stop_traffic.set()
            await asyncio.gather(*loads, driver)
            edge_results = [r for task in edges for r in await task]
            # the chaos is over: every worker back (the supervisor restarts the dead), faults cleared
            await asyncio.to_thread(stack.sim, "DELETE", "/_control/faults")
            await asyncio.to_thread(
                wait_until, lambda: all(len(chaos.live_workers(p)) == 2 for p in ("openai", "anthropic")), 30, "workers"
            )
            print(f"traffic stopped: {ledger.accepted} acknowledged; reading every one back", flush=True)
            v = Verdict()
            deadline = time.monotonic() + args.settle_s
            sem = asyncio.Semaphore(64)

            async def bounded(work: Awaitable[None]) -> None:
                async with sem:
                    await work

            await asyncio.gather(
                *(bounded(check_job(api, rid, e, deadline, v)) for rid, e in ledger.jobs.items()),
                *(bounded(check_batch(api, b, items, deadline, v)) for b, items in ledger.batches.items()),
            )
            stop_side.set()
            await asyncio.gather(*side)
        fenced = _fenced(stack)
    finally:
        stack.stop()

    per_request = Counter(calls.values())
    twice = sum(1 for n in per_request.values() if n > 1)
    print(f"refused or unanswered (not acknowledged), by status: {dict(ledger.refused)}")
    print(f"chaos: {dict(chaos.counts)}; jobs given up fenced: {fenced}")
    print(f"upstream: {len(calls)} calls recorded, {twice} requests called more than once")
    for sample in v.samples:
        print(f"  {sample}")
    print("process growth after warm-up:")
    growth.report()
    for name, ok, detail in edge_results:
        print(f"  edge {name:28s} {'ok ' if ok else 'BAD'} {detail}")
    line = {
        "minutes": args.minutes,
        "seed": args.seed,
        "accepted": ledger.accepted,
        "ended": v.ended,
        "lost": v.lost,
        "answered_twice": v.answered_twice,
        "stuck": v.stuck,
        "upstream_calls_twice": twice,
        "worker_kills": chaos.counts["worker_kills"],
        "api_kills": chaos.counts["api_kills"],
        "redis_kills": chaos.counts["redis_kills"],
        "pauses": chaos.counts["pauses"],
        "p99_ms_sync": round(percentile(ledger.sync_ms, 99), 1) if ledger.sync_ms else None,
        "rss_growth_pct_max": round(growth.max_pct(0), 1),
        "fd_growth_pct_max": round(growth.max_pct(1), 1),
    }
    return line, edge_results


async def _later(delay: float, work: Awaitable[list[tuple[str, bool, str]]]) -> list[tuple[str, bool, str]]:
    await asyncio.sleep(delay)
    return await work


def _fenced(stack: Stack) -> int:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        totals: dict[bytes, bytes] = client.hgetall(keys.metrics_totals())  # type: ignore[assignment]
        return sum(int(v) for k, v in totals.items() if k.startswith(b"x|"))
    except redis.RedisError:
        return -1
    finally:
        client.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=None, help="default: drawn and printed")
    p.add_argument("--latency-ms", type=float, default=20.0, help="simulator latency")
    p.add_argument("--sync-rps", type=float, default=20.0)
    p.add_argument("--stream-rps", type=float, default=4.0, help="streamed completions per second")
    p.add_argument("--async-rps", type=float, default=10.0)
    p.add_argument("--batch-every-s", type=float, default=30.0)
    p.add_argument("--batch-lines", type=int, default=50)
    p.add_argument("--warmup-s", type=float, default=30.0, help="a process's growth counts from then")
    p.add_argument("--settle-s", type=float, default=120.0, help="how long acknowledged work may take to end")
    p.add_argument("--edge-runs", type=int, default=2, choices=(0, 1, 2), help="rounds of bad input")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    print(f"chaos soak: {args.minutes:g} min, seed {args.seed}, load average {os.getloadavg()[0]:.2f}", flush=True)
    line, edges = asyncio.run(soak(args))
    print(json.dumps(line))
    clean = line["lost"] == 0 and line["answered_twice"] == 0 and line["stuck"] == 0
    return 0 if clean and all(ok or name in KNOWN_GAPS for name, ok, _ in edges) else 1


if __name__ == "__main__":
    raise SystemExit(main())
