"""The whole gateway on this machine: Redis, simulator, one worker pool per provider, the API."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import httpx
import jwt
import redis

from devstack.procs import Proc, ProcGroup, free_port, http_ok, start_redis, wait_until
from shared import keys

PROVIDERS = ("openai", "anthropic")
# Rate limits far above anything a test or benchmark sends, so only the tests of the limits (which
# pass their own) are shaped by them; the SPEC.md defaults stay the defaults everywhere else.
UNSHAPED_LIMITS = {
    name: "100000000"
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


@dataclass
class Stack:
    group: ProcGroup = field(default_factory=ProcGroup)
    redis_url: str = ""
    sim_url: str = ""
    api_url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    workers: dict[str, list[Proc]] = field(default_factory=dict)
    api: Proc | None = None
    simulator: Proc | None = None
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def start_simulator(self, latency_ms: float = 5.0) -> None:
        port = free_port()
        self.simulator = self.group.python(
            "simulator",
            ["simulator", "--host", "127.0.0.1", "--port", str(port), "--latency-ms", str(latency_ms)],
        )
        self.sim_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{self.sim_url}/_control/stats"), 20, "simulator", self.simulator.popen)

    def configure(self, redis_url: str, **extra: str) -> None:
        self.redis_url = redis_url
        self.env = {
            "REDIS_URL": redis_url,
            "OPENAI_API_KEY": "sk-test-openai-0123456789abcdef",
            "ANTHROPIC_API_KEY": "sk-ant-test-0123456789abcdef",
            "OPENAI_BASE_URL": f"{self.sim_url}/openai/v1",
            "ANTHROPIC_BASE_URL": f"{self.sim_url}/anthropic",
            "LOG_LEVEL": "WARNING",
            "JWT_SECRET": self.jwt_secret,
            **UNSHAPED_LIMITS,
            **extra,
        }

    def start_worker(self, provider: str, extra_env: dict[str, str] | None = None) -> Proc:
        procs = self.workers.setdefault(provider, [])
        proc = self.group.python(
            f"worker-{provider}-{len(procs)}", ["workers", provider], {**self.env, **(extra_env or {})}
        )
        procs.append(proc)
        return proc

    def wait_workers(self, counts: dict[str, int], timeout: float = 20) -> None:
        client = redis.Redis.from_url(self.redis_url)
        try:
            wait_until(
                lambda: all(int(client.zcard(keys.worker_heartbeat(p))) >= n for p, n in counts.items()),  # type: ignore[arg-type]
                timeout,
                f"workers {counts}",
            )
        finally:
            client.close()

    def start_api(self, processes: int = 1, extra_env: dict[str, str] | None = None) -> None:
        port = free_port()
        self.api = self.group.python(
            "api",
            ["api.serve", "--host", "127.0.0.1", "--port", str(port), "--processes", str(processes)],
            {**self.env, **(extra_env or {})},
        )
        self.api_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{self.api_url}/livez"), 30, "api", self.api.popen)

    def start(
        self,
        *,
        redis_url: str | None = None,
        workers: int = 1,
        latency_ms: float = 5.0,
        api_processes: int = 1,
        **extra_env: str,
    ) -> Stack:
        if redis_url is None:
            _, redis_url = start_redis(self.group)
        self.start_simulator(latency_ms)
        self.configure(redis_url, **extra_env)
        for provider in PROVIDERS:
            for _ in range(workers):
                self.start_worker(provider)
        self.wait_workers({p: workers for p in PROVIDERS})
        self.start_api(api_processes)
        return self

    def token(self, role: str = "user", sub: str = "tester", ttl_s: float = 3600, **claims: object) -> str:
        now = int(time.time())
        body = {"sub": sub, "role": role, "iat": now, "exp": now + int(ttl_s), **claims}
        return jwt.encode(body, self.jwt_secret, algorithm="HS256")

    def client(self, role: str = "user", sub: str = "tester", timeout: float = 30) -> httpx.Client:
        """An HTTP client for the API, authenticated with a fresh token of the given role."""
        return httpx.Client(
            base_url=self.api_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {self.token(role, sub)}"},
        )

    def sim(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(method, f"{self.sim_url}{path}", timeout=10, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.group.stop_all()
