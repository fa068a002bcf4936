"""Offset-paged listings of the emulator over HTTP: walks to the end equal the site model,
Cloud's 400 bodies for bad page parameters, and the Data Center quirks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from emulator.app import ServerThread
from emulator.model import Content, ContentStatus, ContentType

from .conftest import Api, api_for, make_options


def walk(api: Api, path: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Yield every result of an offset list by following ``_links.next`` to the end."""
    response = api.get(path, **params)
    pages = 0
    while True:
        assert response.status_code == 200, response.text[:300]
        body = response.json()
        yield from body["results"]
        pages += 1
        assert pages < 500, "the walk does not end"
        link = body["_links"].get("next")
        if link is None or not body["results"]:
            return
        assert link.startswith("/rest/api/")
        response = api.follow(link)


def ids_of(items: Any) -> list[str]:
    return [str(item["id"]) for item in items]


def current(items: list[Content]) -> list[str]:
    return [item.id for item in items if item.status is ContentStatus.CURRENT]


def _busiest_page(emulator: ServerThread) -> Content:
    site = emulator.site
    pages = [
        item
        for item in site.contents()
        if item.type is ContentType.PAGE and item.status is ContentStatus.CURRENT
    ]
    return max(pages, key=lambda page: len(site.descendants(page.id, ContentType.PAGE)))


def _with_comments(emulator: ServerThread, kind: ContentType) -> Content:
    site = emulator.site
    candidates = [
        item
        for item in site.contents()
        if item.type is ContentType.PAGE and item.status is ContentStatus.CURRENT
    ]
    return max(candidates, key=lambda page: len(site.children(page.id, kind)))


def test_space_walk_equals_model(any_root: Api, emulator: ServerThread) -> None:
    walked = [item["key"] for item in walk(any_root, "/space", limit=2)]
    assert walked == sorted(emulator.site.spaces)


@pytest.mark.parametrize("content_type", [ContentType.PAGE, ContentType.BLOGPOST])
def test_content_walk_per_space(
    any_root: Api, emulator: ServerThread, content_type: ContentType
) -> None:
    for key in emulator.site.spaces:
        walked = ids_of(walk(any_root, "/content", spaceKey=key, type=content_type.value, limit=7))
        assert walked == current(emulator.site.space_contents(key, content_type))


def test_content_walk_whole_site(cloud: Api, emulator: ServerThread) -> None:
    walked = ids_of(walk(cloud, "/content", type="page", limit=40, expand="body.storage"))
    expected = [
        item.id
        for item in emulator.site.contents()
        if item.type is ContentType.PAGE and item.status is ContentStatus.CURRENT
    ]
    assert walked == expected


def test_content_status_filters(cloud: Api, emulator: ServerThread) -> None:
    site = emulator.site
    trashed = [
        item.id
        for item in site.contents()
        if item.type is ContentType.PAGE and item.status is ContentStatus.TRASHED
    ]
    assert trashed, "the generated site has no trashed page"
    assert ids_of(walk(cloud, "/content", type="page", status="trashed")) == trashed
    any_ids = ids_of(walk(cloud, "/content", type="page", status="any", limit=50))
    assert set(trashed) <= set(any_ids)
    assert all(site.content(content_id).status is not ContentStatus.DRAFT for content_id in any_ids)  # type: ignore[union-attr]


def test_space_content_routes(any_root: Api, emulator: ServerThread) -> None:
    site = emulator.site
    for key in site.spaces:
        pages = ids_of(walk(any_root, f"/space/{key}/content/page", limit=9))
        assert pages == current(site.space_contents(key, ContentType.PAGE))
        posts = ids_of(walk(any_root, f"/space/{key}/content/blogpost", limit=9))
        assert posts == current(site.space_contents(key, ContentType.BLOGPOST))
        roots = ids_of(walk(any_root, f"/space/{key}/content/page", depth="root"))
        assert roots == sorted(current(site.root_pages(key)), key=int)


def test_space_content_map(cloud: Api, emulator: ServerThread) -> None:
    key = next(iter(emulator.site.spaces))
    body = cloud.get_json(f"/space/{key}/content", limit=5)
    assert set(body) == {"page", "blogpost", "_links"}
    page_ids = ids_of(body["page"]["results"])
    expected = current(emulator.site.space_contents(key, ContentType.PAGE))
    assert page_ids == expected[:5]
    if len(expected) > 5:
        assert body["page"]["_links"]["next"] == (
            f"/rest/api/space/{key}/content/page?next=true&limit=5&start=5"
        )


