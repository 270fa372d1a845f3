"""Key rotation without downtime, on a stack of its own whose keys live in PROVIDER_KEYS_FILE.

- Provider keys: under continuous load the new key is added to the file, the old one is revoked at the
  provider, then removed from the file: not one request fails.
- JWT secrets: the new secret and the previous one are both accepted while a rotation is under way,
  then only the new one; picked up from the file, or at once on SIGHUP.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest

from devstack.procs import Proc, free_port, http_ok, start_redis, wait_until
from devstack.stack import Stack
from workers.provider_keys import key_id

OLD_KEY = "sk-rotation-old-" + "0" * 24
NEW_KEY = "sk-rotation-new-" + "1" * 24
ANTHROPIC_KEY = "sk-ant-rotation-" + "2" * 24
CHAT = {"messages": [{"role": "user", "content": "Hello, how are you?"}], "provider": "openai", "maxTokens": 8}
OPENAI_WORKERS = 2


def fingerprint(key: str) -> str:
    """How the simulator records a key (simulator/state.py)."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass
class Rotation:
    stack: Stack
    keys_file: Path
    jwt_secret: str
    lines: dict[str, str] = field(default_factory=dict)

    def write(self, **names: str) -> None:
        """Replace the keys file atomically (as an operator's tooling would), keeping unnamed lines."""
        self.lines.update(names)
        tmp = self.keys_file.with_suffix(".tmp")
        tmp.write_text("".join(f"{k}={v}\n" for k, v in self.lines.items()))
        os.replace(tmp, self.keys_file)

    def workers(self) -> list[Proc]:
        return self.stack.workers["openai"]

    def wait_workers_loaded(self, *keys: str) -> None:
        marker = f"openai API keys loaded: {len(keys)} (ids {', '.join(key_id(k) for k in keys)})"
        wait_until(lambda: all(marker in w.log() for w in self.workers()), 30, f"workers to load {marker!r}")

    def sim_stats(self) -> dict[str, int]:
        return dict(self.stack.sim("GET", "/_control/stats", params={"arrivals": "0"}).json()["openai"]["by_status"])


@pytest.fixture(scope="module")
def rotation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rotation]:
    keys_file = tmp_path_factory.mktemp("rotation") / "keys.env"
    s = Stack()
    rot = Rotation(s, keys_file, s.jwt_secret)
    rot.write(OPENAI_API_KEY=OLD_KEY, ANTHROPIC_API_KEY=ANTHROPIC_KEY, JWT_SECRET=s.jwt_secret)
    try:
        _, redis_url = start_redis(s.group)
        s.start_simulator(latency_ms=5)
        s.configure(
            redis_url,
            PROVIDER_KEYS_FILE=str(keys_file),
            PROVIDER_KEY_COOLDOWN_S="60",
            ENABLE_LLM_FAILOVER="false",  # no other provider may cover for a refused key
            LOG_LEVEL="INFO",  # the workers log each key (re)load, by key id
            RETRY_BASE_DELAY_S="0.01",
            RETRY_MAX_DELAY_S="0.5",
            WORKER_LEASE_S="1.5",
            WORKER_POLL_FALLBACK_S="0.5",
            BREAKER_FAILURE_THRESHOLD="1000000",
            BREAKER_MIN_REQUESTS="1000000",
        )
        for _ in range(OPENAI_WORKERS):
            s.start_worker("openai")
        s.start_worker("anthropic")
        s.wait_workers({"openai": OPENAI_WORKERS, "anthropic": 1})
        s.start_api()
        # a key the provider does not know is refused, as a real provider would
        s.sim("POST", "/_control/keys", json={"provider": "openai", "allow": [OLD_KEY, NEW_KEY]}).raise_for_status()
        yield rot
    except BaseException:
        for proc in s.group.procs:
            print(f"----- {proc.name} -----\n{proc.log()[-4000:]}")
        raise
    finally:
        s.stop()


class Load:
    """Clients sending completions back to back until stopped; every answer is kept."""

    def __init__(self, stack: Stack, clients: int = 4) -> None:
        self.stack = stack
        self.clients = clients
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[tuple[int, str]] = []
        self.pool = ThreadPoolExecutor(clients)

    def _run(self) -> None:
        with self.stack.client(role="user", timeout=30) as client:
            while not self.stop.is_set():
                resp = client.post("/api/v1/llm/chat/completions", json=CHAT)
                with self.lock:
                    if resp.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append((resp.status_code, resp.text[:300]))

    def __enter__(self) -> Load:
        self.futures = [self.pool.submit(self._run) for _ in range(self.clients)]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for f in self.futures:
            f.result(timeout=60)
        self.pool.shutdown()

    def wait_more(self, n: int, what: str) -> None:
        target = self.ok + n
        wait_until(lambda: self.ok >= target or bool(self.failures), 60, what)
        assert not self.failures, self.failures[:3]


