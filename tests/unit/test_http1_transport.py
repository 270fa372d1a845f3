"""The HTTP/1.1 transport against servers that misbehave on purpose: what httpx's contract promises
(kept-alive connections, its limits and timeouts, its exceptions) holds, and no call is sent twice."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plumbing.http1_transport import Http1Transport

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(reply: Reply) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that runs `reply` for each connection; yields its URL and the client ports seen."""
    peers: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[1])
        with contextlib.suppress(ConnectionError):
            await reply(reader, writer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", peers


@contextlib.asynccontextmanager
async def calling(
    reply: Reply, transport: Http1Transport | None = None, **options: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, list[int]]]:
    """A client with the transport, talking to a server that runs `reply`, and the ports it saw."""
    async with (
        serving(reply) as (url, peers),
        httpx.AsyncClient(base_url=url, transport=transport or Http1Transport(), **options) as client,
    ):
        yield client, peers


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    return head + await reader.readexactly(length)


def answering(*answers: bytes, then_close: bool = False) -> Reply:
    """Answers each request on the connection with the next of `answers`."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
        if not then_close:
            await reader.read()  # until the client closes

    return reply


OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


async def test_calls_share_one_kept_alive_connection() -> None:
    async with calling(answering(OK, OK, OK)) as (client, peers):
        for _ in range(3):
            response = await client.post("/v1/x", json={"a": 1})
            assert response.status_code == 200 and response.json() == {"ok": True}
            assert response.reason_phrase == "OK" and response.http_version == "HTTP/1.1"
    assert len(peers) == 1


async def test_a_chunked_answer_is_read_whole() -> None:
    chunked = b'HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n3\r\n42}\r\n0\r\n\r\n'
    async with calling(answering(chunked)) as (client, _):
        response = await client.post("/", content=b"{}")
    assert response.status_code == 201 and response.json() == {"a": 42}


async def test_connection_close_is_honoured() -> None:
    closing = OK.replace(b"Content-Length", b"Connection: close\r\nContent-Length")
    async with calling(answering(closing, then_close=True)) as (client, peers):
        assert (await client.post("/", content=b"{}")).status_code == 200
        assert (await client.post("/", content=b"{}")).status_code == 200  # on a new connection
    assert len(peers) == 2


async def test_an_answer_without_length_ends_when_the_server_closes() -> None:
    unframed = b'HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n\r\n{"error":"upstream"}'
    async with calling(answering(unframed, then_close=True)) as (client, peers):
        response = await client.post("/", content=b"{}")
        assert response.status_code == 502 and response.json() == {"error": "upstream"}
        assert (await client.post("/", content=b"{}")).status_code == 502  # on a new connection
    assert len(peers) == 2


async def test_a_server_closing_mid_answer_is_a_protocol_error_and_not_sent_again() -> None:
    cut = OK[:-4]  # four bytes short of the promised length, then the connection closes
    async with calling(answering(cut, then_close=True)) as (client, peers):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/", content=b"{}")
    assert len(peers) == 1


async def test_a_connection_the_server_closed_while_the_loop_was_busy_is_not_reused() -> None:
    """The server closes an idle kept-alive connection (its keep-alive timeout) while the client's loop
    is busy: the close is still unread when the next call looks for a connection. That call goes out
    on a new one and is answered; it neither fails nor reaches the server twice."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    accepted: list[socket.socket] = []

    async def answer_one() -> None:
        conn, _ = await loop.sock_accept(listener)
        accepted.append(conn)
        received = b""
        while b"\r\n\r\n" not in received:  # a GET: the head is the whole request
            received += await loop.sock_recv(conn, 65536)
        await loop.sock_sendall(conn, OK)

    server = asyncio.ensure_future(answer_one())
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{listener.getsockname()[1]}", transport=Http1Transport()
        ) as client:
            assert (await client.get("/")).status_code == 200
            await server
            accepted[0].close()  # from here to the next call's choice of connection the loop does not run
            server = asyncio.ensure_future(answer_one())
            assert (await client.get("/")).status_code == 200
            await server
    finally:
        server.cancel()
        for conn in [*accepted, listener]:
            conn.close()
    assert len(accepted) == 2


async def test_a_malformed_answer_is_a_protocol_error() -> None:
    async with calling(answering(b"HTTP/1.1 2xx nonsense\r\n\r\n")) as (client, _):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/", content=b"{}")


async def test_read_timeout_bounds_each_wait_for_bytes() -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        for byte in b"1234":  # each byte within the read timeout, all of them beyond it
            await asyncio.sleep(0.2)
            writer.write(bytes([byte]))
        await reader.read()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()

    async with calling(trickle, timeout=0.6) as (client, _):
        assert (await client.post("/", content=b"{}")).content == b"1234"
    async with calling(stall, timeout=0.2) as (client, _):
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/", content=b"{}")


async def test_the_pool_limit_queues_calls_and_times_out() -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            arrived.set()
            await release.wait()
            writer.write(OK)

    transport = Http1Transport(limits=httpx.Limits(max_connections=1))
    async with calling(held, transport, timeout=httpx.Timeout(5, pool=0.2)) as (client, peers):
        first = asyncio.create_task(client.post("/", content=b"{}"))
        await asyncio.wait_for(arrived.wait(), 5)
        with pytest.raises(httpx.PoolTimeout):
            await client.post("/", content=b"{}")  # the one connection is busy for longer than 0.2 s
        waiting = asyncio.create_task(client.post("/", content=b"{}", timeout=httpx.Timeout(5)))
        release.set()
        assert (await first).status_code == 200
        assert (await waiting).status_code == 200  # queued for the slot the first call gave back
    assert len(peers) == 1


async def test_connect_errors_and_unsupported_requests() -> None:
    async with serving(answering(OK)) as (url, _):
        pass  # the server is gone
    async with httpx.AsyncClient(base_url=url, transport=Http1Transport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post("/", content=b"{}")
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.head("/")


@pytest.mark.parametrize(
    "scenario",
    [
        test_calls_share_one_kept_alive_connection,
        test_a_connection_the_server_closed_while_the_loop_was_busy_is_not_reused,
        test_a_server_closing_mid_answer_is_a_protocol_error_and_not_sent_again,
        test_an_answer_without_length_ends_when_the_server_closes,
        test_read_timeout_bounds_each_wait_for_bytes,
        test_the_pool_limit_queues_calls_and_times_out,
        test_connect_errors_and_unsupported_requests,
    ],
    ids=lambda scenario: scenario.__name__.removeprefix("test_"),
)
def test_on_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    """The workers run on uvloop, whose transports differ in detail (no asyncio.Transport subclass)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())  # type: ignore[arg-type]


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 and a client context trusting only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provider.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return server, ssl.create_default_context(cafile=str(cert_file))


async def test_https_is_verified_against_the_trusted_certificates(tmp_path: Path) -> None:
    server_tls, trusting = self_signed(tmp_path)
    server = await asyncio.start_server(answering(OK, OK), "127.0.0.1", 0, ssl=server_tls)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        async with httpx.AsyncClient(base_url=url, transport=Http1Transport(verify=trusting)) as client:
            for _ in range(2):  # the second on the kept-alive TLS connection
                assert (await client.post("/", content=b"{}")).json() == {"ok": True}
        async with httpx.AsyncClient(base_url=url, transport=Http1Transport()) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.post("/", content=b"{}")  # the system's authorities do not know it
