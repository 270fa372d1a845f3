"""`POST /v1/embeddings` with the official `openai` package, and embeddings as batch items: through the
same queue, limits, cost and logs as a chat, served by OpenAI only."""

from __future__ import annotations

import math

import httpx
import openai
import orjson
import pytest
from openai import OpenAI

from tests.integration.conftest import Upstream
from tests.integration.test_batches import results, submit, wait_end

MODEL = "text-embedding-3-small"


def test_embeddings_through_the_sdk(sdk: OpenAI) -> None:
    raw = sdk.embeddings.with_raw_response.create(model=MODEL, input=["The food was delicious.", "Hello"])
    reply = raw.parse()  # the SDK asks for base64 and decodes it
    assert [d.index for d in reply.data] == [0, 1]
    assert all(len(d.embedding) == 1536 for d in reply.data)
    assert math.isclose(sum(x * x for x in reply.data[0].embedding), 1.0, rel_tol=1e-4)
    assert reply.usage.prompt_tokens > 0 and reply.model == MODEL
    assert raw.headers["x-gateway-provider"] == "openai" and float(raw.headers["x-gateway-cost-usd"]) > 0
    again = sdk.embeddings.create(model=MODEL, input="Hello", dimensions=256, encoding_format="float")
    assert len(again.data[0].embedding) == 256


def test_embeddings_are_not_failed_over_and_the_attempts_say_why(
    sdk: OpenAI, upstream: Upstream, admin_api: httpx.Client
) -> None:
    upstream.fault("openai", mode="status", status=503, count=1000)
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.embeddings.create(model=MODEL, input="Hello")
    rid = failed.value.response.headers["x-gateway-request-id"]
    attempts = admin_api.get(f"/api/v1/llm/jobs/{rid}").json()["data"]["error"]["attempts"]
    assert attempts[-1]["provider"] == "anthropic" and attempts[-1]["error"]["param"] == "embeddings"
    assert upstream.calls("anthropic") == 0


def test_embeddings_as_batch_items(api: httpx.Client) -> None:
    lines = [
        {
            "custom_id": f"e-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": f"text {i}"},
        }
        for i in range(3)
    ]
    batch = submit(api, b"\n".join(orjson.dumps(line) for line in lines))
    assert wait_end(api, batch["id"])["status"] == "completed"
    out = {line["custom_id"]: line["response"]["body"] for line in results(api, batch["id"])}
    assert set(out) == {"e-0", "e-1", "e-2"}
    assert all(body["object"] == "list" and len(body["data"][0]["embedding"]) == 1536 for body in out.values())
