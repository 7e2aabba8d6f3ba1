"""The pages under ``/schema`` (Redoc, Swagger UI), every file they load served from here.

A payment gateway runs the service where nothing reaches the internet, so no page may load
a script, stylesheet, font or image from anywhere else: the UIs' files are shipped in this
package (``assets/``, with their licences) and served under ``/assets``; Redoc is told not
to link Google Fonts. The pages also carry a Content-Security-Policy that lets a browser
load nothing from another origin, should a future version of a UI try.

``assets/sources.json`` pins where each file comes from (npm package, version, integrity,
licence, patches) and its SHA-256; ``riskscore assets update`` (``make assets``) fetches
them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar import Router
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    RedocRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)
from litestar.static_files import create_static_files_router

ASSETS_DIR: Final = Path(__file__).resolve().parent / "assets"
ASSETS_PATH: Final = "/assets"
SOURCES_FILE: Final = ASSETS_DIR / "sources.json"

REDOC_JS: Final = f"{ASSETS_PATH}/redoc/redoc.standalone.js"
SWAGGER_JS: Final = f"{ASSETS_PATH}/swagger-ui/swagger-ui-bundle.js"
SWAGGER_PRESET_JS: Final = f"{ASSETS_PATH}/swagger-ui/swagger-ui-standalone-preset.js"
SWAGGER_CSS: Final = f"{ASSETS_PATH}/swagger-ui/swagger-ui.css"
FAVICON: Final = f"<link rel='icon' type='image/svg+xml' href='{ASSETS_PATH}/riskscore.svg'>"
# Same origin only; inline scripts and styles because both UIs are started inline, and
# blob: workers for Redoc's search.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def openapi_config(*, title: str, version: str, description: str) -> OpenAPIConfig:
    """The OpenAPI pages, their files local, and the document; nothing else.

    ``/schema`` (Redoc, also at ``/schema/redoc``), ``/schema/swagger``, and the document as
    ``/schema/openapi.json`` and ``/schema/openapi.yaml``.
    """
    return OpenAPIConfig(
        title=title,
        version=version,
        description=description,
        openapi_router=Router(
            path="/schema",
            route_handlers=[],
            include_in_schema=False,
            response_headers=[
                ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY)
            ],
        ),
        render_plugins=[
            RedocRenderPlugin(
                js_url=REDOC_JS, google_fonts=False, path=["/", "/redoc"], favicon=FAVICON
            ),
            SwaggerRenderPlugin(
                js_url=SWAGGER_JS,
                css_url=SWAGGER_CSS,
                standalone_preset_js_url=SWAGGER_PRESET_JS,
                favicon=FAVICON,
            ),
            JsonRenderPlugin(),
            YamlRenderPlugin(),
        ],
    )


def assets_router() -> Router:
    """The shipped files under ``/assets``; browsers may keep them a day."""
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[ASSETS_DIR],
        name="assets",
        cache_control=CacheControlHeader(max_age=86_400, public=True),
        include_in_schema=False,
    )
