"""Every Redis key and channel name is built here, and nowhere else.

Keys that a Lua script touches together share a hash tag (`{...}`) so the scripts run on
Redis Cluster. arq's own keys (`arq:job:*`, `arq:in-progress:*`) come from arq's constants.
"""

from __future__ import annotations

from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix

PREFIX = "llm"

# Score offsets that put interactive work ahead of bulk work in one arq queue: arq starts the
# lowest score first, and every score here is in the past, so nothing is deferred.
PRIORITY_OFFSET_MS = {"sync": 2 * 10**11, "async": 10**11, "batch": 0}


def queue(provider: str) -> str:
    """The arq queue (a sorted set) served by one provider's worker pool."""
    return f"{PREFIX}:queue:{provider}"


def wake_channel(provider: str) -> str:
    """Published on every enqueue so idle workers pick up at once instead of polling."""
    return f"{PREFIX}:wake:{provider}"


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


def job_id(request_id: str, hop: int) -> str:
    """The arq job id of a request's hop (0 = first provider, 1 = after failover, ...)."""
    return f"{request_id}.{hop}"


def request_id_of_job(arq_job_id: str) -> str:
    return arq_job_id.rsplit(".", 1)[0]


def arq_job(arq_job_id: str) -> str:
    return job_key_prefix + arq_job_id


def arq_in_progress(arq_job_id: str) -> str:
    return in_progress_key_prefix + arq_job_id


def arq_retry(arq_job_id: str) -> str:
    return retry_key_prefix + arq_job_id


def worker_heartbeat(provider: str) -> str:
    """A sorted set of live worker ids scored by their last heartbeat (ms)."""
    return f"{PREFIX}:workers:{provider}"
