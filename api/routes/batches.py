"""Batches: submit many requests at once, follow their progress, download one result line each.

`POST /api/v1/llm/batches` takes an OpenAI Batch-format JSONL upload or a JSON array of SPEC
request bodies with a `customId`. The body is read as a stream and staged in Redis a chunk at a
time; a batch with any invalid line is refused whole (400, naming the lines) and nothing of it is
ever fed to a queue. Results stream as JSONL, one line per request, in the order they ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import Principal, current_principal
from api.batch_input import BatchBuilder, JsonArrayReader, JsonlReader, UploadError
from api.body_limit import BodyLimitMiddleware
from api.errors import error_response
from api.openai_shapes import chat_completion, embeddings_list, error_body, error_status
from api.openapi_docs import GATEWAY_ERRORS, BatchDoc, batch_upload_schema, ok, request_body
from api.outcomes import json_response
from api.state import AppState, get_state
from shared.batches import TERMINAL, BatchStore, batch_view, new_batch_id, parse_window
from shared.errors import ErrorType, GatewayError
from shared.queue import now_ms

PREFIX = "/api/v1/llm/batches"
router = APIRouter(prefix=PREFIX, tags=["batches"], responses=GATEWAY_ERRORS)
BatchId = Path(pattern=r"^batch_[0-9a-f]{32}$", description="the id returned on submission")
STAGE_CHUNK = 500
# Uvicorn hands the route all the body received so far at once: parsing it in one go (~35 us a
# line) would hold this process's event loop, and every interactive request it serves, for as long
# as the client is ahead. An upload gives the loop back every half millisecond of parsing instead: a
# synchronous request waits on the loop at each of its steps (its body, its enqueue, its answer).
PARSE_SLICE_S = 0.0005
# The query's `metadata` is a JSON object: documented as such (a parameter with `content`), read as text.
METADATA_PARAM = {
    "name": "metadata",
    "in": "query",
    "required": False,
    "description": "a JSON object kept with the batch (at most 4 KB)",
    "content": {"application/json": {"schema": {"type": "object"}}},
}
WINDOW_DOC = {"pattern": r"^(\s*[0-9]+(\.[0-9]+)?\s*[smhd]?\s*)?$"}


async def get_store(request: Request) -> BatchStore:
    """The process's BatchStore (made in the app's lifespan; scripts registered once)."""
    store: BatchStore = request.app.state.batches
    return store


def results_url(batch_id: str) -> str:
    return f"{PREFIX}/{batch_id}/results"


def _ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_response(orjson.dumps({"success": True, "data": data}), status=status, headers=headers)


@router.post(
    "",
    status_code=201,
    summary="Submit a batch (OpenAI Batch JSONL, or a JSON array with customId)",
    responses=ok(BatchDoc, 201),
    openapi_extra={
        **request_body(
            {"application/x-ndjson": batch_upload_schema(), "application/json": batch_upload_schema()},
            "JSON Lines (one request per line) or a JSON array of requests; one format throughout",
        ),
        "parameters": [METADATA_PARAM],
    },
)
async def create_batch(
    request: Request,
    completion_window: str = Query(
        "", alias="completionWindow", description="e.g. 24h (the default), 90m", json_schema_extra=WINDOW_DOC
    ),
    metadata: str | None = Query(None, include_in_schema=False),
    state: AppState = Depends(get_state),
    store: BatchStore = Depends(get_store),
    principal: Principal = Depends(current_principal),
) -> Response:
    settings = state.settings
    window_s = _window(completion_window or f"{settings.batch_default_window_s}s", settings.batch_max_window_s)
    meta_json = _metadata(metadata)
    batch_id = new_batch_id()
    submitted = now_ms()
    reader: JsonlReader | JsonArrayReader | None = None
    builder: BatchBuilder | None = None
    await store.create(
        batch_id,
        principal.subject,
        {"created_at": submitted, "window_s": window_s, **({"metadata": meta_json} if meta_json else {})},
    )
    try:
        async for chunk in request.stream():
            if reader is None:
                if not chunk.strip():
                    continue
                is_array = chunk.lstrip()[:1] == b"["
                reader = JsonArrayReader(settings.max_body_bytes) if is_array else JsonlReader(settings.max_body_bytes)
                unit = "item" if is_array else "line"
                builder = BatchBuilder(settings, batch_id, principal.subject, submitted, unit)
            assert builder is not None
            slice_end = time.perf_counter() + PARSE_SLICE_S
            for number, raw in reader.feed(chunk):
                builder.add(number, raw)
                if time.perf_counter() >= slice_end:
                    await asyncio.sleep(0)  # let requests waiting on this loop run
                    slice_end = time.perf_counter() + PARSE_SLICE_S
            if builder.full:
                break
            if builder.chunk_ready(STAGE_CHUNK) and not builder.errors:
                await store.stage(batch_id, builder.take_chunk())
        if reader is None or builder is None:
            raise UploadError("the upload is empty: a batch needs at least one request")
        if not builder.full:
            for number, raw in reader.close():
                builder.add(number, raw)
        if builder.total == 0 and not builder.errors:  # `[]`: an array of no requests is empty too
            raise UploadError("the upload is empty: a batch needs at least one request")
    except UploadError as exc:
        await store.discard(batch_id)
        raise GatewayError(ErrorType.INVALID_REQUEST, str(exc), param="body") from None
    except BaseException:
        await store.discard(batch_id)
        raise
    if builder.errors:
        await store.discard(batch_id)
        first = builder.errors[0]
        more = f" (and {len(builder.errors) - 1} more)" if len(builder.errors) > 1 else ""
        err = GatewayError(ErrorType.INVALID_REQUEST, f"{first.message}{more}; nothing was enqueued", param="body")
        return error_response(err, extra={"line": first.line, "errors": [e.to_api() for e in builder.errors]})
    await store.stage(batch_id, builder.take_chunk())
    await store.activate(
        batch_id, principal.subject, builder.total, window_s, sorted(builder.providers), builder.format or "gateway"
    )
    view = batch_view(await store.meta(batch_id), results_url(batch_id))
    return _ok(view, status=201, headers={"Location": f"{PREFIX}/{batch_id}"})


def _window(text: str, max_s: float) -> float:
    try:
        seconds = parse_window(text)
    except ValueError as exc:
        raise GatewayError(ErrorType.INVALID_REQUEST, str(exc), param="completionWindow") from None
    if not 1 <= seconds <= max_s:
        raise GatewayError(
            ErrorType.INVALID_REQUEST,
            f"completionWindow must be between 1s and {max_s:g}s",
            param="completionWindow",
        )
    return seconds


def _metadata(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or len(text) > 4096:
        raise GatewayError(ErrorType.INVALID_REQUEST, "metadata must be a JSON object (at most 4 KB)", param="metadata")
    return orjson.dumps(data).decode()


async def _owned_meta(store: BatchStore, batch_id: str, principal: Principal) -> dict[str, str]:
    meta = await store.meta(batch_id)
    if not meta or meta.get("status") == "validating" or not principal.may_see(meta.get("tenant")):
        raise GatewayError(ErrorType.NOT_FOUND, f"no batch {batch_id}", param="batch_id")
    return meta


@router.get("", summary="Your batches, newest first", responses=ok(list[BatchDoc]))
async def list_batches(
    limit: int = Query(20, ge=1, le=100),
    store: BatchStore = Depends(get_store),
    principal: Principal = Depends(current_principal),
) -> Response:
    metas = await store.list_for(principal.subject, limit)
    return _ok([batch_view(m, results_url(m["id"])) for m in metas if "id" in m])


@router.get("/{batch_id}", summary="A batch's status, counts and cost so far", responses=ok(BatchDoc))
async def get_batch(
    batch_id: str = BatchId,
    wait: float = Query(0, ge=0, le=600, description="long-poll up to this many seconds for the batch to end"),
    state: AppState = Depends(get_state),
    store: BatchStore = Depends(get_store),
    principal: Principal = Depends(current_principal),
) -> Response:
    meta = await _owned_meta(store, batch_id, principal)
    if wait > 0 and meta.get("status") not in TERMINAL:
        state.waiter.expect(batch_id)
        status = await store.watch(batch_id, state.waiter.channel, int(wait) + 5)
        if status in TERMINAL or status is None:
            state.waiter.forget(batch_id)
        else:
            await state.waiter.wait(batch_id, wait)
        meta = await store.meta(batch_id)
    return _ok(batch_view(meta, results_url(batch_id)))


@router.post(
    "/{batch_id}/cancel", summary="Cancel a batch: unstarted requests end as cancelled", responses=ok(BatchDoc)
)
async def cancel_batch(
    batch_id: str = BatchId,
    store: BatchStore = Depends(get_store),
    principal: Principal = Depends(current_principal),
) -> Response:
    meta = await _owned_meta(store, batch_id, principal)
    if meta.get("status") in TERMINAL:
        raise GatewayError(
            ErrorType.CANCELLED,
            f"batch {batch_id} is {meta.get('status')} and can no longer be cancelled",
            retryable=False,
            status=409,
        )
    await store.drain_all(batch_id, "cancelled")
    return _ok(batch_view(await store.meta(batch_id), results_url(batch_id)))


@router.get(
    "/{batch_id}/results",
    summary="One JSONL line per ended request: custom_id and response or error",
    response_class=StreamingResponse,
    responses={200: {"description": "JSON Lines", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
)
async def batch_results(
    batch_id: str = BatchId,
    store: BatchStore = Depends(get_store),
    principal: Principal = Depends(current_principal),
) -> Response:
    meta = await _owned_meta(store, batch_id, principal)
    as_openai = meta.get("format") == "openai"

    async def lines() -> AsyncIterator[bytes]:
        async for chunk in store.result_lines(batch_id):
            if as_openai:
                yield b"".join(openai_line(line) + b"\n" for line in chunk)
            else:
                yield b"\n".join(chunk) + b"\n"

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={
            "Content-Disposition": f'attachment; filename="{batch_id}_results.jsonl"',
            "X-Batch-Status": meta.get("status", ""),
        },
    )


def openai_line(line: bytes) -> bytes:
    """A stored result line in OpenAI's Batch output format: the body as a chat.completion, a
    failed request as its error response, an expired or cancelled one as a batch error."""
    d = orjson.loads(line)
    rid = d["id"]
    out: dict[str, Any] = {"id": f"batch_req_{rid}", "custom_id": d["custom_id"], "response": None, "error": None}
    if d.get("response"):
        body = d["response"]["body"]
        rendered = embeddings_list(body) if "embeddings" in body else chat_completion(body)
        out["response"] = {"status_code": 200, "request_id": rid, "body": rendered}
        return orjson.dumps(out)
    err = d.get("error") or {}
    if err.get("type") == "expired":
        out["error"] = {"code": "batch_expired", "message": err.get("message")}
    elif err.get("type") == "cancelled_error":
        out["error"] = {"code": "batch_cancelled", "message": err.get("message") or "the batch was cancelled"}
    else:
        out["response"] = {"status_code": error_status(err), "request_id": rid, "body": error_body(err)}
    return orjson.dumps(out)


class UploadBodyLimit:
    """The API's body limit, with a larger one for batch uploads (streamed, never held whole)."""

    def __init__(self, app: ASGIApp, max_bytes: int, batch_max_bytes: int) -> None:
        self.default = BodyLimitMiddleware(app, max_bytes)
        self.uploads = BodyLimitMiddleware(app, batch_max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PREFIX and scope.get("method") == "POST":
            await self.uploads(scope, receive, send)
        else:
            await self.default(scope, receive, send)
