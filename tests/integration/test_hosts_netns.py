"""One gateway over five hosts that come and go: network namespaces made by the test (devstack/netns.py),
a Redis host (with the simulator; the test's own calls are made from there too), two API hosts and two
worker hosts, joined by a bridge in 10.77.0.0/24 (addresses only inside the namespaces).

- Tenant limits, breakers, metrics and the response cache are global: what one API host counted or
  stored, the other one enforces or serves.
- A worker host that loses its network (its link down) for longer than the job lease has its jobs
  retaken by the other worker host; each job ends once, and its answer (to the synchronous caller, and
  stored for the async one) does not change when the cut-off host comes back and finishes late.

Skipped, with the reason, where `ip netns` is not permitted."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from devstack.netns import Network, netns_permitted
from devstack.procs import Proc, wait_until
from devstack.stack import Stack
from shared import keys
from shared.breaker import reset_sync
from tests.integration.conftest import QUIET_ENV, dump_logs

REASON = netns_permitted()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

LEASE_S = 1.5
SIM_PORT, API_PORT, REDIS_PORT = 8900, 8000, 6379
JOBS = "/api/v1/llm/jobs"
CHAT = "/api/v1/llm/chat/completions"
ORG = {"w1": "org-host-w1", "w2": "org-host-w2"}  # each worker host's calls, told apart at the simulator
CAPPED_RPM = 3


@dataclass
class Gateway:
    net: Network
    stack: Stack  # its group, env and tokens (the processes are started here, inside the hosts)
    call: Any  # runs a function from the Redis host's network
    workers: dict[str, Proc]
    api_urls: list[str]

    def client(self, api: int, sub: str = "tester", role: str = "user", timeout: float = 30) -> httpx.Client:
        token = self.stack.token(role, sub)
        return httpx.Client(base_url=self.api_urls[api], timeout=timeout, headers={"Authorization": f"Bearer {token}"})

    def sim(self, method: str, path: str, **kwargs: Any) -> Any:
        """The simulator's control API (from a thread in the core host's network: inside `call`)."""
        url = f"http://{self.net.hosts['core'].address}:{SIM_PORT}{path}"
        return httpx.request(method, url, timeout=10, **kwargs).json()

    def redis(self) -> redis.Redis:
        return redis.Redis(host=self.net.hosts["core"].address, port=REDIS_PORT, decode_responses=True)


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    net = Network.build("core", "api1", "api2", "w1", "w2")
    stack = Stack()
    call = net.caller("core")
    core = net.hosts["core"]
    try:
        redis_argv = ["redis-server", "--bind", core.address, "--port", str(REDIS_PORT), "--save", ""]
        redis_argv += ["--appendonly", "no", "--protected-mode", "no", "--dir", str(stack.group.workdir)]
        stack.group.spawn("redis", core.argv(*redis_argv))
        stack.group.spawn(
            "simulator",
            core.argv(sys.executable, "-m", "simulator", "--host", core.address, "--port", str(SIM_PORT)),
        )
        stack.sim_url = f"http://{core.address}:{SIM_PORT}"
        stack.configure(
            f"redis://{core.address}:{REDIS_PORT}/0",
            **{
                **QUIET_ENV,
                "WORKER_LEASE_S": str(LEASE_S),
                "PROVIDER_READ_TIMEOUT_S": "10",
                "ENABLE_LLM_FAILOVER": "false",
                "TENANT_QUOTAS": f'{{"capped": {{"rpm": {CAPPED_RPM}}}}}',
                "BREAKER_FAILURE_THRESHOLD": "3",
                "BREAKER_MIN_REQUESTS": "3",
                "RETRY_MAX_ATTEMPTS": "1",
            },
        )
        wait_until(lambda: call(lambda: bool(gw_redis(core.address).ping())), 20, "redis on the core host")
        wait_until(lambda: call(lambda: _ok(f"{stack.sim_url}/_control/stats")), 20, "simulator")
        workers = {}
        for name in ("w1", "w2"):
            env = {**stack.env, "OPENAI_ORGANIZATION": ORG[name]}
            workers[name] = stack.group.spawn(
                f"worker-{name}", net.hosts[name].argv(sys.executable, "-m", "workers", "openai"), env
            )
        api_urls = []
        for name in ("api1", "api2"):
            host = net.hosts[name]
            argv = [sys.executable, "-m", "api.serve", "--host", host.address, "--port", str(API_PORT)]
            stack.group.spawn(name, host.argv(*argv, "--processes", "1"), stack.env)
            api_urls.append(f"http://{host.address}:{API_PORT}")
        for url in api_urls:
            wait_until(lambda url=url: call(lambda: _ok(f"{url}/livez")), 30, f"api {url}")
        probe = gw_redis(core.address)
        wait_until(lambda: call(lambda: probe.zcard(keys.worker_heartbeat("openai")) >= 2), 30, "both worker hosts")
        yield Gateway(net, stack, call, workers, api_urls)
    except BaseException:
        dump_logs(stack)
        raise
    finally:
        stack.stop()
        net.close()


def gw_redis(address: str) -> redis.Redis:
    return redis.Redis(host=address, port=REDIS_PORT, decode_responses=True, socket_timeout=5)


def _ok(url: str) -> bool:
    return httpx.get(url, timeout=1.0).status_code < 500


def body(content: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "provider": "openai", **extra}


def test_limits_breakers_metrics_and_the_cache_are_global(gw: Gateway) -> None:
    def run() -> None:
        api1, api2 = gw.client(0), gw.client(1)
        admin2 = gw.client(1, sub="ops", role="admin")
        # a tenant's requests/min: counted once, whichever API host admits them
        capped = [gw.client(i, sub="capped") for i in (0, 1)]
        codes = [capped[n % 2].post(JOBS, json=body(f"capped {n}")).status_code for n in range(CAPPED_RPM + 1)]
        assert codes == [202] * CAPPED_RPM + [429], codes

        # the cache: what one host's request stored, the other host serves
        first = api1.post(CHAT, json=body("cache me", temperature=0))
        again = api2.post(CHAT, json=body("cache me", temperature=0))
        assert first.status_code == again.status_code == 200, (first.text, again.text)
        assert again.json()["data"]["cached"] is True
        assert again.json()["data"]["content"] == first.json()["data"]["content"]

        # metrics: requests served through one host are counted by the other
        def served() -> int:
            data = admin2.get("/api/v1/llm/metrics", params={"period": "hour", "tenant": "metered"}).json()["data"]
            return int(data["gateway"]["totalRequests"])

        before = served()
        metered = gw.client(0, sub="metered")
        for n in range(3):
            assert metered.post(CHAT, json=body(f"count me {n}")).status_code == 200
        wait_until(lambda: served() >= before + 3, 10, "api2's metrics to count api1's requests")

        # a breaker opened by failures of requests that came through api1 is open for api2 as well
        gw.sim("POST", "/_control/faults", json={"provider": "openai", "status": 500})
        try:
            for n in range(3):
                api1.post(CHAT, json=body(f"fail {n}"))
            wait_until(
                lambda: (
                    api2.get("/api/v1/llm/health").json()["data"]["providers"]["openai"]["breaker"]["state"] == "open"
                ),
                10,
                "api2 to see the breaker open",
            )
        finally:
            gw.sim("DELETE", "/_control/faults")
            reset_sync(gw.redis())
        for c in (api1, api2, admin2, metered, *capped):
            c.close()

    gw.call(run)


def test_a_worker_host_cut_off_past_its_lease_has_its_jobs_retaken_and_answered_once(gw: Gateway) -> None:
    def calls() -> list[dict[str, Any]]:
        """The provider calls the simulator received, oldest first."""
        found = gw.sim("GET", "/_control/requests", params={"limit": "1000", "provider": "openai"})["requests"]
        return [c for c in found if c["path"] == "/openai/v1/chat/completions"]

    gw.call(lambda: gw.sim("POST", "/_control/latency", json={"ms": 2000}))  # in flight at the cut
    r = gw.redis()
    sync_answers: dict[int, list[httpx.Response]] = {0: [], 1: []}

    def run() -> None:
        clients = [gw.client(i) for i in (0, 1)]
        earlier = len(calls())  # the calls of the tests before this one
        jobs = [clients[n % 2].post(JOBS, json=body(f"job {n}")) for n in range(8)]
        assert all(j.status_code == 202 for j in jobs), [j.text for j in jobs]
        ids = [j.json()["data"]["id"] for j in jobs]

        def sync(i: int) -> None:
            with gw.client(i, timeout=60) as c:
                sync_answers[i].append(c.post(CHAT, json=body(f"sync {i}")))

        callers = [threading.Thread(target=sync, args=(i,)) for i in (0, 1)]
        for t in callers:
            t.start()

        def held_by(org: str) -> set[str]:
            mine = calls()[earlier:]
            return {c["headers"].get("x-request-id") for c in mine if c["headers"].get("openai-organization") == org}

        wait_until(lambda: len(calls()) >= earlier + 10, 20, "every request at the provider")
        on_w1 = held_by(ORG["w1"])
        assert on_w1, "the first worker host holds none of the requests"
        gw.net.hosts["w1"].cut()
        cut_at = time.monotonic()
        try:

            def ended(rid: str) -> bool:
                return clients[0].get(f"{JOBS}/{rid}").json()["data"]["status"] == "succeeded"

            wait_until(lambda: all(ended(rid) for rid in ids), 30, "every job to end without the cut-off host")
            for t in callers:
                t.join(30)
            stored = {rid: clients[1].get(f"{JOBS}/{rid}").json()["data"] for rid in ids}
            retaken = held_by(ORG["w2"])
            assert on_w1 <= retaken, "a job the cut-off host held was not retaken by the other host"
            print(f"\njobs retaken {time.monotonic() - cut_at:.2f} s after the cut (lease {LEASE_S} s)")
        finally:
            gw.net.hosts["w1"].reconnect()

        # the cut-off host comes back and ends what it held (late): nothing it stores changes an answer
        def back_and_idle() -> bool:
            # read anew each time: the host rejoins the room at its next beat after it was evicted
            w1 = [w for w in r.hkeys(keys.worker_room("openai")) if f":{gw.workers['w1'].popen.pid}:" in w]
            return (
                gw.sim("GET", "/_control/stats")["openai"]["in_flight"] == 0
                and bool(w1)
                and int(r.hget(keys.worker_room("openai"), w1[0]) or 0) == int(QUIET_ENV.get("WORKER_MAX_JOBS", 200))
            )

        wait_until(back_and_idle, 30, "the cut-off host to be back with every job of it ended")
        for rid in ids:
            assert clients[0].get(f"{JOBS}/{rid}").json()["data"] == stored[rid]
        for i in (0, 1):
            (answer,) = sync_answers[i]  # one answer each
            assert answer.status_code == 200, answer.text
            rid = answer.json()["data"]["id"]
            assert (
                clients[0].get(f"{JOBS}/{rid}").json()["data"]["result"]["content"] == answer.json()["data"]["content"]
            )
        for c in clients:
            c.close()

    try:
        gw.call(run)
    finally:
        gw.call(lambda: gw.sim("POST", "/_control/latency", json={"ms": 5}))
        r.close()
