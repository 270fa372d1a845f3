"""The REST client the commands share: base URL and token, and errors as human messages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx


class CliError(Exception):
    """A failure to report in one line, without a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class GatewayClient:
    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        if not token:
            raise CliError("no token: pass --token or set GATEWAY_TOKEN (a JWT for the gateway)")
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The `data` of a successful answer; CliError with the gateway's message otherwise."""
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise CliError(f"the gateway at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the gateway at {self.url}: {exc or type(exc).__name__}") from None
        return self._data(resp)

    def stream_to(self, path: str, out: Any) -> int:
        """Stream a download into a binary file; the bytes written."""
        written = 0
        try:
            with self.http.stream("GET", path) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._data(resp)
                for chunk in resp.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
        except httpx.HTTPError as exc:
            raise CliError(f"download from {self.url} broke off: {exc or type(exc).__name__}") from None
        return written

    def _data(self, resp: httpx.Response) -> Any:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400:
            raise CliError(describe_error(resp.status_code, body))
        if isinstance(body, dict) and "data" in body:
            return body["data"]
        return body


def describe_error(status: int, body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"the gateway answered HTTP {status}"
    message = f"{error.get('message') or error.get('type')} (HTTP {status}, {error.get('type')})"
    lines = error.get("errors")
    if isinstance(lines, list) and len(lines) > 1:
        message += "".join(f"\n  {e.get('message')}" for e in lines if isinstance(e, dict))
    return message


def read_chunks(path: str, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk
