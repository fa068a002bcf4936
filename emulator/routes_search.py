"""CQL search routes: ``/search`` (search result wrappers) and ``/content/search``
(a ContentArray).

On Cloud both page only by the cursor in ``_links.next``: ``start`` is echoed but never
positions, pages can come back short mid-walk, ``totalSize`` is an estimate and the next
link drops ``excerpt``. Items changed within the configured index lag are not visible
yet, and neither is content of archived spaces unless ``includeArchivedSpaces=true``.
Data Center pages search by ``start``; with the Data Center quirks on, its ``/search``
sends no next link at all.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from emulator import cql
from emulator.keys import USER_ID_KEY
from emulator.model import Content, ContentType, Site
from emulator.paging import (
    INT32_MAX,
    POLICIES,
    CursorPage,
    PagingError,
    SearchCursor,
    cursor_page,
    decode_cursor,
    encode_query,
    estimate_total,
    parse_search_limit,
    parse_search_start,
)
from emulator.routes_common import (
    BAD_REQUEST_CLASS,
    ApiError,
    EmulatorState,
    caller_id,
    flavour_of,
    json_response,
    request_expand,
    shape_of,
    state_of,
)
from emulator.search_entities import SpaceEntry, UserEntry, entries_for
from emulator.shapes import (
    Expand,
    ShapeContext,
    content_json,
    escape_html,
    expand_paths,
    search_result_json,
    space_result_json,
    user_result_json,
)

# What a `/search` hit wraps: content (current, or as the lagging index saw it), a space
# or a user.
Hit = Content | SpaceEntry | UserEntry

_TIME_FUNCTION = re.compile(r"\b(?:now|startOf\w*|endOf\w*)\s*\(", re.IGNORECASE)
_CONTENT_TYPES = {content_type.value: content_type for content_type in ContentType}


@dataclass(frozen=True)
class MatchList:
    """The ordered ids matching one query.

    ``entries`` maps ids to what ``/search`` serves for them when that is not the site's
    current content: the version the lagging search index saw, or a space or user entry.
    """

    ids: list[str]
    index_of: dict[str, int]
    entries: dict[str, Hit] | None = None


def _search_time_zone(request: web.Request, state: EmulatorState) -> str:
    # Cloud reads date literals in the caller's zone, Data Center in the server's zone.
    if flavour_of(request) != "datacenter":
        user = state.site.user(str(request.get(USER_ID_KEY) or state.site.current_user_id))
        if user is not None and user.time_zone:
            return user.time_zone
    return state.options.time_zone


def _candidates(site: Site, query: cql.Query) -> Iterable[Content]:
    ids = query.candidate_ids()
    if ids is not None:
        found = (site.content(content_id) for content_id in sorted(ids))
        return [item for item in found if item is not None]
    requested_keys = query.candidate_space_keys()
    if requested_keys is None:
        space_keys = list(site.spaces)
    else:
        folded = {key.casefold() for key in requested_keys}
        space_keys = [key for key in site.spaces if key.casefold() in folded]
    requested_types = query.candidate_types()
    if requested_types is None:
        types = list(ContentType)
    else:
        types = [_CONTENT_TYPES[name] for name in requested_types if name in _CONTENT_TYPES]
    items: list[Content] = []
    for key in space_keys:
        for content_type in types:
            items.extend(site.space_contents(key, content_type))
    return items


def _space_status_reader(site: Site, include_archived: bool) -> Callable[[str], str] | None:
    if include_archived:
        return None

    def space_status(key: str) -> str:
        space = site.space(key)
        return space.status if space is not None else "current"

    return space_status


def _match(site: Site, query: cql.Query, include_archived: bool, *, wrapper: bool) -> MatchList:
    status_reader = _space_status_reader(site, include_archived)
    matched: list[Hit] = [
        item for item in _candidates(site, query) if query.matches(item, status_reader)
    ]
    others = _matching_entries(site, query, status_reader) if wrapper else []
    if not others:
        ids = [item.id for item in query.sort(matched)]
        index_of = {content_id: position for position, content_id in enumerate(ids)}
        return MatchList(ids=ids, index_of=index_of)
    return _match_list(query.sort([*matched, *others]), {item.id for item in others})


def _matching_entries(
    site: Site, query: cql.Query, status_reader: Callable[[str], str] | None
) -> list[Hit]:
    """Return the space and user entries the query matches (``type = space`` or ``user``)."""
    return [
        entry
        for entry in entries_for(site, query.candidate_types())
        if query.matches(entry, status_reader)
    ]


def _match_list(ordered: list[Hit], keep: set[str] | None) -> MatchList:
    """Build a MatchList whose entries hold the hits in ``keep`` (all of them for None)."""
    ids = [item.id for item in ordered]
    index_of = {hit_id: position for position, hit_id in enumerate(ids)}
    entries = {item.id: item for item in ordered if keep is None or item.id in keep}
    return MatchList(ids=ids, index_of=index_of, entries=entries)


def _match_lagging(
    site: Site, query: cql.Query, include_archived: bool, cutoff: float, *, wrapper: bool
) -> MatchList:
    """Match against what the search index saw at ``cutoff`` (epoch seconds).

    An item edited since then is found in its previous version (title, version, dates),
    an item created since then is missing, and one trashed since then is still found.
    NOTE: candidates come from the spaces items are in now, so an item moved to another
    space within the lag is not found under its previous space.
    """
    status_reader = _space_status_reader(site, include_archived)
    matched: list[Hit] = []
    for item in _candidates(site, query):
        seen = site.indexed_version(item.id, cutoff)
        if seen is not None and query.matches(seen, status_reader):
            matched.append(seen)
    if wrapper:
        matched.extend(_matching_entries(site, query, status_reader))
    return _match_list(query.sort(matched), None)


def _dc_search_cap(expand: Expand) -> int:
    # Data Center caps content search at 50 rows with a body expanded, at 200 with other
    # expansions and at 1000 without any.
    paths = expand_paths(expand)
    if any(path == "body" or path.startswith("body.") for path in paths):
        return 50
    return 200 if paths else 1000


@dataclass
class SearchPage:
    """One page of search results plus what the envelope reports."""

    items: list[Hit]
    start: int
    limit: int
    total_size: int
    next_link: str | None
    cql: str


def _run_search(
    request: web.Request, content_expand: Expand, *, route: str, wrapper: bool
) -> SearchPage:
    state = state_of(request)
    site = state.site
    flavour = flavour_of(request)
    query_text = request.query.get("cql")
    if query_text is None or query_text == "":
        raise _cql_error(cql.CqlError.required(), flavour)
    try:
        limit = parse_search_limit(
            request.query.get("limit"), POLICIES["search"], expand_paths(content_expand)
        )
        start = parse_search_start(request.query.get("start"))
    except PagingError as error:
        raise ApiError(error.status, error.body) from None
    datacenter = flavour == "datacenter"
    if datacenter and state.dc_quirks:
        limit = min(limit, _dc_search_cap(content_expand))
    include_archived = request.query.get("includeArchivedSpaces", "").lower() == "true"
    time_zone = _search_time_zone(request, state)
    now = site.now()
    user_id = str(request.get(USER_ID_KEY) or site.current_user_id)
    try:
        query = cql.parse(query_text, time_zone=time_zone, now=now, current_user=user_id)
    except cql.CqlError as error:
        raise _cql_error(error, flavour) from None

    # Results of a query with date functions move with the clock, so they are cached for
    # a few seconds only. Other queries stay cached until the site changes.
    moment = int(now.timestamp()) // 5 if _TIME_FUNCTION.search(query_text) else None
    key = ("search", query_text, time_zone, include_archived, user_id, moment, wrapper)
    cutoff = now.timestamp() - state.search_lag
    matches: MatchList
    if state.search_lag > 0 and site.last_change_at > cutoff:
        matches = _match_lagging(site, query, include_archived, cutoff, wrapper=wrapper)
    else:
        matches = state.searches.get(
            site, key, lambda: _match(site, query, include_archived, wrapper=wrapper)
        )
    hidden = site.hidden_from(caller_id(request))
    visible = matches.ids
    if hidden:
        visible = [content_id for content_id in matches.ids if content_id not in hidden]

    if datacenter:
        end = min(len(visible), start + limit)
        ids = visible[start:end] if start < len(visible) else []
        next_link = None
        if end < len(visible) and not (wrapper and state.dc_quirks):
            next_link = _next_link(request, route, cursor=None, limit=limit, start=end)
        items = _load(site, ids, matches.entries)
        return SearchPage(items, start, limit, len(visible), next_link, query_text)

    cursor_token = request.query.get("cursor")
    cursor: SearchCursor | None = None
    if cursor_token:
        try:
            cursor = decode_cursor(cursor_token)
        except PagingError as error:
            raise ApiError(error.status, error.body) from None
    page: CursorPage = cursor_page(
        visible,
        matches.index_of if visible is matches.ids else None,
        cursor,
        limit,
        short_page_rate=state.short_page_rate,
        seed=(query_text, cursor_token or "", limit),
    )
    ids = list(visible[page.start : page.end])
    if start + len(ids) > INT32_MAX:
        # Cloud computes the next start as an int and refuses a page that overflows it.
        raise ApiError(
            400,
            {
                "statusCode": 400,
                "message": f"{BAD_REQUEST_CLASS}: start + limit overflows an int: start={start} "
                f"with {len(ids)} results; follow the next link or start from 0",
            },
        )
    next_link = None
    if page.next_cursor is not None:
        next_link = _next_link(
            request, route, cursor=page.next_cursor, limit=limit, start=start + len(ids)
        )
    total = estimate_total(len(visible), seed=(query_text, cursor_token or ""))
    items = _load(site, ids, matches.entries)
    return SearchPage(items, start, limit, total, next_link, query_text)


def _load(site: Site, ids: Sequence[str], entries: dict[str, Hit] | None) -> list[Hit]:
    loaded: list[Hit] = []
    for hit_id in ids:
        hit: Hit | None = entries.get(hit_id) if entries is not None else None
        if hit is None:
            hit = site.content(hit_id)
        if hit is not None:
            loaded.append(hit)
    return loaded


def _cql_error(error: cql.CqlError, flavour: str) -> ApiError:
    return ApiError(error.status, error.body("datacenter" if flavour == "datacenter" else "cloud"))


def _next_link(
    request: web.Request, route: str, *, cursor: str | None, limit: int, start: int
) -> str:
    """Build a search next link: marker, cursor, expand, limit, a dead start, then cql.

    ``excerpt`` is not carried, as on Cloud.
    NOTE: whether Cloud carries ``includeArchivedSpaces`` is not recorded; it is carried
    here so that a walk keeps its scope.
    """
    params: list[tuple[str, str]] = [("next", "true")]
    if cursor is not None:
        params.append(("cursor", cursor))
    expand = request.query.getall("expand", [])
    if expand:
        params.append(("expand", ",".join(expand)))
    params.append(("limit", str(limit)))
    params.append(("start", str(start)))
    params.append(("cql", request.query.get("cql", "")))
    archived = request.query.get("includeArchivedSpaces")
    if archived is not None:
        params.append(("includeArchivedSpaces", archived))
    return f"{route}?{encode_query(params)}"


def _self_link(ctx: ShapeContext, request: web.Request, route: str) -> str:
    excluded = {"start", "limit", "cursor", "next", "prev"}
    params = [(key, value) for key, value in request.query.items() if key not in excluded]
    query = encode_query(params)
    return f"{ctx.base}{route}" + (f"?{query}" if query else "")


EXCERPT_MODES = ("highlight", "indexed", "none", "highlight_unescaped", "indexed_unescaped")
HIGHLIGHT_START = "@@@hl@@@"
HIGHLIGHT_END = "@@@endhl@@@"
_TEXT_CLAUSE = re.compile(
    r"\b(?:title|text|siteSearch)\s*~\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s()]+)",
    re.IGNORECASE,
)
_WORD = re.compile(r"\w+")


def _excerpt_mode(request: web.Request) -> str:
    mode = request.query.get("excerpt", "highlight")
    if mode not in EXCERPT_MODES:
        raise ApiError(
            400,
            {
                "statusCode": 400,
                "message": f"{BAD_REQUEST_CLASS}: Invalid excerpt '{mode}': use one of "
                + ", ".join(EXCERPT_MODES),
            },
        )
    return mode


def highlight_terms(query_text: str) -> set[str]:
    """Return the lower-cased words of the query's ``title``, ``text`` and ``siteSearch``
    clauses, which Cloud marks in the titles and excerpts of ``/search`` hits."""
    terms: set[str] = set()
    for match in _TEXT_CLAUSE.finditer(query_text):
        value = match.group(1).strip("\"'")
        terms.update(word.casefold() for word in _WORD.findall(value))
    return terms


def highlight(text: str, terms: set[str]) -> str:
    """Wrap each word of ``text`` that is one of ``terms`` in Cloud's highlight markers."""
    if not terms:
        return text
    return _WORD.sub(
        lambda word: (
            f"{HIGHLIGHT_START}{word.group(0)}{HIGHLIGHT_END}"
            if word.group(0).casefold() in terms
            else word.group(0)
        ),
        text,
    )