def test_provider_key_rotation_under_load_fails_no_request(rotation: Rotation) -> None:
    stack = rotation.stack
    with Load(stack) as load:
        load.wait_more(40, "completions with the old key")

        # 1. the operator adds the new key to the file (after the old one): picked up without a restart
        rotation.write(OPENAI_API_KEY=f"{OLD_KEY},{NEW_KEY}")
        rotation.wait_workers_loaded(OLD_KEY, NEW_KEY)
        load.wait_more(20, "completions after the reload")

        # 2. the old key is revoked at the provider mid-run: the next key is used at once
        stack.sim("POST", "/_control/keys", json={"provider": "openai", "revoke": [OLD_KEY]}).raise_for_status()
        load.wait_more(60, "completions after the revocation")
        assert rotation.sim_stats().get("401", 0) >= 1  # the revoked key was really refused, and worked around

        # 3. the old key leaves the file
        rotation.write(OPENAI_API_KEY=NEW_KEY)
        rotation.wait_workers_loaded(NEW_KEY)
        load.wait_more(40, "completions after the clean-up")
    assert not load.failures, load.failures[:3]

    recent = stack.sim("GET", "/_control/requests", params={"provider": "openai", "limit": "40"}).json()["requests"]
    used = {r["headers"].get("authorization") for r in recent if r["path"].endswith("/chat/completions")}
    assert used == {f"Bearer {fingerprint(NEW_KEY)}"}
    for proc in rotation.workers():
        assert OLD_KEY not in proc.log() and NEW_KEY not in proc.log()  # only key ids are ever logged


def _authenticated(api_url: str, secret: str) -> bool:
    """True when the API accepts a token signed with `secret` (a 404 for an unknown job is past auth)."""
    token = jwt.encode({"sub": "ops", "role": "user", "exp": 2**31 - 1}, secret, algorithm="HS256")
    resp = httpx.get(f"{api_url}/api/v1/llm/jobs/{'0' * 32}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert resp.status_code in (401, 404), resp.text
    return resp.status_code == 404


def test_jwt_secret_rotation_from_the_file(rotation: Rotation) -> None:
    api = rotation.stack.api_url
    old, new = rotation.jwt_secret, secrets.token_urlsafe(32)
    assert _authenticated(api, old) and not _authenticated(api, new)
    try:
        rotation.write(JWT_SECRET=new, JWT_PREVIOUS_SECRET=old)
        wait_until(lambda: _authenticated(api, new), 20, "the new JWT secret to be accepted")
        assert _authenticated(api, old)  # tokens already handed out keep working during the rotation
        rotation.write(JWT_PREVIOUS_SECRET="")
        wait_until(lambda: not _authenticated(api, old), 20, "the previous JWT secret to be retired")
        assert _authenticated(api, new)
    finally:
        rotation.write(JWT_SECRET=old, JWT_PREVIOUS_SECRET="")
        wait_until(lambda: _authenticated(api, old), 20, "the original JWT secret back")


def test_sighup_reloads_at_once(rotation: Rotation) -> None:
    """With file polling effectively off, a SIGHUP alone makes an API process and a worker re-read the file."""
    stack = rotation.stack
    quiet = {**stack.env, "PROVIDER_KEYS_POLL_S": "3600"}
    port = free_port()
    api = stack.group.python(
        "api-sighup", ["api.serve", "--host", "127.0.0.1", "--port", str(port), "--processes", "1"], quiet
    )
    api_url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{api_url}/livez"), 30, "second api", api.popen)
    worker = stack.group.python("worker-openai-sighup", ["workers", "openai"], quiet)
    stack.wait_workers({"openai": OPENAI_WORKERS + 1})
    old, new = rotation.jwt_secret, secrets.token_urlsafe(32)
    try:
        rotation.write(JWT_SECRET=new, JWT_PREVIOUS_SECRET=old, OPENAI_API_KEY=f"{NEW_KEY},{OLD_KEY}")
        # the polling API process has it within seconds; this one must not until told
        wait_until(lambda: _authenticated(stack.api_url, new), 20, "the polling API to reload")
        assert not _authenticated(api_url, new)
        api.kill(signal.SIGHUP)
        worker.kill(signal.SIGHUP)
        wait_until(lambda: _authenticated(api_url, new), 20, "the SIGHUPed API to reload", api.popen)
        # the worker re-reads at its next provider call; a job goes to the worker with the most free
        # slots, so requests in flight together reach every worker
        marker = f"openai API keys loaded: 2 (ids {key_id(NEW_KEY)}, {key_id(OLD_KEY)})"
        with stack.client(role="user") as client, ThreadPoolExecutor(8) as pool:

            def reloaded() -> bool:
                sent = [pool.submit(client.post, "/api/v1/llm/chat/completions", json=CHAT) for _ in range(8)]
                assert all(f.result().status_code == 200 for f in sent)
                return marker in worker.log()

            wait_until(reloaded, 30, "the SIGHUPed worker to reload", worker.popen)
        assert api.alive() and worker.alive()
    finally:
        rotation.write(JWT_SECRET=old, JWT_PREVIOUS_SECRET="", OPENAI_API_KEY=NEW_KEY)
        api.stop()
        worker.stop()
