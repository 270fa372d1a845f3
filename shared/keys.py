"""Every Redis key and channel name is built here, and nowhere else.

Keys that a Lua script touches together share a hash tag (`{...}`) so the scripts run on
Redis Cluster. arq's own keys (`arq:job:*`, `arq:in-progress:*`) come from arq's constants.
"""

from __future__ import annotations

from collections.abc import Callable

from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix

PREFIX = "llm"

# Score offsets that put interactive work ahead of bulk work in one arq queue: arq starts the
# lowest score first, and every score here is in the past, so nothing is deferred.
PRIORITY_OFFSET_MS = {"sync": 2 * 10**11, "async": 10**11, "batch": 0}


def queue(provider: str) -> str:
    """The arq queue (a sorted set) served by one provider's worker pool."""
    return f"{PREFIX}:queue:{provider}"


def wake_channel(provider: str) -> str:
    """Wakes every worker of a provider (batch feeds, and an enqueue that finds no worker to wake)."""
    return f"{PREFIX}:wake:{provider}"


def worker_wake_channel(provider: str, worker_id: str) -> str:
    """Wakes one worker: an enqueue wakes the provider's workers one at a time, in turn."""
    return f"{PREFIX}:wake:{provider}:{worker_id}"


def wakers(provider: str) -> str:
    """A list of the provider's workers' own wake channels, rotated by every enqueue."""
    return f"{PREFIX}:wakers:{provider}"


def handed(provider: str, worker_id: str) -> str:
    """A sorted set of the jobs handed to one worker and not yet taken by it (job id -> hand-over ms):
    one left untaken past `WORKER_HANDOVER_TAKE_S` goes back to the queue (shared/queue.py)."""
    return f"{PREFIX}:handed:{provider}:{worker_id}"


def worker_room(provider: str) -> str:
    """A hash of the provider's live workers: worker id -> free job slots. An enqueue hands a job
    straight to the worker with the most (shared/queue.py); the worker registers on subscribing."""
    return f"{PREFIX}:room:{provider}"


def reply_channel(instance: str) -> str:
    """One per API process (or programmatic client): completions of the requests it waits on."""
    return f"{PREFIX}:done:{instance}"


def request(request_id: str) -> str:
    """The request record (a hash): status, provider, current job, result."""
    return f"{PREFIX}:req:{{{request_id}}}"


def request_key_parts() -> tuple[str, str]:
    """`request(id)` as prefix and suffix, for Lua scripts that derive a record from a job id."""
    prefix, _, suffix = request("\0").partition("\0")
    return prefix, suffix


def watchers(request_id: str) -> str:
    """Reply channels of long-polls waiting on a request from other processes."""
    return f"{PREFIX}:req:{{{request_id}}}:w"


def stream(request_id: str) -> str:
    """A streamed request's deltas (a Redis Stream; entry ids `<seq>-0`, seq from 1), read by the API
    processes that follow it and by clients resuming it."""
    return f"{PREFIX}:req:{{{request_id}}}:s"


def streams_open() -> str:
    """Client streams open per API process (a hash: process instance -> `<count>:<ms written>`)."""
    return f"{PREFIX}:streams:open"


def job_id(request_id: str, hop: int) -> str:
    """The arq job id of a request's hop (0 = first provider, 1 = after failover, ...)."""
    return f"{request_id}.{hop}"


def request_id_of_job(arq_job_id: str) -> str:
    return arq_job_id.rsplit(".", 1)[0]


ARQ_ABORTS = abort_jobs_ss  # arq's sorted set of jobs asked to abort (the gateway never adds any)


def arq_job(arq_job_id: str) -> str:
    return job_key_prefix + arq_job_id


def arq_in_progress(arq_job_id: str) -> str:
    return in_progress_key_prefix + arq_job_id


def arq_retry(arq_job_id: str) -> str:
    return retry_key_prefix + arq_job_id


def worker_heartbeat(provider: str) -> str:
    """A sorted set of live worker ids scored by their last heartbeat (ms)."""
    return f"{PREFIX}:workers:{provider}"


