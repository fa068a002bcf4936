"""Paginators of the Confluence REST API v1 listings.

Three kinds of listing exist, each with its own stop rule:

- Offset lists (``/space``, ``/content``, ``child/*``, ``label``...): ``offset_pages``.
  The next ``start`` is the previous ``start`` plus the rows received, because Data
  Center caps ``limit`` silently while its ``_links.next`` advances by the full limit.
  The walk stops on a missing ``next`` or an empty page, never on a short page.
- Cloud CQL search (``/search``, ``/content/search``): ``cursor_pages``. Cloud ignores
  ``start`` here, so only ``_links.next`` (which carries the cursor) is followed, short
  pages mid-walk are not the end, and rows are de-duplicated by id.
- Data Center ``/search``, which may carry no usable ``next``:
  ``datacenter_search_pages`` pages by ``start`` until a page is empty or ``totalSize``
  is reached.

A paginator that raises mid-walk means "listing incomplete": the caller must never
derive deletions from the pages it received before the error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from producer.errors import IncompleteListingError, RetriableError, SkippableError

logger = logging.getLogger(__name__)

# Statuses after which a smaller page may succeed: large pages with bodies time out.
SHRINKABLE_STATUSES = frozenset({500, 502, 503, 504})
# Retries of one page request before the page size is halved instead.
RETRIES_BEFORE_SHRINKING = 1
# Row ids a search walk remembers to drop repeated rows. Repeats come from rows that
# move across a page boundary while the walk runs, so a window of recent rows catches
# them, and memory stays the same for a space of any size.
RECENT_IDS_KEPT = 10_000


class Client(Protocol):
    """The part of ``ConfluenceClient`` the paginators use."""

    def get(
        self,
        path: str,
        params: Mapping[str, str | int] | None = None,
        *,
        max_retries: int | None = None,
    ) -> dict[str, Any]: ...


@dataclass
class Page:
    """One page of a listing: its rows, the whole response and the request that fetched it."""

    results: list[dict[str, Any]]
    raw: dict[str, Any]
    request_path: str
    params: dict[str, str | int] = field(default_factory=dict)


def _results_of(raw: dict[str, Any], path: str) -> list[dict[str, Any]]:
    results = raw.get("results")
    if not isinstance(results, list):
        raise SkippableError(
            f"listing response of {path} has no 'results' list (keys: "
            f"{', '.join(sorted(raw)) or 'none'}); the endpoint does not return a list",
            method="GET",
            url=path,
        )
    rows = [row for row in results if isinstance(row, dict)]
    if len(rows) != len(results):
        # A dropped row would make the listing look complete without it, and a complete
        # structure listing is what deletions are derived from.
        raise IncompleteListingError(
            f"listing response of {path} has {len(results) - len(rows)} of {len(results)} "
            "rows that are not JSON objects; the listing cannot be trusted as complete",
            method="GET",
            url=path,
        )
    return rows


def _next_link(raw: dict[str, Any]) -> str | None:
    links = raw.get("_links")
    if not isinstance(links, dict):
        return None
    link = links.get("next")
    return link if isinstance(link, str) and link else None


class RecentIds:
    """The last ``size`` distinct row ids of a walk, oldest dropped first."""

    def __init__(self, size: int = RECENT_IDS_KEPT) -> None:
        self.size = size
        self._ids: dict[str, None] = {}

    def __contains__(self, identifier: object) -> bool:
        return identifier in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, identifier: str) -> None:
        if identifier in self._ids:
            return
        self._ids[identifier] = None
        if len(self._ids) > self.size:
            del self._ids[next(iter(self._ids))]


def row_id(row: Mapping[str, Any]) -> str | None:
    """Return the id of a listing row: its ``id``, or that of a ``/search`` hit's entity.

    ``/search`` hits carry no top-level id but wrap a ``content``, ``space`` or ``user``.
    Content rows have their own ``id`` and may also carry an expanded ``space``.
    """
    value = row.get("id")
    if value is not None:
        return str(value)
    for key in ("content", "space", "user"):
        nested = row.get(key)
        if isinstance(nested, Mapping):
            inner = nested.get("id") or nested.get("key") or nested.get("accountId")
            if inner is not None:
                return f"{key}:{inner}"
    return None


def _can_shrink(error: RetriableError, limit: int) -> bool:
    return limit > 1 and (error.status is None or error.status in SHRINKABLE_STATUSES)


def _halve(limit: int, path: str, error: RetriableError) -> int:
    smaller = max(1, limit // 2)
    logger.warning(
        "page request failed, halving the page size path=%s limit=%d new_limit=%d "
        "status=%s error=%s",
        path,
        limit,
        smaller,
        error.status,
        error.message,
    )
    return smaller


def offset_pages(
    client: Client,
    path: str,
    params: Mapping[str, str | int] | None = None,
    *,
    limit: int,
    shrink: bool = True,
) -> Iterator[Page]:
    """Walk an offset-paged list from ``params["start"]`` (default 0) to its end.

    With ``shrink``, a page that keeps failing with 5xx or timeouts is requested again
    with half the limit, down to 1; the smaller limit is kept for the following pages.
    """
    base = {key: value for key, value in (params or {}).items() if key not in ("limit",)}
    start = int(base.pop("start", 0))
    seen_starts: set[int] = set()
    # A server that ignores start returns the first page again, which is also the page
    # before, so the previous page's ids are enough to notice it.
    previous_ids: set[str] = set()
    while True:
        if start in seen_starts:
            raise IncompleteListingError(
                f"listing {path} requested start={start} twice; stopping to avoid a loop",
                method="GET",
                url=path,
            )
        request = {**base, "start": start, "limit": limit}
        try:
            raw = client.get(
                path,
                request,
                max_retries=RETRIES_BEFORE_SHRINKING if shrink and limit > 1 else None,
            )
        except RetriableError as error:
            if shrink and _can_shrink(error, limit):
                limit = _halve(limit, path, error)
                continue
            raise
        seen_starts.add(start)
        results = _results_of(raw, path)
        echoed = raw.get("start")
        if isinstance(echoed, int) and echoed != start:
            raise IncompleteListingError(
                f"listing {path} ignored start={start} and returned start={echoed}; this "
                "endpoint must be paged by cursor, not by offset",
                method="GET",
                url=path,
            )
        ids = [row_id(row) for row in results]
        known = [item for item in ids if item is not None]
        if start > 0 and known and all(item in previous_ids for item in known):
            raise IncompleteListingError(
                f"listing {path} returned only rows already seen at start={start}; the "
                "server ignores start, so page this endpoint by cursor",
                method="GET",
                url=path,
            )
        previous_ids = set(known)
        yield Page(results=results, raw=raw, request_path=path, params=request)
        if not results or _next_link(raw) is None:
            return
        start += len(results)


def _query_of(link: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(link).query, keep_blank_values=True))


def _with_limit(link: str, limit: int) -> str:
    parts = urlsplit(link)
    pairs = [
        (key, str(limit) if key == "limit" else value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def cursor_pages(
    client: Client,
    path: str,
    params: Mapping[str, str | int] | None = None,
    *,
    limit: int,
    shrink: bool = True,
) -> Iterator[Page]:
    """Walk a Cloud CQL search by its cursor: ``_links.next`` only, never ``start``."""
    first = {key: value for key, value in (params or {}).items() if key not in ("start", "cursor")}
    first["limit"] = limit
    link: str | None = None  # None: the first request, built from path and params
    seen_cursors: set[str] = set()
    seen_ids = RecentIds()
    duplicates = 0
    while True:
        request_path = path if link is None else link
        request_params: dict[str, str | int] = dict(first) if link is None else {}
        try:
            raw = client.get(
                request_path,
                request_params,
                max_retries=RETRIES_BEFORE_SHRINKING if shrink and limit > 1 else None,
            )
        except RetriableError as error:
            if shrink and _can_shrink(error, limit):
                limit = _halve(limit, path, error)
                if link is None:
                    first["limit"] = limit
                else:
                    link = _with_limit(link, limit)
                continue
            raise
        rows = _results_of(raw, path)
        fresh: list[dict[str, Any]] = []
        for row in rows:
            identifier = row_id(row)
            if identifier is not None and identifier in seen_ids:
                duplicates += 1
                continue
            if identifier is not None:
                seen_ids.add(identifier)
            fresh.append(row)
        yield Page(results=fresh, raw=raw, request_path=request_path, params=request_params)
        following = _next_link(raw)
        if following is None:
            if duplicates:
                logger.info(
                    "search listing dropped duplicate rows path=%s count=%d", path, duplicates
                )
            return
        cursor = _query_of(following).get("cursor")
        marker = cursor if cursor is not None else following
        if marker in seen_cursors:
            raise IncompleteListingError(
                f"search listing {path} returned a cursor it had returned before; stopping "
                "to avoid emitting the same rows again",
                method="GET",
                url=path,
            )
        seen_cursors.add(marker)
        if shrink and str(limit) != _query_of(following).get("limit", str(limit)):
            following = _with_limit(following, limit)
        link = following


def datacenter_search_pages(
    client: Client,
    path: str,
    params: Mapping[str, str | int] | None = None,
    *,
    limit: int,
    stop_at_total: bool = True,
) -> Iterator[Page]:
    """Walk a Data Center CQL search by ``start`` until an empty page or ``totalSize``.

    ``totalSize`` comes from the search index and may count fewer rows than exist, so a
    walk that must see every row (a structure listing) passes ``stop_at_total=False``
    and stops only on an empty page, one request later.
    """
    base = {key: value for key, value in (params or {}).items() if key not in ("limit", "cursor")}
    start = int(base.pop("start", 0))
    seen_ids = RecentIds()
    while True:
        request = {**base, "start": start, "limit": limit}
        raw = client.get(path, request)
        rows = _results_of(raw, path)
        fresh = []
        for row in rows:
            identifier = row_id(row)
            if identifier is not None and identifier in seen_ids:
                continue
            if identifier is not None:
                seen_ids.add(identifier)
            fresh.append(row)
        if rows and not fresh:
            raise IncompleteListingError(
                f"search listing {path} returned only rows already seen at start={start}; "
                "the server ignores start here",
                method="GET",
                url=path,
            )
        yield Page(results=fresh, raw=raw, request_path=path, params=request)
        if not rows:
            return
        start += len(rows)
        total = raw.get("totalSize")
        if stop_at_total and isinstance(total, int) and start >= total:
            return


def search_pages(
    client: Client,
    deployment: str,
    path: str,
    params: Mapping[str, str | int] | None = None,
    *,
    limit: int,
) -> Iterator[Page]:
    """Walk a CQL search with the paginator that fits ``deployment``."""
    if deployment == "datacenter":
        return datacenter_search_pages(client, path, params, limit=limit)
    return cursor_pages(client, path, params, limit=limit)
