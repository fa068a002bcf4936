"""Content routes: ``/content`` lists and items, children, descendants, labels, history,
versions, restrictions and attachment downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any
from urllib.parse import quote

from aiohttp import web

from emulator.keys import API_PATH_FULL_KEY, FLAVOUR_KEY, GATE_KEY
from emulator.model import Content, ContentStatus, ContentType
from emulator.paging import POLICIES, LimitPolicy, offset_links, slice_page
from emulator.routes_common import (
    ApiError,
    bad_request,
    caller_id,
    carried_params,
    content_not_found,
    current_children,
    flavour_of,
    hidden_ids,
    json_response,
    not_found,
    readable,
    request_expand,
    request_page,
    require_content,
    shape_of,
    space_not_found,
    state_of,
    visible_statuses,
)
from emulator.shapes import (
    Expand,
    ShapeContext,
    child_kinds,
    content_array,
    content_json,
    history_json,
    label_json,
    restriction_json,
    version_json,
)

# `GET /content` and `GET /content/{id}` expand these when the request has no `expand`.
DEFAULT_CONTENT_EXPAND = ("space", "history", "version")

_ORDER_FIELDS: dict[str, Callable[[Content], Any]] = {
    "id": lambda item: int(item.id),
    "title": lambda item: item.title.casefold(),
    "history.createdDate": lambda item: item.created,
    "created": lambda item: item.created,
    "version.when": lambda item: item.last_modified,
    "history.lastUpdated.when": lambda item: item.last_modified,
    "lastmodified": lambda item: item.last_modified,
    "position": lambda item: item.position,
}

logger = logging.getLogger(__name__)


def paged_array(
    request: web.Request,
    items: Sequence[Content],
    policy: LimitPolicy,
    expand: Expand,
    *,
    silent_cap: int | None = None,
) -> dict[str, Any]:
    """Slice the items the caller may read by ``start`` and ``limit`` into a ContentArray."""
    ctx = shape_of(request)
    items = readable(request, items)
    page_request = request_page(request, policy, expand, silent_cap=silent_cap)
    page = slice_page(len(items), page_request, policy)
    links = offset_links(
        base=ctx.base,
        api_path=str(request[API_PATH_FULL_KEY]),
        params=carried_params(request),
        page=page,
        limit=page_request.limit,
    )
    return content_array(
        ctx,
        items[page.start : page.end],
        expand,
        start=page_request.start,
        limit=page_request.limit,
        links=links,
    )


def _dc_silent_cap(request: web.Request) -> int | None:
    state = state_of(request)
    if state.dc_quirks and request.get(FLAVOUR_KEY) == "datacenter":
        return state.dc_limit_cap
    return None


def _parse_type(request: web.Request) -> ContentType:
    raw = request.query.get("type", "page")
    if raw == "page":
        return ContentType.PAGE
    if raw == "blogpost":
        return ContentType.BLOGPOST
    if raw == "folder":
        raise ApiError(
            501,
            {"statusCode": 501, "message": "Cannot fetch folders with ContentFinder"},
        )
    raise bad_request(f"Content type '{raw}' is not supported here; use page or blogpost", request)


def _parse_orderby(request: web.Request) -> tuple[Callable[[Content], Any], bool] | None:
    raw = request.query.get("orderby")
    if not raw:
        return None
    parts = raw.strip().split()
    field_name = parts[0]
    direction = parts[1].lower() if len(parts) > 1 else "asc"
    reader = _ORDER_FIELDS.get(field_name)
    if reader is None or direction not in ("asc", "desc") or len(parts) > 2:
        raise bad_request(
            f"Invalid orderby '{raw}': use a field such as history.createdDate, title or "
            "version.when followed by asc or desc",
            request,
        )
    return reader, direction == "desc"


async def list_content(request: web.Request) -> web.Response:
    """``GET /content``: pages or blog posts, filtered by space, title, status and day."""
    state = state_of(request)
    site = state.site
    content_type = _parse_type(request)
    statuses = visible_statuses(request)
    space_key = request.query.get("spaceKey")
    title = request.query.get("title")
    posting_day_raw = request.query.get("postingDay")
    posting_day: date | None = None
    if posting_day_raw:
        try:
            posting_day = date.fromisoformat(posting_day_raw)
        except ValueError:
            raise bad_request(
                f"Invalid postingDay '{posting_day_raw}': use the format yyyy-mm-dd", request
            ) from None
    if space_key is not None and site.space(space_key) is None:
        raise space_not_found(space_key, request)
    order = _parse_orderby(request)
    expand = request_expand(request, defaults=DEFAULT_CONTENT_EXPAND)

    def build() -> list[Content]:
        if space_key is not None:
            source: Sequence[Content] | Any = site.space_contents(space_key, content_type)
        else:
            source = site.contents()
        items = [
            item
            for item in source
            if item.type is content_type
            and item.status in statuses
            and (title is None or item.title == title)
            and (posting_day is None or item.posting_day == posting_day)
        ]
        if order is not None:
            reader, descending = order
            items.sort(key=lambda item: (reader(item), int(item.id)), reverse=descending)
        return items

    key = (
        "content",
        space_key,
        content_type,
        frozenset(statuses),
        title,
        posting_day,
        request.query.get("orderby"),
    )
    items = state.listings.get(site, key, build)
    body = paged_array(
        request, items, POLICIES["content"], expand, silent_cap=_dc_silent_cap(request)
    )
    return json_response(body)


def _at_version(content: Content, number: int, request: web.Request) -> Content:
    if number < 1 or number > len(content.versions):
        raise ApiError(
            404,
            {
                "statusCode": 404,
                "message": (
                    "com.atlassian.confluence.api.service.exceptions.api.NotFoundException: "
                    f"No content found with id {content.id} and version {number}"
                ),
            },
        )
    if number == len(content.versions):
        return content
    snapshot = content.versions[number - 1]
    return dataclasses.replace(
        content,
        versions=content.versions[:number],
        title=snapshot.title or content.title,
        status=ContentStatus.HISTORICAL,
        text_cache=None,
    )


async def get_content(request: web.Request) -> web.Response:
    """``GET /content/{id}``: one content item, optionally at an older version."""
    statuses = visible_statuses(request)
    if ContentStatus.CURRENT in statuses:
        statuses.add(ContentStatus.HISTORICAL)
    content = require_content(request, request.match_info["id"], statuses)
    if content.status is ContentStatus.DRAFT and content.created_by != caller_id(request):
        raise ApiError(
            403,
            {
                "statusCode": 403,
                "message": "confluence.user.view.draft.permission",
            },
        )
    version_raw = request.query.get("version")
    if version_raw:
        try:
            number = int(version_raw)
        except ValueError:
            raise bad_request(
                f"Invalid version '{version_raw}': use a version number", request
            ) from None
        content = _at_version(content, number, request)
    expand = request_expand(request, defaults=DEFAULT_CONTENT_EXPAND)
    return json_response(content_json(shape_of(request), content, expand, single=True))


def _child_type(request: web.Request, content: Content) -> ContentType:
    raw = request.match_info["type"]
    try:
        child_type = ContentType(raw)
    except ValueError:
        raise bad_request(
            f"Invalid child type '{raw}': use page, comment or attachment", request
        ) from None
    if child_type not in child_kinds(content):
        raise bad_request(
            f"Content {content.id} of type {content.type.value} cannot have {raw} children",
            request,
        )
    return child_type


def _children_map(request: web.Request, *, descendants: bool) -> dict[str, Any]:
    content = require_content(request, request.match_info["id"])
    ctx = shape_of(request)
    expand = request_expand(request, use_defaults_when_absent=False)
    segment = "descendant" if descendants else "child"
    body: dict[str, Any] = {}
    expandable: dict[str, str] = {}
    for kind in sorted(child_kinds(content), key=lambda kind: kind.value):
        path = f"/rest/api/content/{content.id}/{segment}/{kind.value}"
        if kind.value not in expand:
            expandable[kind.value] = path
            continue
        items = readable(request, _related(ctx, content, kind, descendants=descendants))
        page = items[:25]
        links: dict[str, str] = {"self": f"{ctx.api}/content/{content.id}/{segment}/{kind.value}"}
        if len(items) > 25:
            links["next"] = f"{path}?next=true&limit=25&start=25"
        body[kind.value] = content_array(
            ctx, page, expand[kind.value], start=0, limit=25, links=links
        )
    if expandable:
        body["_expandable"] = expandable
    body["_links"] = {
        "base": ctx.base,
        "context": ctx.context,
        "self": f"{ctx.api}/content/{content.id}/{segment}",
    }
    return body


def _related(
    ctx: ShapeContext, content: Content, kind: ContentType, *, descendants: bool
) -> list[Content]:
    if descendants:
        return current_children(ctx.site.descendants(content.id, kind))
    return current_children(ctx.site.children(content.id, kind))


async def get_children(request: web.Request) -> web.Response:
    """``GET /content/{id}/child``: a map with one ContentArray per expanded child type."""
    return json_response(_children_map(request, descendants=False))


async def get_descendants(request: web.Request) -> web.Response:
    """``GET /content/{id}/descendant``: like ``child``, over all levels."""
    return json_response(_children_map(request, descendants=True))


def _comment_filter(request: web.Request) -> Callable[[Content], bool]:
    locations: set[str] = set()
    for raw in request.query.getall("location", []):
        locations.update(part.strip() for part in raw.split(",") if part.strip())
    if not locations:
        return lambda item: True
    return lambda item: (item.comment_location or "footer") in locations


def _attachment_filter(request: web.Request) -> Callable[[Content], bool]:
    filename = request.query.get("filename")
    media_type = request.query.get("mediaType")
    return lambda item: (
        (filename is None or item.title == filename)
        and (media_type is None or item.media_type == media_type)
    )


async def list_children_of_type(request: web.Request) -> web.Response:
    """``GET /content/{id}/child/{type}``: direct child pages, comments or attachments."""
    state = state_of(request)
    content = require_content(request, request.match_info["id"])
    child_type = _child_type(request, content)
    defaults = ("metadata",) if child_type is ContentType.ATTACHMENT else ()
    expand = request_expand(request, defaults=defaults, use_defaults_when_absent=True)
    items = current_children(state.site.children(content.id, child_type))
    if child_type is ContentType.COMMENT:
        keep = _comment_filter(request)
        items = [item for item in items if keep(item)]
        # NOTE: Cloud documents `depth` on this route as unused; here `root` keeps the
        # comments that are not replies, and `all` (the default) keeps every comment.
        depth = request.query.get("depth", "all")
        if depth not in ("all", "root", ""):
            raise bad_request(f"Invalid depth '{depth}': use all or root", request)
        if depth == "root":
            items = [item for item in items if item.parent_id is None]
        policy = POLICIES["child-comment"]
    elif child_type is ContentType.ATTACHMENT:
        keep = _attachment_filter(request)
        items = [item for item in items if keep(item)]
        policy = POLICIES["child-attachment"]
    else:
        policy = POLICIES["child-page"]
    return json_response(paged_array(request, items, policy, expand))


def _depth_limit(request: web.Request) -> int | None:
    raw = request.query.get("depth", "all")
    if raw == "all":
        return None
    if raw == "root":
        return 1
    if raw.isdigit() and 1 <= int(raw) <= 100:
        return int(raw)
    raise bad_request(f"Invalid depth '{raw}': use all, root or a number from 1 to 100", request)


async def list_descendants_of_type(request: web.Request) -> web.Response:
    """``GET /content/{id}/descendant/{type}``: all pages, comments or attachments below."""
    state = state_of(request)
    content = require_content(request, request.match_info["id"])
    child_type = _child_type(request, content)
    expand = request_expand(request, use_defaults_when_absent=False)
    depth = _depth_limit(request)
    items = current_children(state.site.descendants(content.id, child_type))
    if depth is not None and child_type is ContentType.PAGE:
        base_depth = len(content.ancestor_ids) + 1
        items = [item for item in items if len(item.ancestor_ids) - base_depth < depth]
    return json_response(paged_array(request, items, POLICIES["descendant"], expand))


async def list_labels(request: web.Request) -> web.Response:
    """``GET /content/{id}/label``: a LabelArray, default and cap 200, ``limit=0`` rejected."""
    content = require_content(request, request.match_info["id"])
    ctx = shape_of(request)
    prefix = request.query.get("prefix")
    labels = [label for label in content.labels if prefix is None or label.prefix == prefix]
    policy = POLICIES["label"]
    page_request = request_page(request, policy, {})
    page = slice_page(len(labels), page_request, policy)
    links = offset_links(
        base=ctx.base,
        api_path=str(request[API_PATH_FULL_KEY]),
        params=carried_params(request),
        page=page,
        limit=page_request.limit,
    )
    return json_response(
        {
            "results": [label_json(label) for label in labels[page.start : page.end]],
            "start": page_request.start,
            "limit": page_request.limit,
            "size": page.end - page.start,
            "_links": {"base": ctx.base, "context": ctx.context, **links},
        }
    )


async def get_history(request: web.Request) -> web.Response:
    """``GET /content/{id}/history``."""
    content = require_content(request, request.match_info["id"])
    expand = request_expand(request, use_defaults_when_absent=False)
    ctx = shape_of(request)
    body = history_json(ctx, content, expand)
    body["_links"].update({"base": ctx.base, "context": ctx.context})
    return json_response(body)


async def list_versions(request: web.Request) -> web.Response:
    """``GET /content/{id}/version``: versions, newest first, default and cap 200."""
    content = require_content(request, request.match_info["id"])
    ctx = shape_of(request)
    expand = request_expand(request, use_defaults_when_absent=False)
    versions = list(reversed(content.versions))
    policy = POLICIES["version"]
    page_request = request_page(request, policy, expand)
    page = slice_page(len(versions), page_request, policy)
    links = offset_links(
        base=ctx.base,
        api_path=str(request[API_PATH_FULL_KEY]),
        params=carried_params(request),
        page=page,
        limit=page_request.limit,
    )
    return json_response(
        {
            "results": [
                version_json(ctx, content, version, expand)
                for version in versions[page.start : page.end]
            ],
            "start": page_request.start,
            "limit": page_request.limit,
            "size": page.end - page.start,
            "_links": {"base": ctx.base, "context": ctx.context, **links},
        }
    )


async def get_version(request: web.Request) -> web.Response:
    """``GET /content/{id}/version/{number}``."""
    content = require_content(request, request.match_info["id"])
    raw = request.match_info["number"]
    if not raw.isdigit() or not 1 <= int(raw) <= len(content.versions):
        raise not_found(f"No version {raw} of content {content.id}", request)
    expand = request_expand(request, use_defaults_when_absent=False)
    version = content.versions[int(raw) - 1]
    return json_response(version_json(shape_of(request), content, version, expand))


def _restriction_expand(request: web.Request) -> Expand:
    expand = request_expand(request, use_defaults_when_absent=False)
    merged: Expand = {"restrictions": {"user": {}, "group": {}}}
    merged.update(expand)
    return merged


async def restrictions_by_operation(request: web.Request) -> web.Response:
    """``GET /content/{id}/restriction/byOperation``: read and update restrictions."""
    content = require_content(request, request.match_info["id"])
    ctx = shape_of(request)
    expand = _restriction_expand(request)
    return json_response(
        {
            "read": restriction_json(ctx, content, "read", expand),
            "update": restriction_json(ctx, content, "update", expand),
            "_links": {
                "base": ctx.base,
                "context": ctx.context,
                "self": f"{ctx.api}/content/{content.id}/restriction/byOperation",
            },
        }
    )


async def restriction_for_operation(request: web.Request) -> web.Response:
    """``GET /content/{id}/restriction/byOperation/{operation}``."""
    content = require_content(request, request.match_info["id"])
    operation = request.match_info["operation"]
    if operation not in ("read", "update"):
        raise bad_request(f"Invalid operation '{operation}': use read or update", request)
    ctx = shape_of(request)
    return json_response(restriction_json(ctx, content, operation, _restriction_expand(request)))


async def list_restrictions(request: web.Request) -> web.Response:
    """``GET /content/{id}/restriction``: a ContentRestrictionArray, default and cap 100."""
    content = require_content(request, request.match_info["id"])
    ctx = shape_of(request)
    expand = _restriction_expand(request)
    operations = ["read", "update"]
    policy = POLICIES["restriction"]
    page_request = request_page(request, policy, {})
    page = slice_page(len(operations), page_request, policy)
    links = offset_links(
        base=ctx.base,
        api_path=str(request[API_PATH_FULL_KEY]),
        params=carried_params(request),
        page=page,
        limit=page_request.limit,
    )
    digest = hashlib.sha1(
        ",".join(content.read_restriction_users + content.read_restriction_groups).encode()
    ).hexdigest()
    return json_response(
        {
            "results": [
                restriction_json(ctx, content, operation, expand)
                for operation in operations[page.start : page.end]
            ],
            "start": page_request.start,
            "limit": page_request.limit,
            "size": page.end - page.start,
            "restrictionsHash": digest,
            "_links": {"base": ctx.base, "context": ctx.context, **links},
        }
    )


def media_origin(request: web.Request) -> str:
    """Return the origin of the media service that downloads redirect to.

    Cloud redirects to another host (``api.media.atlassian.com``). Locally the other host
    is the same server under another name: ``--media-host`` when set, else ``localhost``
    for a request to ``127.0.0.1`` and ``127.0.0.1`` for any other name, on the port the
    request came to. A client that keeps ``Authorization`` for the site's host only does
    not send it there.
    """
    configured = state_of(request).options.media_host
    url = request.url
    port = url.port or 80
    if configured:
        host = configured if ":" in configured else f"{configured}:{port}"
    else:
        name = "localhost" if url.host == "127.0.0.1" else "127.0.0.1"
        host = f"{name}:{port}"
    return f"{request.scheme}://{host}"


def _media_redirect(request: web.Request, attachment: Content, version: int) -> web.Response:
    state = state_of(request)
    token = state.media_token(attachment.id, version)
    location = (
        f"{media_origin(request)}/media/file/{attachment.id}/binary?token={token}"
        f"&version={version}&name={quote(attachment.title)}&client=emulator"
    )
    raise web.HTTPFound(location)


async def download_attachment(request: web.Request) -> web.Response:
    """``GET /content/{id}/child/attachment/{attId}/download``: 302 to the media service."""
    container = require_content(request, request.match_info["id"])
    attachment_id = request.match_info["attachment_id"]
    attachment = state_of(request).site.content(attachment_id)
    if (
        attachment is None
        or attachment.type is not ContentType.ATTACHMENT
        or attachment.container_id != container.id
        or attachment.status is not ContentStatus.CURRENT
        or attachment.id in hidden_ids(request)
    ):
        raise content_not_found(attachment_id, request)
    version_raw = request.query.get("version")
    version = attachment.version.number
    if version_raw:
        if not version_raw.isdigit():
            raise bad_request(f"Invalid version '{version_raw}': use a version number", request)
        version = int(version_raw)
        if version < 1 or version > attachment.version.number:
            raise bad_request(
                f"Version {version} of attachment {attachment.id} does not exist; "
                f"the latest is {attachment.version.number}",
                request,
            )
    return _media_redirect(request, attachment, version)


async def download_legacy(request: web.Request) -> web.Response:
    """``GET [context]/download/attachments/{pageId}/{filename}``: the older download path.

    Data Center serves the bytes itself, to a caller that may read the page. The Cloud
    site redirects to the media service like the API download path.
    """
    site = state_of(request).site
    container_id = request.match_info["container_id"]
    filename = request.match_info["filename"]
    attachment = site.find_attachment(container_id, filename)
    if (
        attachment is None
        or attachment.status is not ContentStatus.CURRENT
        or attachment.id in hidden_ids(request)
    ):
        raise web.HTTPNotFound(text=f"No attachment {filename!r} on content {container_id}")
    version_raw = request.query.get("version")
    version = attachment.version.number
    if version_raw and version_raw.isdigit():
        version = min(max(1, int(version_raw)), attachment.version.number)
    if flavour_of(request) == "datacenter":
        # NOTE: no recorded Data Center download was available; this follows the
        # servlet's usual behaviour of sending the file in the response.
        return _attachment_response(attachment, version)
    return _media_redirect(request, attachment, version)


def attachment_bytes(attachment_id: str, version: int, size: int) -> bytes:
    """Return the deterministic bytes of an attachment version (the emulator stores none)."""
    seed = hashlib.sha256(f"{attachment_id}:{version}".encode()).digest()
    repeats = size // len(seed) + 1
    return (seed * repeats)[:size]


async def media_file(request: web.Request) -> web.Response:
    """``GET /media/file/{attId}/binary?token=...``: the file bytes behind a download redirect."""
    state = state_of(request)
    attachment_id = request.match_info["attachment_id"]
    version_raw = request.query.get("version", "")
    token = request.query.get("token", "")
    gate = request.app[GATE_KEY]
    if "Authorization" in request.headers:
        # The media service needs only the token. A client that sends the site's
        # credentials here leaks them to another host, so the counters record it.
        gate.counters.media_authorization += 1
        logger.warning(
            "media download of attachment %s carried an Authorization header", attachment_id
        )
    attachment = state.site.content(attachment_id)
    if attachment is None or attachment.type is not ContentType.ATTACHMENT:
        raise web.HTTPNotFound(text=f"No file {attachment_id}")
    if not version_raw.isdigit() or token != state.media_token(attachment_id, int(version_raw)):
        raise web.HTTPUnauthorized(
            text="Invalid or missing media token; follow the download redirect again"
        )
    gate.counters.media_downloads += 1
    return _attachment_response(attachment, int(version_raw))


def _attachment_response(attachment: Content, version: int) -> web.Response:
    data = attachment_bytes(attachment.id, version, attachment.file_size or 0)
    return web.Response(
        body=data,
        content_type=attachment.media_type or "application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(attachment.title)}"},
    )
