"""Helpers shared by the provider adapters: header lookup, retry hints, error bodies, transport errors."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from shared.errors import ErrorType, GatewayError

_KEY_RE = re.compile(r"sk-[A-Za-z0-9_*\-]{6,}")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_MAX_MESSAGE = 2000


def scrub(text: str) -> str:
    """Replace anything that looks like an API key (`sk-...`, `sk-ant-...`, `sk-proj-...`) by `sk-***`."""
    return _KEY_RE.sub("sk-***", text)


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive header lookup that works on plain dicts as well as httpx.Headers."""
    if not headers:
        return None
    value = headers.get(name)
    if value is not None:
        return value
    lname = name.lower()
    for key, val in headers.items():
        if key.lower() == lname:
            return val
    return None


def safe_header_value(value: str | None, limit: int = 256) -> str | None:
    """Printable ASCII only (httpx and the providers refuse anything else); None when nothing is left."""
    if not value:
        return None
    cleaned = "".join(ch for ch in value if 32 <= ord(ch) < 127).strip()[:limit]
    return cleaned or None


def parse_duration(value: str | None) -> float | None:
    """Seconds from `1s`, `6m0s`, `20ms`, `1h2m3.5s` or a bare number (OpenAI's x-ratelimit-reset-*)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_RE.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After`: seconds (possibly fractional) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_after_from(headers: Mapping[str, str] | None) -> float | None:
    """The standard hints: `retry-after-ms` (more precise) then `retry-after`."""
    ms = header(headers, "retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    return parse_retry_after(header(headers, "retry-after"))


def error_fields(body: Any) -> dict[str, str | None]:
    """Pull message/type/code/param out of `{"error": {...}}`-shaped bodies; tolerant of anything else."""
    out: dict[str, str | None] = {
        "message": None,
        "type": None,
        "code": None,
        "param": None,
    }
    if not isinstance(body, dict):
        return out
    err = body.get("error")
    if isinstance(err, dict):
        src: dict[str, Any] = err
    elif isinstance(err, str):
        src = {"message": err, "type": body.get("type")}
    else:
        src = body
    for key in out:
        val = src.get(key)
        if val is not None and not isinstance(val, (dict, list)):
            out[key] = str(val)
    if out["message"] is None and isinstance(body.get("detail"), str):
        out["message"] = body["detail"]
    return out


def clean_message(message: str | None, fallback: str) -> str:
    text = (message or "").strip() or fallback
    return scrub(text)[:_MAX_MESSAGE]


def as_int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float):
        return max(0, int(value))
    return 0


def malformed(provider: str, what: str) -> GatewayError:
    """A 2xx answer we cannot read: internal, but worth another try."""
    return GatewayError(
        ErrorType.INTERNAL,
        f"Malformed {provider} response: {what}",
        retryable=True,
        provider=provider,
    )


def map_transport_error(exc: BaseException, provider: str | None = None) -> GatewayError:
    """Map an exception raised while talking to a provider (no HTTP answer) onto the taxonomy."""
    name = provider or "provider"
    detail = scrub(str(exc))[:500] or type(exc).__name__
    if isinstance(exc, GatewayError):
        if exc.provider is None:
            exc.provider = provider
        return exc
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return GatewayError(
            ErrorType.TIMEOUT,
            f"Timed out talking to {name} ({type(exc).__name__}): {detail}",
            retryable=True,
            provider=provider,
        )
    if isinstance(exc, httpx.UnsupportedProtocol):
        return GatewayError(
            ErrorType.INTERNAL,
            f"Bad {name} base URL ({type(exc).__name__}): {detail}",
            retryable=False,
            provider=provider,
        )
    if isinstance(exc, (httpx.TransportError, httpx.DecodingError, ConnectionError)):
        return GatewayError(
            ErrorType.SERVICE_UNAVAILABLE,
            f"Could not reach {name} ({type(exc).__name__}): {detail}",
            retryable=True,
            provider=provider,
        )
    if isinstance(exc, json.JSONDecodeError):
        return GatewayError(
            ErrorType.INTERNAL,
            f"Malformed {name} response: body is not JSON ({detail})",
            retryable=True,
            provider=provider,
        )
    return GatewayError(
        ErrorType.INTERNAL,
        f"Unexpected error calling {name} ({type(exc).__name__}): {detail}",
        retryable=False,
        provider=provider,
    )
