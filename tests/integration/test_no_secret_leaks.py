"""No secret leaks: provider keys, tokens and keys pasted into prompts appear in no answer, no stored
log, no Redis value and no process log.

A stack of our own runs with real-looking provider keys (two per provider, so a refused key is set
aside and the next one tried), logging at DEBUG, and traffic that takes every path: successes (sync,
async job, cache hit, batch in both formats, the OpenAI-compatible route), provider errors (a revoked
key, 401 echoing the masked key, 429, 500), validation errors carrying a key in the offending value,
and authentication failures with a forged JWT or a provider key sent as the token. Every request
carries keys in its message content and in extra headers.

The simulator answers `Simulated <provider> reply to: <first 60 characters of the last user message>`,
and that answer legitimately goes back to the caller, into the cache and into the stored (masked)
logs: each prompt starts with 60 harmless characters, so no key is in any answer either.
"""

from __future__ import annotations

import json
import secrets
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import jwt
import pytest
import redis

from devstack.procs import wait_until
from devstack.stack import Stack
from tests.integration.conftest import start_stack

ALNUM = string.ascii_letters + string.digits
PREAMBLE = "Please summarise these deployment notes for the on-call team: "  # > 60 characters
assert len(PREAMBLE) > 60
FRAGMENT = 16  # a run this long of a secret's random part counts as a leak (a truncated key is one)


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


@dataclass(frozen=True)
class Secret:
    name: str
    value: str
    core: str  # its random part (what is unique to it; prefixes such as sk-proj- are not)

    def found_in(self, text: str) -> bool:
        if self.value in text:
            return True
        return any(self.core[i : i + FRAGMENT] in text for i in range(len(self.core) - FRAGMENT + 1))


def openai_key(name: str) -> Secret:
    core = _random(ALNUM, 48)
    return Secret(name, f"sk-proj-{core}", core)


def anthropic_key(name: str) -> Secret:
    core = _random(ALNUM + "-_", 90) + "AA"
    return Secret(name, f"sk-ant-api03-{core}", core)


def aws_key(name: str) -> Secret:
    core = _random(string.ascii_uppercase + string.digits, 16)
    return Secret(name, f"AKIA{core}", core)


def github_token(name: str) -> Secret:
    core = _random(ALNUM, 36)
    return Secret(name, f"ghp_{core}", core)


def bearer_token(name: str) -> Secret:
    core = _random(ALNUM, 40)
    return Secret(name, core, core)  # sent as "Bearer <core>"


def a_jwt(name: str, signing_secret: str, **claims: Any) -> Secret:
    now = int(time.time())
    body = {"sub": "someone", "role": "admin", "iat": now, "exp": now + 3600, **claims}
    token = jwt.encode(body, signing_secret, algorithm="HS256")
    return Secret(name, token, token.rsplit(".", 1)[1])  # the signature is its random part


# Configured for the workers (and the API, which reports which providers have keys).
PROVIDER_KEYS = {
    "openai": [openai_key("OPENAI_API_KEY #1"), openai_key("OPENAI_API_KEY #2")],
    "anthropic": [anthropic_key("ANTHROPIC_API_KEY #1"), anthropic_key("ANTHROPIC_API_KEY #2")],
}
# Pasted into message content.
IN_CONTENT = [
    openai_key("an OpenAI key in content"),
    anthropic_key("an Anthropic key in content"),
    aws_key("an AWS access key id in content"),
    github_token("a GitHub token in content"),
    bearer_token("a bearer token in content"),
    a_jwt("a JWT in content", _random(ALNUM, 32)),
]
# Sent as extra request headers.
IN_HEADERS = {
    "X-Api-Key": openai_key("an OpenAI key in X-Api-Key"),
    "X-Anthropic-Api-Key": anthropic_key("an Anthropic key in X-Anthropic-Api-Key"),
    "X-Upstream-Authorization": bearer_token("a bearer token in X-Upstream-Authorization"),
}
FORGED_JWT = a_jwt("a JWT signed with another secret", _random(ALNUM, 32))
ANY_VALUE = openai_key("an OpenAI key as an invalid field value")


def secret_prompt() -> str:
    """A prompt with every content secret after the 60 characters the simulator echoes."""
    lines = [f"- {s.name}: {'Bearer ' + s.value if 'bearer' in s.name else s.value}" for s in IN_CONTENT]
    return PREAMBLE + "\n" + "\n".join(lines) + "\nThanks!"


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": secret_prompt()}], "maxTokens": 32, **extra}


