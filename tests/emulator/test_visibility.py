"""Visibility over HTTP: read restrictions for the second user, the anonymous caller and
``/user/current``, and the search index lag serving earlier versions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from emulator.app import ServerThread
from emulator.model import Content, ContentStatus, ContentType

from .conftest import Api, api_for, make_options


def reader_for(server: ServerThread, flavour: str) -> Api:
    """Return an Api for one root signed in as the second user."""
    session = requests.Session()
    credentials = server.credentials
    if flavour == "datacenter":
        session.auth = (credentials.reader_username, credentials.reader_token)
    else:
        session.auth = (credentials.reader_email, credentials.reader_token)
    return Api(server=server, flavour=flavour, session=session)


def _restricted_page(server: ServerThread) -> Content:
    site = server.site
    return next(
        item
        for item in site.contents()
        if item.type is ContentType.PAGE
        and item.status is ContentStatus.CURRENT
        and item.is_restricted
        and site.children(item.id, ContentType.ATTACHMENT)
    )


def _open_page(server: ServerThread) -> Content:
    site = server.site
    hidden = site.hidden_from(server.credentials.reader_account_id)
    return next(
        item
        for item in site.contents()
        if item.type is ContentType.PAGE
        and item.status is ContentStatus.CURRENT
        and item.id not in hidden
    )


@pytest.fixture(scope="module")
def restricted_site() -> Iterator[ServerThread]:
    """A larger site, so that some pages with attachments carry read restrictions."""
    with ServerThread(make_options(pages=600, seed=5)) as server:
        yield server


@pytest.mark.parametrize("flavour", ["cloud", "datacenter"])
def test_reader_cannot_get_restricted(restricted_site: ServerThread, flavour: str) -> None:
    page = _restricted_page(restricted_site)
    owner = api_for(restricted_site, flavour)
    reader = reader_for(restricted_site, flavour)
    assert owner.get(f"/content/{page.id}").status_code == 200
    assert reader.get(f"/content/{page.id}").status_code == 404
    assert reader.get(f"/content/{page.id}/child/attachment").status_code == 404
    open_page = _open_page(restricted_site)
    assert reader.get(f"/content/{open_page.id}").status_code == 200


def test_reader_lists_leave_out_restricted(restricted_site: ServerThread) -> None:
    page = _restricted_page(restricted_site)
    owner = api_for(restricted_site, "cloud")
    reader = reader_for(restricted_site, "cloud")

    def listed_ids(api: Api) -> set[str]:
        body = api.get_json("/content", spaceKey=page.space_key, limit=1000)
        return {item["id"] for item in body["results"]}

    assert page.id in listed_ids(owner)
    assert page.id not in listed_ids(reader)
    space_pages = reader.get_json(f"/space/{page.space_key}/content/page", limit=1000)
    assert page.id not in {item["id"] for item in space_pages["results"]}
    space_map = reader.get_json(f"/space/{page.space_key}/content", limit=1000)
    assert page.id not in {item["id"] for item in space_map["page"]["results"]}


def test_reader_search_leaves_out_restricted(restricted_site: ServerThread) -> None:
    page = _restricted_page(restricted_site)
    attachment = restricted_site.site.children(page.id, ContentType.ATTACHMENT)[0]
    owner = api_for(restricted_site, "cloud")
    reader = reader_for(restricted_site, "cloud")
    query = f"id in ({page.id}, {attachment.id})"
    owner_hits = owner.get_json("/content/search", cql=query)["results"]
    assert {item["id"] for item in owner_hits} == {page.id, attachment.id}
    assert reader.get_json("/content/search", cql=query)["results"] == []
    assert reader.get_json("/search", cql=query)["results"] == []


def test_restriction_covers_descendants(fresh_emulator: ServerThread) -> None:
    site = fresh_emulator.site
    owner = api_for(fresh_emulator, "cloud")
    reader = reader_for(fresh_emulator, "cloud")
    hidden = site.hidden_from(fresh_emulator.credentials.reader_account_id)
    parent = next(
        item
        for item in site.contents()
        if item.type is ContentType.PAGE
        and item.status is ContentStatus.CURRENT
        and item.id not in hidden
        and site.children(item.id, ContentType.PAGE)
    )
    child = site.children(parent.id, ContentType.PAGE)[0]
    assert reader.get(f"/content/{child.id}").status_code == 200
    restricted = owner.control(
        "POST",
        f"/content/{parent.id}/restrictions",
        {"users": [fresh_emulator.credentials.account_id]},
    )
    assert restricted.status_code == 200
    assert restricted.json()["read_restriction_users"] == [fresh_emulator.credentials.account_id]
    assert reader.get(f"/content/{parent.id}").status_code == 404
    assert reader.get(f"/content/{child.id}").status_code == 404
    assert owner.get(f"/content/{child.id}").status_code == 200
    # Empty lists lift the restriction again.
    assert owner.control("POST", f"/content/{parent.id}/restrictions", {}).status_code == 200
    assert reader.get(f"/content/{child.id}").status_code == 200


def test_restrictions_route_rejects_bad_users(fresh_emulator: ServerThread) -> None:
    owner = api_for(fresh_emulator, "cloud")
    page = _open_page(fresh_emulator)
    wrong_type = owner.control("POST", f"/content/{page.id}/restrictions", {"users": "me"})
    assert wrong_type.status_code == 400
    assert "users" in wrong_type.json()["error"]
    unknown = owner.control("POST", f"/content/{page.id}/restrictions", {"users": ["nobody"]})
    assert unknown.status_code == 404


def test_restricted_attachment_hidden(fresh_emulator: ServerThread) -> None:
    site = fresh_emulator.site
    owner = api_for(fresh_emulator, "cloud")
    reader = reader_for(fresh_emulator, "cloud")
    hidden = site.hidden_from(fresh_emulator.credentials.reader_account_id)
    attachment = next(
        item
        for item in site.contents()
        if item.type is ContentType.ATTACHMENT
        and item.status is ContentStatus.CURRENT
        and item.container_id not in hidden
        and site.content(item.container_id or "").status  # type: ignore[union-attr]
        is ContentStatus.CURRENT
    )
    restricted = owner.control(
        "POST",
        f"/content/{attachment.id}/restrictions",
        {"users": [fresh_emulator.credentials.account_id]},
    )
    assert restricted.status_code == 200
    download = f"/content/{attachment.container_id}/child/attachment/{attachment.id}/download"
    assert reader.get(f"/content/{attachment.container_id}").status_code == 200
    listed = reader.get_json(f"/content/{attachment.container_id}/child/attachment", limit=500)
    assert attachment.id not in {item["id"] for item in listed["results"]}
    assert reader.session.get(reader.url(download), allow_redirects=False).status_code == 404
    assert owner.session.get(owner.url(download), allow_redirects=False).status_code == 302


def test_reader_credentials_work_everywhere(emulator: ServerThread) -> None:
    for flavour in ("cloud", "gateway", "datacenter"):
        reader = reader_for(emulator, flavour)
        me = reader.get_json("/user/current")
        assert me["displayName"] == "Emulator Reader"
    pat = requests.Session()
    pat.headers["Authorization"] = f"Bearer {emulator.credentials.reader_token}"
    dc = Api(server=emulator, flavour="datacenter", session=pat)
    assert dc.get_json("/user/current")["username"] == emulator.credentials.reader_username


def test_anonymous_current_user() -> None:
    with ServerThread(make_options(anonymous_access=True)) as server:
        for flavour in ("cloud", "datacenter"):
            anonymous = Api(server=server, flavour=flavour, session=requests.Session())
            me = anonymous.get_json("/user/current")
            assert me["type"] == "anonymous"
            assert me["displayName"] == "Anonymous"
            assert "accountId" not in me
            assert ("isExternalCollaborator" in me) is (flavour == "cloud")
        signed_in = api_for(server, "cloud").get_json("/user/current")
        assert signed_in["accountId"] == server.credentials.account_id


def test_anonymous_sees_no_restricted() -> None:
    with ServerThread(make_options(anonymous_access=True, pages=600, seed=5)) as server:
        page = _restricted_page(server)
        anonymous = Api(server=server, flavour="cloud", session=requests.Session())
        assert anonymous.get(f"/content/{page.id}").status_code == 404
        assert api_for(server, "cloud").get(f"/content/{page.id}").status_code == 200


def test_anonymous_access_control(fresh_emulator: ServerThread) -> None:
    owner = api_for(fresh_emulator, "cloud")
    anonymous = Api(server=fresh_emulator, flavour="cloud", session=requests.Session())
    assert anonymous.get("/user/current").status_code == 403
    turned_on = owner.control("POST", "/server", {"anonymous_access": True})
    assert turned_on.json()["anonymous_access"] is True
    assert anonymous.get_json("/user/current")["type"] == "anonymous"


def _lagging(server: ServerThread) -> Api:
    api = api_for(server, "cloud")
    assert api.control("POST", "/clock", {"frozen": True}).status_code == 200
    assert api.control("POST", "/search", {"lag_seconds": 60}).status_code == 200
    return api


def test_lag_serves_previous_version(fresh_emulator: ServerThread) -> None:
    api = _lagging(fresh_emulator)
    page = _open_page(fresh_emulator)
    old_title = page.title
    old_number = page.version.number
    old_modified = api.get_json(f"/content/{page.id}", expand="version")["version"]["when"]
    assert api.control("POST", "/clock", {"advance_seconds": 5}).status_code == 200
    edited = api.control(
        "POST", f"/content/{page.id}/edit", {"title": "Lagging new title", "body": "<p>x</p>"}
    )
    assert edited.status_code == 200

    hits = api.get_json("/search", cql=f"id = {page.id}", expand="content.version")["results"]
    assert len(hits) == 1
    assert hits[0]["content"]["title"] == old_title
    assert hits[0]["content"]["version"]["number"] == old_number
    assert hits[0]["lastModified"] == old_modified
    assert api.get_json("/content/search", cql='title = "Lagging new title"')["results"] == []
    found_old = api.get_json("/content/search", cql=f'title = "{old_title}"')["results"]
    assert page.id in {item["id"] for item in found_old}
    # The content route is not behind: it serves the new version at once.
    assert api.get_json(f"/content/{page.id}")["title"] == "Lagging new title"

    assert api.control("POST", "/clock", {"advance_seconds": 61}).status_code == 200
    hits = api.get_json("/search", cql=f"id = {page.id}", expand="content.version")["results"]
    assert hits[0]["content"]["title"] == "Lagging new title"
    assert hits[0]["content"]["version"]["number"] == old_number + 1


def test_lag_keeps_trashed_visible(fresh_emulator: ServerThread) -> None:
    api = _lagging(fresh_emulator)
    site = fresh_emulator.site
    page = next(
        item
        for item in site.contents()
        if item.type is ContentType.PAGE
        and item.status is ContentStatus.CURRENT
        and not site.children(item.id, ContentType.PAGE)
    )
    assert api.control("POST", f"/content/{page.id}/trash").status_code == 200
    assert api.get(f"/content/{page.id}").status_code == 404
    hits = api.get_json("/content/search", cql=f"id = {page.id}")["results"]
    assert [item["id"] for item in hits] == [page.id]
    assert hits[0]["status"] == "current"
    assert api.control("POST", "/clock", {"advance_seconds": 61}).status_code == 200
    assert api.get_json("/content/search", cql=f"id = {page.id}")["results"] == []


def test_lag_off_drops_history(fresh_emulator: ServerThread) -> None:
    api = _lagging(fresh_emulator)
    page = _open_page(fresh_emulator)
    api.control("POST", f"/content/{page.id}/edit", {"title": "Seen at once"})
    assert api.get_json("/content/search", cql='title = "Seen at once"')["results"] == []
    assert api.control("POST", "/search", {"lag_seconds": 0}).status_code == 200
    hits = api.get_json("/content/search", cql='title = "Seen at once"')["results"]
    assert [item["id"] for item in hits] == [page.id]
