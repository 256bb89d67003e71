"""The web console: static files under /ui, served by the API itself.

Plain HTML, CSS and ES modules written for this project (api/ui/), no build step and nothing
fetched from elsewhere at run time; the Content-Security-Policy below enforces that in the
browser. The pages are public: every /v1 call the console makes carries the user's API key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

from api.route_policy import PUBLIC, access

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

# Same origin only: no CDN, font or script from elsewhere can load, and document text that
# reaches the page cannot run as script.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate each load so an upgraded server never runs a stale console.
    "Cache-Control": "no-cache",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

router = APIRouter(tags=["web console"], include_in_schema=False)


def _file(path: Path) -> FileResponse:
    return FileResponse(path, media_type=_TYPES.get(path.suffix), headers=_HEADERS)


@router.get("/", openapi_extra=access(PUBLIC))
def root() -> RedirectResponse:
    """The server's address opens the console."""
    return RedirectResponse("ui/", status_code=307)


@router.get("/ui", openapi_extra=access(PUBLIC))
def ui_root() -> RedirectResponse:
    # The page loads its assets by relative URL, which needs the trailing slash; a relative
    # Location keeps working behind a proxy that serves the API under a path prefix.
    return RedirectResponse("ui/", status_code=307)


@router.get("/ui/{asset:path}", openapi_extra=access(PUBLIC))
def ui_asset(asset: str) -> FileResponse:
    if asset in ("", "index.html"):
        return _file(UI_DIR / "index.html")
    path = (UI_DIR / asset).resolve()
    if not path.is_relative_to(UI_DIR) or not path.is_file() or path.suffix not in _TYPES:
        raise HTTPException(status_code=404, detail="not found")
    return _file(path)
