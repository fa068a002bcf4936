"""Tests of the paginators: stop rules with fake servers, and field bugs against the emulator.

Tests named after a connector (langchain, unstructured, elastic, onyx, airbyte) reproduce
a failure that connector had in the field, with the trigger described in the docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from emulator.model import ContentType
from producer.client import ConfluenceClient
from producer.errors import IncompleteListingError, RetriableError, SkippableError
from producer.paging import (
    cursor_pages,
    datacenter_search_pages,
    offset_pages,
    search_pages,
)
from tests.producer.conftest import EmulatorSite, StartEmulator

Handler = Callable[[str, dict[str, str]], dict[str, Any]]


class FakeClient:
    """Serves listing responses from a handler and records every request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[tuple[str, dict[str, str]]] = []

    def get(
        self,
        path: str,
        params: Mapping[str, str | int] | None = None,
        *,
        max_retries: int | None = None,
    ) -> dict[str, Any]:
        query = {key: str(value) for key, value in (params or {}).items()}
        if "?" in path:
            path, _, raw = path.partition("?")
            query.update(parse_qsl(raw))
        self.calls.append((path, query))
        return self.handler(path, query)


class RecordingClient:
    """Wraps a real client and records the path and params of every request."""

    def __init__(self, client: ConfluenceClient) -> None:
        self.client = client
        self.calls: list[tuple[str, dict[str, str]]] = []

    def get(
        self,
        path: str,
        params: Mapping[str, str | int] | None = None,
        *,
        max_retries: int | None = None,
    ) -> dict[str, Any]:
        query = {key: str(value) for key, value in (params or {}).items()}
        query.update(parse_qsl(urlsplit(path).query))
        self.calls.append((urlsplit(path).path, query))
        return self.client.get(path, params, max_retries=max_retries)


def rows(first: int, count: int) -> list[dict[str, Any]]:
    return [{"id": str(index)} for index in range(first, first + count)]


def offset_server(
    total: int,
    *,
    cap: int | None = None,
    overcount_next: bool = False,
    ignore_start: bool = False,
    next_on_empty: bool = False,
) -> Handler:
    """Return an offset-list handler with Confluence's optional quirks."""

    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        start = 0 if ignore_start else int(query.get("start", "0"))
        limit = int(query.get("limit", "25"))
        served = min(limit, cap) if cap is not None else limit
        page = rows(start, max(0, min(served, total - start)))
        links: dict[str, str] = {}
        following = start + (limit if overcount_next else len(page))
        # Like Confluence, the next link exists while rows remain, whatever start it names.
        if start + len(page) < total or (next_on_empty and not page):
            links["next"] = f"{path}?next=true&limit={limit}&start={following}"
        return {"results": page, "start": start, "limit": limit, "size": len(page), "_links": links}

    return handle


def ids_of(pages: Any) -> list[str]:
    return [str(row["id"]) for page in pages for row in page.results]


# Offset lists


def test_singer_offset_walks_from_zero_to_end() -> None:
    """A Singer tap started at start=1 and skipped row 0; the walk starts at 0."""
    client = FakeClient(offset_server(103))
    assert ids_of(offset_pages(client, "/content", {"type": "page"}, limit=25)) == [
        str(index) for index in range(103)
    ]
    assert [call[1]["start"] for call in client.calls] == ["0", "25", "50", "75", "100"]
    assert all(call[1]["type"] == "page" for call in client.calls)


def test_offset_short_page_is_not_the_end() -> None:
    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        start = int(query["start"])
        sizes = {0: 10, 10: 3, 13: 10}
        page = rows(start, sizes.get(start, 0))
        links = {"next": f"{path}?start={start + len(page)}"} if start < 13 else {}
        return {"results": page, "start": start, "_links": links}

    assert len(ids_of(offset_pages(FakeClient(handle), "/space", limit=10))) == 23


