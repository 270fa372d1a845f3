"""api/shedding.py: a work request arriving while the process holds its bound of them is refused at
once (503, Retry-After, the API's error shape) without reaching the app; reads are never refused;
the next work request after one ends is admitted again."""

from __future__ import annotations

import asyncio

import httpx
from starlette.types import Receive, Scope, Send

from api.shedding import ShedMiddleware

WORK = "/api/v1/llm/chat/completions"


class Held:
    """An app whose answers wait until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def test_work_over_the_bound_is_refused_at_once_and_admitted_again_after() -> None:
    app = Held()
    shed = ShedMiddleware(app, max_in_flight=2, max_lag_ms=None, paths=frozenset({WORK}), openai_prefix="/v1/")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=shed), base_url="http://gw") as client:
        held = [asyncio.create_task(client.post(WORK, json={})) for _ in range(2)]
        while app.entered < 2:
            await asyncio.sleep(0.001)

        refused = await client.post(WORK, json={})
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["type"] == "service_unavailable"
        assert app.entered == 2  # the refused request never reached the app
        read = asyncio.create_task(client.get("/api/v1/llm/jobs/x"))  # reads are not counted nor refused
        while app.entered < 3:
            await asyncio.sleep(0.001)

        app.release.set()
        assert [r.status_code for r in await asyncio.gather(*held, read)] == [200, 200, 200]
        assert (await client.post(WORK, json={})).status_code == 200
