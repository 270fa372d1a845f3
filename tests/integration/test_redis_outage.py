"""Redis goes down mid-traffic and comes back on the same port (append-only file, so nothing acknowledged
is lost): the API answers 503 meanwhile, never 500; workers reconnect instead of exiting; every job the
API accepted (202) ends and can be fetched."""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from devstack.procs import Proc, free_port, start_redis, wait_until
from devstack.stack import Stack

# Redis stays down twice as long as a worker's job lease: leases lapse, jobs are taken up again
LEASE_S = 1.5
OUTAGE_S = 2 * LEASE_S
JOBS = "/api/v1/llm/jobs"
CHAT = "/api/v1/llm/chat/completions"
BODY = {"messages": [{"role": "user", "content": "still there?"}]}


class Traffic(threading.Thread):
    """Submits jobs back to back (async, or sync and waiting) and keeps every answer's status code."""

    def __init__(self, client: httpx.Client, sync: bool = False) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.sync = sync
        self.accepted: list[str] = []
        self.codes: Counter[int] = Counter()
        self.bodies: dict[int, str] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                resp = self.client.post(CHAT if self.sync else JOBS, json=BODY)
            except httpx.HTTPError:
                self.codes[0] += 1  # no HTTP answer at all
                continue
            self.codes[resp.status_code] += 1
            self.bodies.setdefault(resp.status_code, resp.text)
            if resp.status_code in (200, 202):
                self.accepted.append(resp.json()["data"]["id"])
            self.stopping.wait(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self.join(90)  # a synchronous caller may be waiting on a job that ran through the outage


@pytest.fixture
def outage_stack() -> Iterator[tuple[Stack, Proc, int]]:
    s = Stack()
    port = free_port()
    try:
        redis_proc, url = start_redis(s.group, port, appendonly=True)
        s.start(
            redis_url=url,
            workers=1,
            latency_ms=150,  # calls in flight when Redis dies: their workers cannot store the outcome
            RETRY_BASE_DELAY_S="0.01",
            WORKER_LEASE_S=str(LEASE_S),
            WORKER_POLL_FALLBACK_S="0.5",
            HEALTH_CHECK_INTERVAL_S="0.5",
            HEALTH_MONITOR_LEASE_S="1.5",
        )
        yield s, redis_proc, port
    except BaseException:
        for proc in s.group.procs:
            print(f"----- {proc.name} -----\n{proc.log()[-4000:]}")
        raise
    finally:
        s.stop()


def test_redis_outage_mid_traffic(outage_stack: tuple[Stack, Proc, int]) -> None:
    stack, redis_proc, port = outage_stack
    workers = [p for procs in stack.workers.values() for p in procs]
    with (
        stack.client(timeout=15) as client,
        stack.client(timeout=120) as waiting,
        stack.client(timeout=15) as observer,
    ):
        traffic = Traffic(client)
        # synchronous callers keep waiting through the outage (their waiter resubscribes)
        sync_traffic = [Traffic(waiting, sync=True) for _ in range(4)]
        for t in (traffic, *sync_traffic):
            t.start()
        try:
            wait_until(lambda: len(traffic.accepted) >= 20, 30, "jobs accepted before the outage")

            redis_proc.kill(signal.SIGKILL)
            redis_proc.popen.wait(10)
            back_at = time.monotonic() + OUTAGE_S
            wait_until(lambda: traffic.codes[503] >= 5, 30, "503 answers while Redis is down")
            down = observer.get("/api/v1/llm/status")
            assert down.status_code == 200 and down.json()["data"]["redis"]["reachable"] is False
            unavailable = observer.post(JOBS, json=BODY)
            assert unavailable.status_code == 503
            error = unavailable.json()["error"]
            assert error["type"] == "service_unavailable" and "Redis" in error["message"]
            assert unavailable.headers.get("Retry-After")

            wait_until(lambda: time.monotonic() >= back_at, OUTAGE_S + 1, "the outage to have lasted")
            start_redis(stack.group, port, appendonly=True)
            accepted_before = len(traffic.accepted)
            wait_until(lambda: len(traffic.accepted) >= accepted_before + 20, 60, "jobs accepted after Redis returned")
        finally:
            for t in (traffic, *sync_traffic):
                t.stop()

        assert set(traffic.codes) <= {202, 503}, (traffic.codes, traffic.bodies)
        for t in sync_traffic:
            assert not t.is_alive(), "a synchronous caller is still waiting"
            assert set(t.codes) <= {200, 503}, (t.codes, t.bodies)
        assert sum(t.codes[200] for t in sync_traffic) > 0
        assert all(w.alive() for w in workers), "a worker exited instead of reconnecting"

        def ended(job_id: str) -> bool:
            resp = observer.get(f"{JOBS}/{job_id}", params={"wait": 5})
            assert resp.status_code == 200, resp.text
            return resp.json()["data"]["status"] in ("succeeded", "failed")

        for job_id in traffic.accepted:
            wait_until(functools.partial(ended, job_id), 60, f"job {job_id} to end")
        assert observer.get("/api/v1/llm/status").json()["data"]["redis"]["reachable"] is True
