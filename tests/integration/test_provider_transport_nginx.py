"""The provider transports against a real server: Debian's nginx, terminating TLS with a certificate
of an authority the test makes, in front of the simulator (devstack/nginx.py).

Every case runs on our HTTP/1.1 transport and on httpx's own, each built as a worker builds it
(`provider_client.build_transport`, told to trust the test's authority) and called through the
provider client, as a worker calls it. nginx's access log says how each answer went out (on which
connection, chunked or not, gzip-encoded or not), so a case cannot pass without meeting what it
is about.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import fakeredis
import httpx
import pytest

from devstack.nginx import Authority, Nginx, make_authority, start_nginx
from devstack.procs import wait_until
from devstack.stack import Stack
from plumbing.http1_transport import Http1Transport
from shared.errors import ErrorType, GatewayError
from shared.schemas import ProviderCall, ProviderResult
from shared.secrets_file import SecretsSource
from shared.settings import Settings
from tests.integration.conftest import Upstream
from workers.provider_client import ProviderClient, build_transport
from workers.provider_keys import ProviderKeys

KEY = "sk-test-nginx-0123456789"
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
transports = pytest.mark.parametrize("kind", ["http1", "httpx"])


@dataclass
class Edge:
    nginx: Nginx
    upstream: Upstream
    authority: Authority  # signed nginx's certificate
    impostor: Authority  # signed the certificate of nginx's impostor listener

    async def answers(self, request_ids: Collection[str]) -> list[dict[str, str]]:
        """nginx's access-log entries of these calls, once it has logged them all. nginx logs an
        answer once it is done with it, which for the last of a connection is once the client has
        closed its end: the loop stays free meanwhile, for the transport to close it."""
        wanted = set(request_ids)

        def logged() -> list[dict[str, str]]:
            return [entry for entry in self.nginx.access_log() if entry["request_id"] in wanted]

        what = f"{len(wanted)} answers in nginx's access log"
        await asyncio.to_thread(wait_until, lambda: len(logged()) >= len(wanted), 5, what)
        return logged()


KEEPALIVE_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    stack = Stack()
    try:
        stack.start_simulator(latency_ms=2)
        authority = make_authority(stack.group.workdir, "gateway-test-ca")
        impostor = make_authority(stack.group.workdir, "impostor-ca")
        nginx = start_nginx(
            stack.group,
            stack.sim_url.removeprefix("http://"),
            authority,
            impostor,
            # long enough that no connection of a steady load sits idle that long, even on a box whose
            # other processes stall this one for a second (nginx closing an idle connection just as
            # a call reuses it fails that call: no client can know the call was not processed, so none
            # may send it again), short enough for the pauses below
            keepalive_timeout_s=KEEPALIVE_TIMEOUT_S,
            keepalive_requests=3,
        )
        yield Edge(nginx, Upstream(stack), authority, impostor)
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def fresh_upstream(edge: Edge, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:  # a proxy named by the environment would take httpx's transport for all
        monkeypatch.delenv(name, raising=False)
    edge.upstream.reset()


@asynccontextmanager
async def provider(
    kind: str, base_url: str, verify: ssl.SSLContext | bool, read_timeout_s: float = 10.0
) -> AsyncIterator[ProviderClient]:
    """An OpenAI provider client at `base_url` on the transport `kind`, built as a worker builds it."""
    settings = Settings(
        _env_file=None,
        openai_api_key=KEY,
        openai_base_url=base_url,
        provider_keys_file=None,
        provider_http_transport=kind,
        provider_read_timeout_s=read_timeout_s,
    )
    limits = httpx.Limits(
        max_connections=settings.provider_max_connections,
        max_keepalive_connections=settings.provider_max_connections,
    )
    transport = build_transport(settings, httpx.URL(base_url), limits, verify=verify)
    assert isinstance(transport, Http1Transport) is (kind == "http1")
    keys = ProviderKeys("openai", SecretsSource(settings), redis=fakeredis.FakeAsyncRedis(), cooldown_s=300)
    client = ProviderClient("openai", settings, transport=transport, keys=keys)
    try:
        yield client
    finally:
        await client.aclose()


def call(request_id: str, max_tokens: int = 16) -> ProviderCall:
    return ProviderCall(
        model="gpt-4",
        messages=[{"role": "user", "content": f"call {request_id}"}],
        max_tokens=max_tokens,
        request_id=request_id,
    )


def expect_reply(result: ProviderResult, request_id: str, tokens: int) -> None:
    assert result.content.startswith(f"Simulated openai reply to: call {request_id}")
    assert len(result.content) == 4 * tokens and result.usage.completion_tokens == tokens


async def load(client: ProviderClient, request_ids: list[str], concurrency: int) -> list[str]:
    """Every call, `concurrency` at a time; what went wrong, one line per failed call."""
    pending = collections.deque(request_ids)
    failed: list[str] = []

    async def caller() -> None:
        while pending:
            request_id = pending.popleft()
            try:
                expect_reply(await client.complete(call(request_id)), request_id, 16)
            except Exception as exc:
                failed.append(f"{request_id}: {type(exc).__name__}: {exc}")

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return failed


@transports
async def test_connections_the_server_closes_fail_no_call_and_repeat_none(edge: Edge, kind: str) -> None:
    """nginx closes every connection after its third answer (saying so in it), and every connection
    idle for KEEPALIVE_TIMEOUT_S (saying nothing): under steady load no call fails, and none reaches the
    provider twice."""
    nginx = edge.nginx
    phases: list[list[str]] = []
    async with provider(kind, f"{nginx.url}/openai/v1", edge.authority.trusted()) as client:
        for phase in ("a", "b", "c"):
            request_ids = [f"{kind}-{phase}-{i}" for i in range(100)]
            phases.append(request_ids)
            assert await load(client, request_ids, concurrency=8) == []
            if phase == "a":
                # the loop free (the close is read as it comes): nginx closes every idle connection
                await asyncio.to_thread(wait_until, lambda: nginx.open_connections() == 1, 15, "idle ones closed")
            elif phase == "b":
                # the loop busy (this wait blocks it), as a worker's can be, while nginx closes them:
                # the closes are still unread when the next calls look for a connection
                wait_until(lambda: nginx.open_connections() == 1, 15, "idle ones closed")

    sent = [request_id for request_ids in phases for request_id in request_ids]
    received = collections.Counter(r["headers"].get("x-request-id") for r in edge.upstream.requests("openai"))
    assert {request_id: received[request_id] for request_id in sent} == dict.fromkeys(sent, 1)
    assert sum(received.values()) == len(sent)

    answers = await edge.answers(sent)
    served = collections.Counter(entry["connection"] for entry in answers)
    assert max(served.values()) == 3  # connections were kept alive, and closed after their third answer
    by_phase = [{entry["connection"] for entry in answers if entry["request_id"] in ids} for ids in phases]
    assert not by_phase[0] & by_phase[1] and not by_phase[1] & by_phase[2]  # none outlived a pause


@transports
async def test_a_chunked_answer_is_read_whole(edge: Edge, kind: str) -> None:
    """A long answer sent chunked in pieces of 1 KiB, three times on one connection: each read whole,
    and each leaves the connection ready for the next."""
    edge.upstream.config(provider="openai", reply_tokens=20_000)
    request_ids = [f"{kind}-chunked-{i}" for i in range(3)]
    async with provider(kind, f"{edge.nginx.url}/chunked/openai/v1", edge.authority.trusted()) as client:
        for request_id in request_ids:
            expect_reply(await client.complete(call(request_id, max_tokens=20_000)), request_id, 20_000)
    answers = await edge.answers(request_ids)
    assert all(entry["transfer_encoding"] == "chunked" and not entry["content_length"] for entry in answers)
    assert all(int(entry["body_bytes"]) > 80_000 for entry in answers)
    assert len({entry["connection"] for entry in answers}) == 1


@transports
async def test_a_gzip_encoded_answer_is_decoded(edge: Edge, kind: str) -> None:
    edge.upstream.config(provider="openai", reply_tokens=2_000)
    request_ids = [f"{kind}-gzip-{i}" for i in range(3)]
    async with provider(kind, f"{edge.nginx.url}/gzip/openai/v1", edge.authority.trusted()) as client:
        for request_id in request_ids:
            expect_reply(await client.complete(call(request_id, max_tokens=2_000)), request_id, 2_000)
    answers = await edge.answers(request_ids)
    assert all(entry["content_encoding"] == "gzip" for entry in answers)
    assert all(int(entry["body_bytes"]) < 8_000 for entry in answers)  # smaller than the reply's text
    assert len({entry["connection"] for entry in answers}) == 1


@transports
async def test_a_slow_answer_within_the_read_timeout_arrives_and_one_beyond_it_times_out(edge: Edge, kind: str) -> None:
    upstream = edge.upstream
    async with provider(kind, f"{edge.nginx.url}/openai/v1", edge.authority.trusted(), read_timeout_s=1.0) as client:
        upstream.fault("openai", mode="slow", latency_ms=500, count=1)
        expect_reply(await client.complete(call(f"{kind}-slow")), f"{kind}-slow", 16)

        upstream.fault("openai", mode="slow", latency_ms=3_000, count=1)
        started = time.monotonic()
        with pytest.raises(GatewayError) as caught:
            await client.complete(call(f"{kind}-too-slow"))
        assert time.monotonic() - started < 2.5
        assert caught.value.type is ErrorType.TIMEOUT and caught.value.retryable
        assert "ReadTimeout" in caught.value.message

        # the same transport under httpx's own client raises httpx's exception
        upstream.fault("openai", mode="slow", latency_ms=3_000, count=1)
        http = httpx.AsyncClient(transport=client.transport, timeout=httpx.Timeout(5.0, read=1.0))
        with pytest.raises(httpx.ReadTimeout):
            await http.post(
                f"{edge.nginx.url}/openai/v1/chat/completions",
                json={"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {KEY}"},
            )
        # and the pool still serves calls after a timed-out one
        expect_reply(await client.complete(call(f"{kind}-after")), f"{kind}-after", 16)


@transports
async def test_a_certificate_the_trusted_authority_did_not_sign_is_refused(edge: Edge, kind: str) -> None:
    """An impostor on the same address and names, with a certificate of another authority: refused
    before any request is sent; the real server, whose authority the client trusts, is answered."""
    trusted = edge.authority.trusted()
    async with provider(kind, f"{edge.nginx.impostor_url}/openai/v1", trusted) as client:
        with pytest.raises(GatewayError) as caught:
            await client.complete(call(f"{kind}-impostor"))
    assert caught.value.type is ErrorType.SERVICE_UNAVAILABLE
    assert "ConnectError" in caught.value.message and "CERTIFICATE_VERIFY_FAILED" in caught.value.message

    # nor does the default trust (the system's authorities) take the test's authority
    async with provider(kind, f"{edge.nginx.url}/openai/v1", verify=True) as client:
        with pytest.raises(GatewayError) as caught:
            await client.complete(call(f"{kind}-untrusted"))
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message

    assert edge.upstream.requests("openai") == []
    async with provider(kind, f"{edge.nginx.url}/openai/v1", trusted) as client:
        expect_reply(await client.complete(call(f"{kind}-trusted")), f"{kind}-trusted", 16)