@dataclass
class Traffic:
    stack: Stack
    client_jwt: Secret
    answers: list[str] = field(default_factory=list)  # every answer received: status, headers, body
    statuses: dict[str, int] = field(default_factory=dict)  # what each step got
    to_workers: set[str] = field(default_factory=set)  # ids of the requests a worker ended (and logs)

    def all_secrets(self) -> list[Secret]:
        signing = Secret("JWT_SECRET", self.stack.jwt_secret, self.stack.jwt_secret)
        keys = [k for ks in PROVIDER_KEYS.values() for k in ks]
        return [*keys, *IN_CONTENT, *IN_HEADERS.values(), FORGED_JWT, ANY_VALUE, self.client_jwt, signing]

    def record(self, response: httpx.Response) -> None:
        response.read()
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        # what the gateway answered (the request line without its query: that is what we sent)
        what = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
        self.answers.append(f"{what}\n{headers}\n{response.text}")

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {name: (f"Bearer {s.value}" if "bearer" in s.name else s.value) for name, s in IN_HEADERS.items()}
        headers["Authorization"] = f"Bearer {token or self.client_jwt.value}"
        return httpx.Client(
            base_url=self.stack.api_url, headers=headers, timeout=30, event_hooks={"response": [self.record]}
        )

    def step(self, name: str, response: httpx.Response, *, to_worker: bool = False) -> httpx.Response:
        """Note what a step got, and whether a worker ended its request (its id: the X-Request-ID made up
        for it, as the caller sent none)."""
        self.statuses[name] = response.status_code
        if to_worker:
            self.to_workers.add(response.headers["X-Request-ID"])
        return response


def fault(stack: Stack, provider: str, status: int, **rule: Any) -> None:
    stack.sim("POST", "/_control/faults", json={"provider": provider, "status": status, **rule}).raise_for_status()


def reset_simulator(stack: Stack) -> None:
    stack.sim("POST", "/_control/reset").raise_for_status()


@pytest.fixture(scope="module")
def leak_stack() -> Iterator[Stack]:
    s = start_stack(
        {"openai": [{}], "anthropic": [{}]},
        OPENAI_API_KEY=",".join(k.value for k in PROVIDER_KEYS["openai"]),
        ANTHROPIC_API_KEY=",".join(k.value for k in PROVIDER_KEYS["anthropic"]),
        LOG_LEVEL="DEBUG",
        PROVIDER_KEY_COOLDOWN_S="60",  # a refused key is set aside (and shared through Redis)
        ENABLE_LLM_FAILOVER="false",  # every provider error reaches the caller
    )
    try:
        yield s
    finally:
        s.stop()


def run_successes(t: Traffic, api: httpx.Client) -> None:
    for provider in ("openai", "anthropic"):
        body = chat_body(provider=provider, user=ANY_VALUE.value, metadata={"apiKey": ANY_VALUE.value})
        t.step(f"sync {provider}", api.post("/api/v1/llm/chat/completions", json=body), to_worker=True)
    cached = chat_body(provider="openai", temperature=0)
    t.step("cache miss", api.post("/api/v1/llm/chat/completions", json=cached), to_worker=True)
    t.step("cache hit", api.post("/api/v1/llm/chat/completions", json=cached))
    job = t.step("async submit", api.post("/api/v1/llm/jobs", json=chat_body(provider="anthropic")), to_worker=True)
    t.step("async result", api.get(f"/api/v1/llm/jobs/{job.json()['data']['id']}", params={"wait": 20}))
    compat = {"model": "gpt-4", "max_tokens": 32, "messages": [{"role": "user", "content": secret_prompt()}]}
    t.step("openai-compatible", api.post("/v1/chat/completions", json=compat), to_worker=True)


def run_batches(t: Traffic, api: httpx.Client) -> None:
    items = [{"customId": f"item-{i}", **chat_body(provider="openai")} for i in range(3)]
    gateway = t.step("batch (gateway format)", api.post("/api/v1/llm/batches", json=items))
    lines = [{"custom_id": f"line-{i}", "url": "/v1/chat/completions", "body": openai_body()} for i in range(2)]
    jsonl = "".join(json.dumps(line) + "\n" for line in lines)
    headers = {"Content-Type": "application/x-ndjson"}
    openai = t.step("batch (OpenAI format)", api.post("/api/v1/llm/batches", content=jsonl, headers=headers))
    for name, submitted in (("gateway", gateway), ("openai", openai)):
        batch_id = submitted.json()["data"]["id"]
        t.step(f"batch {name} done", api.get(f"/api/v1/llm/batches/{batch_id}", params={"wait": 30}))
        results = t.step(f"batch {name} results", api.get(f"/api/v1/llm/batches/{batch_id}/results"))
        t.to_workers.update(json.loads(line)["id"].removeprefix("batch_req_") for line in results.text.splitlines())


