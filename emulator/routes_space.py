"""Space and user routes: ``/space``, ``/space/{key}``, ``/space/{key}/content[/{type}]``,
``/user/current`` and ``/user``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from emulator.keys import API_PATH_FULL_KEY
from emulator.model import Content, ContentStatus, ContentType, Space
from emulator.paging import POLICIES, offset_links, slice_page
from emulator.routes_common import (
    bad_request,
    caller_id,
    carried_params,
    flavour_of,
    json_response,
    not_found,
    readable,
    request_expand,
    request_page,
    shape_of,
    space_not_found,
    state_of,
)
from emulator.routes_content import paged_array
from emulator.shapes import ShapeContext, content_array, space_json, user_json


def _multi(request: web.Request, name: str) -> list[str]:
    values: list[str] = []
    for raw in request.query.getall(name, []):
        values.extend(part.strip() for part in raw.split(",") if part.strip())
    return values


async def list_spaces(request: web.Request) -> web.Response:
    """``GET /space``: spaces in key order, filtered by key, id, type, status and label.

    ``label`` (repeatable, or comma-separated) keeps the spaces with any of those space
    categories. ``favourite`` is ignored. With the Data Center quirks on, a Data Center
    page contains at most ``dc_space_cap`` spaces while ``limit`` and the next link's start
    stay as requested.
    """
    state = state_of(request)
    ctx = shape_of(request)
    keys = set(_multi(request, "spaceKey"))
    ids: set[int] = set()
    for raw in _multi(request, "spaceId"):
        if not raw.isdigit():
            raise bad_request(f"Invalid spaceId '{raw}': use a numeric space id", request)
        ids.add(int(raw))
    space_type = request.query.get("type")
    if space_type is not None and space_type not in ("global", "personal"):
        raise bad_request(f"Invalid space type '{space_type}': use global or personal", request)
    status = request.query.get("status")
    if status is not None and status not in ("current", "archived"):
        raise bad_request(f"Invalid space status '{status}': use current or archived", request)
    labels = {label.lower() for label in _multi(request, "label")}
    expand = request_expand(request, use_defaults_when_absent=False)

    spaces = [
        space
        for space in sorted(state.site.spaces.values(), key=lambda space: space.key)
        if (not keys or space.key in keys)
        and (not ids or space.id in ids)
        and (space_type is None or space.type == space_type)
        and (status is None or space.status == status)
        and (not labels or not labels.isdisjoint(space.labels))
    ]
    policy = POLICIES["space"]
    silent_cap = None
    if state.dc_quirks and flavour_of(request) == "datacenter":
        silent_cap = state.dc_space_cap
    page_request = request_page(request, policy, expand, silent_cap=silent_cap)
    page = slice_page(len(spaces), page_request, policy)
    links = offset_links(
        base=ctx.base,
        api_path=str(request[API_PATH_FULL_KEY]),
        params=carried_params(request),
        page=page,
        limit=page_request.limit,
    )
    return json_response(
        {
            "results": [space_json(ctx, space, expand) for space in spaces[page.start : page.end]],
            "start": page_request.start,
            "limit": page_request.limit,
            "size": page.end - page.start,
            "_links": {"base": ctx.base, "context": ctx.context, **links},
        }
    )


def _require_space(request: web.Request) -> Space:
    key = request.match_info["key"]
    space = state_of(request).site.space(key)
    if space is None:
        raise space_not_found(key, request)
    return space


async def get_space(request: web.Request) -> web.Response:
    """``GET /space/{key}``."""
    space = _require_space(request)
    expand = request_expand(request, use_defaults_when_absent=False)
    return json_response(space_json(shape_of(request), space, expand, single=True))


def _space_items(request: web.Request, space: Space, content_type: ContentType) -> list[Content]:
    depth = request.query.get("depth", "all")
    if depth not in ("all", "root"):
        raise bad_request(f"Invalid depth '{depth}': use all or root", request)
    state = state_of(request)
    site = state.site

    def build() -> list[Content]:
        if depth == "root" and content_type is ContentType.PAGE:
            source = sorted(site.root_pages(space.key), key=lambda item: int(item.id))
        else:
            source = site.space_contents(space.key, content_type)
        return [item for item in source if item.status is ContentStatus.CURRENT]

    items: list[Content] = state.listings.get(
        site, ("space-content", space.key, content_type, depth), build
    )
    return items


async def list_space_content(request: web.Request) -> web.Response:
    """``GET /space/{key}/content``: pages, then blog posts, each paged on its own."""
    space = _require_space(request)
    ctx = shape_of(request)
    expand = request_expand(request, use_defaults_when_absent=False)
    policy = POLICIES["space-content"]
    page_request = request_page(request, policy, expand)
    body: dict[str, Any] = {}
    for content_type in (ContentType.PAGE, ContentType.BLOGPOST):
        items = readable(request, _space_items(request, space, content_type))
        page = slice_page(len(items), page_request, policy)
        links = offset_links(
            base=ctx.base,
            api_path=f"{request[API_PATH_FULL_KEY]}/{content_type.value}",
            params=carried_params(request),
            page=page,
            limit=page_request.limit,
        )
        array = content_array(
            ctx,
            items[page.start : page.end],
            expand,
            start=page_request.start,
            limit=page_request.limit,
            links=links,
        )
        del array["_links"]["base"]
        del array["_links"]["context"]
        body[content_type.value] = array
    body["_links"] = {
        "base": ctx.base,
        "context": ctx.context,
        "self": f"{ctx.api}/space/{space.key}/content",
    }
    return json_response(body)


async def list_space_content_of_type(request: web.Request) -> web.Response:
    """``GET /space/{key}/content/{type}``: pages or blog posts of a space by id."""
    space = _require_space(request)
    raw_type = request.match_info["type"]
    if raw_type not in ("page", "blogpost"):
        raise bad_request(f"Invalid content type '{raw_type}': use page or blogpost", request)
    expand = request_expand(request, use_defaults_when_absent=False)
    items = _space_items(request, space, ContentType(raw_type))
    return json_response(paged_array(request, items, POLICIES["space-content"], expand))


async def current_user(request: web.Request) -> web.Response:
    """``GET /user/current``: the caller, with its time zone."""
    state = state_of(request)
    user_id = caller_id(request)
    if user_id is None or state.site.user(user_id) is None:
        # An anonymous caller gets the anonymous user, as Cloud and Data Center send it
        # when anonymous access is on.
        return json_response(_anonymous_user(shape_of(request), flavour_of(request)))
    return json_response(user_json(shape_of(request), user_id, current=True))


def _anonymous_user(ctx: ShapeContext, flavour: str) -> dict[str, Any]:
    # NOTE: no recorded anonymous user body was available; the picture path and fields
    # follow the Cloud and Data Center user shapes the emulator sends for real users.
    datacenter = flavour == "datacenter"
    picture = "/images/icons/profilepics/anonymous.svg"
    body: dict[str, Any] = {
        "type": "anonymous",
        "profilePicture": {
            "path": (ctx.context if datacenter else "/wiki/s/default") + picture,
            "width": 48,
            "height": 48,
            "isDefault": True,
        },
        "displayName": "Anonymous",
    }
    if not datacenter:
        body["isExternalCollaborator"] = False
    body["_expandable"] = {"operations": "", "personalSpace": ""}
    body["_links"] = {"base": ctx.base, "context": ctx.context, "self": f"{ctx.api}/user"}
    return body


async def get_user(request: web.Request) -> web.Response:
    """``GET /user?accountId=`` (Cloud) or ``?key=``/``?username=`` (Data Center)."""
    site = state_of(request).site
    account_id = request.query.get("accountId")
    key = request.query.get("key")
    username = request.query.get("username")
    found: str | None = None
    if account_id is not None:
        found = account_id if site.user(account_id) is not None else None
    elif key is not None or username is not None:
        for user in site.users.values():
            if (key is not None and user.user_key == key) or (
                username is not None and user.username == username
            ):
                found = user.account_id
                break
    else:
        raise bad_request("accountId, key or username is required", request)
    if found is None:
        raise not_found(f"No user found with accountId : {account_id or key or username}", request)
    return json_response(user_json(shape_of(request), found))
