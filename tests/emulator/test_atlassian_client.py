"""atlassian-python-api, unmodified, against the emulator: spaces, pages of a space, a CQL
search walked to its end, and a page with its body, compared with the site model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from atlassian import Confluence

from emulator.app import ServerThread
from emulator.model import ContentStatus, ContentType

from .conftest import make_options


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    # The client joins next links onto the bare origin, so the Data Center root is served
    # without a context path here.
    with ServerThread(make_options(context_path="", pages=300)) as running:
        yield running


@pytest.fixture(scope="module")
def cloud_client(server: ServerThread) -> Confluence:
    credentials = server.credentials
    return Confluence(  # type: ignore[no-untyped-call]
        url=server.urls["cloud"],
        username=credentials.email,
        password=credentials.api_token,
        cloud=False,
    )


@pytest.fixture(scope="module")
def datacenter_client(server: ServerThread) -> Confluence:
    credentials = server.credentials
    return Confluence(  # type: ignore[no-untyped-call]
        url=server.urls["datacenter"],
        username=credentials.username,
        password=credentials.password,
    )


def current_pages(server: ServerThread, space_key: str) -> list[str]:
    return [
        item.id
        for item in server.site.space_contents(space_key, ContentType.PAGE)
        if item.status is ContentStatus.CURRENT
    ]


def searchable_pages(server: ServerThread) -> set[str]:
    site = server.site
    return {
        item.id
        for item in site.contents()
        if item.type is ContentType.PAGE
        and item.status is ContentStatus.CURRENT
        and site.space(item.space_key).status == "current"  # type: ignore[union-attr]
    }


def test_all_spaces(cloud_client: Confluence, server: ServerThread) -> None:
    keys: list[str] = []
    start = 0
    while True:
        page = cloud_client.get_all_spaces(start=start, limit=2)
        if not page["results"]:
            break
        keys.extend(space["key"] for space in page["results"])
        start += len(page["results"])
    assert keys == sorted(server.site.spaces)


def test_pages_of_space(
    cloud_client: Confluence, datacenter_client: Confluence, server: ServerThread
) -> None:
    key = max(server.site.spaces, key=lambda key: len(current_pages(server, key)))
    expected = current_pages(server, key)
    assert len(expected) > 50
    generated = cloud_client.get_all_pages_from_space_as_generator(key, limit=20)
    assert [page["id"] for page in generated] == expected
    followed = datacenter_client.get_all_pages_from_space(key, limit=20)
    assert [page["id"] for page in followed] == expected


def test_cql_walk_by_cursor(cloud_client: Confluence, server: ServerThread) -> None:
    response: Any = cloud_client.cql("type = page order by created", limit=25)
    ids = [result["content"]["id"] for result in response["results"]]
    pages = 1
    while "next" in response["_links"]:
        assert "cursor=" in response["_links"]["next"]
        url = response["_links"]["base"] + response["_links"]["next"]
        response = cloud_client.get(url, absolute=True)
        ids.extend(result["content"]["id"] for result in response["results"])
        pages += 1
        assert pages < 100
    assert len(ids) == len(set(ids))
    assert set(ids) == searchable_pages(server)


def test_cql_all_helper(datacenter_client: Confluence, server: ServerThread) -> None:
    results = datacenter_client.cql_all("type = page", limit=30)
    ids = [result["content"]["id"] for result in results]
    assert len(ids) == len(set(ids))
    assert set(ids) == searchable_pages(server)


def test_page_with_body(cloud_client: Confluence, server: ServerThread) -> None:
    page = max(
        (
            item
            for item in server.site.contents()
            if item.type is ContentType.PAGE and item.status is ContentStatus.CURRENT
        ),
        key=lambda item: len(item.body_storage),
    )
    fetched = cloud_client.get_page_by_id(page.id, expand="body.storage,version")
    assert fetched["title"] == page.title
    assert fetched["body"]["storage"]["value"] == page.body_storage
    assert fetched["version"]["number"] == page.version.number