def test_offset_stops_on_empty_page_with_next() -> None:
    """Cloud has sent a next link with an empty page; the walk must end there."""
    client = FakeClient(offset_server(0, next_on_empty=True))
    pages = list(offset_pages(client, "/content/1/label", limit=200))
    assert len(pages) == 1
    assert pages[0].results == []
    assert len(client.calls) == 1


def test_offset_starts_from_given_start() -> None:
    client = FakeClient(offset_server(30))
    assert ids_of(offset_pages(client, "/space", {"start": 20}, limit=25))[0] == "20"


def test_offset_halves_limit_after_5xx_and_keeps_it() -> None:
    inner = offset_server(35)

    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        if int(query["limit"]) > 10:
            raise RetriableError("HTTP 504 persisted", status=504, attempts=2)
        return inner(path, query)

    client = FakeClient(handle)
    assert len(ids_of(offset_pages(client, "/content", limit=40))) == 35
    limits = [int(call[1]["limit"]) for call in client.calls]
    assert limits == [40, 20, 10, 10, 10, 10]


def test_offset_gives_up_below_limit_one() -> None:
    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        raise RetriableError("timeout persisted", status=None, attempts=2)

    client = FakeClient(handle)
    with pytest.raises(RetriableError):
        list(offset_pages(client, "/content", limit=4))
    assert [call[1]["limit"] for call in client.calls] == ["4", "2", "1"]


def test_offset_rate_limit_not_shrunk() -> None:
    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        raise RetriableError("HTTP 429 persisted", status=429, attempts=7)

    client = FakeClient(handle)
    with pytest.raises(RetriableError):
        list(offset_pages(client, "/content", limit=50))
    assert len(client.calls) == 1


def test_offset_skippable_error_propagates() -> None:
    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        raise SkippableError("permission denied (HTTP 403)", status=403)

    with pytest.raises(SkippableError):
        list(offset_pages(FakeClient(handle), "/space/SECRET/content/page", limit=25))


def test_offset_response_without_results_rejected() -> None:
    client = FakeClient(lambda path, query: {"page": {"results": []}})
    with pytest.raises(SkippableError, match="no 'results' list"):
        list(offset_pages(client, "/space/ENG/content", limit=25))


def test_onyx_capped_limit_fake_server() -> None:
    """Data Center caps limit silently but advances next by the full limit (Onyx)."""
    client = FakeClient(offset_server(502, cap=200, overcount_next=True))
    listed = ids_of(offset_pages(client, "/group/member", limit=500))
    assert listed == [str(index) for index in range(502)]
    assert [call[1]["start"] for call in client.calls] == ["0", "200", "400"]


def test_langchain_limit_is_a_hint_body_cap_100() -> None:
    """A limit used as page size and total lost rows past a cap of 100 (LangChain)."""
    client = FakeClient(offset_server(330, cap=100))
    listed = ids_of(offset_pages(client, "/content", {"expand": "body.storage"}, limit=250))
    assert len(listed) == 330
    assert len(set(listed)) == 330


def test_airbyte_v2_style_start_ignored_raises() -> None:
    """Airbyte paged v2 streams by offset, but v2 ignores start and repeats page one."""

    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        return {"results": rows(0, 25), "_links": {"next": f"{path}?cursor=abc"}}

    client = FakeClient(handle)
    pages = offset_pages(client, "/pages", limit=25)
    assert len(next(pages).results) == 25
    with pytest.raises(IncompleteListingError, match="ignores start"):
        next(pages)


def test_offset_echoed_start_mismatch_raises() -> None:
    client = FakeClient(offset_server(100, ignore_start=True))
    pages = offset_pages(client, "/content", limit=25)
    next(pages)
    with pytest.raises(IncompleteListingError, match="ignored start=25"):
        next(pages)


# Cursor search


