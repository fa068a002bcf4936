"""Routing of the emulator: the three API roots, the middleware that identifies each,
error responses and the fallback for unknown routes.

The same handlers serve every root:

- Cloud site domain: ``/wiki/rest/api/...`` (flavour ``cloud``);
- OAuth gateway: ``/ex/confluence/{cloudId}/wiki/rest/api/...`` (flavour ``gateway``);
- Data Center: ``{context}/rest/api/...`` with an optional context path (flavour
  ``datacenter``).

The routing middleware runs before the gate's middlewares and sets ``request[FLAVOUR_KEY]``,
``request[API_PATH_KEY]`` (the path after ``/rest/api``), ``request[API_PATH_FULL_KEY]`` (the
context-relative path, ``/rest/api/...``) and ``request[SHAPE_KEY]`` (the ShapeContext).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from emulator import routes_content, routes_search, routes_space
from emulator.keys import (
    API_PATH_FULL_KEY,
    API_PATH_KEY,
    FLAVOUR_KEY,
    OBJECTS_RETURNED_KEY,
    SHAPE_KEY,
)
from emulator.model import InvalidOperation, NotFound
from emulator.routes_common import ApiError, JsonResponse, json_response, state_of
from emulator.shapes import ShapeContext

logger = logging.getLogger(__name__)

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLOUD_PREFIX = "/wiki/rest/api"
GATEWAY_PREFIX = "/ex/confluence/{cloudId}/wiki/rest/api"
_GATEWAY_PATH = re.compile(r"^/ex/confluence/([^/]+)/wiki(/rest/api(/.*)?)$")

# API routes relative to `/rest/api`, in matching order (fixed segments before variables).
API_ROUTES: tuple[tuple[str, RouteHandler], ...] = (
    ("/space", routes_space.list_spaces),
    ("/space/{key}", routes_space.get_space),
    ("/space/{key}/content", routes_space.list_space_content),
    ("/space/{key}/content/{type}", routes_space.list_space_content_of_type),
    ("/content", routes_content.list_content),
    ("/content/search", routes_search.content_search),
    ("/search", routes_search.search),
    ("/content/{id}", routes_content.get_content),
    ("/content/{id}/child", routes_content.get_children),
    (
        "/content/{id}/child/attachment/{attachment_id}/download",
        routes_content.download_attachment,
    ),
    ("/content/{id}/child/{type}", routes_content.list_children_of_type),
    ("/content/{id}/descendant", routes_content.get_descendants),
    ("/content/{id}/descendant/{type}", routes_content.list_descendants_of_type),
    ("/content/{id}/label", routes_content.list_labels),
    ("/content/{id}/history", routes_content.get_history),
    ("/content/{id}/version", routes_content.list_versions),
    ("/content/{id}/version/{number}", routes_content.get_version),
    ("/content/{id}/restriction", routes_content.list_restrictions),
    ("/content/{id}/restriction/byOperation", routes_content.restrictions_by_operation),
    (
        "/content/{id}/restriction/byOperation/{operation}",
        routes_content.restriction_for_operation,
    ),
    ("/user/current", routes_space.current_user),
    ("/user", routes_space.get_user),
)


@dataclass(frozen=True)
class Root:
    """One served API root: its flavour, its route prefix and its web context."""

    flavour: str
    prefix: str  # aiohttp route prefix of `/rest/api`
    context: str  # `_links.context`
    site_prefix: str  # prefix of `_links.base` after the origin


def roots_for(serve_cloud: bool, serve_datacenter: bool, context_path: str) -> list[Root]:
    """Return the roots to serve; Cloud roots first, so they win a clash with a DC context.

    NOTE: through the gateway, ``_links.base`` is the gateway prefix plus ``/wiki``, so
    that base plus a next link stays on the gateway; what Cloud sends there is not
    recorded.
    """
    roots: list[Root] = []
    if serve_cloud:
        roots.append(Root("cloud", CLOUD_PREFIX, "/wiki", "/wiki"))
        roots.append(Root("gateway", GATEWAY_PREFIX, "/wiki", ""))
    if serve_datacenter:
        roots.append(Root("datacenter", context_path + "/rest/api", context_path, context_path))
    return roots


def register_routes(app: web.Application, roots: list[Root]) -> None:
    """Register every API route under every root, plus downloads and the fallbacks."""
    for root in roots:
        for template, handler in API_ROUTES:
            app.router.add_get(root.prefix + template, handler)
        app.router.add_route("*", root.prefix + "{tail:(/.*)?}", unknown_route)
        if root.flavour != "gateway":
            download = root.site_prefix + "/download/attachments/{container_id}/{filename}"
            app.router.add_get(download, routes_content.download_legacy)
    app.router.add_get("/media/file/{attachment_id}/binary", routes_content.media_file)


def _match_root(path: str, roots: list[Root]) -> tuple[Root, str, str] | None:
    """Return the root serving ``path``, the path after ``/rest/api`` and the root's
    site path (``/wiki``, the gateway prefix plus ``/wiki``, or the DC context)."""
    for root in roots:
        if root.flavour == "gateway":
            match = _GATEWAY_PATH.match(path)
            if match is None:
                continue
            site_path = path[: match.start(2)]
            return root, match.group(3) or "", site_path
        if path == root.prefix or path.startswith(root.prefix + "/"):
            return root, path[len(root.prefix) :], root.site_prefix
    return None


def _match_download(path: str, roots: list[Root]) -> Root | None:
    for root in roots:
        if root.flavour != "gateway" and path.startswith(
            root.site_prefix + "/download/attachments/"
        ):
            return root
    return None


def routing_middleware(roots: list[Root]) -> Middleware:
    """Build the middleware that tags each request with its root, path and shape context."""

    @web.middleware
    async def tag_root(request: web.Request, handler: Handler) -> web.StreamResponse:
        matched = _match_root(request.path, roots)
        origin = f"{request.scheme}://{request.host}"
        if matched is None:
            download_root = _match_download(request.path, roots)
            if download_root is not None:
                # Downloads need credentials like API calls, so the gate sees them as such.
                request[FLAVOUR_KEY] = download_root.flavour
                request[API_PATH_KEY] = request.path[len(download_root.site_prefix) :]
                request[SHAPE_KEY] = _shape(request, download_root, download_root.site_prefix)
            return await handler(request)
        root, api_path, site_path = matched
        request[FLAVOUR_KEY] = root.flavour
        request[API_PATH_KEY] = api_path
        request[API_PATH_FULL_KEY] = "/rest/api" + api_path
        request[SHAPE_KEY] = ShapeContext(
            site=state_of(request).site,
            base=origin + site_path,
            context=root.context,
            flavour=root.flavour,
        )
        return await handler(request)

    return tag_root


def _shape(request: web.Request, root: Root, site_path: str) -> ShapeContext:
    origin = f"{request.scheme}://{request.host}"
    return ShapeContext(
        site=state_of(request).site,
        base=origin + site_path,
        context=root.context,
        flavour=root.flavour,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn ApiError and model errors into Confluence-shaped JSON responses.

    It runs innermost, so the gate's middlewares see these as ordinary responses.
    """
    try:
        response = await handler(request)
    except ApiError as error:
        if error.body is None:
            return web.Response(status=error.status, headers=error.headers)
        return json_response(error.body, status=error.status, headers=error.headers)
    except NotFound as error:
        return json_response(
            {"statusCode": 404, "message": str(error)},
            status=404,
        )
    except InvalidOperation as error:
        return json_response({"statusCode": 400, "message": str(error)}, status=400)
    if isinstance(response, JsonResponse):
        request[OBJECTS_RETURNED_KEY] = response.objects
    return response


