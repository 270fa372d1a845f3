"""OpenAI's embeddings endpoint (`POST /v1/embeddings`): validation as OpenAI words it, and vectors that
are deterministic (the same text, the same vector), unit length, as floats or base64 float32."""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from typing import Any

from simulator.asgi import Request, Response
from simulator.openai_api import error, request_headers
from simulator.state import ProviderState
from simulator.tokens import count_tokens

# model -> (default dimensions, whether `dimensions` may shorten it)
MODELS = {"text-embedding-3-small": (1536, True), "text-embedding-3-large": (3072, True)}
MODELS["text-embedding-ada-002"] = (1536, False)


def vector(text: str, dimensions: int) -> list[float]:
    """A unit vector drawn from the text's hash."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def embeddings(req: Request, ps: ProviderState, rng: random.Random) -> Response:
    body = req.json if req.json_ok else None
    if not isinstance(body, dict):
        return error(400, "We could not parse the JSON body of your request.")
    model = body.get("model")
    if model not in MODELS:
        return error(
            404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
        )
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) and t for t in inputs):
        return error(
            400, "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
        )
    size, shortens = MODELS[model]
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if not shortens:
            return error(400, "This model does not support specifying dimensions.", param="dimensions")
        if not isinstance(dimensions, int) or not 1 <= dimensions <= size:
            return error(
                400, f"Invalid value for 'dimensions' = {dimensions}. Must be between 1 and {size}.", param="dimensions"
            )
        size = dimensions
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return error(400, "Invalid value for 'encoding_format': expected 'float' or 'base64'.", param="encoding_format")
    data: list[dict[str, Any]] = []
    for i, text in enumerate(inputs):
        values = vector(text, size)
        embedded: Any = values if encoding == "float" else base64.b64encode(struct.pack(f"<{size}f", *values)).decode()
        data.append({"object": "embedding", "index": i, "embedding": embedded})
    tokens = sum(count_tokens(t) for t in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return Response(200, {"object": "list", "data": data, "model": model, "usage": usage}, request_headers(rng))
