"""An enqueue hands a new job straight to the live worker with the most free slots, claimed on its
behalf, when no job waits in the queue; every job's end gives its slot back."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Literal

import orjson
import pytest
import redis.asyncio as aioredis

from api.rate_limits import ApiLimiter
from plumbing.round_trip import RoundTrip
from shared import keys, scripts
from shared.limits import BucketStore, Draw, LimitPlan
from shared.queue import Claimed, Outcome, RequestQueue, now_ms
from shared.schemas import JobPayload, ProviderCall
from shared.settings import JobKinds, Settings
from shared.streams import StreamRelay
from workers.runtime import build_worker
from workers.worker import GatewayWorker

LEASE_MS = 6000
ROOM = keys.worker_room("openai")


def payload(n: int, kind: Literal["sync", "async", "batch"] = "sync") -> JobPayload:
    return JobPayload(
        request_id=f"req{n:029d}",
        provider="openai",
        call=ProviderCall(model="gpt-4", messages=[{"role": "user", "content": "hi"}], max_tokens=10),
        tenant="alice",
        kind=kind,
    )


class Workers:
    """Subscribers standing in for worker processes: what each worker's own channel receives."""

    def __init__(self, r: aioredis.Redis) -> None:
        self.r = r
        self.pubsub = r.pubsub(ignore_subscribe_messages=True)

    async def start(self, **free_slots: int) -> None:
        """Workers listening on their channels, in the wake rotation and in the room with these slots."""
        await self.pubsub.subscribe(*(keys.worker_wake_channel("openai", w) for w in free_slots))
        await self.r.rpush(keys.wakers("openai"), *(keys.worker_wake_channel("openai", w) for w in free_slots))  # type: ignore[misc]
        await self.r.hset(ROOM, mapping={w: str(n) for w, n in free_slots.items()})  # type: ignore[misc]

    async def next(self) -> tuple[str, bytes]:
        """(worker, message) of the next message any of them receives."""
        async with asyncio.timeout(5):
            while True:
                message = await self.pubsub.get_message(timeout=1)
                if message is not None:
                    return message["channel"].decode().rsplit(":", 1)[1], message["data"]


@pytest.fixture
async def workers(r: aioredis.Redis) -> AsyncIterator[Workers]:
    listening = Workers(r)
    yield listening
    await listening.pubsub.aclose()  # type: ignore[no-untyped-call]


async def room(r: aioredis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await r.hgetall(ROOM)).items()}  # type: ignore[misc]


async def test_a_new_job_goes_to_the_worker_with_the_most_free_slots_claimed_for_it(
    r: aioredis.Redis, workers: Workers
) -> None:
    await workers.start(a=1, b=3)
    queue = RequestQueue(r, lease_ms=LEASE_MS)
    before = now_ms()
    assert await queue.enqueue(payload(1))

    worker, message = await workers.next()
    job = Claimed.handed_over(message)
    jid = keys.job_id(payload(1).request_id, 0)
    assert worker == "b" and job.job_id == jid and job.verdict == "ok" and job.tries == 1
    assert not job.prepaid  # a plain enqueue draws no limits
    assert orjson.loads(job.job or b"")["a"][0]["request_id"] == payload(1).request_id  # arq's layout
    record = await queue.record(payload(1).request_id)
    assert record["status"] == "running" and record["worker"] == "b"
    assert 0 < await r.pttl(keys.arq_in_progress(jid)) <= LEASE_MS  # leased, as a claim leases
    assert await r.zscore(keys.queue("openai"), jid) >= before + LEASE_MS  # not due while leased
    assert await room(r) == {"a": 1, "b": 2}

    assert await queue.enqueue(payload(2))
    assert (await workers.next())[0] == "b"  # 2 free against 1
    assert await queue.enqueue(payload(3))
    assert (await workers.next())[0] in ("a", "b")
    assert await queue.enqueue(payload(4))
    assert (await workers.next())[0] in ("a", "b")
    assert await room(r) == {"a": 0, "b": 0}

    assert await queue.enqueue(payload(5))  # every slot taken: it waits in the queue, a worker is woken
    assert (await workers.next())[1] == b"1"
    assert (await queue.record(payload(5).request_id))["status"] == "queued"


