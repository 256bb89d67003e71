"""The API's documentation pages, Swagger UI (/docs) and ReDoc (/redoc), with nothing fetched
from another host: their scripts and styles come from the fastapi-offline package (a dependency
of the server), served under /docs/assets. FastAPI's own pages load them from a CDN, so the app
turns those off (api/app.py) and these take their place.

The Content-Security-Policy keeps the pages on this origin: the inline script that starts each
viewer is allowed by its hash, and inline styles because both viewers set them at run time. It
also stops the one thing ReDoc would fetch from elsewhere, the Redocly logo in its sidebar (ReDoc
then leaves the image out).
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api.route_policy import PUBLIC, access

DOCS = "/docs"
REDOC = "/redoc"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
ASSETS = "/docs/assets"
_ASSET_FILES = StaticFiles(packages=[("fastapi_offline", "static")])
# Swagger UI's default sends the whole schema to a public validator for a badge.
_SWAGGER_PARAMETERS = {"validatorUrl": None}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(tags=["documentation"], include_in_schema=False)


def _secured(page: HTMLResponse) -> HTMLResponse:
    """The page with a policy that lets its own inline script run and nothing from elsewhere."""
    scripts = " ".join(
        ["'self'"]
        + [
            f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
            for s in _INLINE_SCRIPT.findall(bytes(page.body).decode())
        ]
    )
    page.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    )
    page.headers["Referrer-Policy"] = "no-referrer"
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


def _root(request: Request) -> str:
    """The URL prefix a proxy serves the API under (uvicorn --root-path), or ""."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _title(request: Request) -> str:
    return str(request.app.title)


@router.get(DOCS, openapi_extra=access(PUBLIC))
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return _secured(
        get_swagger_ui_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{_title(request)} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
            swagger_ui_parameters=_SWAGGER_PARAMETERS,
        )
    )


@router.get(OAUTH2_REDIRECT, openapi_extra=access(PUBLIC))
async def swagger_ui_redirect() -> HTMLResponse:
    return _secured(get_swagger_ui_oauth2_redirect_html())


@router.get(REDOC, openapi_extra=access(PUBLIC))
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return _secured(
        get_redoc_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{_title(request)} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
    )


@router.get(ASSETS + "/{asset:path}", openapi_extra=access(PUBLIC))
async def docs_asset(asset: str, request: Request) -> Response:
    # StaticFiles checks the path stays inside the package's folder, and answers 304s.
    try:
        response = await _ASSET_FILES.get_response(asset, request.scope)
    except HTTPException as exc:
        raise HTTPException(exc.status_code, f"no documentation asset {asset!r}") from None
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
