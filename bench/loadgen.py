"""A light HTTP/1.1 keep-alive load generator: raw asyncio protocols on uvloop, httptools parsing.

Runs in its own process so it never shares a core's event loop with what it measures:
`python bench/loadgen.py` reads one JSON spec on stdin and writes one JSON result on stdout.
`run_load(spec)` does that from Python.

Modes:
- closed: `concurrency` connections, each sends its next request when the previous answer is in,
  until `requests` are done; latency is send -> last byte.
- open: requests are sent on a fixed schedule (`rate` per second for `duration_s`) whatever the
  answers do, on an idle connection or a new one; latency is measured from the *scheduled* send
  time, so a stall shows up in every request it delays (no coordinated omission).

Each request is pre-encoded once; only a fixed-width counter inside the body (the `marker` bytes)
is rewritten per request so no two bodies are identical (a cache cannot answer them).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httptools
import uvloop

MAX_ERROR_SAMPLES = 10


class Template:
    """Request bytes built once; `render(i)` writes i into the body's counter field."""

    def __init__(self, spec: dict[str, Any]) -> None:
        body = spec["body"].encode()
        marker = spec.get("marker", "").encode()
        headers = "".join(f"{k}: {v}\r\n" for k, v in spec.get("headers", {}).items())
        head = (
            f"POST {spec['path']} HTTP/1.1\r\nHost: {spec['host']}:{spec['port']}\r\n"
            f"Content-Type: application/json\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.data = bytearray(head + body)
        self.width = len(marker)
        self.at = len(head) + body.find(marker) if marker and marker in body else -1

    def render(self, i: int) -> bytes:
        if self.at >= 0:
            self.data[self.at : self.at + self.width] = str(i % 10**self.width).zfill(self.width).encode()
        return bytes(self.data)


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[tuple[int, float, bytes]] | None = None
        self.body = bytearray()
        self.closed = False
        self.keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("connection closed by peer"))

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful while the message is parsed

    def on_body(self, body: bytes) -> None:
        if self.parser.get_status_code() != 200:
            self.body += body  # kept for the error report only

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result((self.parser.get_status_code(), time.perf_counter(), bytes(self.body)))

    def _fail(self, exc: BaseException) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes) -> asyncio.Future[tuple[int, float, bytes]]:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.body.clear()
        self.transport.write(data)
        return self.done


@dataclass
class Recorder:
    latencies_ms: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)  # perf_counter of each latency's start
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    refused_ms: dict[int, list[float]] = field(default_factory=dict)  # latencies of non-200 answers, by status

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(what)


