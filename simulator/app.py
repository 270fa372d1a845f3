"""The raw ASGI app: routing, stats, the request recorder, faults and latency around the handlers.

Third-party internals touched (uvicorn; pinned in pyproject.toml): a `drop` fault served without
the transport extension (`simulator.server`) closes `send.__self__.transport`, the connection of
uvicorn's `RequestResponseCycle` (`simulator.asgi.close_connection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

from simulator import anthropic_api, control, embeddings, openai_api
from simulator.asgi import (
    TRANSPORT_EXTENSION,
    BodyTooLarge,
    ClientGone,
    ConnectionDropped,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    close_connection,
    parse_json,
    read_body,
    send_response,
    until_disconnect,
)
from simulator.faults import MID_STREAM_MODES, FaultRule, decide
from simulator.state import ProviderState, SimState
from simulator.stream_reply import StreamReply
from simulator.stream_runner import run_stream

__all__ = ["TRANSPORT_EXTENSION", "ConnectionDropped", "SimulatorApp", "create_app"]
Handler = Callable[[Request, ProviderState, random.Random], Response | StreamReply]

# (method, path) -> (provider, handler, faults apply)
ROUTES: dict[tuple[str, str], tuple[str, Handler, bool]] = {
    ("POST", "/openai/v1/chat/completions"): (
        "openai",
        openai_api.chat_completions,
        True,
    ),
    ("POST", "/openai/v1/embeddings"): ("openai", embeddings.embeddings, True),
    ("GET", "/openai/v1/models"): ("openai", openai_api.list_models, False),
    ("POST", "/anthropic/v1/messages"): ("anthropic", anthropic_api.messages, True),
    ("GET", "/anthropic/v1/models"): ("anthropic", anthropic_api.list_models, False),
}
_AUTH: dict[str, Callable[[Request, ProviderState], Response | None]] = {
    "openai": openai_api.check_auth,
    "anthropic": anthropic_api.check_auth,
}
_NOT_FOUND: dict[str, Callable[[Request], Response]] = {
    "openai": openai_api.not_found,
    "anthropic": anthropic_api.not_found,
}
_FAULT: dict[str, Callable[[FaultRule, Request], Response]] = {
    "openai": openai_api.fault_response,
    "anthropic": anthropic_api.fault_response,
}


class SimulatorApp:
    def __init__(self, latency_ms: float = 20.0, seed: int | None = None) -> None:
        self.state = SimState(latency_ms, seed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/openai/"):
                await self._provider("openai", scope, receive, send)
            elif path.startswith("/anthropic/"):
                await self._provider("anthropic", scope, receive, send)
            else:
                await self._control(scope, receive, send)
        elif kind == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = Request(
            scope["method"],
            scope["path"].rstrip("/"),
            scope["query_string"],
            scope["headers"],
        )
        try:
            req.body = await read_body(receive)
        except ClientGone:
            return
        except BodyTooLarge:
            await send_response(send, Response(413, {"error": "body too large"}))
            return
        parse_json(req)
        if not req.path.startswith("/_control/"):
            await send_response(send, Response(404, {"error": f"no route {req.method} {req.path}"}))
            return
        await send_response(send, control.handle(self.state, req))

    async def _hang(self, receive: Receive, seconds: float | None) -> bool:
        """Hold the request; True when it should then be answered (timeout or release)."""
        gone = asyncio.ensure_future(until_disconnect(receive))
        released = asyncio.ensure_future(self.state.release.wait())
        done, pending = await asyncio.wait((gone, released), timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return gone not in done

    async def _provider(self, provider: str, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        ps = state.providers[provider]
        path: str = scope["path"].rstrip("/")
        ps.requests += 1
        ps.in_flight += 1
        ps.arrivals.append(time.time())
        if path in ps.by_path or len(ps.by_path) < 256:  # bounded even if paths are scanned
            ps.by_path[path] = ps.by_path.get(path, 0) + 1
        outcome = "client_closed"
        try:
            req = Request(scope["method"], path, scope["query_string"], scope["headers"])
            try:
                req.body = await read_body(receive)
            except ClientGone:
                return
            except BodyTooLarge:
                too_large = FaultRule("", provider, "status", status=413)
                await send_response(send, _FAULT[provider](too_large, req))
                outcome = "413"
                return
            parse_json(req)
            state.record(
                ps,
                req.method,
                path,
                req.query,
                req.headers,
                req.body,
                req.json,
                req.json_ok,
            )
            route = ROUTES.get((req.method, path))
            resp: Response | StreamReply
            rule: FaultRule | None = None
            extra_ms = 0.0
            if route is None:
                resp = _NOT_FOUND[provider](req)
            else:
                if route[2] and ps.faults:
                    body = req.json if req.json_ok and isinstance(req.json, dict) else {}
                    decision = decide(ps.faults, body.get("model"), body.get("stream") is True, state.rng)
                    rule, extra_ms = decision.rule, decision.extra_latency_ms
                if rule is not None and rule.mode == "drop":
                    outcome = "dropped"
                    if not close_connection(scope, send):
                        raise ConnectionDropped("simulated connection drop")
                    # let the server see the disconnect, or it would log "returned without response"
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await until_disconnect(receive)
                    return
                if rule is not None and rule.mode == "hang" and not await self._hang(receive, rule.seconds):
                    outcome = "hung"
                    return
                if rule is not None and rule.mode == "status":
                    resp = _FAULT[provider](rule, req)
                else:
                    resp = _AUTH[provider](req, ps) or route[1](req, ps, state.rng)
            delay_ms = ps.latency_ms + extra_ms
            if ps.jitter_ms:
                delay_ms += state.rng.uniform(0.0, ps.jitter_ms)
            if isinstance(resp, StreamReply):
                mid_stream = rule if rule is not None and rule.mode in MID_STREAM_MODES else None
                outcome = await run_stream(resp, scope, receive, send, state, ps, delay_ms / 1000.0, mid_stream)
                return
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000.0)
            await send_response(send, resp)
            outcome = str(resp.status)
        finally:
            ps.in_flight -= 1
            ps.count(outcome)


def create_app(latency_ms: float = 20.0, seed: int | None = None) -> SimulatorApp:
    """A fresh simulator (its own state) as an ASGI app; `app.state` is the live state."""
    return SimulatorApp(latency_ms, seed)