def batch_worker_heartbeat(provider: str) -> str:
    """The live workers that take batch jobs, as `worker_heartbeat`: the batch feed's bound counts them."""
    return f"{PREFIX}:batch-workers:{provider}"


# Batches: every key of one batch shares the batch's hash tag; the feed keys of one provider share
# `{feed:<provider>}`. Scripts that move items from a batch into an arq queue also touch the queue
# and the request records, like the queue scripts above.
def batch(batch_id: str) -> str:
    """A batch's meta hash: status, counts, cost, timestamps."""
    return f"{PREFIX}:batch:{{{batch_id}}}"


def batch_pending(batch_id: str, provider: str) -> str:
    """Items of a batch not yet fed to a provider's arq queue (a list of encoded jobs)."""
    return f"{PREFIX}:batch:{{{batch_id}}}:pending:{provider}"


def batch_results(batch_id: str) -> str:
    """The result lines of a batch, one per request (a list of JSON lines)."""
    return f"{PREFIX}:batch:{{{batch_id}}}:results"


def batch_fed(batch_id: str) -> str:
    """Request ids of a batch fed to an arq queue and not ended yet (a set)."""
    return f"{PREFIX}:batch:{{{batch_id}}}:fed"


def batch_watchers(batch_id: str) -> str:
    """Reply channels of long-polls waiting for a batch to end."""
    return f"{PREFIX}:batch:{{{batch_id}}}:w"


def batches_of_tenant(tenant: str) -> str:
    """A tenant's batches by creation time (a sorted set), for listing."""
    return f"{PREFIX}:batches:tenant:{tenant}"


def batch_deadlines() -> str:
    """Active batches scored by the end of their completion window (ms)."""
    return f"{PREFIX}:{{batches}}:deadlines"


def batches_ending() -> str:
    """Batches being cancelled or expired whose unstarted items are still being ended (a set)."""
    return f"{PREFIX}:{{batches}}:ending"


def feed_tenants(provider: str) -> str:
    """The round-robin ring of tenants with batch items waiting for a provider (a list)."""
    return f"{PREFIX}:{{feed:{provider}}}:tenants"


def feed_tenant_batches(provider: str, tenant: str) -> str:
    """The round-robin ring of one tenant's batches with items waiting for a provider (a list)."""
    return f"{PREFIX}:{{feed:{provider}}}:tenant:{tenant}"


def feed_inflight(provider: str) -> str:
    """Batch jobs fed to a provider's queue and not ended yet (a counter): the feeder's bound."""
    return f"{PREFIX}:{{feed:{provider}}}:inflight"


def feed_channel(provider: str) -> str:
    """Published when batch items become available (or end early) so feeders run at once."""
    return f"{PREFIX}:feed:{provider}"


def lua_key(builder: Callable[..., str], *lua_vars: str) -> str:
    """A Lua expression that builds `builder(*values)` from Lua variables, e.g.
    `lua_key(batch_fed, "bid")` -> `'llm:batch:{' .. bid .. '}:fed'`: scripts that derive keys from
    data still take their names from this module."""
    marks = [f"\x00{i}\x00" for i in range(len(lua_vars))]
    template = builder(*marks)
    parts: list[str] = []
    for i, var in enumerate(lua_vars):
        before, _, template = template.partition(marks[i])
        if before:
            parts.append(lua_literal(before))
        parts.append(var)
    if template:
        parts.append(lua_literal(template))
    return "(" + " .. ".join(parts) + ")"


def lua_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# Metrics keys share one hash tag: a single script increments a request's counters in all of them.
def metrics_bucket(resolution: str, bucket: int) -> str:
    """Request counters of one time bucket (a hash that expires): `1m` buckets serve the last hour,
    `1h` buckets the last day and week. `bucket` is the bucket's start in epoch minutes or hours."""
    return f"{PREFIX}:{{metrics}}:{resolution}:{bucket}"


def metrics_models() -> str:
    """Models outside the known catalogue admitted to metric labels of their own (a hash, bounded
    per provider by METRICS_MAX_MODELS; see shared.metrics)."""
    return f"{PREFIX}:{{metrics}}:models"


