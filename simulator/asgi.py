"""Minimal raw-ASGI plumbing: types, the request object, body reading, JSON responses, disconnects.

Third-party internals touched (uvicorn; pinned in pyproject.toml): `close_connection` served without
the transport extension (`simulator.server`) closes `send.__self__.transport`, the connection of
uvicorn's `RequestResponseCycle`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

TRANSPORT_EXTENSION = "simulator.transport"
MAX_BODY = 32 * 1024 * 1024
_JSON_CT = (b"content-type", b"application/json")


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


class BodyTooLarge(Exception):
    pass


class ConnectionDropped(Exception):
    """Raised for a `drop` fault when the server's transport is out of reach (in-process use)."""


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: bytes
    headers: Headers
    body: bytes = b""
    json: Any = None
    json_ok: bool = False

    def header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None


@dataclass(slots=True)
class Response:
    status: int
    body: Any  # JSON-serialisable
    headers: Headers = field(default_factory=list)


async def read_body(receive: Receive) -> bytes:
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = first.get("body", b"")
    if not first.get("more_body", False):
        return body
    chunks = [body]
    size = len(body)
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = msg.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLarge
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)


def parse_json(req: Request) -> None:
    if not req.body:
        return
    try:
        req.json = orjson.loads(req.body)
        req.json_ok = True
    except orjson.JSONDecodeError:
        req.json_ok = False


async def send_response(send: Send, resp: Response) -> None:
    payload = orjson.dumps(resp.body)
    headers: Headers = [_JSON_CT, (b"content-length", str(len(payload)).encode())]
    headers.extend(resp.headers)
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def query_params(query: bytes) -> dict[str, str]:
    return dict(parse_qsl(query.decode("latin-1")))


def close_connection(scope: Scope, send: Send) -> bool:
    """Close the client's TCP connection where it stands; False if not reachable (in-process use)."""
    ext = scope.get("extensions") or {}
    holder = ext.get(TRANSPORT_EXTENSION)
    transport = holder.get("transport") if isinstance(holder, dict) else None
    if transport is None:  # uvicorn's RequestResponseCycle.send is a bound method
        transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "close"):
        return False
    transport.close()
    return True


async def until_disconnect(receive: Receive) -> None:
    """Return when the client is gone (or, under uvicorn, once the response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass
