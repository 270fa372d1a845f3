"""A lean Server-Sent Events load generator: loadgen.py's connections and closed loop, each read timed.

Speaks loadgen.py's protocol (one JSON spec on stdin, one JSON result on stdout, a `measuring` line
first with --announce). Its client CPU competes with the stack for the same cores, so while streams
run it only timestamps each piece of body httptools hands over (one `perf_counter` per read from the
socket) and keeps the bytes; the events are split, parsed and checked after the measured window.

Spec, on top of loadgen's (`mode` is always closed; `concurrency`, `requests`, `warmup_requests`):
- `format`: "gateway" (the gateway's own events: `event: delta` with `id:` seqs, then `event: done`)
  or "openai" (`chat.completion.chunk` data lines, then `data: [DONE]`);
- `prompt`: the user message as sent, with the `marker` in it; `reply_tokens`, `chunks`: the
  simulator's settings, so every stream's content can be checked against the text the simulator
  sends (`simulator.tokens.natural_reply`): every chunk, in order, each once;
- `counter_from` (optional): the prompts' counter starts after it;
- `duration_s` (optional): start no stream after that many seconds, and count the chunks that arrived
  within them (`window_chunks`): chunks per second at a steady concurrency.

Result: loadgen's keys (`latencies_ms` are whole streams, `completed` the streams that passed every
check, `errors` the others) plus `ttft_ms` (send -> first content chunk, per stream), `gaps_ms`
(between consecutive content chunks of a stream, all streams), `chunks` (content chunks received),
`window_chunks`, `window_s`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/sse_load.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httptools
import orjson
import uvloop

from bench import loadgen
from simulator.tokens import natural_reply


class StreamConnection(loadgen.Connection):
    """A connection that keeps every piece of a response's body with the time its read arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[float, bytes]] = []
        self.now = 0.0

    def data_received(self, data: bytes) -> None:
        self.now = time.perf_counter()
        super().data_received(data)

    def on_body(self, body: bytes) -> None:
        self.reads.append((self.now, body))

    def send(self, data: bytes) -> asyncio.Future[tuple[int, float, bytes]]:
        self.reads = []  # a fresh list: the previous response's is kept by its Raw
        return super().send(data)


@dataclass(slots=True)
class Raw:
    """One stream as received, to be parsed after the window."""

    n: int  # the counter written into its prompt
    start: float
    end: float
    status: int
    reads: list[tuple[float, bytes]]


class StreamGenerator(loadgen.Generator):
    protocol = StreamConnection

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.counter = int(spec.get("counter_from", 0))  # distinct prompts across runs: no cache answers
        self.raws: list[Raw] = []

    async def one(self, conn: loadgen.Connection, start: float, rec: loadgen.Recorder | None) -> bool:
        self.counter += 1
        n = self.counter
        try:
            status, end, _ = await conn.send(self.template.render(n))
        except (OSError, httptools.HttpParserError) as exc:
            if rec is not None:
                rec.error(f"{type(exc).__name__}: {exc}")
            return False
        if rec is not None:
            assert isinstance(conn, StreamConnection)
            self.raws.append(Raw(n, start, end, status, conn.reads))
        return conn.keep_alive and not conn.closed


# ---------------------------------------------------------------- after the window: parse and check


def events(reads: list[tuple[float, bytes]]) -> list[tuple[float, dict[bytes, bytes]]]:
    """The SSE events of a body (field -> value, `data` lines joined), each with the time of the read
    that completed it; comments (keep-alives) left out."""
    out: list[tuple[float, dict[bytes, bytes]]] = []
    buf = b""
    for t, data in reads:
        buf += data
        *complete, buf = buf.split(b"\n\n")
        for raw in complete:
            fields: dict[bytes, bytes] = {}
            for line in raw.split(b"\n"):
                if not line or line.startswith(b":"):
                    continue
                name, _, value = line.partition(b":")
                value = value.removeprefix(b" ")
                fields[name] = fields[name] + b"\n" + value if name == b"data" and name in fields else value
            if fields:
                out.append((t, fields))
    return out


@dataclass(slots=True)
class Checked:
    times: list[float]  # arrival of each content chunk
    problem: str | None  # None: every chunk, in order, each once, and a clean end