async def test_a_job_waiting_in_the_queue_is_not_overtaken(r: aioredis.Redis, workers: Workers) -> None:
    await workers.start(a=5)
    assert await RequestQueue(r).enqueue(payload(1, "async"))  # no lease: a queue that never hands over
    assert (await workers.next())[1] == b"1"
    queue = RequestQueue(r, lease_ms=LEASE_MS)
    for n, waiting in ((2, payload(2, "async")), (3, payload(3, "batch"))):
        assert await queue.enqueue(waiting)
        assert (await workers.next())[1] == b"1"  # woken to claim, in queue order
        assert (await queue.record(payload(n).request_id))["status"] == "queued"
    assert await room(r) == {"a": 5}

    # a synchronous request sorts before waiting jobs and batches: it need not wait behind them
    assert await queue.enqueue(payload(4, "sync"))
    assert Claimed.handed_over((await workers.next())[1]).job_id == keys.job_id(payload(4).request_id, 0)
    assert await room(r) == {"a": 4}


async def test_a_dead_worker_leaves_the_room_and_the_wake_rotation(r: aioredis.Redis, workers: Workers) -> None:
    await workers.start(live=1)
    dead = keys.worker_wake_channel("openai", "dead")
    await r.hset(ROOM, "dead", "9")  # type: ignore[misc]
    await r.rpush(keys.wakers("openai"), dead)  # type: ignore[misc]
    assert await RequestQueue(r, lease_ms=LEASE_MS).enqueue(payload(1))
    assert (await workers.next())[0] == "live"
    assert await room(r) == {"live": 0}
    assert dead.encode() not in await r.lrange(keys.wakers("openai"), 0, -1)  # type: ignore[misc]


async def test_every_end_of_a_job_gives_its_slot_back_and_claims_take_slots(
    r: aioredis.Redis, workers: Workers
) -> None:
    await workers.start(a=2)
    queue = RequestQueue(r, lease_ms=LEASE_MS)
    assert await queue.enqueue(payload(1))
    job = Claimed.handed_over((await workers.next())[1])
    assert await room(r) == {"a": 1}

    trip = RoundTrip(r)
    queue.finish_into(trip, payload(1).request_id, Outcome("succeeded", b"{}"), job.job_id, "openai", worker="a")
    assert await trip.send() == [1]
    assert await room(r) == {"a": 2}

    # two jobs claimed from the queue take two slots; one ending without an outcome gives one back
    plain = RequestQueue(r)
    for n in (2, 3):
        assert await plain.enqueue(payload(n))
    claimed = await queue.claim("openai", keys.queue("openai"), limit=5, lease_ms=LEASE_MS, scan=10, worker="a")
    assert len(claimed) == 2 and await room(r) == {"a": 0}
    trip = RoundTrip(r)
    queue.slot_back_into(trip, "openai", "a")
    queue.slot_back_into(trip, "openai", "gone")  # a worker out of the room is not put back by it
    await trip.send()
    assert await room(r) == {"a": 1}


def limits(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, rate_limit_openai_rpm=600, rate_limit_global_rpm=6000)


async def test_a_job_handed_over_by_the_api_has_its_call_drawn(
    r: aioredis.Redis, workers: Workers, redis_url: str
) -> None:
    settings = limits(redis_url)
    plan = LimitPlan(settings)
    provider_requests = plan.provider("openai").requests
    limiter = ApiLimiter(RequestQueue(r, lease_ms=LEASE_MS), settings)

    assert (await limiter.admit(payload(1))).refusal is None  # no worker: queued, the worker draws later
    assert await r.hget(provider_requests.key, "v") is None  # type: ignore[misc]
    await r.delete(keys.queue("openai"))

    await workers.start(a=3)
    assert (await limiter.admit(payload(2))).refusal is None
    job = Claimed.handed_over((await workers.next())[1])
    assert job.prepaid
    assert float(await r.hget(provider_requests.key, "v")) == pytest.approx(provider_requests.capacity - 1, abs=0.01)  # type: ignore[misc]

    # calls waiting in a worker's gate go first: a new job is handed over, but draws in the gate too
    await BucketStore(r).draw([Draw(provider_requests, 1, "tw")], gate="g", holding=3)
    assert (await limiter.admit(payload(3))).refusal is None
    assert not Claimed.handed_over((await workers.next())[1]).prepaid


async def test_a_worker_claims_only_the_kinds_of_jobs_it_takes(r: aioredis.Redis) -> None:
    queue = RequestQueue(r)  # no hand-over: every job waits in the queue
    waiting = [payload(1, "sync"), payload(2, "async"), payload(3, "batch")]
    for job in waiting:
        assert await queue.enqueue(job)
    jids = [keys.job_id(job.request_id, 0) for job in waiting]

    async def claim(kinds: JobKinds) -> list[str]:
        claimed = await queue.claim(
            "openai", keys.queue("openai"), limit=5, lease_ms=LEASE_MS, scan=10, worker="w", kinds=kinds
        )
        return [c.job_id for c in claimed]

    assert await claim("batch") == [jids[2]]
    assert await claim("interactive") == [jids[0], jids[1]]  # by priority
    assert await claim("all") == []  # all three claimed and leased already


