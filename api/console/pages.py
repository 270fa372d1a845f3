"""`GET /console`: the operators' web console, plain HTML, CSS and JavaScript served by the API.

The page holds no data of its own: once the viewer gives it a token (kept in the tab's session
storage, sent as a bearer header, never in a URL or a cookie), it reads the documented JSON routes
(`/api/v1/llm/console/*`, `/health`, `/alerts`, the batch routes, the admin actions) like any other
client, so the server's own checks decide what a token sees. The chart library (uPlot, MIT, from
the npm registry) is vendored under static/vendor/ with its licence: the page needs no network
beyond the gateway. Every answer carries a Content-Security-Policy of `default-src 'self'` (no inline
script or style, no other origin) and headers that keep the page out of frames and caches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from shared.errors import ErrorType, GatewayError

STATIC: Final = Path(__file__).parent / "static"
MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
# The files the console serves, listed once at import: a request names one of them or gets a 404,
# so no path (`..`, a symlink, an encoded slash) can reach outside the folder.
FILES: Final = {
    p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file() and p.suffix in MEDIA_TYPES
}
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

router = APIRouter(include_in_schema=False)


def _file(name: str, cache: str) -> Response:
    path = FILES.get(name)
    if path is None:
        raise GatewayError(ErrorType.NOT_FOUND, "no such console file")
    headers = {**SECURITY_HEADERS, "Cache-Control": cache}
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers)


@router.get("/console")
async def console_page() -> Response:
    return _file("index.html", "no-store")


@router.get("/console/static/{name:path}")
async def console_static(name: str) -> Response:
    # the page names its files without versions: revalidate so a new gateway serves new ones
    return _file(name, "no-cache")
