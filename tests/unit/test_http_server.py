"""A response's head leaves with its body in one write; a head whose body is not ready does not wait."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from plumbing.http_server import _HeadWithBody

ServeAsgi = Callable[[ASGIApp], AbstractAsyncContextManager[str]]  # the serve_asgi fixture (conftest)


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.sent.append(b"".join(parts))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def held_by(transport: FakeTransport) -> _HeadWithBody:
    return _HeadWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_head_and_body_of_the_same_turn_leave_in_one_write() -> None:
    transport = FakeTransport()
    cycle = held_by(transport)
    cycle.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.sent == []
    cycle.write(b"body")
    cycle.write(b"more")
    assert transport.sent == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]
    await asyncio.sleep(0)
    assert transport.sent == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]  # nothing written twice


async def test_a_head_without_a_body_in_that_turn_leaves_at_its_end() -> None:
    transport = FakeTransport()
    cycle = held_by(transport)
    cycle.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await asyncio.sleep(0)
    assert transport.sent == [b"HTTP/1.1 200 OK\r\n\r\n"]
    cycle.write(b"chunk")
    assert transport.sent == [b"HTTP/1.1 200 OK\r\n\r\n", b"chunk"]


async def test_close_writes_a_held_head_first_and_a_closing_transport_gets_nothing() -> None:
    transport = FakeTransport()
    cycle = held_by(transport)
    cycle.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    cycle.close()
    assert transport.sent == [b"HTTP/1.1 204 No Content\r\n\r\n"] and transport.closed
    gone = FakeTransport()
    late = held_by(gone)
    late.write(b"HTTP/1.1 200 OK\r\n\r\n")
    gone.closed = True  # the peer went away within the turn
    await asyncio.sleep(0)
    assert gone.sent == []
    assert late.get_extra_info("peername") == "info:peername"  # anything else is the transport's


@pytest.mark.parametrize("keep_alive", [True, False])
async def test_answers_over_real_http_are_whole(serve_asgi: ServeAsgi, keep_alive: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b'{"ok":true}' * 100
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    headers = {} if keep_alive else {"Connection": "close"}
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(3):
            response = await client.post("/", content=b"x" * 10, headers=headers)
            assert response.status_code == 200
            assert response.content == b'{"ok":true}' * 100


async def test_a_streamed_answer_shows_its_head_before_its_first_part_is_ready(serve_asgi: ServeAsgi) -> None:
    first_part = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await first_part.wait()
        await send({"type": "http.response.body", "body": b"part", "more_body": False})

    async with (
        serve_asgi(app) as url,
        httpx.AsyncClient(base_url=url) as client,
        asyncio.timeout(10),
        client.stream("GET", "/") as response,
    ):
        assert response.status_code == 200  # the head arrived while the body waits
        first_part.set()
        assert await response.aread() == b"part"
