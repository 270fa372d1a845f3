"""Authentication over real HTTP against the running gateway: every API route wants a token, attacks get
401/403 in the gateway's error shape, admin routes refuse user tokens, and the admin provider test
goes through the queue to each provider with failover off."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import httpx
import jwt
import pytest

from devstack.procs import ProcGroup, free_port
from devstack.stack import Stack

CHAT = {"messages": [{"role": "user", "content": "Hello, how are you?"}]}
PROTECTED_PREFIXES = ("/api/v1/llm", "/v1/")
ADMIN_ROUTES = [("POST", "/api/v1/llm/test"), ("GET", "/api/v1/llm/logs"), ("POST", "/api/v1/llm/cache/clear")]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _fill(path: str) -> str:
    """A path template with plausible parameter values (a 32-hex id fits every id pattern in use)."""
    return re.sub(r"\{[^}]+\}", "0" * 32, path)


def protected_routes(stack: Stack) -> list[tuple[str, str]]:
    spec = httpx.get(f"{stack.api_url}/openapi.json", timeout=10).json()
    return sorted(
        (method.upper(), _fill(path))
        for path, ops in spec["paths"].items()
        if path.startswith(PROTECTED_PREFIXES)
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    )


def test_every_api_route_wants_a_token(stack: Stack) -> None:
    routes = protected_routes(stack)
    assert ("POST", "/api/v1/llm/chat/completions") in routes and ("POST", "/api/v1/llm/test") in routes
    with httpx.Client(base_url=stack.api_url, timeout=10) as anon:
        for method, path in routes:
            resp = anon.request(method, path, json={})
            assert resp.status_code == 401, (method, path, resp.status_code, resp.text)
            assert resp.headers["www-authenticate"] == 'Bearer realm="llm-gateway"', (method, path)
            if path.startswith("/api/v1/llm"):
                body = resp.json()
                assert body["success"] is False and body["error"]["type"] == "authentication_error"


def test_probes_are_open(stack: Stack) -> None:
    for path in ("/livez", "/readyz"):
        assert httpx.get(f"{stack.api_url}{path}", timeout=10).status_code == 200


def _attacks(stack: Stack) -> dict[str, tuple[str, int, str]]:
    now = int(time.time())
    claims = {"sub": "mallory", "role": "admin", "iat": now, "exp": now + 600}
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    valid_user = stack.token("user", "mallory")
    head, _, sig = valid_user.split(".")
    return {
        "alg none": (f"Bearer {header}.{body}.", 401, "authentication_error"),
        "expired": (f"Bearer {stack.token('admin', ttl_s=-3600)}", 401, "authentication_error"),
        "not yet valid": (f"Bearer {stack.token('admin', nbf=now + 3600)}", 401, "authentication_error"),
        "wrong signature": (
            f"Bearer {jwt.encode(claims, 'not-the-gateway-secret-0123456789abcdef', algorithm='HS256')}",
            401,
            "authentication_error",
        ),
        "tampered claims": (f"Bearer {head}.{body}.{sig}", 401, "authentication_error"),
        "malformed header": ("Bearer two tokens", 401, "authentication_error"),
        "unknown role": (f"Bearer {stack.token('root')}", 403, "permission_error"),
        # without a subject there is no tenant to keep its jobs apart from everyone else's
        "no subject": (
            f"Bearer {jwt.encode({k: v for k, v in claims.items() if k != 'sub'}, stack.jwt_secret)}",
            401,
            "authentication_error",
        ),
    }


@pytest.mark.parametrize(
    "name",
    [
        "alg none",
        "expired",
        "not yet valid",
        "wrong signature",
        "tampered claims",
        "malformed header",
        "unknown role",
        "no subject",
    ],
)
def test_attacks_over_http(stack: Stack, name: str) -> None:
    authorization, status, etype = _attacks(stack)[name]
    with httpx.Client(base_url=stack.api_url, timeout=10, headers={"Authorization": authorization}) as client:
        resp = client.post("/api/v1/llm/chat/completions", json=CHAT)
        assert resp.status_code == status, resp.text
        assert resp.json()["error"]["type"] == etype
        assert "www-authenticate" in resp.headers


def test_a_short_jwt_secret_stops_the_api_at_start_up(stack: Stack) -> None:
    """RFC 7518 asks for 256 bits: with one character, every API process refuses to start, saying why."""
    group = ProcGroup()
    try:
        argv = ["api.serve", "--host", "127.0.0.1", "--port", str(free_port()), "--processes", "2"]
        api = group.python("api-short-secret", argv, {**stack.env, "JWT_SECRET": "x"})
        code = api.popen.wait(60)
    finally:
        group.stop_all()
    assert code == 78, api.log()  # EX_CONFIG: a configuration error, which no restart can mend
    assert "JWT_SECRET is too short (1 bytes): an HS256 secret needs at least 32 bytes" in api.log()


def test_admin_routes_refuse_user_tokens(stack: Stack, api: httpx.Client) -> None:
    present = set(protected_routes(stack))
    checked = [route for route in ADMIN_ROUTES if route in present]
    assert ("POST", "/api/v1/llm/test") in checked
    for method, path in checked:
        resp = api.request(method, path)
        assert resp.status_code == 403, (method, path, resp.text)
        assert resp.json()["error"]["type"] == "permission_error"
        assert 'error="insufficient_scope"' in resp.headers["www-authenticate"]


def test_provider_test_reports_each_provider(admin_api: httpx.Client, upstream: Any) -> None:
    resp = admin_api.post("/api/v1/llm/test")
    assert resp.status_code == 200, resp.text
    data = resp.json()["data"]
    assert data["ok"] is True
    assert set(data["providers"]) == {"openai", "anthropic"}
    for provider, report in data["providers"].items():
        assert report["ok"] is True and report["error"] is None
        assert report["latencyMs"] > 0
        assert report["model"]
        assert upstream.requests(provider, report["requestId"]), f"{provider} was not called"


def test_provider_test_does_not_fail_over(tuned_stack: Stack, tuned: Any) -> None:
    """On a stack with failover on, a failing provider is reported as failing, not hidden by the other."""
    tuned.fault("openai", status=503)
    with tuned_stack.client(role="admin") as admin:
        resp = admin.post("/api/v1/llm/test", json={"providers": ["openai"], "timeout": 20})
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    report = data["providers"]["openai"]
    assert set(data["providers"]) == {"openai"}
    assert data["ok"] is False and report["ok"] is False
    assert report["error"]["type"] == "service_unavailable"
    assert tuned.calls("openai") >= 1
    assert tuned.calls("anthropic") == 0


def test_provider_test_validates_its_body(admin_api: httpx.Client) -> None:
    resp = admin_api.post("/api/v1/llm/test", json={"providers": ["mistral"]})
    assert resp.status_code == 422
    assert resp.json()["error"]["type"] == "invalid_request_error"
