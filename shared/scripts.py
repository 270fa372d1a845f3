"""Every Lua script of the gateway: its source, loaded once from `shared/lua/<name>.lua`, and the one
builder that names its keys and arguments.

A script's file opens with a header naming its KEYS and ARGV by position; its builder here takes the
same names as keyword arguments and returns `(keys, args)` in that order, so no call site counts
positions. Builders run per request, so they do no validation and no copying beyond the two lists.
A builder is a plain function, or, for the hot scripts with many arguments (enqueue, claim, finish),
a frozen object holding the part every call for one provider shares, made once, whose
`keys_and_args` takes the rest. Either way a call passes at most 15 keyword arguments: CPython 3.11
compiles a call with more into a dict and CALL_FUNCTION_EX, several times the cost of the call.

Two directives in a `.lua` file are resolved when it is loaded:
- `--! include <fragment>` (a line of its own) is replaced by `shared/lua/lib/<fragment>.lua`, itself
  composed the same way; a fragment is included once per script. Scripts share Lua functions (the
  limits' `draw` in the admission's enqueue, the batch hook in finish and cancel) this way, never
  through Python strings imported across modules.
- `${builder(var, ...)}` is the key `shared.keys.builder(...)` as a Lua expression built from Lua
  variables (`keys.lua_key`), or with no variables the key's literal: scripts that derive keys from
  data still take their names from `shared.keys`.

The composed text is the script's identity: its SHA is what round trips and lanes send (EVALSHA), and
its text is what they send again when Redis answers NOSCRIPT.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from shared import keys as _keys

KeysAndArgs = tuple[list[Any], list[Any]]

_INCLUDE = re.compile(r"^--! include (\w+)[ \t]*\n", re.MULTILINE)
_KEY = re.compile(r"\$\{(\w+)\(([^)]*)\)\}")


@dataclass(frozen=True, slots=True)
class Script:
    """A script as sent to Redis: its name (the file's), composed source and SHA1."""

    name: str
    source: str
    sha: str


def _read(path: str) -> str:
    return files("shared").joinpath("lua", path).read_text(encoding="utf-8")


def _key_expression(match: re.Match[str]) -> str:
    builder = getattr(_keys, match.group(1))
    lua_vars = [v.strip() for v in match.group(2).split(",") if v.strip()]
    if not lua_vars:
        return _keys.lua_literal(builder())
    return _keys.lua_key(builder, *lua_vars)


def compose(text: str, included: set[str] | None = None) -> str:
    """A `.lua` file's text with its includes and key templates resolved."""
    seen = set() if included is None else included

    def include(match: re.Match[str]) -> str:
        fragment = match.group(1)
        if fragment in seen:
            return ""
        seen.add(fragment)
        return compose(_read(f"lib/{fragment}.lua"), seen)

    return _KEY.sub(_key_expression, _INCLUDE.sub(include, text))


def load(name: str) -> Script:
    """`shared/lua/<name>.lua`, composed."""
    source = compose(_read(f"{name}.lua"))
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


QUEUE_ENQUEUE = load("queue_enqueue")
QUEUE_ADMIT_ENQUEUE = load("queue_admit_enqueue")
QUEUE_CLAIM = load("queue_claim")
QUEUE_SLOT_BACK = load("queue_slot_back")
QUEUE_TAKE = load("queue_take")
QUEUE_RELEASE = load("queue_release")
QUEUE_RENEW = load("queue_renew")
QUEUE_FINISH = load("queue_finish")
QUEUE_CANCEL = load("queue_cancel")
QUEUE_NOTIFY = load("queue_notify")
QUEUE_WATCH = load("queue_watch")
BATCH_ACTIVATE = load("batch_activate")
BATCH_FEED = load("batch_feed")
BATCH_DRAIN = load("batch_drain")
BATCH_WATCH = load("batch_watch")
BREAKER_ACQUIRE = load("breaker_acquire")
BREAKER_RECORD = load("breaker_record")
LIMITS_DRAW = load("limits_draw")
METRICS_RECORD = load("metrics_record")
CACHE_LOOKUP = load("cache_lookup")
LEASE_HOLD = load("lease_hold")
LEASE_RELEASE = load("lease_release")
STREAM_RELAY = load("stream_relay")
STREAM_FOLLOW = load("stream_follow")
STREAM_LEAVE = load("stream_leave")
STREAM_ABANDON = load("stream_abandon")

ALL: dict[str, Script] = {
    s.name: s
    for s in (
        QUEUE_ENQUEUE,
        QUEUE_ADMIT_ENQUEUE,
        QUEUE_CLAIM,
        QUEUE_SLOT_BACK,
        QUEUE_TAKE,
        QUEUE_RELEASE,
        QUEUE_RENEW,
        QUEUE_FINISH,
        QUEUE_CANCEL,
        QUEUE_NOTIFY,
        QUEUE_WATCH,
        BATCH_ACTIVATE,
        BATCH_FEED,
        BATCH_DRAIN,
        BATCH_WATCH,
        BREAKER_ACQUIRE,
        BREAKER_RECORD,
        LIMITS_DRAW,
        METRICS_RECORD,
        CACHE_LOOKUP,
        LEASE_HOLD,
        LEASE_RELEASE,
        STREAM_RELAY,
        STREAM_FOLLOW,
        STREAM_LEAVE,
        STREAM_ABANDON,
    )
}


# --- the queue (shared/queue.py) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enqueue:
    """queue_enqueue.lua for one provider's queue: the keys and args every enqueue to it shares, named
    once (`RequestQueue` keeps one per provider); `keys_and_args` adds a job's own."""

    queue: str
    wakers: str
    room: str
    wake_channel: str
    worker_channel_prefix: str
    handed_prefix: str
    job_ttl_ms: int
    record_ttl_s: int
    lease_ms: int
    take_ms: int
    in_progress_prefix: str
    record_prefix: str
    record_suffix: str

    def keys_and_args(
        self,
        *,
        record: str,
        arq_job: str,
        in_progress: str,
        retry: str,
        job_id: str,
        job: bytes,
        score: int,
        requeue: bool,
        now_ms: int,
        fields: Sequence[str | int],
    ) -> KeysAndArgs:
        """`fields`: the record's field/value pairs."""
        return [record, arq_job, self.queue, self.wakers, self.room, in_progress, retry], [
            job_id,
            job,
            score,
            self.job_ttl_ms,
            self.record_ttl_s,
            self.wake_channel,
            "1" if requeue else "0",
            now_ms,
            self.lease_ms,
            self.worker_channel_prefix,
            self.take_ms,
            self.handed_prefix,
            self.in_progress_prefix,
            self.record_prefix,
            self.record_suffix,
            *fields,
        ]


def admit_enqueue(
    *,
    admission: KeysAndArgs,
    call: KeysAndArgs,
    enqueue: KeysAndArgs,
    max_waiting: int = 0,
    waiting_below: str | int = 0,
) -> KeysAndArgs:
    """queue_admit_enqueue.lua: the backlog bound (`max_waiting` due interactive jobs, scores up to
    `waiting_below`; 0: none), two draws' (`draw`) and an enqueue's (`enqueue`) keys and args."""
    (a_keys, a_args), (c_keys, c_args), (e_keys, e_args) = admission, call, enqueue
    return [*a_keys, *c_keys, *e_keys], [
        len(a_keys),
        len(c_keys),
        max_waiting,
        waiting_below,
        *a_args,
        *c_args,
        *e_args,
    ]


@dataclass(frozen=True, slots=True)
class Claim:
    """queue_claim.lua for one provider: the args every claim of its workers shares, named once;
    `keys_and_args` adds a claim's own."""

    room: str
    wakers: str
    worker_channel_prefix: str
    handed_prefix: str
    take_ms: int
    in_progress_prefix: str
    record_prefix: str
    record_suffix: str
    job_prefix: str
    retry_prefix: str

    def keys_and_args(
        self,
        *,
        queue: str,
        now_ms: int,
        limit: int,
        lease_ms: int,
        scan: int,
        worker: str,
        lowest: str | int,
        highest: int,
    ) -> KeysAndArgs:
        """`lowest`, `highest`: the scores to claim (`queue.claim_bounds`)."""
        return [queue, self.room], [
            now_ms,
            limit,
            lease_ms,
            scan,
            self.in_progress_prefix,
            self.record_prefix,
            self.record_suffix,
            worker,
            self.job_prefix,
            self.retry_prefix,
            lowest,
            highest,
            self.wakers,
            self.worker_channel_prefix,
            self.handed_prefix,
            self.take_ms,
        ]


def slot_back(*, room: str, worker: str, handed: str | None = None, job_id: str | None = None) -> KeysAndArgs:
    """queue_slot_back.lua; with `handed` and `job_id`, the job also leaves the worker's handed set."""
    if handed is None or job_id is None:
        return [room], [worker]
    return [room, handed], [worker, job_id]


def take(
    *,
    room: str,
    handed: str,
    worker: str,
    in_progress_prefix: str,
    record_prefix: str,
    record_suffix: str,
    max_jobs: int | None,
    running: int,
    rejoin: bool,
    job_ids: Iterable[str],
) -> KeysAndArgs:
    """queue_take.lua (`max_jobs` None: the room entry is left alone)."""
    return [room, handed], [
        worker,
        in_progress_prefix,
        record_prefix,
        record_suffix,
        "" if max_jobs is None else max_jobs,
        running,
        "1" if rejoin else "0",
        *job_ids,
    ]


def release(
    *,
    record: str,
    queue: str,
    arq_job: str,
    in_progress: str,
    retry: str,
    aborts: str,
    room: str,
    handed: str,
    job_id: str,
    worker: str,
    back_at: int | None,
) -> KeysAndArgs:
    """queue_release.lua: retire the job, or with `back_at` (its queue score) hand it back."""
    return [record, queue, arq_job, in_progress, retry, aborts, room, handed], [
        job_id,
        worker,
        "retire" if back_at is None else "back",
        0 if back_at is None else back_at,
    ]


def renew(
    *,
    queue: str,
    worker: str,
    lease_ms: int,
    until_ms: int,
    in_progress_prefix: str,
    record_prefix: str,
    record_suffix: str,
    jobs: Iterable[tuple[str, int]],
) -> KeysAndArgs:
    """queue_renew.lua. `jobs`: each job's id and queue score."""
    args: list[Any] = [worker, lease_ms, until_ms, in_progress_prefix, record_prefix, record_suffix]
    for job_id, score in jobs:
        args += [job_id, score]
    return [queue], args


@dataclass(frozen=True, slots=True)
class Finish:
    """queue_finish.lua for one provider: the keys and args every finish of its jobs shares, named
    once; `keys_and_args` adds a job's own (a cache leader's finish names its `cache_entry` and
    `cache_lead`)."""

    queue: str
    room: str
    record_ttl_s: int
    handed_prefix: str

    def keys_and_args(
        self,
        *,
        record: str,
        watchers: str,
        arq_job: str,
        in_progress: str,
        retry: str,
        cache_entry: str | None,
        cache_lead: str | None,
        stored: bytes,
        finished_ms: int,
        message: bytes,
        status: str,
        job_id: str,
        cache_ttl_s: int,
        worker: str,
    ) -> KeysAndArgs:
        script_keys = [record, watchers, self.queue, arq_job, in_progress, retry, self.room]
        if cache_entry is not None and cache_lead is not None:
            script_keys += [cache_entry, cache_lead]
        return script_keys, [
            stored,
            finished_ms,
            self.record_ttl_s,
            message,
            status,
            job_id,
            cache_ttl_s,
            worker,
            self.handed_prefix,
        ]


def cancel(
    *,
    record: str,
    watchers: str,
    stored: bytes,
    finished_ms: int,
    record_ttl_s: int,
    message: bytes,
    job_prefix: str,
    tenant: str,
) -> KeysAndArgs:
    """queue_cancel.lua (`tenant` '': any tenant's request)."""
    return [record, watchers], [stored, finished_ms, record_ttl_s, message, job_prefix, tenant]


def notify(*, record: str, watchers: str, message: bytes) -> KeysAndArgs:
    """queue_notify.lua."""
    return [record, watchers], [message]


def watch(*, watchers: str, record: str, channel: str, ttl_s: int, tenant: str) -> KeysAndArgs:
    """queue_watch.lua (`tenant` '': any tenant's request)."""
    return [watchers, record], [channel, ttl_s, tenant]


# --- streams (shared/streams.py) ------------------------------------------------------------------


def stream_relay(
    *,
    record: str,
    stream: str,
    watchers: str,
    worker: str,
    first_seq: int,
    ttl_s: int,
    max_events: int,
    message_prefix: bytes,
    deltas: Sequence[bytes],
) -> KeysAndArgs:
    """stream_relay.lua."""
    return [record, stream, watchers], [worker, first_seq, ttl_s, max_events, message_prefix, *deltas]


def stream_follow(
    *, record: str, stream: str, watchers: str, channel: str, watch_ttl_s: int, tenant: str, after_seq: int, count: bool
) -> KeysAndArgs:
    """stream_follow.lua (`tenant` '': any tenant's request)."""
    return [record, stream, watchers], [channel, watch_ttl_s, tenant, after_seq, "1" if count else "0"]


def stream_leave(*, record: str) -> KeysAndArgs:
    """stream_leave.lua."""
    return [record], []


def stream_abandon(
    *,
    record: str,
    watchers: str,
    request_id: str,
    stored: bytes,
    finished_ms: int,
    record_ttl_s: int,
    job_prefix: str,
) -> KeysAndArgs:
    """stream_abandon.lua."""
    return [record, watchers], [request_id, stored, finished_ms, record_ttl_s, job_prefix]


# --- batches (shared/batches.py) ------------------------------------------------------------------


def batch_activate(
    *,
    meta: str,
    deadlines: str,
    tenant_batches: str,
    batch_id: str,
    tenant: str,
    now_ms: int,
    expires_ms: int,
    total: int,
    ttl_s: int,
    format: str,
    providers: Iterable[str],
) -> KeysAndArgs:
    """batch_activate.lua."""
    return [meta, deadlines, tenant_batches], [batch_id, tenant, now_ms, expires_ms, total, ttl_s, format, *providers]


def batch_feed(
    *,
    tenant_ring: str,
    inflight: str,
    queue: str,
    cap: int,
    max_move: int,
    now_ms: int,
    job_ttl_ms: int,
    record_ttl_s: int,
    provider: str,
    wake_channel: str,
    min_move: int,
) -> KeysAndArgs:
    """batch_feed.lua."""
    return [tenant_ring, inflight, queue], [
        cap,
        max_move,
        now_ms,
        job_ttl_ms,
        record_ttl_s,
        provider,
        wake_channel,
        min_move,
    ]


def batch_drain(
    *,
    meta: str,
    batch_id: str,
    reason: str,
    now_ms: int,
    chunk: int,
    ttl_s: int,
    error: bytes,
    code: str,
    providers: Iterable[str],
) -> KeysAndArgs:
    """batch_drain.lua."""
    return [meta], [batch_id, reason, now_ms, chunk, ttl_s, error, code, *providers]


def batch_watch(*, watchers: str, meta: str, channel: str, ttl_s: int) -> KeysAndArgs:
    """batch_watch.lua."""
    return [watchers, meta], [channel, ttl_s]


# --- breakers (shared/breaker.py) -----------------------------------------------------------------


def breaker_acquire(
    *,
    breaker: str,
    now_ms: int,
    probes: int,
    probe_timeout_ms: int,
    channel: str,
    provider: str,
    cooldown_ms: int,
) -> KeysAndArgs:
    """breaker_acquire.lua."""
    return [breaker], [now_ms, probes, probe_timeout_ms, channel, provider, cooldown_ms]


def breaker_record(
    *,
    breaker: str,
    window: str,
    now_ms: int,
    verdict: str,
    probe_gen: int,
    channel: str,
    provider: str,
    cooldown_ms: int,
    failure_threshold: int,
    error_rate: float,
    min_requests: int,
    window_ms: int,
    buckets: int,
) -> KeysAndArgs:
    """breaker_record.lua."""
    return [breaker, window], [
        now_ms,
        verdict,
        probe_gen,
        channel,
        provider,
        cooldown_ms,
        failure_threshold,
        error_rate,
        min_requests,
        window_ms,
        buckets,
    ]


# --- limits, metrics, the response cache, leases --------------------------------------------------


def draw(
    *,
    buckets: list[str],
    max_take_wait_ms: str,
    max_peek_wait_ms: str,
    gate: str,
    holding: int,
    report_grace_ms: int,
    per_bucket: Iterable[str | int],
) -> KeysAndArgs:
    """limits_draw.lua, and each draw of queue_admit_enqueue.lua. `per_bucket`: rate per ms,
    capacity, cost and mode of each bucket in turn (4 per bucket)."""
    return buckets, [max_take_wait_ms, max_peek_wait_ms, gate, holding, report_grace_ms, *per_bucket]


def metrics_record(
    *,
    minute: str,
    hour: str,
    totals: str,
    models: str,
    minute_ttl_s: int,
    hour_ttl_s: int,
    increments: bytes,
    max_models: int,
    groups: bytes,
    tenants: Iterable[tuple[str, str, bytes]] = (),
) -> KeysAndArgs:
    """metrics_record.lua. `tenants`: each tenant's minute bucket, hour bucket and counters (JSON)."""
    script_keys: list[Any] = [minute, hour, totals, models]
    args: list[Any] = [minute_ttl_s, hour_ttl_s, increments, max_models, groups]
    for tenant_minute, tenant_hour, counters in tenants:
        script_keys += [tenant_minute, tenant_hour]
        args.append(counters)
    return script_keys, args


def cache_lookup(*, entry: str, lead: str, request_id: str, lead_ttl_ms: int) -> KeysAndArgs:
    """cache_lookup.lua."""
    return [entry, lead], [request_id, lead_ttl_ms]


def lease_hold(*, lease: str, token: str, ttl_ms: int) -> KeysAndArgs:
    """lease_hold.lua."""
    return [lease], [token, ttl_ms]


def lease_release(*, lease: str, token: str) -> KeysAndArgs:
    """lease_release.lua (a worker lease, or a response cache lead)."""
    return [lease], [token]
