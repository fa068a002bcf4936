"""CQL search over HTTP: cursor-only paging with short pages, index lag, archived content,
the ``/search`` wrapper against ``/content/search``, and the rejections."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

from emulator.app import ServerThread
from emulator.model import Content, ContentStatus, ContentType

from .conftest import Api, api_for, make_options


def visible_pages(emulator: ServerThread, space_key: str | None = None) -> set[str]:
    """Ids CQL should find for ``type = page``: current pages of current spaces."""
    site = emulator.site
    return {
        item.id
        for item in site.contents()
        if item.type is ContentType.PAGE
        and item.status is ContentStatus.CURRENT
        and site.space(item.space_key).status == "current"  # type: ignore[union-attr]
        and (space_key is None or item.space_key == space_key)
    }


def search_walk(api: Api, path: str, **params: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Follow ``_links.next`` of a CQL search to its end; return ids and every envelope."""
    response = api.get(path, **params)
    ids: list[str] = []
    bodies: list[dict[str, Any]] = []
    while True:
        assert response.status_code == 200, response.text[:300]
        body = response.json()
        bodies.append(body)
        for result in body["results"]:
            if path != "/search":
                ids.append(result["id"])
            elif "content" in result:
                ids.append(result["content"]["id"])
        link = body["_links"].get("next")
        if link is None:
            return ids, bodies
        assert len(bodies) < 500, "the search walk does not end"
        response = api.follow(link)


@pytest.mark.parametrize("path", ["/search", "/content/search"])
def test_cursor_walk_every_item_once(cloud: Api, emulator: ServerThread, path: str) -> None:
    ids, bodies = search_walk(cloud, path, cql="type = page order by created", limit=10)
    assert len(ids) == len(set(ids))
    assert set(ids) == visible_pages(emulator)
    short_pages_with_next = [
        body for body in bodies[:-1] if body["size"] < 10 and "next" in body["_links"]
    ]
    assert short_pages_with_next, "no short page mid-walk"


def test_start_is_ignored(cloud: Api) -> None:
    first = cloud.get_json("/search", cql="type = page", limit=5)
    shifted = cloud.get_json("/search", cql="type = page", limit=5, start=50)
    assert [r["content"]["id"] for r in shifted["results"]] == [
        r["content"]["id"] for r in first["results"]
    ]
    assert shifted["start"] == 50


def test_next_link_drops_excerpt(cloud: Api) -> None:
    body = cloud.get_json(
        "/search", cql="type = page", limit=3, excerpt="highlight", expand="content.version"
    )
    link = body["_links"]["next"]
    assert link.startswith("/rest/api/search?next=true&cursor=")
    query = parse_qs(urlsplit(link).query)
    assert set(query) == {"next", "cursor", "expand", "limit", "start", "cql"}
    assert query["cql"] == ["type = page"]
    assert query["limit"] == ["3"]
    assert query["start"] == ["3"]
    assert "excerpt=highlight" in body["_links"]["self"]


