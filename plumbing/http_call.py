"""One provider call answered whole, on any httpx transport.

A provider's answer is one JSON document, read whole before anyone looks at it. A transport that
can answer a call directly (`interfaces.AnswersWhole`: the HTTP/1.1 transport) is called so, without
httpx's Request and Response objects; any other `httpx.AsyncBaseTransport` (httpx's own, the aiohttp
one) through its `handle_async_request`, its answer read whole. The choice is made once, when a
client is built: a call pays for no check.

Third-party internals touched: none (httpx's public transport API).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from plumbing.interfaces import AnswersWhole, Headers, WholeAnswerCall


def whole_answer_call(transport: httpx.AsyncBaseTransport) -> WholeAnswerCall:
    """How to make one call on `transport` and get its answer whole. The headers are the call's own
    (httpx adds Host and Content-Length as its Request would)."""
    if isinstance(transport, AnswersWhole):
        return transport.call_whole

    async def call(
        method: str, url: httpx.URL, headers: Headers, content: bytes | None, timeouts: Mapping[str, float | None]
    ) -> tuple[int, Headers, bytes]:
        request = httpx.Request(method, url, headers=headers, content=content, extensions={"timeout": timeouts})
        resp = await transport.handle_async_request(request)
        try:
            await resp.aread()  # httpx's own transport streams the answer
        finally:
            await resp.aclose()
        return resp.status_code, resp.headers.raw, resp.content

    return call