def test_child_and_descendant_walks(any_root: Api, emulator: ServerThread) -> None:
    site = emulator.site
    parent = _busiest_page(emulator)
    children = ids_of(walk(any_root, f"/content/{parent.id}/child/page", limit=3))
    assert children == current(site.children(parent.id, ContentType.PAGE))
    descendants = ids_of(walk(any_root, f"/content/{parent.id}/descendant/page", limit=4))
    assert descendants == current(site.descendants(parent.id, ContentType.PAGE))
    assert len(descendants) > len(children)

    commented = _with_comments(emulator, ContentType.COMMENT)
    comments = ids_of(walk(any_root, f"/content/{commented.id}/child/comment", limit=2))
    assert comments == current(site.children(commented.id, ContentType.COMMENT))
    assert comments

    for kind in (ContentType.COMMENT, ContentType.ATTACHMENT):
        below = ids_of(walk(any_root, f"/content/{commented.id}/descendant/{kind.value}", limit=2))
        assert below == current(site.descendants(commented.id, kind))

    attached = _with_comments(emulator, ContentType.ATTACHMENT)
    attachments = list(walk(any_root, f"/content/{attached.id}/child/attachment", limit=2))
    assert ids_of(attachments) == current(site.children(attached.id, ContentType.ATTACHMENT))
    assert attachments
    for item in attachments:
        assert set(item["extensions"]) >= {"mediaType", "fileSize"}
        assert "download" in item["_links"]


def test_label_and_version_walks(cloud: Api, emulator: ServerThread) -> None:
    site = emulator.site
    labelled = max(
        (item for item in site.contents() if item.status is ContentStatus.CURRENT),
        key=lambda item: len(item.labels),
    )
    assert labelled.labels
    names = [item["name"] for item in walk(cloud, f"/content/{labelled.id}/label", limit=1)]
    assert names == [label.name for label in labelled.labels]

    edited = max(
        (item for item in site.contents() if item.status is ContentStatus.CURRENT),
        key=lambda item: len(item.versions),
    )
    numbers = [item["number"] for item in walk(cloud, f"/content/{edited.id}/version", limit=1)]
    assert numbers == [version.number for version in reversed(edited.versions)]


def test_past_end_is_empty_without_next(cloud: Api) -> None:
    body = cloud.get_json("/space", start=1000)
    assert body["results"] == []
    assert body["size"] == 0
    assert "next" not in body["_links"]


def test_limit_capped_and_echoed(cloud: Api) -> None:
    assert cloud.get_json("/content", type="page", limit=5000)["limit"] == 1000
    with_body = cloud.get_json("/content", type="page", limit=5000, expand="body.storage")
    assert with_body["limit"] == 100
    assert len(with_body["results"]) == 100


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"start": "-1"},
            "java.lang.IllegalArgumentException: start cannot be less than zero",
        ),
        (
            {"limit": "-1", "start": "-1"},
            "java.lang.IllegalArgumentException: start cannot be less than zero",
        ),
        (
            {"limit": "abc"},
            "org.springframework.web.method.annotation.MethodArgumentTypeMismatchException: "
            "Failed to convert value of type 'java.lang.String' to required type 'int'; "
            'nested exception is java.lang.NumberFormatException: For input string: "abc"',
        ),
    ],
)
def test_bad_page_parameters(cloud: Api, params: dict[str, str], message: str) -> None:
    response = cloud.get("/space", **params)
    assert response.status_code == 400
    assert response.json() == {"statusCode": 400, "message": message}


def test_content_start_too_large(cloud: Api) -> None:
    assert cloud.get("/content", type="page", start=100000).status_code == 200
    response = cloud.get("/content", type="page", start=100001)
    assert response.status_code == 400
    body = response.json()
    assert body["message"].endswith(
        "Start of this size is no longer supported. If you need to fetch this amount of "
        "content, please use either the search endpoint or get the content by a space at a "
        "time."
    )
    assert "data" in body


def test_label_limit_zero(cloud: Api, emulator: ServerThread) -> None:
    page = next(item for item in emulator.site.contents() if item.status is ContentStatus.CURRENT)
    response = cloud.get(f"/content/{page.id}/label", limit=0)
    assert response.status_code == 400
    assert response.json() == {
        "statusCode": 400,
        "message": "java.lang.IllegalArgumentException: null",
    }


def test_unknown_space_404(cloud: Api) -> None:
    response = cloud.get("/content", spaceKey="NOPE", type="page")
    assert response.status_code == 404
    assert response.json() == {
        "statusCode": 404,
        "message": "com.atlassian.confluence.api.service.exceptions.api.NotFoundException: "
        "No space with key : NOPE",
    }
    assert cloud.get("/space/NOPE").status_code == 404


def test_incompatible_child_type(cloud: Api, emulator: ServerThread) -> None:
    post = next(
        item
        for item in emulator.site.contents()
        if item.type is ContentType.BLOGPOST and item.status is ContentStatus.CURRENT
    )
    assert cloud.get(f"/content/{post.id}/child/page").status_code == 400