def cursor_server(total: int, page_sizes: list[int] | None = None) -> Handler:
    """Return a Cloud search handler that ignores start and pages by an opaque cursor."""

    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        position = int(query.get("cursor", "0"))
        number = position // 1000
        offset = position % 1000
        size = int(query["limit"])
        if page_sizes is not None and number < len(page_sizes):
            size = page_sizes[number]
        page = rows(offset, max(0, min(size, total - offset)))
        links: dict[str, str] = {}
        following = offset + len(page)
        if following < total:
            cursor = (number + 1) * 1000 + following
            links["next"] = (
                f"/rest/api/search?next=true&cursor={cursor}&limit={query['limit']}&start=999"
            )
        return {
            "results": [{"content": row} for row in page],
            "totalSize": total + 5,
            "_links": links,
        }

    return handle


def content_ids(pages: Any) -> list[str]:
    return [str(row["content"]["id"]) for page in pages for row in page.results]


def test_cursor_follows_next_only() -> None:
    client = FakeClient(cursor_server(45))
    listed = content_ids(cursor_pages(client, "/search", {"cql": "type=page"}, limit=20))
    assert listed == [str(index) for index in range(45)]
    assert "start" not in client.calls[0][1]
    assert "cursor" not in client.calls[0][1]
    assert [call[1].get("cursor") for call in client.calls[1:]] == ["1020", "2040"]


def test_cursor_short_pages_are_not_the_end() -> None:
    client = FakeClient(cursor_server(50, page_sizes=[20, 7, 0, 20, 20]))
    listed = content_ids(cursor_pages(client, "/search", {"cql": "type=page"}, limit=20))
    assert listed == [str(index) for index in range(50)]


def test_cursor_dedupes_rows_across_pages() -> None:
    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        if "cursor" not in query:
            return {
                "results": [{"id": "1"}, {"id": "2"}],
                "_links": {"next": "/rest/api/x?cursor=b"},
            }
        return {"results": [{"id": "2"}, {"id": "3"}], "_links": {}}

    assert ids_of(cursor_pages(FakeClient(handle), "/content/search", {}, limit=2)) == [
        "1",
        "2",
        "3",
    ]


def test_langchain_start_ignored_cursor_loop() -> None:
    """Cloud search ignores start, so a start loop repeated rows (LangChain).

    A repeated cursor must end the walk with an error.
    """

    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        return {"results": rows(0, 10), "_links": {"next": "/rest/api/content/search?cursor=same"}}

    client = FakeClient(handle)
    pages = cursor_pages(client, "/content/search", {"cql": "type=page", "start": 0}, limit=10)
    emitted = []
    with pytest.raises(IncompleteListingError, match="cursor it had returned before"):
        for page in pages:
            emitted.extend(row["id"] for row in page.results)
    assert sorted(emitted, key=int) == [str(index) for index in range(10)]
    assert "start" not in client.calls[0][1]


def test_cursor_halves_limit_in_next_link() -> None:
    inner = cursor_server(30)
    failures = {"left": 1}

    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        if "cursor" in query and failures["left"]:
            failures["left"] -= 1
            raise RetriableError("HTTP 504 persisted", status=504, attempts=2)
        return inner(path, query)

    client = FakeClient(handle)
    listed = content_ids(cursor_pages(client, "/search", {"cql": "type=page"}, limit=10))
    assert listed == [str(index) for index in range(30)]
    assert [call[1]["limit"] for call in client.calls] == ["10", "10", "5", "5", "5", "5"]


# Data Center search


def test_datacenter_search_stops_at_total_size() -> None:
    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        start = int(query["start"])
        page = rows(start, max(0, min(int(query["limit"]), 60 - start)))
        return {"results": page, "start": start, "totalSize": 60, "_links": {}}

    client = FakeClient(handle)
    assert len(ids_of(datacenter_search_pages(client, "/search", {"cql": "x"}, limit=25))) == 60
    assert [call[1]["start"] for call in client.calls] == ["0", "25", "50"]


def test_datacenter_search_repeated_rows_raise() -> None:
    client = FakeClient(lambda path, query: {"results": rows(0, 5), "totalSize": 100})
    pages = datacenter_search_pages(client, "/search", {"cql": "x"}, limit=5)
    next(pages)
    with pytest.raises(IncompleteListingError):
        next(pages)


# Against the emulator


