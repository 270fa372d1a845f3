"""FastAPI's routes are built when the API starts, not by the first request that reaches them."""

from __future__ import annotations

from typing import Any

import fastapi.routing
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from shared.settings import Settings


def test_no_caller_waits_for_a_route_to_be_built(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    build = getattr(fastapi.routing, "_populate_api_route_state", None)
    if build is None:
        pytest.skip("this FastAPI builds its routes as they are added")
    built: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append("route")
        return build(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "_populate_api_route_state", counting)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        jwt_secret="a-test-secret-of-at-least-32-bytes!!",
        provider_keys_file=None,
        redis_url=redis_url,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        at_start = len(built)
        assert at_start > 0  # built by the start-up
        # a batch upload, a job poll, the health page: routed (and refused: no token), nothing built
        assert client.post("/api/v1/llm/batches", content=b"{}").status_code == 401
        assert client.get(f"/api/v1/llm/jobs/{'0' * 32}").status_code == 401
        client.get("/health")
        assert len(built) == at_start
