"""A request head is bounded in bytes (431 as soon as the bound is crossed) and in time (408), over real
sockets against uvicorn serving with the protocol the API uses; a body is not counted against the bound."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.http_protocol import ApiHttpProtocol
from plumbing.http_head_limits import HeadLimitedHttpToolsProtocol

BOUND = 4096
TIMEOUT_S = 0.5


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the size of the request's headers and body."""
    request = Request(scope, receive)
    body = await request.body()
    headers = sum(len(k) + len(v) for k, v in scope["headers"])
    await Response(f"{headers} {len(body)}")(scope, receive, send)


@contextlib.asynccontextmanager
async def serving(protocol: type[HeadLimitedHttpToolsProtocol]) -> AsyncIterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    config = uvicorn.Config(echo, host="127.0.0.1", port=port, http=protocol, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with serving(ApiHttpProtocol.with_limits(BOUND, TIMEOUT_S)) as p:
        yield p


def head(total: int, path: str = "/", extra: str = "") -> bytes:
    """A GET whose head (request line to blank line) is exactly `total` bytes, padded with one header."""
    start = f"GET {path} HTTP/1.1\r\nhost: t\r\n{extra}x-pad: "
    pad = total - len(start) - len("\r\n\r\n")
    assert pad >= 0
    return (start + "a" * pad + "\r\n\r\n").encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_a_head_at_the_bound_is_served_and_one_byte_more_gets_431(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(head(BOUND))
    status, _, _ = await read_answer(reader)
    assert status == 200
    writer.write(head(BOUND))  # the next request of the connection has the whole bound again
    assert (await read_answer(reader))[0] == 200
    writer.close()

    reader, writer = await connect(port)
    writer.write(head(BOUND + 1))
    status, headers, body = await read_answer(reader)
    assert status == 431 and headers["connection"] == "close"
    assert headers["content-type"] == "application/json" and b'"invalid_request_error"' in body
    assert await reader.read() == b""  # then the server closes
    writer.close()


async def test_an_endless_head_gets_431_while_it_is_still_being_sent(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(b"GET / HTTP/1.1\r\nhost: t\r\nx-big: ")
    sent = 0
    answer = asyncio.ensure_future(read_answer(reader))
    while not answer.done():
        writer.write(b"a" * 1024)  # no end of headers, ever
        sent += 1024
        await writer.drain()
        await asyncio.sleep(0)
        assert sent < 1024 * 1024, "no answer after 1 MiB"
    assert answer.result()[0] == 431
    assert sent <= 4 * BOUND  # the answer came as the bound was crossed, give or take what was in flight
    writer.close()


async def test_a_body_far_above_the_bound_is_not_counted_even_in_the_heads_read(port: int) -> None:
    reader, writer = await connect(port)
    body = b"x" * (BOUND * 16)
    request = b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % len(body)
    writer.write(request + body + head(100))  # one write: head, body and the next request together
    status, _, answer = await read_answer(reader)
    assert status == 200 and answer.endswith(b" %d" % len(body))
    assert (await read_answer(reader))[0] == 200
    writer.close()


async def test_a_slow_head_gets_408_at_the_deadline(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n")
    async with asyncio.timeout(TIMEOUT_S * 4):
        answer = asyncio.ensure_future(read_answer(reader))
        while not answer.done():  # a byte now and then: each would restart a per-read timer
            writer.write(b"x-slow: 1\r\n")
            await asyncio.wait([answer], timeout=TIMEOUT_S / 5)
    status, headers, body = answer.result()
    assert status == 408 and headers["connection"] == "close" and b'"timeout_error"' in body
    writer.close()


async def test_the_deadline_of_a_kept_alive_connections_next_request_starts_at_its_first_byte(port: int) -> None:
    reader, writer = await connect(port)
    writer.write(head(100))
    assert (await read_answer(reader))[0] == 200
    writer.write(b"GET / HTTP/1.1\r\n")  # and never the rest
    async with asyncio.timeout(TIMEOUT_S * 4):
        assert (await read_answer(reader))[0] == 408
    writer.close()


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(port: int) -> None:
    reader, writer = await connect(port)
    async with asyncio.timeout(TIMEOUT_S * 4):
        assert await reader.read() == b""
    writer.close()


def test_limits_are_per_subclass() -> None:
    limited = HeadLimitedHttpToolsProtocol.with_limits(1000, 2.0)
    assert (limited.max_head_bytes, limited.head_timeout_s) == (1000, 2.0)
    assert HeadLimitedHttpToolsProtocol.max_head_bytes == 32 * 1024
    with pytest.raises(ValueError):
        HeadLimitedHttpToolsProtocol.with_limits(0, 1.0)


async def test_a_client_that_keeps_sending_after_its_431_is_no_longer_read_and_is_closed_in_time() -> None:
    protocol = ApiHttpProtocol.with_limits(BOUND, 30.0, linger_s=1.0, linger_bytes=256 * 1024)
    async with serving(protocol) as port:
        _, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nhost: t\r\nx-big: ")
        sent = 0
        with pytest.raises(ConnectionError):
            async with asyncio.timeout(10):
                while True:  # never reads until cut: its sends block once the server stops reading
                    writer.write(b"a" * 65536)
                    sent += 65536
                    await writer.drain()
        assert sent < 64 * 1024 * 1024  # the allowance plus what the sockets' buffers held
        writer.close()
