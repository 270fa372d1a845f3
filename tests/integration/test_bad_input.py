"""Bad requests get a typed 400 / 413 / 422 in the SPEC error shape, never a 500, and never a job:
nothing is enqueued, no record is written, the provider sees nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.stack import Stack
from shared import keys

ENDPOINTS = ["/api/v1/llm/chat/completions", "/api/v1/llm/jobs"]
HELLO = [{"role": "user", "content": "Hello"}]
JSON = {"content-type": "application/json"}


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "imageUrl": {"url": url}}


def ok(**extra: Any) -> dict[str, Any]:
    return {"messages": HELLO, **extra}


# (id, request kwargs for httpx, status, error param)
CASES: list[Any] = [
    pytest.param({"content": b'{"messages": [', "headers": JSON}, 400, None, id="malformed-json"),
    pytest.param({"content": b"", "headers": JSON}, 400, None, id="empty-body"),
    pytest.param({"json": [HELLO]}, 400, None, id="array-body"),
    pytest.param({"json": "hello"}, 400, None, id="string-body"),
    pytest.param({"json": {}}, 422, "messages", id="no-messages"),
    pytest.param({"json": {"messages": []}}, 422, "messages", id="empty-messages"),
    pytest.param({"json": {"messages": "Hello"}}, 422, "messages", id="messages-not-a-list"),
    pytest.param(
        {"json": {"messages": [{"role": "wizard", "content": "hi"}]}}, 422, "messages.0.role", id="unknown-role"
    ),
    pytest.param({"json": {"messages": [{"content": "hi"}]}}, 422, "messages.0.role", id="missing-role"),
    pytest.param(
        {"json": {"messages": [{"role": "user", "content": 42}]}}, 422, "messages.0.content", id="number-content"
    ),
    pytest.param(
        {"json": {"messages": [{"role": "user", "content": None}]}}, 422, "messages.0.content", id="null-content"
    ),
    pytest.param(
        {"json": {"messages": [{"role": "user", "content": [{"type": "video", "url": "https://x"}]}]}},
        422,
        "messages.0.content",
        id="unknown-content-part",
    ),
    pytest.param(
        {"json": {"messages": [{"role": "user", "content": [image_part("http://example.com/cat.png")]}]}},
        422,
        "messages.0.content",
        id="image-url-not-https",
    ),
    pytest.param(
        {"json": {"messages": [{"role": "user", "content": [image_part("data:image/png;base64,%%%not base64")]}]}},
        422,
        "messages.0.content",
        id="image-data-not-base64",
    ),
    pytest.param(
        {"json": ok(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}])},
        422,
        "tools.0.function.parameters",
        id="tool-schema-not-json-schema",
    ),
    pytest.param(
        {"json": {"messages": [*HELLO, {"role": "tool", "toolCallId": "call_1", "content": "42"}]}},
        422,
        "messages",
        id="tool-message-without-call",
    ),
    pytest.param({"json": ok(n=129)}, 422, "n", id="n-over-128"),
    pytest.param({"json": ok(toolChoice="sometimes")}, 422, "toolChoice", id="unknown-tool-choice"),
    pytest.param({"json": ok(provider="anthropic", logprobs=True)}, 400, "logprobs", id="logprobs-on-anthropic"),
    pytest.param({"json": ok(maxTokens=-1)}, 422, "maxTokens", id="negative-max-tokens"),
    pytest.param({"json": ok(maxTokens=0)}, 422, "maxTokens", id="zero-max-tokens"),
    pytest.param({"json": ok(maxTokens=10**12)}, 422, "maxTokens", id="huge-max-tokens"),
    pytest.param({"json": ok(maxTokens=1.5)}, 422, "maxTokens", id="fractional-max-tokens"),
    pytest.param({"json": ok(temperature=2.5)}, 422, "temperature", id="temperature-above-2"),
    pytest.param({"json": ok(temperature=-0.1)}, 422, "temperature", id="negative-temperature"),
    pytest.param({"json": ok(topP=1.5)}, 422, "topP", id="top-p-above-1"),
    pytest.param({"json": ok(provider="cohere")}, 422, "provider", id="unknown-provider"),
    pytest.param({"json": ok(stop=["a", "b", "c", "d", "e"])}, 422, "stop", id="five-stop-sequences"),
    pytest.param({"json": ok(timeout=0)}, 422, "timeout", id="zero-timeout"),
    pytest.param({"json": ok(model="")}, 422, "model", id="empty-model"),
    pytest.param({"json": ok(frobnicate=True)}, 422, "frobnicate", id="unknown-field"),
    pytest.param({"json": ok(provider="openai", model="claude-2.1")}, 400, "model", id="model-of-other-provider"),
]


@pytest.fixture
def nothing_enqueued(upstream: Any, stack: Stack, redis_of: Any) -> Iterator[None]:
    """Asserts the test created no request record and no queued job, and no provider was called."""
    r = redis_of(stack)

    def records() -> int:
        return sum(1 for _ in r.scan_iter(match=keys.request("*"), count=1000))

    before = records()
    yield
    assert records() == before
    for provider in ("openai", "anthropic"):
        assert r.zcard(keys.queue(provider)) == 0
        assert upstream.calls(provider) == 0


def assert_error_shape(resp: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["success"] is False
    err: dict[str, Any] = body["error"]
    assert err["type"] == "invalid_request_error"
    assert isinstance(err["message"], str) and err["message"]
    assert err["param"] == param
    assert err["retryable"] is False
    return err


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(("request_kwargs", "status", "param"), CASES)
def test_bad_completion_request(
    api: httpx.Client, request_kwargs: dict[str, Any], status: int, param: str | None
) -> None:
    assert_error_shape(api.post(ENDPOINTS[0], **request_kwargs), status, param)


# the job route shares the completion route's validation: a sample of the cases shows it
JOB_CASES = [
    c for c in CASES if c.id in {"malformed-json", "array-body", "unknown-role", "huge-max-tokens", "unknown-provider"}
]


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(("request_kwargs", "status", "param"), JOB_CASES)
def test_bad_job_submission(api: httpx.Client, request_kwargs: dict[str, Any], status: int, param: str | None) -> None:
    assert_error_shape(api.post(ENDPOINTS[1], **request_kwargs), status, param)


def max_body_bytes(stack: Stack) -> int:
    return int(stack.env.get("MAX_BODY_BYTES", 1024 * 1024))


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize("path", ENDPOINTS)
def test_body_over_the_limit(api: httpx.Client, stack: Stack, path: str) -> None:
    limit = max_body_bytes(stack)
    padding = "x" * limit
    err = assert_error_shape(api.post(path, json=ok(user=padding)), 413, None)
    assert str(limit) in err["message"]


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize("path", ENDPOINTS)
def test_chunked_body_over_the_limit(api: httpx.Client, stack: Stack, path: str) -> None:
    """No content-length to refuse up front: the limit must hold while the body streams in."""
    limit = max_body_bytes(stack)
    chunk = b" " * 65536

    def body() -> Iterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "Hello"}], "user": "'
        for _ in range(limit // len(chunk) + 2):
            yield chunk
        yield b'"}'

    resp = api.post(path, content=body(), headers=JSON)
    assert "content-length" not in resp.request.headers
    assert_error_shape(resp, 413, None)


def test_body_just_under_the_limit_is_served(api: httpx.Client, upstream: Any, stack: Stack) -> None:
    """The limit is on bytes, and a body under it goes through (the content itself is not limited)."""
    skeleton = httpx.Request("POST", "/", json=ok(content="")).content
    filler = max_body_bytes(stack) - len(skeleton) - 64
    upstream.config(context_limits={"gpt-4": 10**7})
    resp = api.post(ENDPOINTS[0], json={"messages": [{"role": "user", "content": "y" * filler}], "provider": "openai"})
    assert resp.status_code == 200, resp.text[:500]
    assert upstream.calls("openai") == 1


@pytest.mark.usefixtures("nothing_enqueued")
@pytest.mark.parametrize(
    ("params", "job_id", "status", "param"),
    [
        pytest.param({}, "not-a-job-id", 422, "job_id", id="malformed-id"),
        pytest.param({"wait": -1}, "0" * 32, 422, "wait", id="negative-wait"),
        pytest.param({"wait": "soon"}, "0" * 32, 422, "wait", id="wait-not-a-number"),
    ],
)
def test_bad_job_lookup(api: httpx.Client, params: dict[str, Any], job_id: str, status: int, param: str) -> None:
    resp = api.get(f"{ENDPOINTS[1]}/{job_id}", params=params)
    err = assert_error_shape(resp, status, param)
    assert param in err["message"]
