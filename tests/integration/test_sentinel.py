"""Redis beyond one server: the stack finds its primary through Sentinel and follows a failover under
traffic without a restart (REDIS_DURABILITY=replica: nothing acknowledged is lost), and it runs on a
Redis that speaks only TLS, its certificate checked against a CA file.

Real processes: a primary and a replica (redis-server), three Sentinels (redis-server --sentinel), the
simulator, a worker per provider and the API, all on free ports."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from devstack.nginx import make_authority
from devstack.procs import Proc, start_redis, wait_until
from devstack.redis_ha import MASTER, Sentinels, TlsRedis, start_replica, start_sentinels, start_tls_redis
from devstack.stack import Stack
from plumbing.redis_connection import RedisAddress, connect
from tests.integration.conftest import QUIET_ENV, dump_logs

JOBS = "/api/v1/llm/jobs"
CHAT = "/api/v1/llm/chat/completions"
BODY = {"messages": [{"role": "user", "content": "are you still there?"}]}
FINAL = {"succeeded", "failed", "cancelled"}


class Traffic(threading.Thread):
    """Sends requests back to back (async jobs, or sync and waiting); keeps every answer's status and
    when it came, and the id of each acknowledged one."""

    def __init__(self, client: httpx.Client, sync: bool = False) -> None:
        super().__init__(daemon=True)
        self.client, self.sync = client, sync
        self.acked: list[str] = []
        self.codes: Counter[int] = Counter()
        self.bodies: dict[int, str] = {}
        self.ok_at: list[tuple[float, float]] = []  # when each request answered 200/202 was sent, answered
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            sent = time.monotonic()
            try:
                resp = self.client.post(CHAT if self.sync else JOBS, json=BODY)
            except httpx.HTTPError:
                self.codes[0] += 1
                continue
            self.codes[resp.status_code] += 1
            self.bodies.setdefault(resp.status_code, resp.text[:300])
            if resp.status_code in (200, 202):
                self.acked.append(resp.json()["data"]["id"])
                self.ok_at.append((sent, time.monotonic()))
            self.stopping.wait(0.01)

    def served_since(self, moment: float) -> float | None:
        """When the first request sent after `moment` was served."""
        return next((answered for sent, answered in self.ok_at if sent > moment), None)

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)


@pytest.fixture(scope="module")
def ha() -> Iterator[tuple[Stack, Proc, Sentinels]]:
    s = Stack()
    try:
        primary, url = start_redis(s.group, appendonly=True, appendfsync="everysec")
        primary_port = int(url.rsplit(":", 1)[1].split("/")[0])
        start_replica(s.group, primary_port)
        sentinels = start_sentinels(s.group, primary_port)
        s.start_simulator(latency_ms=20)
        # REDIS_URL's host is not used by the gateway with Sentinels (only its scheme and database);
        # the test's own helpers read it before the failover
        s.configure(
            url,
            **QUIET_ENV,
            REDIS_SENTINELS=sentinels.hosts,
            REDIS_SENTINEL_MASTER=MASTER,
            REDIS_DURABILITY="replica",
        )
        for provider in ("openai", "anthropic"):
            s.start_worker(provider)
        s.wait_workers({"openai": 1, "anthropic": 1})
        s.start_api()
        yield s, primary, sentinels
    except BaseException:
        dump_logs(s)
        raise
    finally:
        s.stop()


def test_a_failover_under_traffic_loses_nothing_acknowledged(ha: tuple[Stack, Proc, Sentinels]) -> None:
    stack, primary, sentinels = ha
    old_port = sentinels.primary_port()
    with stack.client(timeout=15) as client, stack.client(timeout=30) as waiting, stack.client(timeout=15) as reader:
        jobs, sync = Traffic(client), [Traffic(waiting, sync=True) for _ in range(2)]
        for t in (jobs, *sync):
            t.start()
        try:
            wait_until(lambda: len(jobs.acked) >= 30 and all(t.acked for t in sync), 30, "traffic before the failover")
            killed_at = time.monotonic()
            primary.kill(signal.SIGKILL)
            primary.popen.wait(10)
            wait_until(lambda: sentinels.primary_port() not in (None, old_port), 30, "the Sentinels to promote")
            promoted_at = time.monotonic()
            # in `replica` mode nothing is acknowledged while the new primary has no replica (503s): the
            # failed server comes back, as a replica of the new primary, as its supervisor would restart it
            new_port = sentinels.primary_port()
            assert new_port is not None and old_port is not None
            start_replica(stack.group, new_port, old_port)
            replica_at = time.monotonic()
            # served again: jobs acknowledged, and synchronous answers (the waiters followed the primary)
            wait_until(
                lambda: (
                    jobs.served_since(promoted_at) is not None
                    and all(t.served_since(promoted_at) is not None for t in sync)
                ),
                30,
                "jobs and synchronous requests served after the failover",
            )
            served = max(t.served_since(killed_at) or 0.0 for t in (jobs, *sync))
            print(
                f"\nfailover: promoted {promoted_at - killed_at:.2f} s after the SIGKILL, a replica again after"
                f" {replica_at - killed_at:.2f} s, every kind of request served again {served - killed_at:.2f} s"
                " after it"
            )
            accepted_before = len(jobs.acked)
            wait_until(lambda: len(jobs.acked) >= accepted_before + 20, 30, "jobs accepted on the new primary")
        except BaseException:
            print({t.sync: (t.codes, t.bodies) for t in (jobs, *sync)})
            dump_logs(stack)
            raise
        finally:
            for t in (jobs, *sync):
                t.stop()
        # the gateway said 503 (Redis unreachable, or no replica confirmed) while it failed over, never 500
        assert set(jobs.codes) <= {202, 503}, (jobs.codes, jobs.bodies)
        for t in sync:
            assert set(t.codes) <= {200, 503, 504}, (t.codes, t.bodies)

        # every acknowledged job is on the new primary and ends (a job that was running is retaken)
        def status(rid: str) -> str:
            resp = reader.get(f"{JOBS}/{rid}")
            assert resp.status_code == 200, (rid, resp.status_code, resp.text)  # never an unknown id: lost
            return str(resp.json()["data"]["status"])

        pending = list(jobs.acked)

        def all_ended() -> bool:
            pending[:] = [r for r in pending if status(r) not in FINAL]
            return not pending

        wait_until(all_ended, 60, "every job to end")
        ended = Counter(status(r) for r in jobs.acked)
        assert ended == Counter({"succeeded": len(jobs.acked)}), ended


@pytest.fixture(scope="module")
def tls_stack() -> Iterator[tuple[Stack, TlsRedis]]:
    s = Stack()
    try:
        tls = start_tls_redis(s.group)
        s.start_simulator(latency_ms=5)
        # the processes get the CA as REDIS_CA_FILE; the test's helpers through the URL's ssl_ca_certs
        s.configure(f"{tls.url}?ssl_ca_certs={tls.authority.pem}", **QUIET_ENV)
        s.env.update(REDIS_URL=tls.url, REDIS_CA_FILE=str(tls.authority.pem))
        for provider in ("openai", "anthropic"):
            s.start_worker(provider)
        s.wait_workers({"openai": 1, "anthropic": 1})
        s.start_api()
        yield s, tls
    except BaseException:
        dump_logs(s)
        raise
    finally:
        s.stop()


def test_the_stack_runs_on_a_tls_redis_with_a_ca_file(tls_stack: tuple[Stack, TlsRedis]) -> None:
    stack, _ = tls_stack
    with stack.client() as client:
        answer = client.post(CHAT, json=BODY)  # the API's admission lane, the waiter and a worker over TLS
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["content"]
        job = client.post(JOBS, json=BODY)
        assert job.status_code == 202, job.text
        rid = job.json()["data"]["id"]
        wait_until(lambda: client.get(f"{JOBS}/{rid}").json()["data"]["status"] == "succeeded", 20, "the job")


def test_a_tls_redis_whose_certificate_the_ca_does_not_sign_is_refused(tls_stack: tuple[Stack, TlsRedis]) -> None:
    _, tls = tls_stack
    impostor_ca = make_authority(tls.authority.pem.parent, "another-ca")

    async def ping(ca_file: str) -> bool:
        client = connect(RedisAddress(tls.url, ca_file=ca_file))
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    assert asyncio.run(ping(str(tls.authority.pem)))
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        asyncio.run(ping(str(impostor_ca.pem)))
    with pytest.raises(ValueError, match="rediss://"):
        connect(RedisAddress("redis://127.0.0.1:6379/0", ca_file=str(tls.authority.pem)))
