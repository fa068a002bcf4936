"""JSON structure of the emulator's responses against the key sets Confluence Cloud sends.

The expected key sets and nesting are those of recorded Cloud responses: a page and a
blog post listed with history, version, descendants, body and restriction expansions, a
single content GET with ``expand=body.storage``, a space, and a ``/search`` envelope.
"""

from __future__ import annotations

import re
from typing import Any

from emulator.app import ServerThread
from emulator.model import ContentStatus, ContentType

from .conftest import Api, api_for

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
NUMERIC_ID = re.compile(r"^\d+$")

USER_KEYS = {
    "type",
    "accountId",
    "accountType",
    "email",
    "publicName",
    "profilePicture",
    "displayName",
    "isExternalCollaborator",
    "_expandable",
    "_links",
}
VERSION_KEYS = {
    "by",
    "when",
    "friendlyWhen",
    "message",
    "number",
    "minorEdit",
    "confRev",
    "contentTypeModified",
    "_expandable",
    "_links",
}
BODY_EXPANDABLE = {
    "editor",
    "atlas_doc_format",
    "export_view",
    "styled_view",
    "dynamic",
    "editor2",
    "anonymous_export_view",
}
LIST_EXPAND = (
    "history.lastUpdated,history.previousVersion,history.contributors,version,"
    "descendants.comment,body.storage,body.view,restrictions.read.restrictions.user"
)


def _first(site_items: list[Any]) -> Any:
    assert site_items, "the generated site has no item of this kind"
    return site_items[0]


def _current_of(emulator: ServerThread, content_type: ContentType) -> list[Any]:
    return [
        item
        for item in emulator.site.contents()
        if item.type is content_type
        and item.status is ContentStatus.CURRENT
        and emulator.site.space(item.space_key) is not None
    ]


def test_listed_page_keys(cloud: Api, emulator: ServerThread) -> None:
    page = _first(
        [
            item
            for item in _current_of(emulator, ContentType.PAGE)
            if emulator.site.space(item.space_key).homepage_id != item.id  # type: ignore[union-attr]
        ]
    )
    body = cloud.get_json("/content", spaceKey=page.space_key, title=page.title, expand=LIST_EXPAND)
    assert len(body["results"]) == 1
    item = body["results"][0]
    assert set(item) == {
        "id",
        "type",
        "status",
        "title",
        "history",
        "version",
        "descendants",
        "macroRenderedOutput",
        "body",
        "extensions",
        "restrictions",
        "_expandable",
        "_links",
    }
    assert set(item["_expandable"]) == {
        "childTypes",
        "container",
        "schedulePublishInfo",
        "metadata",
        "operations",
        "schedulePublishDate",
        "children",
        "ancestors",
        "space",
    }
    assert item["_expandable"]["container"] == f"/rest/api/space/{page.space_key}"
    assert item["_expandable"]["children"] == f"/rest/api/content/{page.id}/child"
    assert set(item["_links"]) == {"self", "tinyui", "editui", "webui"}
    assert item["_links"]["self"] == cloud.url(f"/content/{page.id}")
    assert item["_links"]["editui"] == f"/pages/resumedraft.action?draftId={page.id}"
    assert item["_links"]["webui"].startswith(f"/spaces/{page.space_key}/pages/{page.id}/")
    assert re.fullmatch(r"/x/[A-Za-z0-9_-]+", item["_links"]["tinyui"])
    assert item["extensions"] == {"position": page.position}


def test_listed_page_nested_keys(cloud: Api, emulator: ServerThread) -> None:
    page = _first(_current_of(emulator, ContentType.PAGE))
    item = cloud.get_json(f"/content/{page.id}", expand=LIST_EXPAND)
    history = item["history"]
    assert set(history) >= {"lastUpdated", "latest", "createdBy", "createdDate", "contributors"}
    assert set(history["_expandable"]) == {"nextVersion", "lastOwnedBy", "ownedBy"}
    assert history["contributors"] == {"_expandable": {"publishers": ""}}
    assert history["_links"] == {"self": cloud.url(f"/content/{page.id}/history")}
    assert set(history["createdBy"]) == USER_KEYS
    assert set(history["lastUpdated"]) == VERSION_KEYS
    assert set(item["version"]) == VERSION_KEYS
    assert set(item["version"]["by"]) == USER_KEYS
    assert item["version"]["_expandable"] == {
        "collaborators": "",
        "content": f"/rest/api/content/{page.id}",
    }
    assert item["version"]["_links"] == {
        "self": cloud.url(f"/content/{page.id}/version/{page.version.number}")
    }
    assert item["version"]["confRev"] == f"confluence$content${page.id}.{page.version.number}"

    descendants = item["descendants"]
    assert set(descendants) == {"comment", "_expandable", "_links"}
    assert set(descendants["comment"]) == {"results", "start", "limit", "size", "_links"}
    assert set(descendants["_expandable"]) == {"attachment", "page"}

    body = item["body"]
    assert set(body) == {"storage", "view", "_expandable"}
    assert set(body["storage"]) == {"value", "representation", "embeddedContent", "_expandable"}
    assert body["storage"]["representation"] == "storage"
    assert body["storage"]["value"] == page.body_storage
    assert set(body["view"]) == {"value", "representation", "_expandable"}
    assert set(body["_expandable"]) == BODY_EXPANDABLE

    restrictions = item["restrictions"]
    assert set(restrictions) == {"read", "_expandable", "_links"}
    assert restrictions["_expandable"] == {"update": ""}
    read = restrictions["read"]
    assert set(read) == {"operation", "restrictions", "_expandable", "_links"}
    assert read["operation"] == "read"
    assert set(read["restrictions"]) == {"user", "_expandable"}
    assert read["restrictions"]["_expandable"] == {"group": ""}
    assert set(read["restrictions"]["user"]) == {"results", "start", "limit", "size"}
    assert read["restrictions"]["user"]["limit"] == 200


