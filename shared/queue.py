"""The queue contract: enqueue a request, claim it in a worker, store its outcome, wait for it.

A request has one record (a Redis hash) and, at any time, one arq job on one provider's queue.
Failover re-enqueues the same request as a new job ("hop") on another queue; waiters wait on the
request, never on a job, so a hop is invisible to them.

Latency matters here, so every step is one round trip:
- enqueue writes the record and the arq job, adds it to the queue and wakes idle workers; the API's
  enqueue of a new request runs its limits admission in the same script (`enqueue_if_admitted`);
- finish stores the outcome and publishes it to the waiting API process in the same script;
- the outcome travels as bytes ``<code>|<json>`` that the API splices into its answer unparsed.

With REDIS_DURABILITY=replica, the enqueue of a new request (an acknowledgement) is followed, on
the same connection and in the same write, by `WAIT 1 <ms>` (`shared.durability`); in the other
modes nothing is added.

The scripts are `shared/lua/queue_*.lua`, their keys and arguments named by their builders in
`shared/scripts.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from arq.jobs import serialize_job
from redis.asyncio import Redis

from plumbing.interfaces import ScriptRunner, Trip
from shared import keys, scripts
from shared.durability import ReplicaWait, replica_wait
from shared.limits import DrawCall, Verdict, verdict_of
from shared.schemas import JobPayload
from shared.settings import JobKinds, Settings

JOB_FUNCTION = "llm_request"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
FENCED = -1  # the finish, release and renew scripts' answer to a worker whose job another one holds now
CODE_TO_STATUS = {"s": "succeeded", "f": "failed", "c": "cancelled"}
STATUS_TO_CODE = {v: k for k, v in CODE_TO_STATUS.items()}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A terminal outcome as stored: status and the JSON of the result data or the error."""

    status: str
    body: bytes

    @classmethod
    def parse(cls, stored: bytes) -> Outcome:
        code, _, body = stored.partition(b"|")
        return cls(CODE_TO_STATUS[code.decode()], body)

    def encode(self) -> bytes:
        return STATUS_TO_CODE[self.status].encode() + b"|" + self.body

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class _ProviderScripts:
    """A provider's builders of the per-request scripts, their shared part named once."""

    enqueue: scripts.Enqueue
    claim: scripts.Claim
    finish: scripts.Finish


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job a worker claimed: its queue score before the claim, the claim's verdict on its request,
    the job's arq bytes (None once expired) and how many times it was claimed (arq's job_try).
    `prepaid`: the enqueue that handed it over drew its call's limits already; `handed_at`: when (ms),
    0 for a claimed job."""

    job_id: str
    score: int
    verdict: str
    job: bytes | None
    tries: int
    prepaid: bool = False
    handed_at: int = 0

    @classmethod
    def handed_over(cls, message: bytes) -> Claimed:
        """A job an enqueue handed to this worker on its own channel (see enqueue)."""
        job_id, score, tries, prepaid, at, job = message.split(b"|", 5)
        return cls(job_id.decode(), int(score), "ok", job, int(tries), prepaid == b"1", int(at))


# a job's score is its enqueue time minus its kind's offset: between the async and the batch offsets
# lies the line between interactive and batch jobs (for ~1,000 days of a job's age)
_KIND_LINE_MS = (keys.PRIORITY_OFFSET_MS["async"] + keys.PRIORITY_OFFSET_MS["batch"]) // 2


def claim_bounds(kinds: JobKinds, now: int) -> tuple[str | int, int]:
    """The scores a worker taking `kinds` of jobs claims, lowest and highest: due jobs (score <= now)
    of those kinds."""
    if kinds == "batch":
        return f"({now - _KIND_LINE_MS}", now
    if kinds == "interactive":
        return "-inf", now - _KIND_LINE_MS
    return "-inf", now


def encode_job(payload: JobPayload, enqueued_ms: int) -> bytes:
    """arq's own job layout, serialised as JSON: nothing on the queue can run code when read.
    orjson writes the payload dataclass as `dataclasses.asdict` would, without the deep copy."""
    return serialize_job(JOB_FUNCTION, (payload,), {}, None, enqueued_ms, serializer=orjson.dumps)


def decode_job(data: bytes) -> dict[str, Any]:
    return orjson.loads(data)  # type: ignore[no-any-return]


class RequestQueue:
    """The shared queue operations, used by the API, the workers and the programmatic client."""

    def __init__(
        self,
        redis: Redis,
        *,
        result_ttl_s: int = 86400,
        job_ttl_ms: int = 86_400_000,
        lease_ms: int = 0,
        take_ms: int = 500,
        admissions: ScriptRunner | None = None,
        confirm: ReplicaWait | None = None,
        max_waiting: int = 0,
    ) -> None:
        """`lease_ms`: the workers' job lease (settings.worker_lease_s); 0 never hands a job straight
        to a worker, every job waits in the queue for a claim. `take_ms`: how long a job handed to a
        worker may stay untaken before it goes back to the queue (settings.worker_handover_take_s).
        `admissions`: what runs new requests' admission script (the API's lane: `plumbing.redis_lane`),
        instead of `redis`'s pool. `confirm`: the replica confirmation a new request's enqueue waits for
        (REDIS_DURABILITY=replica), None for none. `max_waiting`: new requests are refused (a 'backlog'
        verdict) while a provider's queue holds that many due interactive jobs no worker has claimed (0:
        no bound)."""
        self.redis = redis
        self.admissions = admissions
        self.confirm = confirm
        self.max_waiting = max_waiting
        self.result_ttl_s = result_ttl_s
        self.job_ttl_ms = job_ttl_ms
        self.lease_ms = lease_ms
        self.take_ms = take_ms
        self._record_prefix, self._record_suffix = keys.request_key_parts()
        self._in_progress_prefix = keys.arq_in_progress("")
        self._job_prefix = keys.arq_job("")
        self._retry_prefix = keys.arq_retry("")
        self._enqueue = redis.register_script(scripts.QUEUE_ENQUEUE.source)
        self._admit_enqueue = redis.register_script(scripts.QUEUE_ADMIT_ENQUEUE.source)
        self._claim = redis.register_script(scripts.QUEUE_CLAIM.source)
        self._finish = redis.register_script(scripts.QUEUE_FINISH.source)
        self._cancel = redis.register_script(scripts.QUEUE_CANCEL.source)
        self._watch = redis.register_script(scripts.QUEUE_WATCH.source)
        self._notify = redis.register_script(scripts.QUEUE_NOTIFY.source)
        self._slot_back = redis.register_script(scripts.QUEUE_SLOT_BACK.source)
        self._take = redis.register_script(scripts.QUEUE_TAKE.source)
        self._release = redis.register_script(scripts.QUEUE_RELEASE.source)
        self._renew = redis.register_script(scripts.QUEUE_RENEW.source)
        self._providers: dict[str, _ProviderScripts] = {}

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings, admissions: ScriptRunner | None = None) -> RequestQueue:
        return cls(
            redis,
            result_ttl_s=settings.result_ttl_s,
            lease_ms=int(settings.worker_lease_s * 1000),
            take_ms=int(settings.worker_handover_take_s * 1000),
            admissions=admissions,
            confirm=replica_wait(settings),
            max_waiting=settings.queue_max_waiting,
        )

    async def enqueue(self, payload: JobPayload, *, reply: str | None = None, hop: int = 0) -> bool:
        """Put a request's hop on its provider's queue, or straight in the hands of a worker with a
        free slot when none waits there. False if the request already ended."""
        script_keys, args = self._enqueue_call(payload, reply, hop)
        if self.confirm is None or hop:  # a hop re-enqueues a request acknowledged already
            return bool(await self._enqueue(keys=script_keys, args=args))
        async with self.redis.pipeline(transaction=False) as pipe:  # one connection: WAIT covers the enqueue
            await self._enqueue(keys=script_keys, args=args, client=pipe)
            pipe.execute_command(*self.confirm.command)
            enqueued, acked = await pipe.execute()
        if enqueued:
            await self._confirmed(payload.request_id, acked)
        return bool(enqueued)

    async def enqueue_if_admitted(
        self, payload: JobPayload, admission: DrawCall, call: DrawCall, *, reply: str | None = None
    ) -> Verdict:
        """Draw a new request's admission from the limits and, if admitted, enqueue it: one round trip.
        Refused, nothing is enqueued and no bucket is taken from. `call`: the draw of the provider call
        itself, taken only if the job is handed straight to a worker and the buckets hold it now."""
        all_keys, all_args = scripts.admit_enqueue(
            admission=admission,
            call=call,
            enqueue=self._enqueue_call(payload, reply, 0),
            max_waiting=self.max_waiting,
            waiting_below=claim_bounds("interactive", now_ms())[1],
        )
        if self.confirm is not None:
            return await self._admit_enqueue_confirmed(payload.request_id, all_keys, all_args)
        if self.admissions is not None:
            raw = await self.admissions.evalsha(self._admit_enqueue, all_keys, all_args)
        else:
            raw = await self._admit_enqueue(keys=all_keys, args=all_args)
        return verdict_of(raw)

    async def _admit_enqueue_confirmed(self, request_id: str, all_keys: list[Any], all_args: list[Any]) -> Verdict:
        """enqueue_if_admitted in `replica` mode: the WAIT goes in the same write, on the same connection."""
        assert self.confirm is not None
        if self.admissions is not None:
            raw, acked = await self.admissions.evalsha_and(
                self._admit_enqueue, all_keys, all_args, self.confirm.command
            )
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._admit_enqueue(keys=all_keys, args=all_args, client=pipe)
                pipe.execute_command(*self.confirm.command)
                raw, acked = await pipe.execute()
        verdict = verdict_of(raw)
        if verdict.ok:
            await self._confirmed(request_id, acked)
        return verdict

    async def _confirmed(self, request_id: str, acked: int) -> None:
        """Raise the 503 of an enqueue no replica confirmed, its request cancelled if no worker started it."""
        assert self.confirm is not None
        if self.confirm.confirmed(acked):
            return
        refusal = self.confirm.refusal("request", request_id)
        fate = await self.cancel(request_id, Outcome("cancelled", orjson.dumps(refusal.to_dict())))
        raise refusal if fate == "cancelled" else self.confirm.refusal("request", request_id, cancelled=False)

    def _enqueue_call(self, payload: JobPayload, reply: str | None, hop: int) -> scripts.KeysAndArgs:
        """queue_enqueue.lua's keys and args."""
        enqueued = now_ms()
        jid = keys.job_id(payload.request_id, hop)
        score = enqueued - keys.PRIORITY_OFFSET_MS[payload.kind]
        fields: list[str | int] = [
            "status",
            "queued",
            "provider",
            payload.provider,
            "model",
            payload.call.model,
            "job",
            jid,
            "queue",
            keys.queue(payload.provider),
            "hop",
            hop,
        ]
        if hop == 0:
            fields += ["created", payload.created_ms or enqueued, "kind", payload.kind]
            if reply:
                fields += ["reply", reply]
            if payload.tenant:
                fields += ["tenant", payload.tenant]
            if payload.call.stream:
                # a synchronous stream's own client follows it from the start (see shared/streams.py)
                fields += ["stream", 1, "followers", 1 if payload.kind == "sync" else 0]
        return self._scripts_of(payload.provider).enqueue.keys_and_args(
            record=keys.request(payload.request_id),
            arq_job=keys.arq_job(jid),
            in_progress=keys.arq_in_progress(jid),
            retry=keys.arq_retry(jid),
            job_id=jid,
            job=encode_job(payload, enqueued),
            score=score,
            requeue=bool(hop),
            now_ms=enqueued,
            fields=fields,
        )

    def _scripts_of(self, provider: str) -> _ProviderScripts:
        """The enqueue, claim and finish builders of `provider`'s queue, made once."""
        found = self._providers.get(provider)
        if found is None:
            found = self._providers[provider] = self._make_scripts(provider)
        return found

    def _make_scripts(self, provider: str) -> _ProviderScripts:
        room, wakers = keys.worker_room(provider), keys.wakers(provider)
        channels, handed = keys.worker_wake_channel(provider, ""), keys.handed(provider, "")
        return _ProviderScripts(
            enqueue=scripts.Enqueue(
                queue=keys.queue(provider),
                wakers=wakers,
                room=room,
                wake_channel=keys.wake_channel(provider),
                worker_channel_prefix=channels,
                handed_prefix=handed,
                job_ttl_ms=self.job_ttl_ms,
                record_ttl_s=self.result_ttl_s,
                lease_ms=self.lease_ms,
                take_ms=self.take_ms,
                in_progress_prefix=self._in_progress_prefix,
                record_prefix=self._record_prefix,
                record_suffix=self._record_suffix,
            ),
            claim=scripts.Claim(
                room=room,
                wakers=wakers,
                worker_channel_prefix=channels,
                handed_prefix=handed,
                take_ms=self.take_ms,
                in_progress_prefix=self._in_progress_prefix,
                record_prefix=self._record_prefix,
                record_suffix=self._record_suffix,
                job_prefix=self._job_prefix,
                retry_prefix=self._retry_prefix,
            ),
            finish=scripts.Finish(
                queue=keys.queue(provider), room=room, record_ttl_s=self.result_ttl_s, handed_prefix=handed
            ),
        )

    async def claim(
        self,
        provider: str,
        queue_name: str,
        *,
        limit: int,
        lease_ms: int,
        scan: int,
        worker: str,
        kinds: JobKinds = "all",
    ) -> list[Claimed]:
        """Claim due jobs of `kinds` for this worker, with each job's bytes and try count."""
        now = now_ms()
        lowest, highest = claim_bounds(kinds, now)
        raw = await self._claim(
            *self._scripts_of(provider).claim.keys_and_args(
                queue=queue_name,
                now_ms=now,
                limit=limit,
                lease_ms=lease_ms,
                scan=scan,
                worker=worker,
                lowest=lowest,
                highest=highest,
            )
        )
        return [
            Claimed(raw[i].decode(), int(float(raw[i + 1])), raw[i + 2].decode(), raw[i + 3], int(raw[i + 4]))
            for i in range(0, len(raw), 5)
        ]

    def finish_into(
        self,
        trip: Trip,
        request_id: str,
        outcome: Outcome,
        job: str,
        provider: str,
        *,
        worker: str = "",
        cache_digest: str | None = None,
        cache_ttl_s: int = 0,
    ) -> None:
        """Queue, on a round trip, the step that stores the outcome, signals every waiter and retires the
        job, atomically, giving `worker`'s job slot back; for a cache leader, it also stores the answer
        in the response cache and releases the lead. Its reply: 1, 0 if the request had already
        ended (the job is retired all the same), or FENCED if another worker holds the job now
        (nothing stored, nothing retired: see shared/lua/lib/holder.lua)."""
        stored = outcome.encode()
        script_keys, args = self._scripts_of(provider).finish.keys_and_args(
            record=keys.request(request_id),
            watchers=keys.watchers(request_id),
            arq_job=keys.arq_job(job),
            in_progress=keys.arq_in_progress(job),
            retry=keys.arq_retry(job),
            cache_entry=keys.cache_entry(cache_digest) if cache_digest else None,
            cache_lead=keys.cache_lead(cache_digest) if cache_digest else None,
            stored=stored,
            finished_ms=now_ms(),
            message=request_id.encode() + b"|" + stored,
            status=outcome.status,
            job_id=job,
            cache_ttl_s=cache_ttl_s,
            worker=worker,
        )
        trip.script(self._finish, script_keys, args)

    def slot_back_into(self, trip: Trip, provider: str, worker: str, job_id: str | None = None) -> None:
        """Queue, on a round trip, giving a job slot back to `worker`'s room entry (a job that ended
        without an outcome of its own: skipped, failed over or handed back), and taking `job_id` off
        the worker's handed set."""
        handed = None if job_id is None else keys.handed(provider, worker)
        trip.script(
            self._slot_back,
            *scripts.slot_back(room=keys.worker_room(provider), worker=worker, handed=handed, job_id=job_id),
        )

    def retire_into(self, trip: Trip, provider: str, worker: str, job_id: str) -> None:
        """Queue, on a round trip, retiring a job that ended without an outcome of its own (skipped,
        failed over, fenced): arq's keys of it deleted, off the queue, its slot given back (as arq's
        finish of a done job, with no result kept). A job another worker holds now is left to it."""
        self._release_into(trip, provider, worker, job_id, None)

    def hand_back_into(self, trip: Trip, provider: str, worker: str, job_id: str, score: int) -> None:
        """Queue, on a round trip, handing a job back to the queue (its worker stops, or lost Redis
        mid-job): due again at once in its old place (`score`), its lease dropped so that any worker
        claims it, its slot given back. A job another worker holds now is left to it."""
        self._release_into(trip, provider, worker, job_id, score)

    def _release_into(self, trip: Trip, provider: str, worker: str, job_id: str, back_at: int | None) -> None:
        trip.script(
            self._release,
            *scripts.release(
                record=keys.request(keys.request_id_of_job(job_id)),
                queue=keys.queue(provider),
                arq_job=keys.arq_job(job_id),
                in_progress=keys.arq_in_progress(job_id),
                retry=keys.arq_retry(job_id),
                aborts=keys.ARQ_ABORTS,
                room=keys.worker_room(provider),
                handed=keys.handed(provider, worker),
                job_id=job_id,
                worker=worker,
                back_at=back_at,
            ),
        )

    async def renew(self, provider: str, worker: str, jobs: list[tuple[str, int]], *, lease_ms: int) -> list[int]:
        """Renew the leases of `worker`'s running jobs (id and queue score each), fenced: per job 1
        (held, renewed), 0 (over) or FENCED (another worker's now). See shared/lua/queue_renew.lua."""
        raw = await self._renew(
            *scripts.renew(
                queue=keys.queue(provider),
                worker=worker,
                lease_ms=lease_ms,
                until_ms=now_ms() + lease_ms,
                in_progress_prefix=self._in_progress_prefix,
                record_prefix=self._record_prefix,
                record_suffix=self._record_suffix,
                jobs=jobs,
            )
        )
        return [int(x) for x in raw]

    async def take(
        self,
        provider: str,
        worker: str,
        job_ids: list[str],
        *,
        max_jobs: int | None = None,
        running: int = 0,
        rejoin: bool = False,
    ) -> list[bool]:
        """Take jobs handed to `worker` (see shared/lua/queue_take.lua): for each, whether it is still the
        worker's to run. With `max_jobs`, the worker's room entry is also set from its `running` jobs."""
        raw = await self._take(
            *scripts.take(
                room=keys.worker_room(provider),
                handed=keys.handed(provider, worker),
                worker=worker,
                in_progress_prefix=self._in_progress_prefix,
                record_prefix=self._record_prefix,
                record_suffix=self._record_suffix,
                max_jobs=max_jobs,
                running=running,
                rejoin=rejoin,
                job_ids=job_ids,
            )
        )
        return [bool(x) for x in raw]

    async def cancel(self, request_id: str, outcome: Outcome, *, tenant: str | None = None) -> str:
        """Cancel a request that no worker has started: 'cancelled', or the status that forbids it
        ('missing' also for a request of another tenant than `tenant`; None: any tenant's)."""
        stored = outcome.encode()
        message = request_id.encode() + b"|" + stored
        res = await self._cancel(
            *scripts.cancel(
                record=keys.request(request_id),
                watchers=keys.watchers(request_id),
                stored=stored,
                finished_ms=now_ms(),
                record_ttl_s=self.result_ttl_s,
                message=message,
                job_prefix=self._job_prefix,
                tenant=tenant or "",
            )
        )
        return res.decode() if isinstance(res, bytes) else str(res)

    async def notify_watchers(self, request_id: str, outcome: Outcome) -> None:
        """Hand an outcome to whoever watches a request that was never enqueued."""
        message = request_id.encode() + b"|" + outcome.encode()
        await self._notify(
            *scripts.notify(record=keys.request(request_id), watchers=keys.watchers(request_id), message=message)
        )

    async def watch(
        self, request_id: str, channel: str, ttl_s: int, *, tenant: str | None = None
    ) -> tuple[str | None, bytes | None]:
        """Subscribe a long-poll to a request and read its status in the same round trip. With a
        `tenant`, another tenant's request reads as missing (status None) and is not watched."""
        status, result = await self._watch(
            *scripts.watch(
                watchers=keys.watchers(request_id),
                record=keys.request(request_id),
                channel=channel,
                ttl_s=ttl_s,
                tenant=tenant or "",
            )
        )
        return (status.decode() if status else None), result

    async def record(self, request_id: str) -> dict[str, str]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.request(request_id))  # type: ignore[misc]
        return {k.decode(): v.decode() for k, v in raw.items()}