def cql_ids(site: EmulatorSite, cql: str, deployment: str = "datacenter") -> set[str]:
    """Return the content ids a CQL query matches, listed through the Data Center root."""
    with ConfluenceClient(site.source(deployment)) as client:
        pages = search_pages(client, deployment, "/search", {"cql": cql}, limit=25)
        return {str(row["content"]["id"]) for page in pages for row in page.results}


def test_unstructured_space_past_50_pages(start_emulator: StartEmulator) -> None:
    """A default limit of 50 per space dropped the pages past 50 (Unstructured)."""
    site = start_emulator(pages=300, spaces=2)
    with ConfluenceClient(site.source("cloud")) as client:
        pages = offset_pages(client, "/space/ENG/content/page", {"depth": "all"}, limit=25)
        listed = ids_of(pages)
    assert len(listed) > 50
    assert len(listed) == len(set(listed))
    assert set(listed) == cql_ids(site, "space = ENG and type = page")


def test_cursor_search_never_sends_start(start_emulator: StartEmulator) -> None:
    site = start_emulator(search_short_page_rate=0.5)
    with ConfluenceClient(site.source("cloud")) as client:
        recording = RecordingClient(client)
        listed = content_ids(cursor_pages(recording, "/search", {"cql": "type=page"}, limit=10))
    assert len(listed) == len(set(listed))
    assert set(listed) == cql_ids(site, "type=page")
    assert "start" not in recording.calls[0][1]
    assert all("cursor" in call[1] for call in recording.calls[1:])
    assert len(recording.calls) > 2


def test_elastic_truncated_page_retries_cursor(
    start_emulator: StartEmulator,
) -> None:
    """A truncated body mid-listing ended the listing early (Elastic connectors)."""
    site = start_emulator()
    site.control("POST", "/faults", {"rule": "GET /search:truncate:nth=3"})
    with ConfluenceClient(site.source("cloud")) as client:
        recording = RecordingClient(client)
        listed = content_ids(cursor_pages(recording, "/search", {"cql": "type=page"}, limit=10))
        assert client.stats.retries == 1
    assert set(listed) == cql_ids(site, "type=page")
    # The retry asked for the same cursor as the truncated request.
    assert recording.calls[2][1]["cursor"]
    assert len(listed) == len(set(listed))


def test_elastic_failing_listing_raises(start_emulator: StartEmulator) -> None:
    """An unfinished listing must raise, so that no deletion is derived from it."""
    site = start_emulator()
    with ConfluenceClient(site.source("cloud", max_retries=1)) as client:
        pages = cursor_pages(client, "/search", {"cql": "type=page"}, limit=4)
        first = next(pages)
        site.control("POST", "/faults", {"rule": "GET /search:truncate:1.0"})
        with pytest.raises(RetriableError):
            list(pages)
    assert len(first.results) == 4


def test_elastic_datacenter_search_without_next(start_emulator: StartEmulator) -> None:
    """Data Center /search carries no usable next link, so it is paged by start."""
    site = start_emulator(dc_quirks=True)
    with ConfluenceClient(site.source("datacenter")) as client:
        first = client.get("/search", {"cql": "type=page", "limit": 10})
        assert "next" not in first["_links"]
        pages = datacenter_search_pages(client, "/search", {"cql": "type=page"}, limit=10)
        listed = [str(row["content"]["id"]) for page in pages for row in page.results]
    assert len(listed) == first["totalSize"]
    assert len(listed) > 10
    assert set(listed) == cql_ids(site, "type=page", "cloud")


def test_onyx_datacenter_capped_limit(start_emulator: StartEmulator) -> None:
    """Data Center serves 20 rows for limit=50 while next advances start by 50."""
    site = start_emulator(dc_quirks=True, dc_limit_cap=20)
    params = {"type": "page", "spaceKey": "ENG"}
    with ConfluenceClient(site.source("datacenter")) as client:
        first = client.get("/content", {**params, "limit": 50})
        assert len(first["results"]) == 20
        assert "start=50" in first["_links"]["next"]
        listed = ids_of(offset_pages(client, "/content", params, limit=50))
    with ConfluenceClient(site.source("cloud")) as client:
        expected = ids_of(offset_pages(client, "/content", params, limit=50))
    assert len(listed) > 20
    assert listed == expected


