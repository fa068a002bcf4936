"""Single content items over HTTP: expansions and ``_expandable``, statuses, versions,
children maps, restrictions and the attachment download redirect."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests

from emulator.app import ServerThread
from emulator.model import Content, ContentStatus, ContentType

from .conftest import Api, api_for, make_options


def _current(emulator: ServerThread, content_type: ContentType) -> list[Content]:
    return [
        item
        for item in emulator.site.contents()
        if item.type is content_type and item.status is ContentStatus.CURRENT
    ]


def _deep_page(emulator: ServerThread) -> Content:
    return max(_current(emulator, ContentType.PAGE), key=lambda item: len(item.ancestor_ids))


def test_expanded_keys_leave_expandable(cloud: Api, emulator: ServerThread) -> None:
    page = _deep_page(emulator)
    plain = cloud.get_json(f"/content/{page.id}", expand="")
    assert {"ancestors", "body", "version", "space", "history"} <= set(plain["_expandable"])
    expanded = cloud.get_json(
        f"/content/{page.id}", expand="ancestors,body.storage,version,space,history"
    )
    for key in ("ancestors", "body", "version", "space", "history"):
        assert key in expanded
        assert key not in expanded["_expandable"]
    assert "storage" not in expanded["body"]["_expandable"]
    assert "view" in expanded["body"]["_expandable"]


def test_ancestors_root_first(cloud: Api, emulator: ServerThread) -> None:
    page = _deep_page(emulator)
    assert len(page.ancestor_ids) >= 2
    body = cloud.get_json(f"/content/{page.id}", expand="ancestors.version")
    assert [item["id"] for item in body["ancestors"]] == page.ancestor_ids
    assert all("version" in item for item in body["ancestors"])


def test_nested_expansion_paths(cloud: Api, emulator: ServerThread) -> None:
    page = _deep_page(emulator)
    body = cloud.get_json(
        f"/content/{page.id}",
        expand="history.lastUpdated.by,space.description.plain,metadata.labels,container",
    )
    assert body["history"]["lastUpdated"]["number"] == page.version.number
    assert "plain" in body["space"]["description"]
    assert [label["name"] for label in body["metadata"]["labels"]["results"]] == page.label_names
    assert body["container"]["key"] == page.space_key


def test_too_many_sub_expansions(cloud: Api, emulator: ServerThread) -> None:
    page = _deep_page(emulator)
    deep = ".".join(["children", "page"] * 5)
    response = cloud.get(f"/content/{page.id}", expand=deep)
    assert response.status_code == 400
    assert response.json()["statusCode"] == 400
    allowed = ".".join(["children", "page"] * 4)
    assert cloud.get(f"/content/{page.id}", expand=allowed).status_code == 200


def test_children_map(cloud: Api, emulator: ServerThread) -> None:
    site = emulator.site
    parent = max(
        _current(emulator, ContentType.PAGE),
        key=lambda item: len(site.children(item.id, ContentType.PAGE)),
    )
    bare = cloud.get_json(f"/content/{parent.id}/child")
    assert set(bare["_expandable"]) == {"attachment", "comment", "page"}
    expanded = cloud.get_json(f"/content/{parent.id}/child", expand="page")
    expected = [
        item.id
        for item in site.children(parent.id, ContentType.PAGE)
        if item.status is ContentStatus.CURRENT
    ]
    assert [item["id"] for item in expanded["page"]["results"]] == expected[:25]
    assert set(expanded["_expandable"]) == {"attachment", "comment"}


def test_statuses(cloud: Api, emulator: ServerThread) -> None:
    site = emulator.site
    trashed = next(item for item in site.contents() if item.status is ContentStatus.TRASHED)
    hidden = cloud.get(f"/content/{trashed.id}")
    assert hidden.status_code == 404
    assert hidden.json() == {
        "statusCode": 404,
        "message": "com.atlassian.confluence.api.service.exceptions.api.NotFoundException: "
        f"No content found with id : {trashed.id}",
    }
    trashed_item = cloud.get_json(f"/content/{trashed.id}", status="trashed")
    assert trashed_item["status"] == "trashed"
    assert cloud.get_json(f"/content/{trashed.id}", status="any")["status"] == "trashed"
    draft = next(item for item in site.contents() if item.status is ContentStatus.DRAFT)
    assert cloud.get(f"/content/{draft.id}").status_code == 404
    draft_response = cloud.get(f"/content/{draft.id}", status="draft")
    if draft.created_by == site.current_user_id:
        assert draft_response.status_code == 200
    else:
        assert draft_response.status_code == 403


def test_invalid_id(cloud: Api) -> None:
    assert cloud.get("/content/abc").status_code == 400
    assert cloud.get("/content/99999999").status_code == 404


def test_datacenter_not_found_body(datacenter: Api) -> None:
    body = datacenter.get("/content/99999999").json()
    assert body["statusCode"] == 404
    assert body["reason"] == "Not Found"
    assert body["message"] == "No content found with id: ContentId{id=99999999}"
    assert set(body["data"]) >= {"authorized", "valid", "errors", "successful"}


def test_older_version(cloud: Api, emulator: ServerThread) -> None:
    page = max(_current(emulator, ContentType.PAGE), key=lambda item: len(item.versions))
    assert len(page.versions) >= 2
    old = cloud.get_json(f"/content/{page.id}", version=1, expand="body.storage,version")
    assert old["version"]["number"] == 1
    assert old["body"]["storage"]["value"] == page.versions[0].body_storage
    assert old["status"] == "historical"
    assert cloud.get(f"/content/{page.id}", version=len(page.versions) + 1).status_code == 404
    history = cloud.get_json(f"/content/{page.id}/history", expand="lastUpdated,previousVersion")
    assert history["lastUpdated"]["number"] == page.version.number
    assert history["previousVersion"]["number"] == page.version.number - 1


def test_restrictions(cloud: Api, emulator: ServerThread) -> None:
    site = emulator.site
    restricted = next(
        (item for item in site.contents() if item.read_restriction_users), None
    ) or next(item for item in site.contents() if item.status is ContentStatus.CURRENT)
    status = restricted.status.value
    body = cloud.get_json(f"/content/{restricted.id}/restriction/byOperation", status=status)
    assert set(body) == {"read", "update", "_links"}
    users = body["read"]["restrictions"]["user"]["results"]
    assert [user["accountId"] for user in users] == restricted.read_restriction_users
    listed = cloud.get_json(f"/content/{restricted.id}/restriction")
    assert [item["operation"] for item in listed["results"]] == ["read", "update"]
    assert listed["limit"] == 100
    assert "restrictionsHash" in listed


def test_attachment_download_redirect(cloud: Api, emulator: ServerThread) -> None:
    attachment = _downloadable(emulator)
    listed = cloud.get_json(f"/content/{attachment.container_id}/child/attachment")
    item = next(entry for entry in listed["results"] if entry["id"] == attachment.id)
    link = item["_links"]["download"]
    first = cloud.session.get(cloud.base + link, allow_redirects=False, timeout=30)
    assert first.status_code == 302
    target = urlsplit(first.headers["Location"])
    # The media service is another host: the request went to 127.0.0.1.
    assert target.hostname == "localhost"
    assert target.port == emulator.port
    assert "/rest/api/" not in target.path
    assert parse_qs(target.query)["token"]
    # The media location needs no Authorization: a bare client downloads the bytes.
    data = requests.get(first.headers["Location"], timeout=30)
    assert data.status_code == 200
    assert len(data.content) == attachment.file_size
    assert data.headers["Content-Type"].startswith(attachment.media_type or "")
    forged = requests.get(
        f"{target.scheme}://{target.netloc}{target.path}?token=bad&version=1", timeout=30
    )
    assert forged.status_code == 401


def test_gateway_download_redirect(emulator: ServerThread) -> None:
    gateway = api_for(emulator, "gateway")
    attachment = _downloadable(emulator)
    listed = gateway.get_json(f"/content/{attachment.container_id}/child/attachment")
    item = next(entry for entry in listed["results"] if entry["id"] == attachment.id)
    first = gateway.session.get(
        gateway.base + item["_links"]["download"], allow_redirects=False, timeout=30
    )
    assert first.status_code == 302
    assert urlsplit(first.headers["Location"]).hostname == "localhost"


def test_media_host_option() -> None:
    with ServerThread(make_options(media_host="media.localhost:1")) as server:
        cloud = api_for(server, "cloud")
        attachment = _downloadable(server)
        path = f"/content/{attachment.container_id}/child/attachment/{attachment.id}/download"
        response = cloud.session.get(cloud.url(path), allow_redirects=False, timeout=30)
        assert response.status_code == 302
        assert urlsplit(response.headers["Location"]).netloc == "media.localhost:1"


def test_media_counts_forwarded_authorization(fresh_emulator: ServerThread) -> None:
    cloud = api_for(fresh_emulator, "cloud")
    attachment = _downloadable(fresh_emulator)
    path = f"/content/{attachment.container_id}/child/attachment/{attachment.id}/download"
    location = cloud.session.get(cloud.url(path), allow_redirects=False, timeout=30).headers[
        "Location"
    ]
    bare = requests.get(location, timeout=30)
    assert bare.status_code == 200
    counters = cloud.control("GET", "/counters").json()
    assert counters["media_downloads"] == 1
    assert counters["media_authorization"] == 0
    # A client that sends the site's credentials to the media host is counted.
    leaked = cloud.session.get(location, timeout=30)
    assert leaked.status_code == 200
    counters = cloud.control("GET", "/counters").json()
    assert counters["media_downloads"] == 2
    assert counters["media_authorization"] == 1


def _downloadable(emulator: ServerThread) -> Content:
    site = emulator.site
    return next(
        item
        for item in _current(emulator, ContentType.ATTACHMENT)
        if site.content(item.container_id or "").status  # type: ignore[union-attr]
        is ContentStatus.CURRENT
    )


def test_api_download_path(cloud: Api, emulator: ServerThread) -> None:
    attachment = _downloadable(emulator)
    path = f"/content/{attachment.container_id}/child/attachment/{attachment.id}/download"
    response = cloud.session.get(cloud.url(path), allow_redirects=False, timeout=30)
    assert response.status_code == 302
    followed = cloud.session.get(cloud.url(path), timeout=30)
    assert followed.status_code == 200
    assert len(followed.content) == attachment.file_size
    too_new = cloud.get(path, version=attachment.version.number + 1)
    assert too_new.status_code == 400


def test_gateway_needs_cloud_id(emulator: ServerThread) -> None:
    api = api_for(emulator, "gateway")
    wrong = api.origin + "/ex/confluence/00000000-0000-0000-0000-000000000000/wiki/rest/api/space"
    assert api.session.get(wrong, timeout=30).status_code == 401
    assert api.get("/space").status_code == 200


def test_datacenter_legacy_download(datacenter: Api, emulator: ServerThread) -> None:
    attachment = _downloadable(emulator)
    listed = datacenter.get_json(f"/content/{attachment.container_id}/child/attachment")
    link = next(entry for entry in listed["results"] if entry["id"] == attachment.id)
    download = link["_links"]["download"]
    assert download.startswith(f"/download/attachments/{attachment.container_id}/")
    query = parse_qs(urlsplit(download).query)
    assert query["version"] == [str(attachment.version.number)]
    assert query["api"] == ["v2"]
    assert "modificationDate" in query
    url = datacenter.base + download
    assert requests.get(url, allow_redirects=False, timeout=30).status_code == 401
    # Data Center sends the file from the site itself.
    signed_in = datacenter.session.get(url, allow_redirects=False, timeout=30)
    assert signed_in.status_code == 200
    assert len(signed_in.content) == attachment.file_size


def test_cloud_legacy_download_redirects(cloud: Api, emulator: ServerThread) -> None:
    attachment = _downloadable(emulator)
    url = f"{cloud.base}/download/attachments/{attachment.container_id}/{attachment.title}"
    assert requests.get(url, allow_redirects=False, timeout=30).status_code == 403
    signed_in = cloud.session.get(url, allow_redirects=False, timeout=30)
    assert signed_in.status_code == 302
    assert urlsplit(signed_in.headers["Location"]).hostname == "localhost"


def test_attachment_filters(cloud: Api, emulator: ServerThread) -> None:
    attachment = _downloadable(emulator)
    path = f"/content/{attachment.container_id}/child/attachment"
    by_name = cloud.get_json(path, filename=attachment.title)["results"]
    assert [item["id"] for item in by_name] == [attachment.id]
    by_type = cloud.get_json(path, mediaType=attachment.media_type)["results"]
    assert attachment.id in [item["id"] for item in by_type]
    assert all(item["extensions"]["mediaType"] == attachment.media_type for item in by_type)
    assert cloud.get_json(path, filename="no-such-file.bin")["results"] == []