async def test_a_job_handed_to_a_stopping_worker_goes_back_to_the_queue(
    r: aioredis.Redis, workers: Workers, redis_url: str
) -> None:
    worker = build_worker("openai", Settings(redis_url=redis_url), handle_signals=False)
    # the hand-over goes to this worker's id (a job handed to another worker is not its to hand back)
    await workers.start(**{worker.processor.worker_id: 1})
    queue = RequestQueue(r, lease_ms=LEASE_MS)
    assert await queue.enqueue(payload(1))
    _, message = await workers.next()
    job = Claimed.handed_over(message)

    worker.handle_sig(signal.SIGTERM)
    worker._on_handed_over(message)  # as its subscriber would, had it arrived just after the signal
    await worker.close()  # what it started ends first

    assert await r.zscore(keys.queue("openai"), job.job_id) == job.score  # due again, in its place
    assert not await r.exists(keys.arq_in_progress(job.job_id))  # claimable by another worker now


TAKE_MS = 50


async def test_a_stalled_workers_untaken_hand_overs_go_back_to_the_queue(r: aioredis.Redis, workers: Workers) -> None:
    """`a` listens (its socket is open) but never takes what it is handed, as a SIGSTOPped worker."""
    await workers.start(a=5, b=1)
    queue = RequestQueue(r, lease_ms=LEASE_MS, take_ms=TAKE_MS)
    assert await queue.enqueue(payload(1))
    worker, message = await workers.next()
    job = Claimed.handed_over(message)
    assert worker == "a" and job.handed_at > 0
    assert await r.zscore(keys.handed("openai", "a"), job.job_id) == job.handed_at

    await asyncio.sleep(TAKE_MS / 1000 * 1.5)  # the take bound passes: what is tested
    assert await queue.enqueue(payload(2))  # `a` is chosen (most free), found stalled and evicted
    assert (await workers.next())[1] == b"1"  # `b` is woken to claim: job 1 sorts first, job 2 waits too
    assert await room(r) == {"b": 1}
    assert keys.worker_wake_channel("openai", "a").encode() not in await r.lrange(keys.wakers("openai"), 0, -1)  # type: ignore[misc]
    record = await queue.record(payload(1).request_id)
    assert record["status"] == "queued" and "worker" not in record
    assert await r.zscore(keys.queue("openai"), job.job_id) == job.score  # back in its own place
    assert not await r.exists(keys.arq_in_progress(job.job_id))

    claimed = await queue.claim("openai", keys.queue("openai"), limit=5, lease_ms=LEASE_MS, scan=10, worker="b")
    assert [c.job_id for c in claimed] == [job.job_id, keys.job_id(payload(2).request_id, 0)]
    assert claimed[0].verdict == "ok"
    # `a` wakes: the hand-over is no longer its own, it must not run it too
    assert await queue.take("openai", "a", [job.job_id]) == [False]


async def test_a_hand_over_taken_in_time_keeps_the_worker_in_the_room(r: aioredis.Redis, workers: Workers) -> None:
    await workers.start(a=5)
    queue = RequestQueue(r, lease_ms=LEASE_MS, take_ms=TAKE_MS)
    assert await queue.enqueue(payload(1))
    job = Claimed.handed_over((await workers.next())[1])
    assert await queue.take("openai", "a", [job.job_id]) == [True]
    await asyncio.sleep(TAKE_MS / 1000 * 1.5)
    assert await queue.enqueue(payload(2))
    assert (await workers.next())[0] == "a"  # not thought stalled
    assert await room(r) == {"a": 3}

    # a claim sweeps stalled workers too: job 2 is never taken by `a`
    await asyncio.sleep(TAKE_MS / 1000 * 1.5)
    await r.hset(ROOM, "b", "1")  # type: ignore[misc]
    await queue.claim("openai", keys.queue("openai"), limit=5, lease_ms=LEASE_MS, scan=10, worker="b")
    assert await room(r) == {"b": 0}  # `a` evicted; `b` claimed job 2 back from the queue