def openai_body() -> dict[str, Any]:
    return {
        "model": "claude-3-haiku-20240307",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": secret_prompt()}],
    }


def run_provider_errors(t: Traffic, api: httpx.Client) -> None:
    stack = t.stack
    # the first key revoked at the provider: refused with its masked echo, set aside, the second one used
    revoked = PROVIDER_KEYS["openai"][0].value
    stack.sim("POST", "/_control/keys", json={"provider": "openai", "revoke": [revoked]}).raise_for_status()
    t.step("revoked key", api.post("/api/v1/llm/chat/completions", json=chat_body(provider="openai")), to_worker=True)
    reset_simulator(stack)
    fault(stack, "openai", 401)  # every key refused, the masked key echoed
    t.step("401", api.post("/api/v1/llm/chat/completions", json=chat_body(provider="openai")), to_worker=True)
    job = t.step("401 async", api.post("/api/v1/llm/jobs", json=chat_body(provider="openai")), to_worker=True)
    t.step("401 async result", api.get(f"/api/v1/llm/jobs/{job.json()['data']['id']}", params={"wait": 20}))
    reset_simulator(stack)
    fault(stack, "anthropic", 401)
    t.step(
        "401 anthropic", api.post("/api/v1/llm/chat/completions", json=chat_body(provider="anthropic")), to_worker=True
    )
    reset_simulator(stack)
    fault(stack, "anthropic", 429, retry_after=0)
    t.step("429", api.post("/api/v1/llm/chat/completions", json=chat_body(provider="anthropic")), to_worker=True)
    reset_simulator(stack)
    for provider, keys in PROVIDER_KEYS.items():  # a provider echoing, whole, every key it knows of
        fault(stack, provider, 400, message=f"bad request for keys {' and '.join(k.value for k in keys)}")
        t.step(
            f"400 echoing keys {provider}",
            api.post("/api/v1/llm/chat/completions", json=chat_body(provider=provider)),
            to_worker=True,
        )
    reset_simulator(stack)
    fault(stack, "openai", 500)
    t.step("500", api.post("/api/v1/llm/chat/completions", json=chat_body(provider="openai")), to_worker=True)
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": secret_prompt()}]}
    t.step("500 openai-compatible", api.post("/v1/chat/completions", json=body), to_worker=True)
    reset_simulator(stack)


def run_refusals(t: Traffic, api: httpx.Client) -> None:
    """Validation errors with a key as the offending value, and authentication failures."""
    key = ANY_VALUE.value
    invalid = {
        "temperature": chat_body(temperature=key),
        "provider": chat_body(provider=key),
        "role": {"messages": [{"role": key, "content": secret_prompt()}]},
        "content type": {"messages": [{"role": "user", "content": {"text": key}}]},
        "unknown field": chat_body(apiKey=key),
    }
    for name, body in invalid.items():
        t.step(f"422 {name}", api.post("/api/v1/llm/chat/completions", json=body))
        t.step(f"422 job {name}", api.post("/api/v1/llm/jobs", json=body))
    broken = b'{"messages": [{"role": "user", "content": "' + key.encode() + b'"'
    t.step("400 broken JSON", api.post("/api/v1/llm/chat/completions", content=broken))
    part = {"role": "user", "content": [{"type": key, "text": secret_prompt()}]}
    t.step("400 openai-compatible", api.post("/v1/chat/completions", json={"model": "gpt-4", "messages": [part]}))
    t.step("400 openai-compatible JSON", api.post("/v1/chat/completions", content=broken))
    line = {"custom_id": "x", "method": key, "url": key, "body": openai_body()}
    t.step("400 batch", api.post("/api/v1/llm/batches", content=json.dumps(line) + "\n"))
    t.step("400 logs", api.get("/api/v1/llm/logs", params={"startTime": key}))
    t.step("400 batch window", api.post("/api/v1/llm/batches", params={"completionWindow": key}, json=[]))
    for name, token in (("forged JWT", FORGED_JWT.value), ("provider key as JWT", PROVIDER_KEYS["openai"][1].value)):
        with t.client(token) as stranger:
            t.step(f"401 {name}", stranger.post("/api/v1/llm/chat/completions", json=chat_body()))
            t.step(f"401 {name} openai-compatible", stranger.post("/v1/chat/completions", json=openai_body()))


