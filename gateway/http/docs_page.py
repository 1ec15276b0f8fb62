"""`/docs`: Swagger UI from the swagger-ui-bundle package, served offline, on either port.

The page reads `/docs/openapi.json`: the port's OpenAPI document written as 3.0, because the
bundled Swagger UI (4.x) renders 3.0 only; `/openapi.json` stays the 3.1 original. The page,
its static files and the documents need no credentials, on the admin port too: they describe
the API and hold no data, and the admin port is reachable from the operators' network only.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from gateway.http.middlewares import Handler

STATIC = "/docs/static"
UI_DOCUMENT = "/docs/openapi.json"
OPEN_PATHS = ("/docs", "/openapi.json")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="{static}/swagger-ui.css">
<link rel="icon" type="image/png" href="{static}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{static}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "{document}",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
}});
</script>
</body>
</html>
"""


def page(title: str) -> bytes:
    """The docs page's HTML, loading only this server's static files."""
    return PAGE.format(title=title, static=STATIC, document=UI_DOCUMENT).encode()


def _bytes_handler(body: bytes, content_type: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type)

    return handler


@web.middleware
async def open_docs(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Serve the docs routes past the middlewares after this one (the admin token check)."""
    path = request.path
    if path in OPEN_PATHS or path.startswith("/docs/"):
        return await request.match_info.handler(request)
    return await handler(request)


def add_docs(
    app: web.Application,
    title: str,
    ui_document: bytes,
    document: bytes | None = None,
) -> None:
    """`/docs`, its static files and `/docs/openapi.json`; `/openapi.json` when `document`.

    Call it after the app's own middlewares are in place: `open_docs` goes right after the
    first one (the error envelope), before any authentication.
    """
    app.router.add_get("/docs", _bytes_handler(page(title), "text/html"))
    app.router.add_get(UI_DOCUMENT, _bytes_handler(ui_document, "application/json"))
    app.router.add_static(STATIC, Path(str(swagger_ui_path)))
    if document is not None:
        app.router.add_get("/openapi.json", _bytes_handler(document, "application/json"))
    app.middlewares.insert(1, open_docs)