def check(raw: Raw, fmt: str, expected: str, chunks: int) -> Checked:
    if raw.status != 200:
        body = b"".join(d for _, d in raw.reads)[:300].decode(errors="replace")
        return Checked([], f"HTTP {raw.status}: {body}")
    times: list[float] = []
    parts: list[str] = []
    seqs: list[int] = []
    ended: str | None = None
    for t, ev in events(raw.reads):
        if ended is not None:
            return Checked(times, f"an event after the end: {ev!r:.200}")
        data = ev.get(b"data", b"")
        if fmt == "gateway":
            name = ev.get(b"event")
            if name == b"delta":
                times.append(t)
                parts.append(orjson.loads(data)["content"])
                seqs.append(int(ev[b"id"]))
            elif name == b"done":
                ended = "done"
            else:
                ended = f"event {name!r}: {data[:300]!r}"
        elif data == b"[DONE]":
            ended = "done"
        else:
            obj = orjson.loads(data)
            if "error" in obj:
                ended = f"error: {data[:300]!r}"
            elif obj["choices"] and "content" in (delta := obj["choices"][0]["delta"]) and "role" not in delta:
                times.append(t)
                parts.append(delta["content"])
    if ended != "done":
        return Checked(times, f"no clean end ({ended or 'the body ended first'})")
    if seqs and seqs != list(range(1, len(seqs) + 1)):
        return Checked(times, f"event ids out of order: {seqs[:20]}")
    if len(parts) != chunks or "".join(parts) != expected:
        return Checked(times, f"{len(parts)} chunks of {chunks}; content as expected: {''.join(parts) == expected}")
    return Checked(times, None)


def summarize(spec: dict[str, Any], gen: StreamGenerator, rec: loadgen.Recorder, window_end: float) -> dict[str, Any]:
    prompt: str = spec["prompt"]
    marker: str = spec["marker"]
    width = len(marker)
    ttft: list[float] = []
    gaps: list[float] = []
    total = window = 0
    for raw in gen.raws:
        expected = natural_reply(
            "openai", prompt.replace(marker, str(raw.n % 10**width).zfill(width)), spec["reply_tokens"]
        )
        checked = check(raw, spec["format"], expected, int(spec["chunks"]))
        times = checked.times
        total += len(times)
        window += sum(1 for t in times if t <= window_end)
        if times:
            ttft.append((times[0] - raw.start) * 1000.0)
            gaps.extend(round((b - a) * 1000.0, 3) for a, b in itertools.pairwise(times))
        if checked.problem is None:
            rec.latencies_ms.append((raw.end - raw.start) * 1000.0)
        else:
            rec.error(f"stream {raw.n}: {checked.problem}")
    return {"ttft_ms": ttft, "gaps_ms": gaps, "chunks": total, "window_chunks": window}


async def run(spec: dict[str, Any], measuring: Any = loadgen._quiet) -> dict[str, Any]:
    gen = StreamGenerator(spec)
    concurrency = int(spec["concurrency"])
    if spec.get("warmup_requests"):
        await gen.closed_loop(concurrency, int(spec["warmup_requests"]), None)
    rec = loadgen.Recorder()
    measuring()
    cpu0 = time.process_time()
    duration = spec.get("duration_s")
    began = time.perf_counter()
    until = None if duration is None else began + float(duration)
    elapsed = await gen.closed_loop(concurrency, int(spec.get("requests", 10**9)), rec, until)
    cpu = time.process_time() - cpu0
    for conn in gen.idle:
        if conn.transport is not None:
            conn.transport.close()
    window_end = until if until is not None else time.perf_counter()
    return {
        **summarize(spec, gen, rec, window_end),
        "window_s": window_end - began,
        "latencies_ms": rec.latencies_ms,
        "completed": len(rec.latencies_ms),
        "errors": rec.errors,
        "error_samples": rec.error_samples,
        "elapsed_s": elapsed,
        "connections_opened": gen.opened,
        "loadgen_cpu_s": cpu,
    }


def main() -> None:
    spec = json.loads(sys.stdin.buffer.read())
    loadgen.write_result(uvloop.run(run(spec, loadgen._announce if "--announce" in sys.argv[1:] else loadgen._quiet)))


if __name__ == "__main__":
    main()