def wait_for_outcome_logs(t: Traffic, api: httpx.Client) -> None:
    """Workers log a request's outcome just after answering it: wait for every one due."""

    def logged() -> bool:
        ended = {e.get("requestId") for e in read_logs(api) if e.get("type") in ("response", "error")}
        return t.to_workers <= ended

    wait_until(logged, 30, "the outcome of every request in the stored logs")


def read_logs(api: httpx.Client) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        data = api.get("/api/v1/llm/logs", params=params).raise_for_status().json()["data"]
        entries += data["logs"]
        cursor = data["nextCursor"]
        if not cursor:
            return entries


@pytest.fixture(scope="module")
def traffic(leak_stack: Stack) -> Traffic:
    t = Traffic(leak_stack, a_jwt("the caller's JWT", leak_stack.jwt_secret, sub="tester"))
    with t.client() as api:
        run_successes(t, api)
        run_batches(t, api)
        run_provider_errors(t, api)
        run_refusals(t, api)
        wait_for_outcome_logs(t, api)
    return t


def leaks(secrets_: list[Secret], text: str) -> list[str]:
    return [s.name for s in secrets_ if s.found_in(text)]


def test_the_traffic_took_every_path(traffic: Traffic) -> None:
    got = traffic.statuses
    assert {got[s] for s in ("sync openai", "sync anthropic", "cache miss", "cache hit", "openai-compatible")} == {200}
    assert got["async submit"] == 202 and got["async result"] == 200
    assert got["batch (gateway format)"] == got["batch (OpenAI format)"] == 201
    assert got["revoked key"] == 200, "the second key serves while the first is refused"
    assert got["401"] == got["401 anthropic"] == 401 and got["401 async"] == 202 and got["429"] == 429
    assert got["400 echoing keys openai"] == got["400 echoing keys anthropic"] == 400
    assert got["500"] >= 500 and got["500 openai-compatible"] >= 500
    assert all(got[s] in (400, 422) for s in got if s.startswith(("422", "400")))
    assert all(got[s] == 401 for s in got if s.startswith("401 ") and "async" not in s)


def test_no_secret_in_any_answer(traffic: Traffic) -> None:
    found = [(a.split("\n", 1)[0], leaks(traffic.all_secrets(), a)) for a in traffic.answers]
    assert not [(answer, names) for answer, names in found if names]


def test_no_secret_in_the_stored_logs(traffic: Traffic) -> None:
    with traffic.client() as api:
        entries = read_logs(api)
    text = json.dumps(entries)
    assert not leaks(traffic.all_secrets(), text)
    # the prompts were logged, their keys masked
    assert "[API_KEY]" in text and "[TOKEN]" in text and "Please summarise" in text


def redis_dump(stack: Stack) -> dict[str, str]:
    """Every key of the stack's Redis and what it holds, read by type."""
    client = redis.Redis.from_url(stack.redis_url)
    out: dict[str, str] = {}
    try:
        for raw in client.scan_iter(count=1000):
            kind = cast(bytes, client.type(raw)).decode()
            value: Any
            if kind == "string":
                value = client.get(raw)
            elif kind == "hash":
                value = client.hgetall(raw)
            elif kind == "list":
                value = client.lrange(raw, 0, -1)
            elif kind == "set":
                value = client.smembers(raw)
            elif kind == "zset":
                value = client.zrange(raw, 0, -1, withscores=True)
            elif kind == "stream":
                value = client.xrange(raw, "-", "+")
            else:
                value = f"<{kind}>"
            out[raw.decode(errors="replace")] = repr(value)
    finally:
        client.close()
    return out


def test_no_secret_in_redis(traffic: Traffic) -> None:
    dump = redis_dump(traffic.stack)
    assert any("[API_KEY]" in v for v in dump.values()), "the stored logs' stream was read, masked prompts and all"
    found = {k: leaks(traffic.all_secrets(), f"{k} {v}") for k, v in dump.items()}
    assert not {k: v for k, v in found.items() if v}


def test_no_secret_in_any_process_log(traffic: Traffic) -> None:
    """The gateway's processes (API, workers); the simulator's output and Redis' are not the gateway's."""
    procs = [p for p in traffic.stack.group.procs if p.name.startswith(("api", "worker"))]
    assert len(procs) == 3
    assert any("API keys loaded" in p.log() for p in procs), "the processes' logs are captured (at INFO and below)"
    found = {p.name: leaks(traffic.all_secrets(), p.log()) for p in procs}
    assert not {k: v for k, v in found.items() if v}