def test_blog_post_keys(cloud: Api, emulator: ServerThread) -> None:
    post = _first(_current_of(emulator, ContentType.BLOGPOST))
    item = cloud.get_json(f"/content/{post.id}", expand=LIST_EXPAND)
    assert "extensions" not in item
    assert set(item["descendants"]["_expandable"]) == {"attachment"}
    day = post.created.strftime("%Y/%m/%d")
    assert item["_links"]["webui"].startswith(f"/spaces/{post.space_key}/blog/{day}/{post.id}/")


def test_single_get_keys(cloud: Api, emulator: ServerThread) -> None:
    page = _first(_current_of(emulator, ContentType.PAGE))
    item = cloud.get_json(f"/content/{page.id}", expand="body.storage")
    assert set(item) == {
        "id",
        "type",
        "status",
        "title",
        "macroRenderedOutput",
        "body",
        "extensions",
        "_expandable",
        "_links",
    }
    assert set(item["_links"]) == {
        "editui",
        "webui",
        "context",
        "self",
        "tinyui",
        "collection",
        "base",
    }
    assert item["_links"]["context"] == "/wiki"
    assert item["_links"]["collection"] == "/rest/api/content"
    assert item["_links"]["base"] == cloud.base
    assert set(item["_expandable"]) == {
        "childTypes",
        "container",
        "metadata",
        "operations",
        "children",
        "restrictions",
        "history",
        "ancestors",
        "version",
        "descendants",
        "space",
        "schedulePublishInfo",
        "schedulePublishDate",
    }
    assert item["_expandable"]["restrictions"] == (
        f"/rest/api/content/{page.id}/restriction/byOperation"
    )
    assert item["body"]["storage"]["_expandable"] == {"content": f"/rest/api/content/{page.id}"}


def test_default_expansions(cloud: Api, emulator: ServerThread) -> None:
    page = _first(_current_of(emulator, ContentType.PAGE))
    item = cloud.get_json(f"/content/{page.id}")
    assert {"space", "history", "version"} <= set(item)
    assert not {"space", "history", "version"} & set(item["_expandable"])


def test_space_keys(cloud: Api, emulator: ServerThread) -> None:
    space = next(iter(emulator.site.spaces.values()))
    listed = cloud.get_json("/space", spaceKey=space.key)["results"][0]
    assert set(listed) == {"id", "key", "name", "type", "status", "_expandable", "_links"}
    assert isinstance(listed["id"], int)
    assert listed["id"] == space.id
    assert set(listed["_links"]) == {"webui", "self"}
    assert listed["_links"]["webui"] == f"/spaces/{space.key}"
    assert set(listed["_expandable"]) >= {
        "settings",
        "metadata",
        "operations",
        "lookAndFeel",
        "identifiers",
        "theme",
        "history",
        "icon",
        "description",
        "permissions",
    }
    single = cloud.get_json(f"/space/{space.key}")
    assert set(single["_links"]) == {"webui", "self", "context", "collection", "base"}
    assert single["_links"]["collection"] == "/rest/api/space"


def test_space_description_expansion(cloud: Api, emulator: ServerThread) -> None:
    space = next(iter(emulator.site.spaces.values()))
    bare = cloud.get_json(f"/space/{space.key}", expand="description")
    assert bare["description"] == {"_expandable": {"view": "", "plain": ""}}
    assert "description" not in bare["_expandable"]
    plain = cloud.get_json(f"/space/{space.key}", expand="description.plain")
    assert plain["description"]["plain"] == {
        "value": space.description,
        "representation": "plain",
        "embeddedContent": [],
    }
    assert plain["description"]["_expandable"] == {"view": ""}