def test_dc_quirks_overcount_next() -> None:
    options = make_options(dc_quirks=True, dc_limit_cap=10)
    with ServerThread(options) as server:
        dc = api_for(server, "datacenter")
        key = max(
            server.site.spaces,
            key=lambda key: len(server.site.space_contents(key, ContentType.PAGE)),
        )
        expected = current(server.site.space_contents(key, ContentType.PAGE))
        assert len(expected) > 40
        first = dc.get_json("/content", spaceKey=key, type="page", limit=25)
        assert first["limit"] == 25
        assert first["size"] == 10
        assert first["_links"]["next"].endswith("&limit=25&start=25")

        # Following `next` as served loses rows 10..24 of every page.
        followed = ids_of(walk(dc, "/content", spaceKey=key, type="page", limit=25))
        assert len(followed) < len(expected)

        # Deriving the next start from the rows received gets everything.
        derived: list[str] = []
        start = 0
        while True:
            body = dc.get_json("/content", spaceKey=key, type="page", limit=25, start=start)
            if not body["results"]:
                break
            derived.extend(ids_of(body["results"]))
            start += len(body["results"])
        assert derived == expected

        # The Cloud root of the same server is not affected.
        cloud = api_for(server, "cloud")
        assert cloud.get_json("/content", spaceKey=key, type="page", limit=25)["size"] == 25


def test_comment_location_and_depth(cloud: Api, emulator: ServerThread) -> None:
    site = emulator.site
    comments = [
        item
        for item in site.contents()
        if item.type is ContentType.COMMENT and item.status is ContentStatus.CURRENT
    ]
    container_id = next(
        item.container_id
        for item in comments
        if item.parent_id is not None
        and site.content(item.container_id or "").status is ContentStatus.CURRENT  # type: ignore[union-attr]
    )
    assert container_id is not None
    on_page = [item for item in comments if item.container_id == container_id]
    every = ids_of(walk(cloud, f"/content/{container_id}/child/comment", depth="all"))
    assert every == [item.id for item in on_page]
    top = ids_of(walk(cloud, f"/content/{container_id}/child/comment", depth="root"))
    assert top == [item.id for item in on_page if item.parent_id is None]
    assert len(top) < len(every)
    for location in ("inline", "footer"):
        listed = list(walk(cloud, f"/content/{container_id}/child/comment", location=location))
        assert ids_of(listed) == [
            item.id for item in on_page if (item.comment_location or "footer") == location
        ]
        assert all(entry["extensions"]["location"] == location for entry in listed)


def test_cloud_quirk_next_past_end(fresh_emulator: ServerThread) -> None:
    cloud = api_for(fresh_emulator, "cloud")
    assert cloud.control("POST", "/server", {"cloud_quirks": True}).json()["cloud_quirks"]
    total = len(fresh_emulator.site.spaces)
    body = cloud.get_json("/space", limit=total)
    assert body["size"] == total
    assert body["_links"]["next"] == f"/rest/api/space?next=true&limit={total}&start={total}"
    empty = cloud.follow(body["_links"]["next"]).json()
    assert empty["results"] == []
    assert "next" in empty["_links"]
    # A walk that stops on an empty page still gets every space exactly once.
    assert [item["key"] for item in walk(cloud, "/space", limit=1)] == sorted(
        fresh_emulator.site.spaces
    )
    # Data Center is not affected.
    datacenter = api_for(fresh_emulator, "datacenter")
    assert "next" not in datacenter.get_json("/space", limit=total)["_links"]


def test_space_label_filter(emulator: ServerThread, cloud: Api) -> None:
    spaces = emulator.site.spaces.values()
    engineering = {space.key for space in spaces if "engineering" in space.labels}
    team = {space.key for space in spaces if "team" in space.labels}
    assert engineering
    assert team > engineering
    listed = cloud.get_json("/space", label="engineering", limit=100)["results"]
    assert {space["key"] for space in listed} == engineering
    either = cloud.get_json("/space", label="ENGINEERING,business", limit=100)["results"]
    assert {space["key"] for space in either} == team
    assert cloud.get_json("/space", label="no-such-category")["results"] == []


def test_space_categories_in_metadata(emulator: ServerThread, cloud: Api) -> None:
    space = next(space for space in emulator.site.spaces.values() if space.labels)
    body = cloud.get_json(f"/space/{space.key}", expand="metadata.labels")
    labels = body["metadata"]["labels"]["results"]
    assert [label["name"] for label in labels] == space.labels
    assert {label["prefix"] for label in labels} == {"team"}


def test_datacenter_space_cap() -> None:
    with ServerThread(make_options(dc_quirks=True)) as server:
        dc = api_for(server, "datacenter")
        assert dc.control("POST", "/server", {"dc_space_cap": 2}).json()["dc_space_cap"] == 2
        first = dc.get_json("/space", limit=3)
        # Data Center serves fewer rows than the echoed limit and over-counts the next start.
        assert first["limit"] == 3
        assert first["size"] == 2
        assert "start=3" in first["_links"]["next"]
        cloud = api_for(server, "cloud").get_json("/space", limit=3)
        assert cloud["size"] == 3
