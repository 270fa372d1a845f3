"""The simulated upstream, exercised over real HTTP against a `python -m simulator` subprocess."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx
import pytest

from simulator import create_app, fingerprint
from simulator.app import ConnectionDropped
from tests.simulator.conftest import (
    AN_HEADERS,
    ANTHROPIC_KEY,
    CHAT,
    MESSAGES,
    OA_HEADERS,
    OPENAI_KEY,
    add_fault,
    an_body,
    oa_body,
    stats,
    wait_until,
)

# --- happy paths -------------------------------------------------------------------------------


def test_openai_happy_path_shape(client: httpx.Client) -> None:
    r = client.post(CHAT, headers=OA_HEADERS, json=oa_body())
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"].startswith("req_")
    body = r.json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and abs(body["created"] - time.time()) < 60
    assert body["model"] == "gpt-4"
    [choice] = body["choices"]
    assert set(choice) == {"index", "message", "logprobs", "finish_reason"}  # as OpenAI: logprobs null
    assert choice["index"] == 0 and choice["finish_reason"] == "stop" and choice["logprobs"] is None
    assert set(choice["message"]) == {"role", "content", "refusal"}
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content.startswith("Simulated openai reply to: Hello there")
    assert len(content) == 64 * 4
    prompt = math.ceil(len("You are terse.Hello there") / 4) + 3 * 2
    assert body["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 64,
        "total_tokens": prompt + 64,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    # deterministic text, fresh ids
    again = client.post(CHAT, headers=OA_HEADERS, json=oa_body()).json()
    assert again["choices"][0]["message"]["content"] == content
    assert again["id"] != body["id"]


def test_openai_reply_uses_last_user_message_first_60_chars(client: httpx.Client) -> None:
    long = "x" * 100
    msgs = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": long}]},
    ]
    body = client.post(CHAT, headers=OA_HEADERS, json=oa_body(messages=msgs)).json()
    assert body["choices"][0]["message"]["content"].startswith("Simulated openai reply to: " + "x" * 60 + " ")


def test_anthropic_happy_path_shape(client: httpx.Client) -> None:
    r = client.post(MESSAGES, headers=AN_HEADERS, json=an_body())
    assert r.status_code == 200
    assert r.headers["request-id"].startswith("req_")
    body = r.json()
    assert set(body) == {
        "id",
        "type",
        "role",
        "model",
        "content",
        "stop_reason",
        "stop_sequence",
        "usage",
    }
    assert body["id"].startswith("msg_")
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == "claude-3-opus-20240229"
    [block] = body["content"]
    assert block["type"] == "text"
    assert block["text"].startswith("Simulated anthropic reply to: Hello there")
    assert len(block["text"]) == 256
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    # system counts like OpenAI's system message: the same conversation costs the same
    prompt = math.ceil(len("You are terse.Hello there") / 4) + 3 * 2
    assert body["usage"] == {"input_tokens": prompt, "output_tokens": 64}


def test_anthropic_accepts_text_blocks_and_alternation(client: httpx.Client) -> None:
    msgs = [
        {"role": "user", "content": [{"type": "text", "text": "one"}]},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "!"}]},
    ]
    body = {"model": "claude-3-haiku-20240307", "max_tokens": 100, "messages": msgs}
    r = client.post(MESSAGES, headers=AN_HEADERS, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"].startswith("Simulated anthropic reply to: three!")
    assert r.json()["usage"]["input_tokens"] == math.ceil(len("onetwothree!") / 4) + 9


def test_models_listings(client: httpx.Client) -> None:
    oa = client.get("/openai/v1/models", headers=OA_HEADERS).json()
    assert oa["object"] == "list"
    assert {
        "id": "gpt-4",
        "object": "model",
        "created": oa["data"][0]["created"],
        "owned_by": "openai",
    } in oa["data"]
    an = client.get("/anthropic/v1/models", headers=AN_HEADERS).json()
    assert an["has_more"] is False
    ids = [m["id"] for m in an["data"]]
    assert "claude-3-opus-20240229" in ids
    assert an["first_id"] == ids[0] and an["last_id"] == ids[-1]
    assert all(set(m) == {"type", "id", "display_name", "created_at"} for m in an["data"])
    assert all(m["type"] == "model" for m in an["data"])


# --- truncation, stop sequences, context length ------------------------------------------------


def test_openai_max_tokens_truncation(client: httpx.Client) -> None:
    body = client.post(CHAT, headers=OA_HEADERS, json=oa_body(max_tokens=5)).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "Simulated openai rep"
    assert body["usage"]["completion_tokens"] == 5
    # larger than the natural reply: natural length, "stop"
    body = client.post(CHAT, headers=OA_HEADERS, json=oa_body(max_tokens=500)).json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 64


def test_anthropic_max_tokens_truncation(client: httpx.Client) -> None:
    body = client.post(MESSAGES, headers=AN_HEADERS, json=an_body(max_tokens=5)).json()
    assert body["stop_reason"] == "max_tokens"
    assert body["content"][0]["text"] == "Simulated anthropic "
    assert body["usage"]["output_tokens"] == 5


def test_stop_sequences(client: httpx.Client) -> None:
    body = client.post(CHAT, headers=OA_HEADERS, json=oa_body(stop=["reply"])).json()
    assert body["choices"][0]["message"]["content"] == "Simulated openai "
    assert body["choices"][0]["finish_reason"] == "stop"
    body = client.post(MESSAGES, headers=AN_HEADERS, json=an_body(stop_sequences=["reply"])).json()
    assert body["content"][0]["text"] == "Simulated anthropic "
    assert body["stop_reason"] == "stop_sequence" and body["stop_sequence"] == "reply"


def test_openai_context_length(client: httpx.Client) -> None:
    msgs = [{"role": "user", "content": "a" * 40_000}]
    r = client.post(CHAT, headers=OA_HEADERS, json=oa_body(messages=msgs))
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 10003 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    # other OpenAI models: 128000
    r = client.post(CHAT, headers=OA_HEADERS, json=oa_body(model="gpt-4o", messages=msgs))
    assert r.status_code == 200
    # configurable per model
    client.post("/_control/config", json={"provider": "openai", "context_limits": {"gpt-4o": 100}})
    r = client.post(CHAT, headers=OA_HEADERS, json=oa_body(model="gpt-4o", messages=msgs))
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 100 tokens" in r.json()["error"]["message"]


def test_anthropic_context_length(client: httpx.Client) -> None:
    msgs = [{"role": "user", "content": "a" * 800_004}]
    r = client.post(MESSAGES, headers=AN_HEADERS, json=an_body(system=None, messages=msgs))
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 200004 tokens > 200000 maximum",
        },
    }


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "param", "code"),
    [
        ({"messages": []}, "messages", "empty_array"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
        # Anthropic's image block sent to OpenAI
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            "messages[0].content[0].type",
            "invalid_value",
        ),
        # Anthropic's cache mark sent to OpenAI
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {}}]}]},
            "messages[0].content[0].cache_control",
            "unknown_parameter",
        ),
        ({"messages": [{"role": "tool", "tool_call_id": "call_1", "content": "x"}]}, "messages.[0].role", None),
        ({"temperature": 3}, "temperature", "decimal_above_max_value"),
        ({"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
        ({"model": None}, None, None),
    ],
)
def test_openai_validation(client: httpx.Client, patch: dict[str, Any], param: str | None, code: str | None) -> None:
    body = {k: v for k, v in oa_body(**patch).items() if v is not None}
    r = client.post(CHAT, headers=OA_HEADERS, json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert (err["param"], err["code"]) == (param, code)


def test_openai_invalid_json_and_unknown_route(client: httpx.Client) -> None:
    r = client.post(CHAT, headers=OA_HEADERS, content=b"{nope")
    assert r.status_code == 400 and "could not parse the JSON body" in r.json()["error"]["message"]
    r = client.post("/openai/v1/nothing", headers=OA_HEADERS, json={})
    assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (POST /v1/nothing)"


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
        ({"messages": []}, "at least one message is required"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, 'first message must use the "user" role'),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            "roles must alternate",
        ),
        ({"messages": [{"role": "system", "content": "x"}]}, 'Unexpected role "system"'),
        ({"messages": [{"role": "user", "content": [{"type": "image"}]}]}, "messages.0.content.0.image.source"),
        # OpenAI's image part sent to Anthropic
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]},
            "messages.0.content.0: Input tag 'image_url'",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]}]},
            "unexpected `tool_use_id` found in `tool_result` blocks: toolu_1",
        ),
        ({"messages": [{"role": "user", "content": ""}]}, "must have non-empty content"),
        ({"model": None}, "model: Field required"),
    ],
)
def test_anthropic_validation(client: httpx.Client, patch: dict[str, Any], fragment: str) -> None:
    body = {k: v for k, v in an_body(**patch).items() if v is not None}
    r = client.post(MESSAGES, headers=AN_HEADERS, json=body)
    assert r.status_code == 400
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert fragment in data["error"]["message"]


def test_auth_headers_required(client: httpx.Client) -> None:
    r = client.post(CHAT, json=oa_body())
    assert r.status_code == 401
    assert r.json()["error"]["message"].startswith("You didn't provide an API key.")
    r = client.post(MESSAGES, headers={"anthropic-version": "2023-06-01"}, json=an_body())
    assert r.status_code == 401
    assert r.json()["error"] == {"type": "authentication_error", "message": "x-api-key header is required"}
    r = client.post(MESSAGES, headers={"x-api-key": ANTHROPIC_KEY}, json=an_body())
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "anthropic-version: header is required"
    # the key as a bearer token, as the `anthropic` package 2.x sends it
    bearer = {"authorization": f"Bearer {ANTHROPIC_KEY}", "anthropic-version": "2023-06-01"}
    assert client.post(MESSAGES, headers=bearer, json=an_body()).status_code == 200
    client.post("/_control/keys", json={"provider": "anthropic", "revoke": [ANTHROPIC_KEY]})
    assert client.post(MESSAGES, headers=bearer, json=an_body()).json()["error"]["message"] == "invalid x-api-key"


# --- keys ----------------------------------------------------------------------------------------


def test_key_revocation_and_allow_list(client: httpx.Client) -> None:
    bad = "sk-revoked-key-0123456789ABCDEF"
    r = client.post("/_control/keys", json={"provider": "openai", "revoke": [bad]})
    assert r.status_code == 200
    r = client.post(CHAT, headers={"Authorization": f"Bearer {bad}"}, json=oa_body())
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
    assert err["param"] is None
    assert err["message"].startswith("Incorrect API key provided: sk-")
    assert bad not in r.text and "CDEF" in err["message"]
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code == 200
    # anthropic allow-list
    client.post("/_control/keys", json={"provider": "anthropic", "allow": ["only-this-key"]})
    r = client.post(MESSAGES, headers=AN_HEADERS, json=an_body())
    assert r.status_code == 401
    assert r.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    ok = {**AN_HEADERS, "x-api-key": "only-this-key"}
    assert client.post(MESSAGES, headers=ok, json=an_body()).status_code == 200
    # allow: null lifts the list; reset lifts everything
    client.post("/_control/keys", json={"provider": "anthropic", "allow": None})
    assert client.post(MESSAGES, headers=AN_HEADERS, json=an_body()).status_code == 200
    client.post("/_control/reset")
    assert client.post(CHAT, headers={"Authorization": f"Bearer {bad}"}, json=oa_body()).status_code == 200


# --- faults: status --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "type_", "code", "message"),
    [
        ({"status": 429}, "requests", "rate_limit_exceeded", "Rate limit reached for gpt-4"),
        (
            {"status": 429, "code": "insufficient_quota"},
            "insufficient_quota",
            "insufficient_quota",
            "You exceeded your current quota",
        ),
        ({"status": 401}, "invalid_request_error", "invalid_api_key", "Incorrect API key provided"),
        ({"status": 400}, "invalid_request_error", None, "Invalid request"),
        ({"status": 404}, "invalid_request_error", "model_not_found", "The model `gpt-4` does not exist"),
        ({"status": 500}, "server_error", None, "The server had an error"),
        ({"status": 502}, "server_error", None, "The server is overloaded or not ready yet."),
        ({"status": 503}, "server_error", None, "The server is overloaded or not ready yet."),
    ],
)
def test_openai_status_faults(
    client: httpx.Client, rule: dict[str, Any], type_: str, code: str | None, message: str
) -> None:
    add_fault(client, provider="openai", mode="status", count=1, **rule)
    r = client.post(CHAT, headers=OA_HEADERS, json=oa_body())
    assert r.status_code == rule["status"]
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["type"], err["code"]) == (type_, code)
    assert err["message"].startswith(message)
    assert OPENAI_KEY not in r.text
    if rule.get("code") is None and rule["status"] == 429:
        assert r.headers["retry-after"] == "1" and r.headers["retry-after-ms"] == "1000"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert "x-ratelimit-reset-requests" in r.headers
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code == 200


@pytest.mark.parametrize(
    ("status", "type_", "message"),
    [
        (429, "rate_limit_error", None),
        (401, "authentication_error", "invalid x-api-key"),
        (400, "invalid_request_error", None),
        (404, "not_found_error", None),
        (500, "api_error", "Internal server error"),
        (529, "overloaded_error", "Overloaded"),
        (503, "api_error", None),
    ],
)
def test_anthropic_status_faults(client: httpx.Client, status: int, type_: str, message: str | None) -> None:
    add_fault(client, provider="anthropic", mode="status", status=status, count=1)
    r = client.post(MESSAGES, headers=AN_HEADERS, json=an_body())
    assert r.status_code == status
    body = r.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == type_
    if message is not None:
        assert body["error"]["message"] == message
    if status == 429:
        assert r.headers["retry-after"] == "1"
    assert client.post(MESSAGES, headers=AN_HEADERS, json=an_body()).status_code == 200


def test_status_fault_retry_after_and_custom_body(client: httpx.Client) -> None:
    add_fault(client, provider="anthropic", mode="status", status=429, retry_after=3, count=1)
    r = client.post(MESSAGES, headers=AN_HEADERS, json=an_body())
    assert r.headers["retry-after"] == "3"
    add_fault(client, provider="openai", mode="status", status=503, retry_after=2, count=1)
    r = client.post(CHAT, headers=OA_HEADERS, json=oa_body())
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    add_fault(
        client,
        provider="openai",
        mode="status",
        status=400,
        count=1,
        error_type="invalid_request_error",
        message="custom words",
        code="custom_code",
    )
    r = client.post(CHAT, headers=OA_HEADERS, json=oa_body())
    assert r.json()["error"] == {
        "message": "custom words",
        "type": "invalid_request_error",
        "param": None,
        "code": "custom_code",
    }


def test_count_expiry_and_stats(client: httpx.Client) -> None:
    add_fault(client, provider="openai", mode="status", status=503, count=2)
    codes = [client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code for _ in range(4)]
    assert codes == [503, 503, 200, 200]
    assert client.get("/_control/faults").json() == {"faults": []}
    s = stats(client)["openai"]
    assert s["requests"] == 4 and s["in_flight"] == 0
    assert s["by_status"] == {"503": 2, "200": 2}
    assert len(s["arrivals"]) == 4
    assert all(abs(t - time.time()) < 60 for t in s["arrivals"])
    assert stats(client)["anthropic"]["requests"] == 0
    # faults are per provider: anthropic unaffected by an openai rule
    add_fault(client, provider="openai", mode="status", status=500)
    assert client.post(MESSAGES, headers=AN_HEADERS, json=an_body()).status_code == 200
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code == 500
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code == 500  # no count: stays
    client.delete("/_control/faults")
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code == 200


def test_fault_delete_by_id_and_model_filter(client: httpx.Client) -> None:
    rule_id = add_fault(client, provider="openai", mode="status", status=500, model="gpt-4o")
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code == 200
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body(model="gpt-4o")).status_code == 500
    assert client.delete(f"/_control/faults/{rule_id}").json() == {"removed": 1}
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body(model="gpt-4o")).status_code == 200


def test_probability(client: httpx.Client) -> None:
    add_fault(client, provider="openai", mode="status", status=500, probability=0.5)
    codes = [client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code for _ in range(200)]
    assert 50 <= codes.count(500) <= 150
    assert codes.count(500) + codes.count(200) == 200


def test_control_validation(client: httpx.Client) -> None:
    for bad in (
        {"provider": "openai", "mode": "explode"},
        {"provider": "azure", "mode": "status"},
        {"provider": "openai", "mode": "status", "status": 200},
        {"provider": "openai", "mode": "status", "count": 0},
        {"provider": "openai", "mode": "status", "probability": 2},
        {"provider": "openai", "mode": "slow"},
    ):
        r = client.post("/_control/faults", json=bad)
        assert r.status_code == 400, bad
        assert "error" in r.json()
    assert client.post("/_control/latency", json={"provider": "openai", "ms": -1}).status_code == 400


# --- faults: hang / drop / slow, latency ---------------------------------------------------------


def test_hang_until_client_gives_up(client: httpx.Client) -> None:
    add_fault(client, provider="openai", mode="hang", count=1)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.post(CHAT, headers=OA_HEADERS, json=oa_body(), timeout=0.5)
    assert time.monotonic() - started >= 0.45
    wait_until(
        lambda: stats(client)["openai"]["by_status"].get("hung") == 1,
        what="the hung request to notice the disconnect",
    )
    assert stats(client)["openai"]["in_flight"] == 0
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code == 200


def test_hang_for_seconds_then_answers(client: httpx.Client) -> None:
    add_fault(client, provider="anthropic", mode="hang", seconds=0.3, count=1)
    started = time.monotonic()
    r = client.post(MESSAGES, headers=AN_HEADERS, json=an_body())
    assert r.status_code == 200
    assert time.monotonic() - started >= 0.29


@pytest.mark.asyncio
async def test_hang_released_by_clearing_faults(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as ac:
        await ac.post("/_control/reset")
        await ac.post("/_control/faults", json={"provider": "openai", "mode": "hang"})
        task = asyncio.create_task(ac.post(CHAT, headers=OA_HEADERS, json=oa_body()))
        deadline = time.monotonic() + 5
        while (await ac.get("/_control/stats?arrivals=0")).json()["openai"]["in_flight"] != 1:
            assert time.monotonic() < deadline, "request never arrived"
            await asyncio.sleep(0.01)
        assert not task.done()
        await ac.delete("/_control/faults")
        r = await asyncio.wait_for(task, 5)
        assert r.status_code == 200


def test_drop_is_a_transport_error(client: httpx.Client) -> None:
    add_fault(client, provider="openai", mode="drop", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(CHAT, headers=OA_HEADERS, json=oa_body())
    # the same client (pool) goes on working
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code == 200
    add_fault(client, provider="anthropic", mode="drop", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(MESSAGES, headers=AN_HEADERS, json=an_body())
    assert stats(client)["openai"]["by_status"] == {"dropped": 1, "200": 1}


def test_slow_fault_and_latency_control(client: httpx.Client) -> None:
    add_fault(client, provider="openai", mode="slow", latency_ms=300, count=1)
    started = time.monotonic()
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code == 200
    assert time.monotonic() - started >= 0.29
    started = time.monotonic()
    client.post(CHAT, headers=OA_HEADERS, json=oa_body())
    assert time.monotonic() - started < 0.25
    # slow combines with a status rule behind it
    add_fault(client, provider="openai", mode="slow", latency_ms=200, count=1)
    add_fault(client, provider="openai", mode="status", status=500, count=1)
    started = time.monotonic()
    assert client.post(CHAT, headers=OA_HEADERS, json=oa_body()).status_code == 500
    assert time.monotonic() - started >= 0.19

    r = client.post("/_control/latency", json={"provider": "anthropic", "ms": 200, "jitter_ms": 50})
    assert r.json()["anthropic"] == {"ms": 200.0, "jitter_ms": 50.0}
    started = time.monotonic()
    client.post(MESSAGES, headers=AN_HEADERS, json=an_body())
    assert 0.19 <= time.monotonic() - started < 2
    started = time.monotonic()
    client.post(CHAT, headers=OA_HEADERS, json=oa_body())
    assert time.monotonic() - started < 0.18  # openai untouched
    client.post("/_control/reset")  # back to the start-up latency (0)
    started = time.monotonic()
    client.post(MESSAGES, headers=AN_HEADERS, json=an_body())
    assert time.monotonic() - started < 0.18


# --- recorder ------------------------------------------------------------------------------------


def test_request_recorder_hides_keys(client: httpx.Client) -> None:
    headers = {**OA_HEADERS, "x-request-id": "req-abc", "openai-organization": "org-42"}
    client.post(CHAT, headers=headers, json=oa_body(max_tokens=7))
    client.post(MESSAGES, headers={**AN_HEADERS, "x-request-id": "req-def"}, json=an_body())
    r = client.get("/_control/requests", params={"provider": "openai", "limit": 50})
    assert OPENAI_KEY not in r.text and ANTHROPIC_KEY not in r.text
    [entry] = r.json()["requests"]
    assert entry["method"] == "POST" and entry["path"] == CHAT
    assert entry["json"] == oa_body(max_tokens=7)
    assert entry["headers"]["authorization"] == f"Bearer {fingerprint(OPENAI_KEY)}"
    assert entry["headers"]["x-request-id"] == "req-abc"
    assert entry["headers"]["openai-organization"] == "org-42"
    [an] = client.get("/_control/requests", params={"provider": "anthropic"}).json()["requests"]
    assert an["headers"]["x-api-key"] == fingerprint(ANTHROPIC_KEY)
    assert an["headers"]["x-api-key"].startswith("sha256:") and len(an["headers"]["x-api-key"]) == 15
    assert an["headers"]["anthropic-version"] == "2023-06-01"
    assert an["json"]["system"] == "You are terse."
    both = client.get("/_control/requests").json()["requests"]
    assert [e["provider"] for e in both] == ["openai", "anthropic"]  # oldest first
    assert len(client.get("/_control/requests", params={"limit": 1}).json()["requests"]) == 1
    client.post("/_control/reset")
    assert client.get("/_control/requests").json() == {"requests": []}


# --- in-process use ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_in_process_app() -> None:
    app = create_app(latency_ms=0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as ac:
        r = await ac.post(CHAT, headers=OA_HEADERS, json=oa_body())
        assert r.status_code == 200 and r.json()["object"] == "chat.completion"
        r = await ac.post(MESSAGES, headers=AN_HEADERS, json=an_body())
        assert r.status_code == 200 and r.json()["type"] == "message"
        await ac.post("/_control/faults", json={"provider": "openai", "mode": "drop"})
        with pytest.raises(ConnectionDropped):
            await ac.post(CHAT, headers=OA_HEADERS, json=oa_body())
    assert app.state.providers["openai"].requests == 2