def _present_text(text: str, mode: str, terms: set[str]) -> str:
    # Markers go in after escaping, so `<` in a title never hides a marker.
    escaped = text if mode.endswith("_unescaped") else escape_html(text)
    return highlight(escaped, terms) if mode.startswith("highlight") else escaped


async def search(request: web.Request) -> web.Response:
    """``GET /search``: search result wrappers; expansions are prefixed ``content.``."""
    started = time.perf_counter()
    state = state_of(request)
    tree = request_expand(request, use_defaults_when_absent=False)
    content_expand: Expand = tree.get("content", {})
    route = "/rest/api/search"
    excerpt_mode = _excerpt_mode(request)
    page = _run_search(request, content_expand, route=route, wrapper=True)
    ctx = dataclasses.replace(
        shape_of(request), search_style=True, body_limit=state.search_body_limit
    )

    terms = highlight_terms(page.cql)
    results: list[dict[str, Any]] = []
    for item in page.items:
        if isinstance(item, SpaceEntry):
            result = space_result_json(ctx, item.space, tree.get("space", {}))
        elif isinstance(item, UserEntry):
            result = user_result_json(ctx, item.user.account_id)
        else:
            result = search_result_json(ctx, item, content_expand)
        # The wrapper's title and excerpt are presentation text: escaped and highlighted
        # by default, so a crawler must take the title from `content.title`.
        result["title"] = _present_text(item.title, excerpt_mode, terms)
        if excerpt_mode == "none":
            result["excerpt"] = ""
        else:
            result["excerpt"] = _present_text(result["excerpt"], excerpt_mode, terms)
        results.append(result)

    links: dict[str, str] = {"base": ctx.base, "context": ctx.context}
    if page.next_link is not None:
        links["next"] = page.next_link
    links["self"] = _self_link(ctx, request, route)

    body = {
        "results": results,
        "start": page.start,
        "limit": page.limit,
        "size": len(results),
        "totalSize": page.total_size,
        "cqlQuery": page.cql,
        "searchDuration": int((time.perf_counter() - started) * 1000),
        "_links": links,
    }
    return json_response(body)


async def content_search(request: web.Request) -> web.Response:
    """``GET /content/search``: a ContentArray with plain Content expansions."""
    started = time.perf_counter()
    expand = request_expand(request, use_defaults_when_absent=False)
    route = "/rest/api/content/search"
    page = _run_search(request, expand, route=route, wrapper=False)
    ctx = shape_of(request)

    links: dict[str, str] = {"base": ctx.base, "context": ctx.context}
    if page.next_link is not None:
        links["next"] = page.next_link
    links["self"] = _self_link(ctx, request, route)

    # The route never matches spaces or users, so every hit is content.
    results = [content_json(ctx, item, expand) for item in page.items if isinstance(item, Content)]
    body = {
        "results": results,
        "start": page.start,
        "limit": page.limit,
        "size": len(results),
        "totalSize": page.total_size,
        "cqlQuery": page.cql,
        "searchDuration": int((time.perf_counter() - started) * 1000),
        "_links": links,
    }
    return json_response(body)
