"""Offset and cursor paging of the emulated Confluence REST API v1, without HTTP.

Offset lists (``/space``, ``/content``, children, labels, versions, restrictions) take
``start`` and ``limit``, cap ``limit`` per route and reject bad values with the bodies that
Confluence Cloud sends. CQL search pages only by an opaque cursor that names the last row
served; ``start`` is echoed but never used to position.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import orjson

INT32_MAX = 2**31 - 1

# Cloud rejects `/content?start=100001` with 400, but still serves 100000.
CONTENT_MAX_START = 100_000


class PagingError(Exception):
    """A rejected paging parameter, carrying the HTTP status and the body Confluence sends.

    ``body`` is None for the bodiless 404 that the CQL search routes give for an
    unparsable ``limit``.
    """

    def __init__(self, status: int, body: dict[str, Any] | None) -> None:
        message = "" if body is None else str(body.get("message", ""))
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class LimitPolicy:
    """Default and maximum page size of one route, as Confluence Cloud applies them.

    ``cap`` None means no cap. ``body_cap`` replaces ``cap`` when the request expands a
    body, and ``export_cap`` when it expands ``body.export_view`` or ``body.styled_view``.
    """

    default: int
    cap: int | None
    body_cap: int | None = None
    export_cap: int | None = None
    zero_rejected: bool = False
    max_start: int | None = None
    zero_limit_keeps_next: bool = False

    def cap_for(self, expand_paths: Sequence[str]) -> int | None:
        """Return the cap that applies when these expansion paths are requested."""
        caps = [self.cap]
        if any(_is_export_body(path) for path in expand_paths) and self.export_cap is not None:
            caps.append(self.export_cap)
        if any(_is_body(path) for path in expand_paths) and self.body_cap is not None:
            caps.append(self.body_cap)
        present = [cap for cap in caps if cap is not None]
        return min(present) if present else None


def _is_body(path: str) -> bool:
    return path == "body" or path.startswith("body.")


def _is_export_body(path: str) -> bool:
    return path.startswith(("body.export_view", "body.styled_view"))


# Caps measured on Confluence Cloud: content, space and child/comment cap at 1000,
# child/page has no cap, label is 200 with limit=0 rejected, version defaults to 200 and
# restriction to 100. Expanding bodies caps content lists at 100, and the export views
# at 25, as the Cloud API documentation states.
POLICIES: Mapping[str, LimitPolicy] = {
    "space": LimitPolicy(default=25, cap=1000),
    "content": LimitPolicy(
        default=25,
        cap=1000,
        body_cap=100,
        export_cap=25,
        max_start=CONTENT_MAX_START,
        zero_limit_keeps_next=True,
    ),
    "space-content": LimitPolicy(default=25, cap=1000, body_cap=100, export_cap=25),
    "child-page": LimitPolicy(default=25, cap=None, body_cap=100, export_cap=25),
    "child-comment": LimitPolicy(default=25, cap=1000, body_cap=100, export_cap=25),
    "child-attachment": LimitPolicy(default=25, cap=1000, body_cap=100, export_cap=25),
    "descendant": LimitPolicy(default=25, cap=1000, body_cap=100, export_cap=25),
    "label": LimitPolicy(default=200, cap=200, zero_rejected=True),
    "version": LimitPolicy(default=200, cap=200),
    "restriction": LimitPolicy(default=100, cap=100),
    "search": LimitPolicy(default=25, cap=None, body_cap=100, export_cap=25),
}


def _conversion_error(raw: str) -> PagingError:
    return PagingError(
        400,
        {
            "statusCode": 400,
            "message": (
                "org.springframework.web.method.annotation.MethodArgumentTypeMismatchException: "
                "Failed to convert value of type 'java.lang.String' to required type 'int'; "
                "nested exception is java.lang.NumberFormatException: "
                f'For input string: "{raw}"'
            ),
        },
    )


def _parse_int(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    text = raw.strip()
    try:
        value = int(text)
    except ValueError:
        raise _conversion_error(raw) from None
    if not -(2**31) <= value <= INT32_MAX or not text.lstrip("+-").isdigit():
        raise _conversion_error(raw)
    return value


@dataclass(frozen=True)
class PageRequest:
    """Validated offset paging parameters.

    ``limit`` is the value the response echoes, and ``rows`` the maximum number of rows
    served. ``rows`` is smaller than ``limit`` only when a Data Center cap applies silently.
    """

    start: int
    limit: int
    rows: int
    overcount_next: bool = False
    # Cloud quirk: a full last page and an empty page past the end still carry `next`.
    next_past_end: bool = False


def parse_page(
    start_raw: str | None,
    limit_raw: str | None,
    policy: LimitPolicy,
    *,
    expand_paths: Sequence[str] = (),
    silent_cap: int | None = None,
    next_past_end: bool = False,
) -> PageRequest:
    """Validate ``start`` and ``limit`` of an offset list against the route's policy.

    ``silent_cap`` imitates Data Center: rows are capped without changing the echoed
    ``limit``, and the next link advances ``start`` by the full ``limit``.
    ``next_past_end`` imitates Cloud sending a next link with a full last page and with
    an empty page past the end.
    Raises PagingError with the body Confluence Cloud sends for the bad value.
    """
    start = _parse_int(start_raw, 0)
    limit = _parse_int(limit_raw, policy.default)
    if start < 0 or limit < 0:
        # Cloud names `start` when both are negative.
        name = "start" if start < 0 else "limit"
        raise PagingError(
            400,
            {
                "statusCode": 400,
                "message": f"java.lang.IllegalArgumentException: {name} cannot be less than zero",
            },
        )
    if limit == 0 and policy.zero_rejected:
        raise PagingError(
            400, {"statusCode": 400, "message": "java.lang.IllegalArgumentException: null"}
        )
    if policy.max_start is not None and start > policy.max_start:
        raise PagingError(
            400,
            {
                "statusCode": 400,
                "data": {
                    "authorized": True,
                    "valid": True,
                    "allowedInReadOnlyMode": True,
                    "errors": [],
                    "successful": False,
                },
                "message": (
                    "com.atlassian.confluence.api.service.exceptions.BadRequestException: "
                    "Start of this size is no longer supported. If you need to fetch this "
                    "amount of content, please use either the search endpoint or get the "
                    "content by a space at a time."
                ),
            },
        )
    cap = policy.cap_for(expand_paths)
    if cap is not None and limit > cap:
        limit = cap
    if silent_cap is not None and limit > silent_cap:
        return PageRequest(
            start=start,
            limit=limit,
            rows=silent_cap,
            overcount_next=True,
            next_past_end=next_past_end,
        )
    return PageRequest(start=start, limit=limit, rows=limit, next_past_end=next_past_end)


@dataclass(frozen=True)
class OffsetPage:
    """The slice ``[start, end)`` of a list and the ``start`` of the next and previous pages."""

    start: int
    end: int
    next_start: int | None
    prev_start: int | None


def slice_page(total: int, request: PageRequest, policy: LimitPolicy) -> OffsetPage:
    """Compute which rows of a list of ``total`` rows one page serves, and its neighbours.

    Past the end the page is empty and has no next link, unless the request asks for
    Cloud's next link past the end. ``limit=0`` gives an empty page;
    on ``/content`` Cloud still sends a next link with the same ``start``.
    """
    start = request.start
    end = min(total, start + request.rows)
    end = max(end, start)
    next_start: int | None
    if request.limit == 0:
        next_start = start if policy.zero_limit_keeps_next and start < total else None
    elif end < total:
        next_start = start + request.limit if request.overcount_next else end
    elif request.next_past_end and (start >= total or end - start == request.rows):
        next_start = start + request.limit
    else:
        next_start = None
    prev_start = max(0, start - request.limit) if start > 0 and request.limit > 0 else None
    return OffsetPage(start=start, end=end, next_start=next_start, prev_start=prev_start)


def encode_query(params: Sequence[tuple[str, str]]) -> str:
    """Encode query parameters the way Confluence writes them: commas stay literal."""
    return "&".join(f"{quote_plus(key)}={quote_plus(value, safe=',')}" for key, value in params)


def offset_links(
    *,
    base: str,
    api_path: str,
    params: Sequence[tuple[str, str]],
    page: OffsetPage,
    limit: int,
) -> dict[str, str]:
    """Build ``base``, ``context``-less ``self``, ``next`` and ``prev`` of an offset page.

    ``api_path`` is context-relative, e.g. ``/rest/api/content``. ``params`` are the
    request's parameters other than ``start``, ``limit``, ``next`` and ``prev``; they are
    carried into every link. ``self`` is absolute; ``next`` and ``prev`` are
    context-relative.
    """
    links: dict[str, str] = {}
    query = encode_query(params)
    links["self"] = base + api_path + ("?" + query if query else "")
    if page.next_start is not None:
        links["next"] = (
            api_path
            + "?"
            + encode_query(
                [("next", "true"), *params, ("limit", str(limit)), ("start", str(page.next_start))]
            )
        )
    if page.prev_start is not None:
        links["prev"] = (
            api_path
            + "?"
            + encode_query(
                [("prev", "true"), *params, ("limit", str(limit)), ("start", str(page.prev_start))]
            )
        )
    return links


# --- CQL search cursors -------------------------------------------------------------


@dataclass(frozen=True)
class SearchCursor:
    """The last row served: its id and its index in the order when it was served."""

    last_id: str
    position: int


def encode_cursor(cursor: SearchCursor) -> str:
    """Encode a cursor as an opaque, URL-safe token."""
    raw = orjson.dumps({"i": cursor.last_id, "p": cursor.position})
    return "_e_" + base64.urlsafe_b64encode(raw).decode("ascii")


def invalid_cursor_error(token: str) -> PagingError:
    """Return the 400 Cloud sends when the search aggregator cannot read a cursor."""
    return PagingError(
        400,
        {
            "statusCode": 400,
            "message": (
                "com.atlassian.confluence.api.service.exceptions.BadRequestException: "
                "SSStatusCodeException: Received non-2xx status code 400 from "
                f"XP-Search Aggregator API for cursor {token!r}"
            ),
        },
    )


def decode_cursor(token: str) -> SearchCursor:
    """Decode a cursor made by encode_cursor; raise PagingError (400) for anything else."""
    if not token.startswith("_e_"):
        raise invalid_cursor_error(token)
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token[3:].encode("ascii")))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise invalid_cursor_error(token) from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("i"), str)
        or not isinstance(data.get("p"), int)
        or data["p"] < 0
    ):
        raise invalid_cursor_error(token)
    return SearchCursor(last_id=data["i"], position=data["p"])


def parse_search_limit(raw: str | None, policy: LimitPolicy, expand_paths: Sequence[str]) -> int:
    """Validate a CQL search ``limit``.

    The search routes are not Spring-bound, so an unparsable value gives a bodiless 404
    rather than the 400 of the offset lists. A negative value is a 400.
    """
    if raw is None or raw == "":
        limit = policy.default
    else:
        try:
            limit = int(raw.strip())
        except ValueError:
            raise PagingError(404, None) from None
        if limit > INT32_MAX:
            raise PagingError(404, None)
    if limit < 0:
        raise PagingError(
            400,
            {
                "statusCode": 400,
                "message": "java.lang.IllegalArgumentException: limit cannot be less than zero",
            },
        )
    cap = policy.cap_for(expand_paths)
    return min(limit, cap) if cap is not None else limit


def parse_search_start(raw: str | None) -> int:
    """Parse the ``start`` that CQL search echoes (Cloud ignores it for positioning)."""
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw.strip())
    except ValueError:
        raise PagingError(404, None) from None
    if value < 0:
        raise PagingError(
            400,
            {
                "statusCode": 400,
                "message": "java.lang.IllegalArgumentException: start cannot be less than zero",
            },
        )
    return value


def _seeded_random(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def short_page_rows(limit: int, rate: float, *, seed: object) -> int:
    """Return how many rows a mid-walk search page serves: ``limit``, or fewer at ``rate``.

    The choice is deterministic in ``seed`` (the query, cursor and limit), so that a
    retried request gets the same page. Real Cloud pages of 100 came back with 98 and 91
    rows while more rows followed.
    """
    if limit <= 1 or rate <= 0.0:
        return limit
    rng = _seeded_random("short", seed)
    if rng.random() >= rate:
        return limit
    floor = max(1, (limit * 9) // 10)
    return rng.randint(floor, limit - 1) if floor < limit else limit


def estimate_total(real_total: int, *, seed: object) -> int:
    """Return a ``totalSize`` estimate near ``real_total``, as Cloud search reports it.

    Cloud read 294, 292 and 291 across the pages of a walk with 289 real rows, so the
    estimate here is off by up to about 2 percent, and differs between pages.
    """
    if real_total == 0:
        return 0
    rng = _seeded_random("total", seed)
    spread = max(1, real_total // 50)
    return max(0, real_total + rng.randint(-spread // 2, spread))


@dataclass(frozen=True)
class CursorPage:
    """One CQL search page: the slice ``[start, end)`` of the ordered matches and the cursor."""

    start: int
    end: int
    next_cursor: str | None


def cursor_page(
    ordered_ids: Sequence[str],
    index_of: Mapping[str, int] | None,
    cursor: SearchCursor | None,
    limit: int,
    *,
    short_page_rate: float,
    seed: object,
) -> CursorPage:
    """Select the rows after ``cursor`` in ``ordered_ids`` for one search page.

    The cursor names the last row served. When that row is still in the results, the page
    starts right after it. When it no longer matches, the row that followed it has moved up
    into its index, so the page starts at that index. A walk then neither repeats nor
    skips rows as long as the rows before the cursor stay in place. ``index_of`` maps ids
    to positions; without it a row that moved is looked up by a scan.
    """
    total = len(ordered_ids)
    if cursor is None:
        start = 0
    else:
        found = _find_row(ordered_ids, index_of, cursor)
        start = found + 1 if found is not None else min(cursor.position, total)
    rows = short_page_rows(limit, short_page_rate, seed=(seed, start))
    end = min(total, start + rows)
    if limit == 0 or end >= total:
        return CursorPage(start=start, end=end, next_cursor=None)
    next_cursor = encode_cursor(SearchCursor(last_id=ordered_ids[end - 1], position=end - 1))
    return CursorPage(start=start, end=end, next_cursor=next_cursor)


def _find_row(
    ordered_ids: Sequence[str], index_of: Mapping[str, int] | None, cursor: SearchCursor
) -> int | None:
    position = cursor.position
    # Fast path: nothing moved since the cursor was issued.
    if position < len(ordered_ids) and ordered_ids[position] == cursor.last_id:
        return position
    if index_of is not None:
        return index_of.get(cursor.last_id)
    try:
        return list(ordered_ids).index(cursor.last_id)
    except ValueError:
        return None