def latency_middleware(latency_ms: Callable[[], float]) -> Middleware:
    """Build the middleware that delays every API response by ``latency_ms()``."""
    import asyncio

    @web.middleware
    async def delay(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.get(API_PATH_KEY) is not None:
            wait = latency_ms()
            if wait > 0:
                await asyncio.sleep(wait / 1000.0)
        return await handler(request)

    return delay


async def unknown_route(request: web.Request) -> web.StreamResponse:
    """Respond to an unknown API route the way Confluence's JAX-RS layer does.

    A method other than GET gets Spring's 405 body (without an ``Allow`` header); an
    unknown path gets 404, as XML unless the client accepts JSON.
    """
    if request.method not in ("GET", "HEAD"):
        return json_response(
            {
                "errors": [
                    {
                        "status": 405,
                        "code": "METHOD_NOT_ALLOWED",
                        "title": (
                            "org.springframework.web.HttpRequestMethodNotSupportedException: "
                            f"Request method '{request.method}' not supported"
                        ),
                    }
                ]
            },
            status=405,
        )
    uri = str(request.url)
    if "application/json" in request.headers.get("Accept", ""):
        return json_response({"message": f"null for uri: {uri}", "status-code": 404}, status=404)
    xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f"<status><status-code>404</status-code><message>null for uri: {escape(uri)}"
        "</message></status>"
    )
    return web.Response(status=404, text=xml, content_type="application/xml")
