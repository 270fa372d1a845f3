"""SPEC.md's programmatic use: create_gateway, initialize, complete — through the same queue."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.stack import Stack
from llm_gateway import create_gateway
from shared.errors import GatewayError
from shared.settings import Settings
from tests.provider_examples import DATA_URL


def _settings(stack: Stack) -> Settings:
    return Settings(redis_url=stack.redis_url, retry_base_delay_s=0.01, retry_max_delay_s=0.2)


async def test_complete_with_in_process_workers(sim: Stack) -> None:
    gateway = create_gateway(
        providers={
            "openai": {"enabled": True, "apiKey": "sk-programmatic-1", "baseUrl": f"{sim.sim_url}/openai/v1"},
            "anthropic": {"enabled": True, "apiKey": "sk-ant-programmatic", "baseUrl": f"{sim.sim_url}/anthropic"},
        },
        gateway={"primaryProvider": "anthropic", "enableFailover": True, "enableCaching": False},
        settings=_settings(sim),
    )
    assert gateway.run_workers
    async with gateway:
        response = await gateway.complete([{"role": "user", "content": "Hello!"}], max_tokens=150, temperature=0.7)
    assert response.provider == "anthropic"
    assert response.content.startswith("Simulated anthropic reply to: Hello!")
    assert response.cost is not None and response.cost.total_cost > 0
    assert response.cost.total_cost == pytest.approx(response.cost.prompt_cost + response.cost.completion_cost)
    assert response.usage.completion_tokens > 0


async def test_complete_through_running_worker_pools(sim: Stack) -> None:
    gateway = create_gateway(gateway={"primaryProvider": "openai"}, settings=_settings(sim))
    assert not gateway.run_workers
    async with gateway:
        response = await gateway.complete([{"role": "user", "content": "Ping"}], max_tokens=10)
        assert response.provider == "openai"
        assert response.finish_reason == "length"
        sim.sim("POST", "/_control/faults", json={"provider": "openai", "mode": "status", "status": 401})
        sim.sim("POST", "/_control/faults", json={"provider": "anthropic", "mode": "status", "status": 401})
        with pytest.raises(GatewayError) as failure:
            await gateway.complete([{"role": "user", "content": "Ping"}], provider="openai")
    assert failure.value.type.value == "authentication_error"
    assert failure.value.retryable is False


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        create_gateway(providers={"openai": {"apiKye": "x"}})
    with pytest.raises(ValueError, match="at least one provider"):
        create_gateway(providers={"openai": {"enabled": False}})


async def test_tools_images_and_embeddings_through_the_programmatic_client(sim: Stack) -> None:
    weather: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    async with create_gateway(settings=_settings(sim)) as gateway:
        called = await gateway.complete(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather where this was taken?"},
                        {"type": "image_url", "image_url": {"url": DATA_URL}},
                    ],
                }
            ],
            model="claude-3-haiku-20240307",
            tools=[weather],
            tool_choice="required",
        )
        assert called.provider == "anthropic" and called.finish_reason == "tool_calls"
        [call] = called.tool_calls
        assert call["function"]["name"] == "get_weather"
        embedded = await gateway.embed(["a", "b"], model="text-embedding-3-small", dimensions=8)
    assert embedded.provider == "openai" and [len(v) for v in embedded.embeddings] == [8, 8]
