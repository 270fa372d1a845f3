"""`gateway batch ...`: submit a batch, follow it with a progress bar, fetch its results."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm

from cli.client import CliError, GatewayClient, read_chunks

BATCHES = "/api/v1/llm/batches"
TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
POLL_S = 1.0


def submit(client: GatewayClient, path: str, *, window: str | None, metadata: str | None) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise CliError(f"no such file: {path}")
    is_jsonl = not path.endswith(".json")
    params = {k: v for k, v in (("completionWindow", window), ("metadata", metadata)) if v}
    data: dict[str, Any] = client.request(
        "POST",
        BATCHES,
        params=params,
        content=read_chunks(path),
        headers={"Content-Type": "application/jsonl" if is_jsonl else "application/json"},
    )
    return data


def status(client: GatewayClient, batch_id: str, wait: float = 0) -> dict[str, Any]:
    data: dict[str, Any] = client.request("GET", f"{BATCHES}/{batch_id}", params={"wait": wait} if wait else None)
    return data


def cancel(client: GatewayClient, batch_id: str) -> dict[str, Any]:
    data: dict[str, Any] = client.request("POST", f"{BATCHES}/{batch_id}/cancel")
    return data


def download(client: GatewayClient, batch_id: str, output: str) -> int:
    """Write the results to `output` (via a temporary file, so a broken download leaves no half file)."""
    partial = f"{output}.part"
    try:
        with open(partial, "wb") as out:
            client.stream_to(f"{BATCHES}/{batch_id}/results", out)
        os.replace(partial, output)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    with open(output, "rb") as f:
        return sum(1 for _ in f)


def follow(client: GatewayClient, batch_id: str, *, quiet: bool = False) -> dict[str, Any]:
    """Show progress until the batch ends: done, failed, rate, ETA and cost. Returns the last status."""
    data = status(client, batch_id)
    counts = data["requestCounts"]
    bar = tqdm(
        total=counts["total"],
        unit="req",
        desc=batch_id[:14],
        dynamic_ncols=True,
        file=sys.stderr,
        disable=quiet,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
    )
    try:
        with bar:
            while True:
                counts = data["requestCounts"]
                done = counts["completed"] + counts["failed"]
                bar.update(done - bar.n)
                bar.set_postfix_str(
                    f"failed={counts['failed']} cost=${data['cost']['totalCost']:.4f} {data['status']}", refresh=True
                )
                if data["status"] in TERMINAL:
                    return data
                data = status(client, batch_id, wait=POLL_S)
    except KeyboardInterrupt:
        message = f"stopped following; the batch goes on. Resume with: gateway batch follow {batch_id}"
        raise CliError(message, 130) from None


def summary(data: dict[str, Any]) -> str:
    c = data["requestCounts"]
    return (
        f"batch {data['id']} {data['status']}: {c['completed']} completed, {c['failed']} failed of {c['total']},"
        f" cost ${data['cost']['totalCost']:.6f}"
    )