async def test_a_streams_first_relay_takes_its_hand_over(r: aioredis.Redis, workers: Workers) -> None:
    """A worker too busy to take a hand-over in time, but already streaming it, keeps it: the relay of
    the first delta took it, so the take bound passing no longer puts it back in the queue."""
    await workers.start(a=5)
    queue = RequestQueue(r, lease_ms=LEASE_MS, take_ms=TAKE_MS)
    streamed = payload(1)
    streamed.call.stream = True
    assert await queue.enqueue(streamed)
    job = Claimed.handed_over((await workers.next())[1])
    relay = StreamRelay(streamed.request_id, "a", ttl_s=60, max_events=10)
    trip = RoundTrip(r)
    relay.relay_into(trip, scripts.STREAM_RELAY.source, [b'{"c":"Hi"}'])
    (reply,) = await trip.send()
    assert relay.relayed(reply, 1).sent
    assert await r.zscore(keys.handed("openai", "a"), job.job_id) is None
    await asyncio.sleep(TAKE_MS / 1000 * 1.5)
    assert await queue.enqueue(payload(2))
    assert (await workers.next())[0] == "a"  # not thought stalled: nothing of its was left untaken
    assert (await queue.record(streamed.request_id))["worker"] == "a"
    assert await queue.take("openai", "a", [job.job_id]) == [True]  # still its own to run


async def test_a_claim_drops_a_dead_worker_that_is_never_the_most_free(r: aioredis.Redis, workers: Workers) -> None:
    """An enqueue looks only at the worker with the most free slots: a dead one with fewer stayed."""
    await workers.start(live=5)
    await r.hset(ROOM, "dead", "2")  # type: ignore[misc]
    queue = RequestQueue(r, lease_ms=LEASE_MS, take_ms=TAKE_MS)
    await queue.claim("openai", keys.queue("openai"), limit=5, lease_ms=LEASE_MS, scan=10, worker="live")
    assert await room(r) == {"live": 5}


async def test_a_heartbeat_sets_the_room_from_the_truth(r: aioredis.Redis, workers: Workers) -> None:
    await workers.start(a=5)
    queue = RequestQueue(r, lease_ms=LEASE_MS, take_ms=LEASE_MS)
    assert await queue.enqueue(payload(1))
    await workers.next()  # handed over, not yet read by the worker: it holds a slot
    await r.hset(ROOM, "a", "1")  # type: ignore[misc]  # drifted (a slot given back twice or never)
    await queue.take("openai", "a", [], max_jobs=5, running=2)
    assert await room(r) == {"a": 2}  # 5 slots - 2 running - 1 handed over and unread
    await r.hdel(ROOM, "a")  # type: ignore[misc]  # evicted, or Redis restarted
    await queue.take("openai", "a", [], max_jobs=5, running=2)
    assert await room(r) == {}  # out of the room stays out, unless it rejoins
    await queue.take("openai", "a", [], max_jobs=5, running=0, rejoin=True)
    assert await room(r) == {"a": 4}


async def test_a_slot_taken_twice_for_a_job_already_running_is_given_back(
    r: aioredis.Redis, workers: Workers, redis_url: str
) -> None:
    """The drift of `llm:room:<provider>` found after pauses: a worker stopped past its lease that,
    when it woke, claimed its own lapsed job (or read a lapsed hand-over of a job it had claimed
    meanwhile) took a second slot for a job that gives one back when it ends."""
    worker = build_worker("openai", Settings(redis_url=redis_url, worker_max_jobs=5), handle_signals=False)
    wid = worker.processor.worker_id
    await workers.start(**{wid: 4})  # one job running
    queue = RequestQueue(r, lease_ms=LEASE_MS)
    assert await queue.enqueue(payload(1))
    handed = Claimed.handed_over((await workers.next())[1])
    assert await room(r) == {wid: 3}
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    worker.jobs[handed.job_id] = never  # running here already (claimed)
    worker._active = 2

    worker._on_handed_over(handed_message(handed))  # its lapsed hand-over, read late
    await settled(worker)
    assert await room(r) == {wid: 4}

    await r.delete(keys.arq_in_progress(handed.job_id))  # its lease lapsed while the worker was stopped
    await r.zadd(keys.queue("openai"), {handed.job_id: now_ms() - 1})
    await worker._poll_iteration()  # the worker claims it back
    await settled(worker)
    assert await room(r) == {wid: 4}
    del worker.jobs[handed.job_id]
    never.cancel()
    await worker.close()


async def settled(worker: GatewayWorker) -> None:
    """Until the worker's late hand-over checks, and the slot returns they start, are done."""
    while worker._late:
        await asyncio.gather(*list(worker._late))


def handed_message(job: Claimed) -> bytes:
    at = now_ms() - 60_000  # long ago: read after a pause
    return b"|".join([job.job_id.encode(), b"%d" % job.score, b"%d" % job.tries, b"0", b"%d" % at, job.job or b""])
