"""Build FastAPI's routes at start-up rather than on the first request that needs them.

FastAPI prepares an included router's routes (their dependants and pydantic fields) the first time a
request is matched against that router: tens of milliseconds for the batch routes, during which the
event loop, and every request of that API process, waits. The chat routes are plain Starlette routes
matched first (api/chat_fast_path.py), so the first batch upload paid it, in the middle of traffic. Routing one
request that matches no route at start-up matches it against every router, which builds them all.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Scope

WARM_UP_PATH = "/__route-warm-up__"


async def warm_routes(router: ASGIApp) -> None:
    """Route one GET of a path no route serves through `router` (its 404 goes nowhere)."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": WARM_UP_PATH,
        "raw_path": WARM_UP_PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Message) -> None:
        return None

    await router(scope, receive, send)