def test_search_envelope_keys(cloud: Api) -> None:
    body = cloud.get_json("/search", cql="type = page", limit=2, expand="content")
    assert set(body) == {
        "results",
        "start",
        "limit",
        "size",
        "totalSize",
        "cqlQuery",
        "searchDuration",
        "_links",
    }
    assert set(body["_links"]) == {"base", "context", "next", "self"}
    result = body["results"][0]
    assert set(result) == {
        "content",
        "title",
        "excerpt",
        "url",
        "resultGlobalContainer",
        "breadcrumbs",
        "entityType",
        "iconCssClass",
        "lastModified",
        "friendlyLastModified",
        "score",
    }
    assert set(result["resultGlobalContainer"]) == {"title", "displayUrl"}
    assert result["entityType"] == "content"
    content = result["content"]
    assert set(content) == {
        "id",
        "type",
        "status",
        "title",
        "childTypes",
        "macroRenderedOutput",
        "restrictions",
        "_expandable",
        "_links",
    }
    assert set(content["_expandable"]) == {
        "container",
        "metadata",
        "extensions",
        "operations",
        "children",
        "history",
        "ancestors",
        "body",
        "version",
        "descendants",
        "space",
    }
    assert set(content["_links"]) == {"webui", "self", "tinyui"}


def _walk_values(value: Any, key: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for child_key, child in value.items():
            found.extend(_walk_values(child, child_key))
    elif isinstance(value, list):
        for child in value:
            found.extend(_walk_values(child, key))
    else:
        found.append((key, value))
    return found


def test_id_and_timestamp_formats(any_root: Api, emulator: ServerThread) -> None:
    page = _first(_current_of(emulator, ContentType.PAGE))
    item = any_root.get_json(f"/content/{page.id}", expand=LIST_EXPAND + ",space,ancestors")
    assert isinstance(item["id"], str)
    assert NUMERIC_ID.match(item["id"])
    assert isinstance(item["space"]["id"], int)
    stamps = [value for key, value in _walk_values(item) if key in ("when", "createdDate")]
    assert stamps
    for stamp in stamps:
        assert TIMESTAMP.match(stamp), stamp


def test_roots_links(emulator: ServerThread) -> None:
    origin = f"http://127.0.0.1:{emulator.port}"
    expected = {
        "cloud": (origin + "/wiki", "/wiki"),
        "gateway": (f"{origin}/ex/confluence/{emulator.options.cloud_id}/wiki", "/wiki"),
        "datacenter": (origin + "/confluence", "/confluence"),
    }
    for flavour, (base, context) in expected.items():
        api = api_for(emulator, flavour)
        body = api.get_json("/space", limit=1)
        assert body["_links"]["base"] == base
        assert body["_links"]["context"] == context
        assert body["_links"]["self"] == f"{base}/rest/api/space"
        assert body["_links"]["next"] == "/rest/api/space?next=true&limit=1&start=1"
        assert body["results"][0]["_links"]["self"].startswith(base + "/rest/api/space/")
        second = api.follow(body["_links"]["next"]).json()
        assert second["start"] == 1
        assert second["_links"]["prev"] == "/rest/api/space?prev=true&limit=1&start=0"


def test_datacenter_user_shape(datacenter: Api, emulator: ServerThread) -> None:
    user = datacenter.get_json("/user/current")
    api_user = emulator.site.user(emulator.site.current_user_id)
    assert api_user is not None
    assert user["username"] == api_user.username
    assert user["userKey"] == api_user.user_key
    assert "accountId" not in user


def test_current_user_cloud(cloud: Api, emulator: ServerThread) -> None:
    user = cloud.get_json("/user/current")
    api_user = emulator.site.user(emulator.site.current_user_id)
    assert api_user is not None
    assert user["accountId"] == api_user.account_id
    assert user["timeZone"] == api_user.time_zone
    assert user["email"] == emulator.credentials.email
    assert set(user) >= USER_KEYS
    looked_up = cloud.get_json("/user", accountId=api_user.account_id)
    assert looked_up["displayName"] == api_user.display_name


def test_unknown_route_bodies(cloud: Api) -> None:
    response = cloud.session.get(
        cloud.url("/nothing/here"), headers={"Accept": "application/json"}, timeout=30
    )
    assert response.status_code == 404
    assert response.json() == {
        "message": f"null for uri: {cloud.url('/nothing/here')}",
        "status-code": 404,
    }
    xml = cloud.get("/nothing/here")
    assert xml.status_code == 404
    assert "<status-code>404</status-code>" in xml.text
    posted = cloud.session.post(cloud.url("/space"), timeout=30)
    assert posted.status_code == 405
    assert posted.json()["errors"][0]["code"] == "METHOD_NOT_ALLOWED"
    assert "Allow" not in posted.headers


def test_datacenter_webui(datacenter: Api, emulator: ServerThread) -> None:
    page = _first(_current_of(emulator, ContentType.PAGE))
    item = datacenter.get_json(f"/content/{page.id}")
    assert item["_links"]["webui"].startswith(f"/display/{page.space_key}/")
    assert item["_links"]["base"] == datacenter.base
