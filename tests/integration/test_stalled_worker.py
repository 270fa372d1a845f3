"""A worker that stops answering (SIGSTOP) while its pub/sub socket stays open: hand-overs it does not
take go back to the queue for a live worker within a short bound, it never also runs them when it
wakes, and the free-slot counts in the provider's room come back to their true value."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from devstack.procs import Proc, wait_until
from devstack.stack import Stack
from shared import keys
from tests.integration.conftest import Upstream, start_stack

MAX_JOBS = 20
PROVIDER_MS = 50  # long enough that a paused worker holds calls under way
COMPLETIONS = "/api/v1/llm/chat/completions"


@pytest.fixture(scope="module")
def stall_stack() -> Iterator[Stack]:
    """Two OpenAI workers (one to pause) of a few slots each, the quiet stacks' 1.5 s lease."""
    s = start_stack(
        {"openai": [{}, {}], "anthropic": [{}]},
        WORKER_MAX_JOBS=str(MAX_JOBS),
        ENABLE_LLM_FAILOVER="false",
        ENABLE_LLM_CACHING="false",
        WORKER_POLL_FALLBACK_S="5",
    )
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def r(stall_stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stall_stack.redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def upstream(stall_stack: Stack) -> Iterator[Upstream]:
    up = Upstream(stall_stack)
    up.reset()
    stall_stack.sim("POST", "/_control/latency", json={"ms": PROVIDER_MS}).raise_for_status()
    yield up
    up.reset()


@dataclass
class Sent:
    at: float  # monotonic send time
    latency: float
    status: int
    request_id: str


class Traffic:
    """`clients` callers, each sending its next synchronous request as soon as the last is answered."""

    def __init__(self, stack: Stack, clients: int = 6) -> None:
        self.stack = stack
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, n: int) -> None:
        with self.stack.client(sub=f"caller{n}", timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                body = {"messages": [{"role": "user", "content": f"c{n} #{i}"}], "provider": "openai", "timeout": 20}
                at = time.monotonic()
                resp = client.post(COMPLETIONS, json=body)
                rid = resp.json().get("data", {}).get("id", "") if resp.status_code == 200 else ""
                self.sent.append(Sent(at, time.monotonic() - at, resp.status_code, rid))
                i += 1

    def wait_for(self, n: int) -> None:
        """Until `n` more requests have been answered (the traffic is flowing)."""
        target = len(self.sent) + n
        wait_until(lambda: len(self.sent) >= target, 20, f"{n} answers")


def room(r: redis.Redis) -> dict[str, int]:
    return {w: int(v) for w, v in r.hgetall(keys.worker_room("openai")).items()}  # type: ignore[union-attr]


def worker_id_of(r: redis.Redis, proc: Proc) -> str:
    marker = f":{proc.popen.pid}:"
    return next(w for w in r.zrange(keys.worker_heartbeat("openai"), 0, -1) if marker in w)  # type: ignore[union-attr]


def pause(proc: Proc, seconds: float, traffic: Traffic) -> float:
    """SIGSTOP `proc` for `seconds` (past its lease) while the traffic flows; returns when it stopped."""
    proc.kill(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        time.sleep(seconds)  # the pause itself is what is tested: the traffic measures what it does
    finally:
        proc.kill(signal.SIGCONT)
    return stopped


def assert_no_new_request_delayed(traffic: Traffic, stopped: float, bound_s: float = 1.0) -> None:
    """Requests sent after the pause began (calls under way on the paused worker are retaken after the
    lease, as for a dead worker: not new) all answered, within `bound_s` (the provider takes 50 ms)."""
    new = [s for s in traffic.sent if s.at > stopped]
    assert len(new) > 20
    assert all(s.status == 200 for s in traffic.sent), [s.status for s in traffic.sent if s.status != 200]
    slowest = max(s.latency for s in new)
    assert slowest < bound_s, sorted(s.latency for s in new)[-5:]


def test_a_paused_worker_delays_no_new_request_and_its_slots_come_back(
    stall_stack: Stack, r: redis.Redis, upstream: Upstream
) -> None:
    paused, live = stall_stack.workers["openai"]
    paused_id, live_id = worker_id_of(r, paused), worker_id_of(r, live)
    wait_until(lambda: room(r) == {paused_id: MAX_JOBS, live_id: MAX_JOBS}, 10, "room at rest")

    with Traffic(stall_stack) as traffic:
        traffic.wait_for(20)
        stopped = pause(paused, 3.0, traffic)  # twice the 1.5 s lease
        traffic.wait_for(40)
    assert_no_new_request_delayed(traffic, stopped)

    # every request ran once: none was also run by the paused worker when it woke
    calls = upstream.requests("openai")
    ids = [c["headers"].get("x-request-id") for c in calls]
    answered = {s.request_id for s in traffic.sent}
    late = [i for i in ids if ids.count(i) > 1 and i in answered]
    in_flight_at_stop = {s.request_id for s in traffic.sent if s.at <= stopped}
    assert set(late) <= in_flight_at_stop, late  # only calls under way at the pause may have run twice

    # at rest again, every slot is free in the room: the counts did not drift
    wait_until(lambda: room(r) == {paused_id: MAX_JOBS, live_id: MAX_JOBS}, 10, f"room at rest: {room(r)}")


def test_a_killed_worker_leaves_the_room_whole(stall_stack: Stack, r: redis.Redis, upstream: Upstream) -> None:
    """Killed with calls under way, the worker has fewer free slots than the live one, so no enqueue
    ever picks it (and finds it dead): it stayed in the room for good."""
    victim, live = stall_stack.workers["openai"]
    victim_id, live_id = worker_id_of(r, victim), worker_id_of(r, live)
    upstream.fault("openai", mode="hang", count=4, seconds=60)
    with stall_stack.client(sub="jobs") as client:
        for n in range(4):
            body = {"messages": [{"role": "user", "content": f"held {n}"}], "provider": "openai"}
            assert client.post("/api/v1/llm/jobs", json=body).status_code == 202
    upstream.wait_in_flight("openai", 4)
    assert room(r)[victim_id] < MAX_JOBS  # it holds some of them

    victim.kill(signal.SIGSTOP)
    stopped = time.monotonic()
    with Traffic(stall_stack) as traffic:
        traffic.wait_for(20)
        victim.kill(signal.SIGKILL)
        victim.popen.wait(10)
        upstream.release()
        traffic.wait_for(30)
    wait_until(lambda: room(r) == {live_id: MAX_JOBS}, 10, f"room at rest: {room(r)}")
    assert_no_new_request_delayed(traffic, stopped)
    # the stack is whole again for any later test
    stall_stack.workers["openai"].remove(victim)
    fresh = stall_stack.start_worker("openai")
    wait_until(lambda: len(room(r)) == 2, 20, "replacement worker", fresh.popen)