class Generator:
    protocol: type[Connection] = Connection  # a subclass may record more of each answer

    def __init__(self, spec: dict[str, Any]) -> None:
        self.host: str = spec["host"]
        self.port: int = int(spec["port"])
        self.template = Template(spec)
        self.counter = 0
        self.idle: deque[Connection] = deque()
        self.opened = 0

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(self.protocol, self.host, self.port)
        self.opened += 1
        return conn

    async def one(self, conn: Connection, start: float, rec: Recorder | None) -> bool:
        """One request on `conn`; latency from `start`. False if the connection is unusable now."""
        self.counter += 1
        try:
            status, end, body = await conn.send(self.template.render(self.counter))
        except (OSError, httptools.HttpParserError) as exc:
            if rec is not None:
                rec.error(f"{type(exc).__name__}: {exc}")
            return False
        if rec is not None:
            if status == 200:
                rec.latencies_ms.append((end - start) * 1000.0)
                rec.starts.append(start)
            else:
                rec.error(f"HTTP {status}: {body[:300].decode(errors='replace')}")
                rec.refused_ms.setdefault(status, []).append((end - start) * 1000.0)
        return conn.keep_alive and not conn.closed

    async def closed_loop(
        self, concurrency: int, requests: int, rec: Recorder | None, until: float | None = None
    ) -> float:
        """`until`: a perf_counter deadline after which no request starts (those in flight finish)."""
        remaining = requests

        async def client(conn: Connection | None) -> None:
            nonlocal remaining
            while remaining > 0 and (until is None or time.perf_counter() < until):
                if conn is None or conn.closed:
                    conn = await self.connect()
                    if remaining <= 0:
                        break
                remaining -= 1
                if not await self.one(conn, time.perf_counter(), rec):
                    conn = None
            if conn is not None:
                self.idle.append(conn)

        # warm connections first: a connect in the measured window is a cost of the run, not of the load
        conns: list[Connection | None] = [self.idle.popleft() if self.idle else None for _ in range(concurrency)]
        conns = [c if c is not None else await self.connect() for c in conns]
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in conns))
        return time.perf_counter() - started

    async def open_loop(self, rate: float, duration_s: float, rec: Recorder | None) -> float:
        loop = asyncio.get_running_loop()
        n = int(rate * duration_s)
        tasks: set[asyncio.Task[None]] = set()

        async def fire(scheduled: float) -> None:
            conn = self.idle.pop() if self.idle else None
            if conn is None or conn.closed:
                try:
                    conn = await self.connect()
                except OSError as exc:
                    if rec is not None:
                        rec.error(f"connect: {exc}")
                    return
            if await self.one(conn, scheduled, rec):
                self.idle.append(conn)

        started = time.perf_counter()
        for i in range(n):
            scheduled = started + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(fire(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        return time.perf_counter() - started


def _quiet() -> None:
    return None


async def run(spec: dict[str, Any], measuring: Callable[[], None] = _quiet) -> dict[str, Any]:
    """Warm up, call `measuring()`, run the measured load; return latencies, errors and timings."""
    gen = Generator(spec)
    mode = spec["mode"]
    if mode == "closed":
        concurrency = int(spec["concurrency"])
        if spec.get("warmup_requests"):
            await gen.closed_loop(concurrency, int(spec["warmup_requests"]), None)
        rec = Recorder()
        measuring()
        cpu0 = time.process_time()
        elapsed = await gen.closed_loop(concurrency, int(spec["requests"]), rec)
    elif mode == "open":
        rate = float(spec["rate"])
        if spec.get("warmup_s"):
            await gen.open_loop(rate, float(spec["warmup_s"]), None)
        rec = Recorder()
        measuring()
        cpu0 = time.process_time()
        elapsed = await gen.open_loop(rate, float(spec["duration_s"]), rec)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    cpu = time.process_time() - cpu0
    began = min(rec.starts, default=0.0)
    for conn in gen.idle:
        if conn.transport is not None:
            conn.transport.close()
    return {
        "latencies_ms": rec.latencies_ms,
        "completed": len(rec.latencies_ms),
        "errors": rec.errors,
        "error_samples": rec.error_samples,
        "non_200_latencies_ms": {str(status): values for status, values in rec.refused_ms.items()},
        "elapsed_s": elapsed,
        "connections_opened": gen.opened,
        "loadgen_cpu_s": cpu,
        # with "timeline": [seconds from the first start, latency ms] of each success, for finding stalls
        **(
            {"timeline": [[s - began, lat] for s, lat in zip(rec.starts, rec.latencies_ms, strict=True)]}
            if spec.get("timeline")
            else {}
        ),
    }


def run_load(spec: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    """Run one load in a fresh loadgen process and return its result."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        input=json.dumps(spec).encode(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed ({out.returncode}): {out.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _announce() -> None:
    sys.stdout.write("measuring\n")
    sys.stdout.flush()


def main() -> None:
    """stdin: one JSON spec; stdout: one JSON result (after a `measuring` line with --announce)."""
    spec = json.loads(sys.stdin.buffer.read())
    write_result(uvloop.run(run(spec, _announce if "--announce" in sys.argv[1:] else _quiet)))


def write_result(result: dict[str, Any]) -> None:
    """The result on stdout, whole, written to the pipe directly: the event loop may leave it
    non-blocking, and a result larger than the pipe's buffer (64 KiB) was then cut short (setting it
    blocking again was not enough: a cut at ~400 KB was still seen), so a full pipe is waited for."""
    sys.stdout.flush()
    fd = sys.stdout.fileno()
    rest = memoryview(json.dumps(result).encode())
    while rest:
        try:
            rest = rest[os.write(fd, rest) :]
        except BlockingIOError:
            select.select([], [fd], [])


if __name__ == "__main__":
    main()