def test_onyx_504_halves_page_size(start_emulator: StartEmulator) -> None:
    """Large pages with bodies get 504, so the page size is halved and kept (Onyx)."""
    site = start_emulator()
    site.control("POST", "/faults", {"rule": "*:504limit:1.0:10"})
    params = {"expand": "body.storage", "depth": "all"}
    with ConfluenceClient(site.source("cloud")) as client:
        recording = RecordingClient(client)
        listed = ids_of(offset_pages(recording, "/space/ENG/content/page", params, limit=40))
    limits = [int(call[1]["limit"]) for call in recording.calls]
    assert limits[:3] == [40, 20, 10]
    assert all(limit == 10 for limit in limits[3:])
    assert set(listed) == cql_ids(site, "space = ENG and type = page")


@pytest.mark.parametrize("deployment", ["cloud", "datacenter"])
def test_llamaindex_attachments_past_first_page(
    start_emulator: StartEmulator, deployment: str
) -> None:
    """LlamaIndex and LangChain read one page of child/attachment and lost the rest.

    On Data Center with quirks, the listing past 200 attachments also over-counts.
    """
    site = start_emulator(dc_quirks=True)
    model = site.server.site
    crowded = max(
        (item for item in model.contents() if item.type == ContentType.PAGE),
        key=lambda item: len(model.children(item.id, ContentType.ATTACHMENT)),
    )
    expected = {item.id for item in model.children(crowded.id, ContentType.ATTACHMENT)}
    assert len(expected) > 50
    with ConfluenceClient(site.source(deployment)) as client:
        path = f"/content/{crowded.id}/child/attachment"
        listed = ids_of(offset_pages(client, path, limit=50))
    assert len(listed) == len(set(listed))
    assert set(listed) == expected


def test_rate_limited_listing_keeps_page_size(start_emulator: StartEmulator) -> None:
    """A 429 gets the source's full retries and never halves the page size."""
    site = start_emulator()
    site.control("POST", "/faults", {"rule": "GET /space/ENG/content/page:429:next=3"})
    source = site.source("cloud", max_retries=4, max_retry_after=0.05)
    with ConfluenceClient(source) as client:
        recording = RecordingClient(client)
        listed = ids_of(offset_pages(recording, "/space/ENG/content/page", limit=10))
        assert client.stats.by_status[429] == 3
    assert {call[1]["limit"] for call in recording.calls} == {"10"}
    assert set(listed) == cql_ids(site, "space = ENG and type = page")


def test_offset_row_not_object_rejected() -> None:
    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        return {"results": [{"id": "1"}, "2", None], "_links": {}}

    with pytest.raises(IncompleteListingError, match="2 of 3 rows"):
        list(offset_pages(FakeClient(handle), "/space/ENG/content/page", limit=25))


def test_cursor_row_not_object_rejected() -> None:
    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        return {"results": [{"id": "1"}, ["2"]], "_links": {}}

    with pytest.raises(IncompleteListingError, match="not JSON objects"):
        list(cursor_pages(FakeClient(handle), "/content/search", {"cql": "x"}, limit=25))


def test_datacenter_search_past_low_total_size() -> None:
    """The index's totalSize may count fewer rows than exist; a full walk ignores it."""

    def handle(path: str, query: dict[str, str]) -> dict[str, Any]:
        start = int(query["start"])
        page = rows(start, max(0, min(int(query["limit"]), 60 - start)))
        return {"results": page, "start": start, "totalSize": 40, "_links": {}}

    client = FakeClient(handle)
    pages = datacenter_search_pages(client, "/search", {"cql": "x"}, limit=25, stop_at_total=False)

    assert len(ids_of(pages)) == 60
    assert [call[1]["start"] for call in client.calls] == ["0", "25", "50", "60"]
