"""The `/_control/*` API: faults, latency, keys, config, reset, stats and the request recorder."""

from __future__ import annotations

from typing import Any

from simulator.asgi import Request, Response, query_params
from simulator.faults import PROVIDERS, parse_rule
from simulator.state import ProviderState, SimState


class ControlError(ValueError):
    pass


def _bad(message: str, status: int = 400) -> Response:
    return Response(status, {"error": message})


def _targets(state: SimState, body: dict[str, Any]) -> list[ProviderState]:
    """`provider` picks one provider; omitted (or "all") means both."""
    provider = body.get("provider")
    if provider is None or provider == "all":
        return list(state.providers.values())
    if provider not in PROVIDERS:
        raise ControlError("provider must be 'openai', 'anthropic' or omitted for both")
    return [state.providers[provider]]


def _number(body: dict[str, Any], name: str, default: float | None = None) -> float | None:
    v = body.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ControlError(f"{name} must be a number >= 0")
    return float(v)


def _keys(body: dict[str, Any], name: str) -> list[str] | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(k, str) for k in v):
        raise ControlError(f"{name} must be a list of strings")
    return v


def _post_latency(state: SimState, body: dict[str, Any]) -> Response:
    ms = _number(body, "ms")
    jitter = _number(body, "jitter_ms")
    for ps in _targets(state, body):
        if ms is not None:
            ps.latency_ms = ms
        if jitter is not None:
            ps.jitter_ms = jitter
    return Response(
        200,
        {p.name: {"ms": p.latency_ms, "jitter_ms": p.jitter_ms} for p in state.providers.values()},
    )


def _post_keys(state: SimState, body: dict[str, Any]) -> Response:
    revoke = _keys(body, "revoke")
    unrevoke = _keys(body, "unrevoke")
    allow = _keys(body, "allow")
    for ps in _targets(state, body):
        if "allow" in body:
            ps.allow = None if allow is None else set(allow)
        ps.revoked.update(revoke or ())
        ps.revoked.difference_update(unrevoke or ())
    return Response(
        200,
        {
            p.name: {
                "allow_list": p.allow is not None,
                "allowed": len(p.allow or ()),
                "revoked": len(p.revoked),
            }
            for p in state.providers.values()
        },
    )


def _post_config(state: SimState, body: dict[str, Any]) -> Response:
    reply = body.get("reply_tokens")
    if reply is not None and (isinstance(reply, bool) or not isinstance(reply, int) or not 0 <= reply <= 100_000):
        raise ControlError("reply_tokens must be an integer in 0..100000")
    limits = body.get("context_limits")
    if limits is not None and (
        not isinstance(limits, dict)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in limits.values())
    ):
        raise ControlError("context_limits must map model names to positive integers")
    default_limit = body.get("default_context_limit")
    if default_limit is not None and (
        isinstance(default_limit, bool) or not isinstance(default_limit, int) or default_limit <= 0
    ):
        raise ControlError("default_context_limit must be a positive integer")
    strict = body.get("strict_models")
    if strict is not None and not isinstance(strict, bool):
        raise ControlError("strict_models must be a boolean")
    chunks = body.get("stream_chunks")  # null: back to one chunk per token
    if chunks is not None and (isinstance(chunks, bool) or not isinstance(chunks, int) or not 1 <= chunks <= 100_000):
        raise ControlError("stream_chunks must be an integer in 1..100000, or null for one chunk per token")
    interval = _number(body, "stream_interval_ms")
    for ps in _targets(state, body):
        if reply is not None:
            ps.reply_tokens = reply
        if limits is not None:
            ps.context_limits.update(limits)
        if default_limit is not None:
            ps.default_context_limit = default_limit
        if strict is not None:
            ps.strict_models = strict
        if "stream_chunks" in body:
            ps.stream_chunks = chunks
        if interval is not None:
            ps.stream_interval_ms = interval
    return Response(
        200,
        {
            p.name: {
                "reply_tokens": p.reply_tokens,
                "context_limits": p.context_limits,
                "default_context_limit": p.default_context_limit,
                "strict_models": p.strict_models,
                "stream_chunks": p.stream_chunks,
                "stream_interval_ms": p.stream_interval_ms,
            }
            for p in state.providers.values()
        },
    )


def _get_requests(state: SimState, params: dict[str, str]) -> Response:
    provider = params.get("provider")
    if provider is not None and provider not in PROVIDERS:
        raise ControlError("provider must be 'openai' or 'anthropic'")
    try:
        limit = int(params.get("limit", "50"))
    except ValueError as exc:
        raise ControlError("limit must be an integer") from exc
    return Response(200, {"requests": state.recorded(provider, limit)})


def _delete_faults(state: SimState, params: dict[str, str], rule_id: str | None) -> Response:
    removed = 0
    for ps in _targets(state, dict(params)):
        before = len(ps.faults)
        ps.faults[:] = [r for r in ps.faults if rule_id is not None and r.id != rule_id]
        removed += before - len(ps.faults)
    if rule_id is None or removed:
        state.release_hung()
    return Response(200, {"removed": removed})


def handle(state: SimState, req: Request) -> Response:
    """Route one control request. Bodies are JSON objects; answers are JSON."""
    body: dict[str, Any] = {}
    if req.method == "POST" and req.body:
        if not req.json_ok or not isinstance(req.json, dict):
            return _bad("body must be a JSON object")
        body = req.json
    path, method = req.path, req.method
    try:
        if path == "/_control/faults":
            if method == "POST":
                rule = parse_rule(body, state.new_rule_id())
                state.providers[rule.provider].faults.append(rule)
                return Response(200, {"id": rule.id, "rule": rule.to_json()})
            if method == "GET":
                return Response(
                    200,
                    {"faults": [r.to_json() for p in state.providers.values() for r in p.faults]},
                )
            if method == "DELETE":
                return _delete_faults(state, query_params(req.query), None)
        elif path.startswith("/_control/faults/") and method == "DELETE":
            return _delete_faults(state, {}, path.rsplit("/", 1)[1])
        elif path == "/_control/latency" and method == "POST":
            return _post_latency(state, body)
        elif path == "/_control/keys" and method == "POST":
            return _post_keys(state, body)
        elif path == "/_control/config" and method == "POST":
            return _post_config(state, body)
        elif path == "/_control/reset" and method == "POST":
            state.reset()
            return Response(200, {"reset": True})
        elif path == "/_control/stats" and method == "GET":
            params = query_params(req.query)
            arrivals = params.get("arrivals", "1").lower() not in ("0", "false", "no")
            return Response(200, {p.name: p.stats(arrivals) for p in state.providers.values()})
        elif path == "/_control/requests" and method == "GET":
            return _get_requests(state, query_params(req.query))
        elif path == "/_control/health" and method == "GET":
            return Response(200, {"ok": True})
    except ValueError as exc:  # ControlError and parse_rule's ValueError
        return _bad(str(exc))
    return _bad(f"no control route {method} {path}", 404)
