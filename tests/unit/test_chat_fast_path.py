"""The chat fast path answers exactly as the FastAPI routes it bypasses: the same app with and without it,
the same requests (bodies, content types, credentials), byte for byte, headers included.

Redis is unreachable here, so the requests that pass every check end in the Redis-down 503.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from api.app import create_app
from api.chat_fast_path import OPENAI_CHAT_PATH, SPEC_CHAT_PATH
from api.chat_flow import chat_context
from shared.settings import Settings

SECRET = "unit-test-secret-0123456789-abcdefghijklmnop"
PATHS = ["/api/v1/llm/chat/completions", "/v1/chat/completions"]
GOOD = b'{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4"}'
BODIES = [
    GOOD,
    b"",
    b"{",
    b"[1]",
    b"{}",
    b'{"messages":"x","model":5}',
    b"\xff\xfe{}",
    b'{"messages":[{"role":"user","content":"hi"}],"temperature":NaN}',
    b'{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"stream":true}',
    b"x" * 3000,  # over the body limit
]
CONTENT_TYPES = [None, "application/json", "text/plain", "application/vnd.api+json", "application/json; charset=utf-8"]


def token(**claims: object) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "alice", "iat": now, "exp": now + 600, **claims}, SECRET, algorithm="HS256")


CREDENTIALS = [None, f"Bearer {token(role='user')}", "Bearer not-a-jwt", f"Bearer {token()}", "Basic abc"]


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[TestClient, TestClient]]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        jwt_secret=SECRET,
        provider_keys_file=None,
        auth_enabled=True,
        redis_url="redis://127.0.0.1:1/0",
        max_body_bytes=2000,
    )
    fast = create_app(settings)
    routed = create_app(settings)
    fast_paths = {SPEC_CHAT_PATH, OPENAI_CHAT_PATH}
    ours = [r for r in routed.router.routes if type(r) is Route and r.path in fast_paths]
    assert len(ours) == 2
    routed.router.routes = [r for r in routed.router.routes if r not in ours]  # FastAPI's routes answer
    with TestClient(fast, raise_server_exceptions=False) as f, TestClient(routed, raise_server_exceptions=False) as r:
        yield f, r


def test_the_fast_path_answers_as_the_routes_do(clients: tuple[TestClient, TestClient]) -> None:
    fast, routed = clients
    statuses = set()
    for path, body, content_type, credentials in itertools.product(PATHS, BODIES, CONTENT_TYPES, CREDENTIALS):
        headers = {"X-Request-ID": "the-same-id"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if credentials is not None:
            headers["Authorization"] = credentials
        a = fast.post(path, content=body, headers=headers)
        b = routed.post(path, content=body, headers=headers)
        case = (path, body[:40], content_type, credentials)
        assert (a.status_code, a.content) == (b.status_code, b.content), case
        assert _headers(a) == _headers(b), case
        statuses.add(a.status_code)
    assert statuses == {400, 401, 403, 413, 422, 503}  # every kind of answer was compared


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers.multi_items() if k != "date"]


def test_other_methods_and_paths_go_to_the_routes(clients: tuple[TestClient, TestClient]) -> None:
    fast, routed = clients
    for method, path in [("GET", PATHS[0]), ("PUT", PATHS[1]), ("POST", PATHS[1] + "/")]:
        a, b = fast.request(method, path), routed.request(method, path)
        assert (a.status_code, a.content) == (b.status_code, b.content)


def test_the_chat_paths_never_reach_fastapi_s_routes(clients: tuple[TestClient, TestClient]) -> None:
    """FastAPI's chat routes solve the `chat_context` dependency; the plain routes ahead of them do not."""
    fast, routed = clients

    def not_here() -> None:
        raise AssertionError("FastAPI's route served a chat request")

    headers = {"Content-Type": "application/json", "Authorization": CREDENTIALS[1]}
    for app in (fast.app, routed.app):
        app.dependency_overrides[chat_context] = not_here  # type: ignore[attr-defined]
    try:
        for path in PATHS:
            assert fast.post(path, content=GOOD, headers=headers).status_code == 503  # Redis is unreachable
            assert routed.post(path, content=GOOD, headers=headers).status_code == 500  # the override ran
    finally:
        for app in (fast.app, routed.app):
            app.dependency_overrides.clear()  # type: ignore[attr-defined]
