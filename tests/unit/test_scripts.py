"""The Lua scripts (shared/lua, loaded by shared/scripts.py): every file is loaded, every script compiles
on a real Redis, and every KEYS[n] / ARGV[n] a script reads is what its builder provides."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.resources import files

import pytest
from redis.asyncio import Redis

from shared import scripts

LUA = files("shared").joinpath("lua")

# one sample call per script, its variadic tails (fields, job ids, providers, tenants, buckets) empty
# and its optional keys given: the builder's output is then exactly as long as the highest index read
SAMPLES: dict[str, Callable[[], scripts.KeysAndArgs]] = {
    "queue_enqueue": lambda: _enqueue(),
    "queue_claim": lambda: scripts.Claim(
        room="room",
        wakers="wk",
        worker_channel_prefix="ch:",
        handed_prefix="h:",
        take_ms=6,
        in_progress_prefix="ip:",
        record_prefix="r:",
        record_suffix="",
        job_prefix="j:",
        retry_prefix="rt:",
    ).keys_and_args(queue="q", now_ms=1, limit=2, lease_ms=3, scan=4, worker="w", lowest="-inf", highest=5),
    "queue_slot_back": lambda: scripts.slot_back(room="room", worker="w", handed="h", job_id="j"),
    "queue_release": lambda: scripts.release(
        record="r",
        queue="q",
        arq_job="j",
        in_progress="ip",
        retry="rt",
        aborts="ab",
        room="room",
        handed="h",
        job_id="j.0",
        worker="w",
        back_at=5,
    ),
    "queue_renew": lambda: scripts.renew(
        queue="q",
        worker="w",
        lease_ms=6000,
        until_ms=7,
        in_progress_prefix="ip:",
        record_prefix="r:",
        record_suffix="",
        jobs=[],
    ),
    "queue_take": lambda: scripts.take(
        room="room",
        handed="h",
        worker="w",
        in_progress_prefix="ip:",
        record_prefix="r:",
        record_suffix="",
        max_jobs=4,
        running=1,
        rejoin=False,
        job_ids=[],
    ),
    "queue_finish": lambda: scripts.Finish(queue="q", room="room", record_ttl_s=2, handed_prefix="h:").keys_and_args(
        record="r",
        watchers="wt",
        arq_job="j",
        in_progress="ip",
        retry="rt",
        cache_entry="ce",
        cache_lead="cl",
        stored=b"s|{}",
        finished_ms=1,
        message=b"r|s|{}",
        status="succeeded",
        job_id="r.0",
        cache_ttl_s=3,
        worker="w",
    ),
    "queue_cancel": lambda: scripts.cancel(
        record="r",
        watchers="wt",
        stored=b"c|{}",
        finished_ms=1,
        record_ttl_s=2,
        message=b"r|c|{}",
        job_prefix="j:",
        tenant="",
    ),
    "queue_notify": lambda: scripts.notify(record="r", watchers="wt", message=b"r|f|{}"),
    "queue_watch": lambda: scripts.watch(watchers="wt", record="r", channel="ch", ttl_s=1, tenant=""),
    "batch_activate": lambda: scripts.batch_activate(
        meta="m",
        deadlines="d",
        tenant_batches="tb",
        batch_id="b",
        tenant="t",
        now_ms=1,
        expires_ms=2,
        total=3,
        ttl_s=4,
        format="openai",
        providers=[],
    ),
    "batch_feed": lambda: scripts.batch_feed(
        tenant_ring="tr",
        inflight="if",
        queue="q",
        cap=1,
        max_move=2,
        now_ms=3,
        job_ttl_ms=4,
        record_ttl_s=5,
        provider="openai",
        wake_channel="wc",
        min_move=1,
    ),
    "batch_drain": lambda: scripts.batch_drain(
        meta="m", batch_id="b", reason="cancelled", now_ms=1, chunk=2, ttl_s=3, error=b"{}", code="c", providers=[]
    ),
    "batch_watch": lambda: scripts.batch_watch(watchers="wt", meta="m", channel="ch", ttl_s=1),
    "breaker_acquire": lambda: scripts.breaker_acquire(
        breaker="b", now_ms=1, probes=2, probe_timeout_ms=3, channel="ch", provider="openai", cooldown_ms=4
    ),
    "breaker_record": lambda: scripts.breaker_record(
        breaker="b",
        window="w",
        now_ms=1,
        verdict="ok",
        probe_gen=0,
        channel="ch",
        provider="openai",
        cooldown_ms=2,
        failure_threshold=3,
        error_rate=0.5,
        min_requests=4,
        window_ms=5,
        buckets=6,
    ),
    "limits_draw": lambda: _draw(0),
    "metrics_record": lambda: scripts.metrics_record(
        minute="m",
        hour="h",
        totals="t",
        models="md",
        minute_ttl_s=1,
        hour_ttl_s=2,
        increments=b"[]",
        max_models=3,
        groups=b"[]",
    ),
    "cache_lookup": lambda: scripts.cache_lookup(entry="e", lead="l", request_id="r", lead_ttl_ms=1),
    "lease_hold": lambda: scripts.lease_hold(lease="l", token="t", ttl_ms=1),
    "lease_release": lambda: scripts.lease_release(lease="l", token="t"),
    "stream_relay": lambda: scripts.stream_relay(
        record="r",
        stream="s",
        watchers="wt",
        worker="w",
        first_seq=1,
        ttl_s=2,
        max_events=3,
        message_prefix=b"id|S|",
        deltas=[],
    ),
    "stream_follow": lambda: scripts.stream_follow(
        record="r", stream="s", watchers="wt", channel="ch", watch_ttl_s=1, tenant="t", after_seq=0, count=True
    ),
    "stream_leave": lambda: scripts.stream_leave(record="r"),
    "stream_abandon": lambda: scripts.stream_abandon(
        record="r", watchers="wt", request_id="id", stored=b"c|{}", finished_ms=1, record_ttl_s=2, job_prefix="j:"
    ),
}


def _enqueue(fields: list[str | int] | None = None) -> scripts.KeysAndArgs:
    return scripts.Enqueue(
        queue="q",
        wakers="wk",
        room="room",
        wake_channel="wc",
        worker_channel_prefix="ch:",
        handed_prefix="h:",
        job_ttl_ms=2,
        record_ttl_s=3,
        lease_ms=0,
        take_ms=5,
        in_progress_prefix="ip:",
        record_prefix="r:",
        record_suffix="",
    ).keys_and_args(
        record="r",
        arq_job="j",
        in_progress="ip",
        retry="rt",
        job_id="r.0",
        job=b"{}",
        score=1,
        requeue=False,
        now_ms=4,
        fields=fields or [],
    )


def _draw(buckets: int) -> scripts.KeysAndArgs:
    return scripts.draw(
        buckets=[f"b{i}" for i in range(buckets)],
        max_take_wait_ms="0.0",
        max_peek_wait_ms="1e300",
        gate="",
        holding=1,
        report_grace_ms=2000,
        per_bucket=["1.0", "10.0", "1.0", "t"] * buckets,
    )


def _code(source: str) -> str:
    """The Lua without its comments (headers name KEYS and ARGV too)."""
    return "\n".join(re.sub(r"--.*$", "", line) for line in source.splitlines())


def _max_index(code: str, *names: str) -> int:
    found = [int(m.group(1)) for name in names for m in re.finditer(rf"\b{name}\[(\d+)\]", code)]
    return max(found, default=0)


def test_every_lua_file_is_loaded() -> None:
    names = {p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua")}
    assert names == set(scripts.ALL), "a .lua file without its Script in shared/scripts.py, or the reverse"
    fragments = {p.name.removesuffix(".lua") for p in LUA.joinpath("lib").iterdir() if p.name.endswith(".lua")}
    used = {f for path in LUA.iterdir() if path.name.endswith(".lua") for f in _includes(path.read_text())}
    assert used == fragments, "a fragment in shared/lua/lib that no script includes"
    assert set(SAMPLES) | {"queue_admit_enqueue"} == set(scripts.ALL), "a script without a sample call here"


def _includes(text: str) -> set[str]:
    direct = set(re.findall(r"^--! include (\w+)", text, re.MULTILINE))
    nested = {f for d in direct for f in _includes(LUA.joinpath("lib", f"{d}.lua").read_text())}
    return direct | nested


@pytest.mark.parametrize("name", sorted(scripts.ALL))
def test_composed(name: str) -> None:
    script = scripts.ALL[name]
    assert "--! include" not in script.source and "${" not in script.source
    assert script.source.startswith(f"-- {name}:"), "each file opens with a header naming its KEYS and ARGV"
    assert "KEYS:" in script.source and "ARGV:" in script.source


async def test_every_script_compiles_on_redis(r: Redis) -> None:
    for script in scripts.ALL.values():
        assert await r.script_load(script.source) == script.sha, script.name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_builder_provides_what_the_lua_reads(name: str) -> None:
    code = _code(scripts.ALL[name].source)
    script_keys, args = SAMPLES[name]()
    handed_on = "(KEYS, ARGV)" in code  # `return enqueue(KEYS, ARGV)`: the function reads keys[n], argv[n]
    key_names, arg_names = ("KEYS", "keys") if handed_on else ("KEYS",), ("ARGV", "argv") if handed_on else ("ARGV",)
    assert len(script_keys) == _max_index(code, *key_names), "KEYS"
    assert len(args) == _max_index(code, *arg_names), "ARGV"


def test_admit_enqueue_lays_out_two_draws_then_an_enqueue() -> None:
    """queue_admit_enqueue.lua slices KEYS and ARGV by the two draws' sizes (ARGV[1], ARGV[2])."""
    code = _code(scripts.QUEUE_ADMIT_ENQUEUE.source)
    assert "local a, c = 5 + 5 + 4 * n, 5 + 10 + 4 * (n + m)" in code
    draw_args = _max_index(_code(scripts.LIMITS_DRAW.source), "argv")
    enqueue_keys = _max_index(_code(scripts.QUEUE_ENQUEUE.source), "keys")
    n, m = 2, 4
    enqueue = _enqueue(["status", "queued"])
    script_keys, args = scripts.admit_enqueue(
        admission=_draw(n), call=_draw(m), enqueue=enqueue, max_waiting=7, waiting_below=9
    )
    assert args[:4] == [n, m, 7, 9]
    assert len(script_keys) == n + m + enqueue_keys
    a, c = 5 + 5 + 4 * n, 5 + 10 + 4 * (n + m)  # 1-based starts of the call draw's and enqueue's argv
    assert args[a - 1 : c - 1] == _draw(m)[1]
    assert args[c - 1 :] == enqueue[1]
    assert len(_draw(n)[1]) == draw_args + 4 * n


async def test_a_lost_script_runs_again_by_its_composed_source(r: Redis) -> None:
    """Round trips send the composed script by SHA, and its text when Redis lost it (NOSCRIPT)."""
    from plumbing.round_trip import RoundTrip

    script = r.register_script(scripts.LEASE_HOLD.source)
    assert script.sha == scripts.LEASE_HOLD.sha
    await r.script_flush()
    trip = RoundTrip(r)
    trip.script(script, *scripts.lease_hold(lease="l", token="t", ttl_ms=10_000))
    assert await trip.send() == [1]
    assert await r.get("l") == b"t"
