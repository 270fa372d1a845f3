"""A queue job's bytes: arq's layout, its one argument the payload as `dataclasses.asdict` has it."""

from __future__ import annotations

from dataclasses import asdict

from shared.queue import JOB_FUNCTION, decode_job, encode_job
from shared.schemas import JobPayload, ProviderCall


def test_a_job_carries_the_payload_as_asdict_and_reads_back_whole() -> None:
    call = ProviderCall(
        model="gpt-4",
        messages=[{"role": "user", "content": "h\u00e9llo \u2028 \U0001f600"}],
        max_tokens=5,
        temperature=0.7,
        stop=["x"],
        request_id="r",
    )
    payload = JobPayload(
        request_id="r", provider="openai", call=call, attempts=[{"provider": "openai"}], tenant="t", cache_key="k"
    )
    job = decode_job(encode_job(payload, 123))
    assert job == {"t": None, "f": JOB_FUNCTION, "a": [asdict(payload)], "k": {}, "et": 123}
    assert JobPayload.from_json_dict(job["a"][0]) == payload
