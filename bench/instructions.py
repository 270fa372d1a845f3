"""Instructions per request of the API and of a worker: a measure of the hot path's cost that the
box's drift does not move.

The 2-core box's speed swings (the simulator's own CPU per request moved 3x within one session), so
milliseconds from runs an hour apart do not compare. This counts the instructions each process
executes per request with valgrind's callgrind, which is repeatable (within ~1% here) whatever else
the machine does. It starts Redis, the simulator (20 ms), one worker per provider and one API
process, the openai worker and the API under callgrind with instrumentation off; sends a warm-up at
one request at a time; switches instrumentation on, zeroes the counters, sends `--requests` more,
and reads the counters. Background work of the two processes in that window (heartbeats, lease
renewals) is counted too, as it is in production.

Under callgrind both processes run ~50x slower, so only the counts mean anything, not the latencies.
Needs valgrind (`apt-get install valgrind`). Ends with one JSON line:
`{"api_instructions_per_request": ..., "worker_instructions_per_request": ...}`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/instructions.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.overhead import BENCH_ENV, Bench
from devstack.procs import free_port, http_ok, start_redis, wait_until
from devstack.stack import Stack


def callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}.%p"]


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def instructions(out: Path, pid: int) -> int:
    """The instructions of the last dump of a process (callgrind's `totals:` line)."""
    dumps = sorted(out.parent.glob(f"{out.name}.{pid}.*"), key=lambda p: p.stat().st_mtime)
    for line in dumps[-1].read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[-1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="measured requests, one at a time")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    stack = Stack()
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        out = Path(tmp) / "cg"
        try:
            _, redis_url = start_redis(stack.group)
            stack.start_simulator(20.0)
            stack.configure(redis_url, **BENCH_ENV)
            stack.start_worker("anthropic")
            worker = stack.group.spawn(
                "worker-openai-0", [*callgrind(out), sys.executable, "-m", "workers", "openai"], stack.env
            )
            stack.wait_workers({"openai": 1, "anthropic": 1}, timeout=180)
            port = free_port()
            api = stack.group.spawn(
                "api",
                [*callgrind(out), sys.executable, "-m", "api.serve", "--host", "127.0.0.1", "--port", str(port)],
                stack.env,
            )
            stack.api_url = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_ok(f"{stack.api_url}/livez"), 180, "api", api.popen)
            pids = {"api": api.popen.pid, "worker": worker.popen.pid}
            bench = Bench(stack, {"api": pids["api"], "worker-openai-0": pids["worker"]})
            warm = bench.run("gateway", {"mode": "closed", "concurrency": 1, "requests": 100, "warmup_requests": 20})
            for pid in pids.values():
                control(pid, "--instr=on")
                control(pid, "--zero")
            run = bench.run("gateway", {"mode": "closed", "concurrency": 1, "requests": args.requests})
            for pid in pids.values():
                control(pid, "--dump")
            time.sleep(0.5)  # the dump is written by the process itself
            bench.close()
            done = run.result["completed"]
            errors = warm.result["errors"] + run.result["errors"]
            per_request = {name: instructions(out, pid) / done for name, pid in pids.items()}
        finally:
            stack.stop()
    for name, count in per_request.items():
        print(f"{name:7s} {count:12,.0f} instructions per request ({done} requests, {errors} errors)")
    print(
        json.dumps(
            {
                "api_instructions_per_request": round(per_request["api"]),
                "worker_instructions_per_request": round(per_request["worker"]),
            }
        )
    )
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