def test_total_size_is_estimate(cloud: Api, emulator: ServerThread) -> None:
    real = len(visible_pages(emulator))
    body = cloud.get_json("/search", cql="type = page", limit=5)
    assert abs(body["totalSize"] - real) <= max(3, real // 20)
    assert body["cqlQuery"] == "type = page"
    assert isinstance(body["searchDuration"], int)


def test_search_expansions_prefixed(cloud: Api) -> None:
    prefixed = cloud.get_json("/search", cql="type = page", limit=1, expand="content.version")
    assert "version" in prefixed["results"][0]["content"]
    plain = cloud.get_json("/search", cql="type = page", limit=1, expand="version")
    assert "version" not in plain["results"][0]["content"]
    listed = cloud.get_json("/content/search", cql="type = page", limit=1, expand="version")
    assert "version" in listed["results"][0]


def _long_page(emulator: ServerThread) -> Content:
    pages = [
        item
        for item in emulator.site.contents()
        if item.type is ContentType.PAGE
        and item.status is ContentStatus.CURRENT
        and emulator.site.space(item.space_key).status == "current"  # type: ignore[union-attr]
    ]
    page = max(pages, key=lambda item: len(item.body_storage))
    assert len(page.body_storage) > 2000
    return page


def test_search_hit_body_is_cut(cloud: Api, emulator: ServerThread) -> None:
    page = _long_page(emulator)
    hit = cloud.get_json("/search", cql=f"id = {page.id}", expand="content.body.storage")
    hit_body = hit["results"][0]["content"]["body"]["storage"]["value"]
    assert len(hit_body) < len(page.body_storage)
    assert len(hit["results"][0]["excerpt"]) < len(page.body_storage)
    listed = cloud.get_json("/content/search", cql=f"id = {page.id}", expand="body.storage")
    assert listed["results"][0]["body"]["storage"]["value"] == page.body_storage
    single = cloud.get_json(f"/content/{page.id}", expand="body.storage")
    assert single["body"]["storage"]["value"] == page.body_storage


def test_archived_space_needs_flag(cloud: Api, emulator: ServerThread) -> None:
    archived = [space.key for space in emulator.site.spaces.values() if space.status == "archived"]
    assert archived, "the generated site has no archived space"
    key = archived[0]
    hidden, _ = search_walk(cloud, "/content/search", cql=f"space = {key}", limit=50)
    assert hidden == []
    included, _ = search_walk(
        cloud,
        "/content/search",
        cql=f"space = {key} and type = page",
        limit=50,
        includeArchivedSpaces="true",
    )
    expected = {
        item.id
        for item in emulator.site.space_contents(key, ContentType.PAGE)
        if item.status is ContentStatus.CURRENT
    }
    assert set(included) == expected
    assert expected


def test_missing_cql(cloud: Api) -> None:
    response = cloud.get("/search")
    assert response.status_code == 400
    assert response.json()["message"].endswith("cql query parameter is required")


def test_unknown_field(cloud: Api) -> None:
    response = cloud.get("/content/search", cql="status = current")
    assert response.status_code == 400
    assert "No field exists with the name: 'status'" in response.json()["message"]


def test_bad_cursor_and_limit(cloud: Api) -> None:
    assert cloud.get("/search", cql="type = page", cursor="garbage").status_code == 400
    bad_limit = cloud.get("/search", cql="type = page", limit="ten")
    assert bad_limit.status_code == 404
    assert bad_limit.content == b""


def test_search_lag_hides_new_content(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    assert api.control("POST", "/clock", {"frozen": True}).status_code == 200
    assert api.control("POST", "/search", {"lag_seconds": 60}).status_code == 200
    key = next(
        space.key for space in fresh_emulator.site.spaces.values() if space.status == "current"
    )
    created = api.control(
        "POST", "/content", {"type": "page", "space": key, "title": "Fresh lag page"}
    )
    assert created.status_code == 201
    page_id = created.json()["id"]
    query = 'title = "Fresh lag page"'
    assert api.get_json("/content/search", cql=query)["results"] == []
    # The content routes see it at once; only the search index lags.
    assert api.get_json(f"/content/{page_id}")["id"] == page_id
    assert api.control("POST", "/clock", {"advance_seconds": 61}).status_code == 200
    found = api.get_json("/content/search", cql=query)["results"]
    assert [item["id"] for item in found] == [page_id]


def test_archived_page_invisible(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    page_id = sorted(visible_pages(fresh_emulator), key=int)[-1]
    assert api.control("POST", f"/content/{page_id}/archive").status_code == 200
    assert api.get_json("/content/search", cql=f"id = {page_id}")["results"] == []


def test_datacenter_search_pages_by_start() -> None:
    with ServerThread(make_options(dc_quirks=True)) as server:
        dc = api_for(server, "datacenter")
        first = dc.get_json("/search", cql="type = page", limit=10)
        assert "next" not in first["_links"]
        assert first["totalSize"] == len(visible_pages(server))
        ids: list[str] = []
        start = 0
        while True:
            body = dc.get_json("/search", cql="type = page", limit=10, start=start)
            if not body["results"]:
                break
            ids.extend(result["content"]["id"] for result in body["results"])
            start += len(body["results"])
        assert len(ids) == len(set(ids))
        assert set(ids) == visible_pages(server)
        with_body = dc.get_json("/content/search", cql="type = page", limit=500, expand="body")
        assert with_body["limit"] == 50


def test_date_literals_in_user_zone(cloud: Api, emulator: ServerThread) -> None:
    user = emulator.site.user(emulator.site.current_user_id)
    assert user is not None
    zone = ZoneInfo(user.time_zone)
    page_id = sorted(visible_pages(emulator), key=int)[0]
    page = emulator.site.content(page_id)
    assert page is not None
    floor = page.last_modified.replace(second=0, microsecond=0)
    offset = floor.astimezone(zone).utcoffset()
    assert offset is not None
    assert offset != timedelta(0), "the API user's zone must differ from UTC"
    # East of UTC a wall-clock text read in the zone is earlier than read as UTC, so the
    # test compares with `<` against the next minute. West of UTC it compares with `>=`.
    if offset > timedelta(0):
        bound, operator = floor + timedelta(minutes=1), "<"
    else:
        bound, operator = floor, ">="
    local_text = bound.astimezone(zone).strftime("%Y/%m/%d %H:%M")
    utc_text = bound.strftime("%Y/%m/%d %H:%M")
    local = cloud.get_json(
        "/content/search", cql=f'id = {page_id} and lastmodified {operator} "{local_text}"'
    )
    assert [item["id"] for item in local["results"]] == [page_id]
    # Read in the user's zone, the UTC wall-clock text lies on the other side of the change.
    as_utc = cloud.get_json(
        "/content/search", cql=f'id = {page_id} and lastmodified {operator} "{utc_text}"'
    )
    assert as_utc["results"] == []


def test_hit_titles_highlighted(cloud: Api, emulator: ServerThread) -> None:
    page_id = sorted(visible_pages(emulator), key=int)[0]
    page = emulator.site.content(page_id)
    assert page is not None
    word = page.title.split()[0]
    query = f'id = {page_id} and title ~ "{word}"'
    hit = cloud.get_json("/search", cql=query)["results"][0]
    assert f"@@@hl@@@{word}@@@endhl@@@" in hit["title"]
    assert hit["content"]["title"] == page.title
    plain = cloud.get_json("/search", cql=query, excerpt="indexed")["results"][0]
    assert "@@@hl@@@" not in plain["title"]
    assert cloud.get("/search", cql=query, excerpt="fancy").status_code == 400


def test_hit_titles_escaped(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    key = next(
        space.key for space in fresh_emulator.site.spaces.values() if space.status == "current"
    )
    title = 'Apple - 15" <Air>'
    created = api.control("POST", "/content", {"type": "page", "space": key, "title": title})
    page_id = created.json()["id"]
    query = f"id = {page_id}"
    escaped = api.get_json("/search", cql=query)["results"][0]
    assert escaped["title"] == "Apple - 15&quot; &lt;Air&gt;"
    raw = api.get_json("/search", cql=query, excerpt="indexed_unescaped")["results"][0]
    assert raw["title"] == title


def _space_hits(api: Api, **params: Any) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    _ids, bodies = search_walk(api, "/search", **params)
    for body in bodies:
        results.extend(body["results"])
    return results


@pytest.mark.parametrize("flavour", ["cloud", "gateway", "datacenter"])
def test_search_type_space(emulator: ServerThread, flavour: str) -> None:
    api = api_for(emulator, flavour)
    hits = _space_hits(api, cql="type = space", expand="space.description.plain", limit=2)
    current = {space.key for space in emulator.site.spaces.values() if space.status == "current"}
    assert {hit["space"]["key"] for hit in hits} == current
    assert len(hits) == len(current)
    for hit in hits:
        assert hit["entityType"] == "space"
        assert "content" not in hit
        space = emulator.site.space(hit["space"]["key"])
        assert space is not None
        assert hit["space"]["id"] == space.id
        assert hit["space"]["name"] == space.name
        assert hit["space"]["type"] == space.type
        assert hit["space"]["description"]["plain"]["value"] == space.description
        assert hit["title"] == space.name.replace("&", "&amp;")
        assert hit["url"] == f"/spaces/{space.key}/overview"
        assert hit["lastModified"].endswith("Z")


def test_search_space_needs_archived_flag(fresh_emulator: ServerThread) -> None:
    api = api_for(fresh_emulator, "cloud")
    spaces = fresh_emulator.site.spaces
    key = min(key for key, space in spaces.items() if space.status == "current")
    assert api.control("POST", f"/space/{key}/archive").status_code == 200
    plain = {hit["space"]["key"] for hit in _space_hits(api, cql="type = space")}
    assert key not in plain
    archived = _space_hits(api, cql="type = space", includeArchivedSpaces="true")
    assert key in {hit["space"]["key"] for hit in archived}


def test_search_space_with_clauses(emulator: ServerThread, cloud: Api) -> None:
    key = min(key for key, space in emulator.site.spaces.items() if space.status == "current")
    one = _space_hits(cloud, cql=f"type = space and space = {key.lower()}")
    assert [hit["space"]["key"] for hit in one] == [key]
    mixed = _space_hits(cloud, cql=f"type in (space, page) and space = {key}")
    kinds = {hit["entityType"] for hit in mixed}
    assert kinds == {"space", "content"}
    pages = [hit for hit in mixed if hit["entityType"] == "content"]
    assert {hit["content"]["id"] for hit in pages} == visible_pages(emulator, key)
    # `/content/search` returns content only, so `type = space` finds nothing there.
    assert cloud.get_json("/content/search", cql="type = space")["results"] == []


def test_search_type_user(emulator: ServerThread, cloud: Api) -> None:
    hits = _space_hits(cloud, cql="type = user", limit=50)
    assert len(hits) == len(emulator.site.users)
    assert all(hit["entityType"] == "user" for hit in hits)
    ids = {hit["user"]["accountId"] for hit in hits}
    assert ids == set(emulator.site.users)
    named = _space_hits(cloud, cql='type = user and title ~ "Emulator Reader"')
    assert [hit["user"]["accountId"] for hit in named] == [emulator.credentials.reader_account_id]


def test_search_start_overflow(cloud: Api) -> None:
    response = cloud.get("/search", cql="type = page", start=2**31 - 1, limit=5)
    assert response.status_code == 400
    assert "overflows" in response.json()["message"]
    assert cloud.get("/search", cql="type = page", start=2**31 - 10, limit=5).status_code == 200