def metrics_tenant_bucket(resolution: str, bucket: int, tenant: str) -> str:
    """One tenant's share of a time bucket's counters (a hash that expires with the bucket): what the
    tenant's own `/api/v1/llm/metrics` view sums. The tenant is the JWT subject."""
    return f"{metrics_bucket(resolution, bucket)}:t:{tenant}"


def metrics_totals() -> str:
    """Cumulative request counters that never expire (a hash): what Prometheus scrapes."""
    return f"{PREFIX}:{{metrics}}:total"


def request_logs() -> str:
    """The PII-masked request, response and error logs (a stream; entry ids are ms timestamps)."""
    return f"{PREFIX}:logs"


def request_logs_written() -> str:
    """How many log entries the log store's writer took out of the stream (a counter): with the stream's
    own count of entries added, it tells how many the stream's cap dropped unwritten. The hash tag is the
    stream's whole name, so the writer's trim and this count move in one transaction on Redis Cluster."""
    return f"{{{request_logs()}}}:written"


def log_writer_lease() -> str:
    """Holds the token of the one worker process keeping the logs (draining or trimming the stream)."""
    return f"{PREFIX}:logs:writer"


def alerts_active() -> str:
    """Alerts in progress (a hash: alert id -> JSON). HSETNX raises and HDEL clears, atomically."""
    return f"{PREFIX}:{{alerts}}:active"


def alerts_history() -> str:
    """Every alert raised and cleared (a capped stream)."""
    return f"{PREFIX}:{{alerts}}:history"


def provider_key_cooldowns(provider: str) -> str:
    """Provider keys set aside after the provider refused them (a sorted set: key id -> until, ms).
    Members are short hashes of the keys, never the keys."""
    return f"{PREFIX}:keycool:{provider}"


# Breaker keys of one provider share a hash tag: one script reads and moves both.
def breaker(provider: str) -> str:
    """A provider's circuit breaker (a hash): state, consecutive failures, open-until, probe slots."""
    return f"{PREFIX}:{{breaker:{provider}}}:state"


def breaker_window(provider: str) -> str:
    """The breaker's rolling window (a hash of `<bucket>:ok` / `<bucket>:err` counters)."""
    return f"{PREFIX}:{{breaker:{provider}}}:window"


def health_bucket(provider: str, bucket: int) -> str:
    """Passive figures of real traffic in one time bucket (a hash that expires)."""
    return f"{PREFIX}:health:{provider}:b:{bucket}"


def health_probe(provider: str) -> str:
    """The health monitor's last verdict on a provider (a hash): probe result, status, score."""
    return f"{PREFIX}:health:{provider}:probe"


def health_events() -> str:
    """Published whenever a breaker moves or the monitor changes a provider's status."""
    return f"{PREFIX}:health:events"


def monitor_lease() -> str:
    """Holds the token of the one process running the health monitor (expires unless renewed)."""
    return f"{PREFIX}:monitor:lease"


def monitor_runs() -> str:
    """Health-check cycles run, per monitor holder (a hash): who has been monitoring."""
    return f"{PREFIX}:monitor:runs"


# Rate-limit buckets share one hash tag: one script takes from every bucket a request touches.
def rate_bucket(scope: str, unit: str) -> str:
    """A token bucket (a hash: level `v`, last update `t` in ms, `w:<gate>` waiters that worker gates
    reported). scope: `global`, `provider:<name>` or `tenant:<subject>`; unit: `req` or `tok`."""
    return f"{PREFIX}:{{rl}}:{scope}:{unit}"


def cache_entry(digest: str) -> str:
    """A cached answer, by the digest of the normalised request."""
    return f"{PREFIX}:cache:{{{digest}}}"


def cache_lead(digest: str) -> str:
    """Which request is computing the answer for a digest (identical requests wait on it)."""
    return f"{PREFIX}:cache:{{{digest}}}:lead"


CACHE_PATTERN = f"{PREFIX}:cache:*"
