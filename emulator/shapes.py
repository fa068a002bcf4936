"""JSON shapes of the Confluence REST API v1: content, spaces, users, versions, labels.

Every builder takes an expansion tree (see parse_expand) and a ShapeContext that names
the root the request came through, so that ``_links.base`` and ``self`` point back at
that root. Expanded keys are removed from ``_expandable``, as Confluence does.
Timestamps are UTC ``YYYY-MM-DDTHH:MM:SS.mmmZ``; content ids are strings, space ids
integers.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

from emulator.model import Content, ContentStatus, ContentType, Label, Site, Space, User, Version

JSON = dict[str, Any]
Expand = dict[str, "Expand"]

MAX_EXPANSION_DEPTH = 8


class ExpansionError(ValueError):
    """An ``expand`` value that Confluence rejects with 400; the message is Confluence's."""


def parse_expand(raw: str | None, *, defaults: Iterable[str] = ()) -> Expand:
    """Parse ``expand=a.b,c`` into a tree ``{"a": {"b": {}}, "c": {}}``.

    Blank entries are ignored. A path nested deeper than MAX_EXPANSION_DEPTH levels is
    rejected with ExpansionError.
    """
    tree: Expand = {}
    paths = [path for path in defaults]
    if raw:
        paths.extend(raw.split(","))
    for path in paths:
        parts = [part.strip() for part in path.strip().split(".")]
        if not parts or not parts[0]:
            continue
        # NOTE: Cloud documents a limit of 8 sub-expansions; the wording of its 400 body
        # is not recorded, so the message here is our own.
        if len(parts) > MAX_EXPANSION_DEPTH:
            raise ExpansionError(
                "com.atlassian.confluence.api.service.exceptions.BadRequestException: "
                f"Exceeded the maximum number of sub-expansions allowed ({MAX_EXPANSION_DEPTH}) "
                f"in expand path '{path.strip()}'"
            )
        node = tree
        for part in parts:
            if not part:
                break
            node = node.setdefault(part, {})
    return tree


def expand_paths(tree: Expand, prefix: str = "") -> list[str]:
    """Return the leaf paths of an expansion tree, e.g. ``["body.storage", "version"]``."""
    paths: list[str] = []
    for key, child in tree.items():
        path = prefix + key
        if child:
            paths.extend(expand_paths(child, path + "."))
        else:
            paths.append(path)
    return paths


def format_time(when: datetime) -> str:
    """Format a datetime as Confluence does: UTC with milliseconds and ``Z``."""
    utc = when if when.tzinfo is UTC else when.astimezone(UTC)
    # isoformat is several times faster than strftime, and list rendering calls this a lot.
    return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def friendly_date(when: datetime) -> str:
    """Format the ``friendlyWhen`` of a version, e.g. ``Feb 17, 2023``."""
    utc = when if when.tzinfo is UTC else when.astimezone(UTC)
    return f"{_MONTHS[utc.month - 1]} {utc.day:02d}, {utc.year}"


def tiny_id(content_id: str) -> str:
    """Return the tiny link code Confluence derives from a content id (``/x/<code>``)."""
    raw = int(content_id).to_bytes(8, "little", signed=False)
    code = base64.b64encode(raw).decode("ascii").rstrip("=").rstrip("A")
    return code.replace("/", "-").replace("+", "_")


_TITLE_DROP = re.compile(r"[^\w\s-]", re.UNICODE)
_PLAIN_TITLE = re.compile(r"[A-Za-z0-9-]+(?: [A-Za-z0-9-]+)*")


def title_slug(title: str) -> str:
    """Return the title part of a ``webui`` link: punctuation dropped, spaces as ``+``."""
    if _PLAIN_TITLE.fullmatch(title):
        return title.replace(" ", "+")
    cleaned = " ".join(_TITLE_DROP.sub("", title).split())
    return quote_plus(cleaned)


@dataclass
class ShapeContext:
    """The root a request came through and the site to read from.

    ``base`` is the absolute ``_links.base`` (``<origin>/wiki`` on Cloud,
    ``<origin>[/context]`` on Data Center, the gateway prefix plus ``/wiki`` through the
    gateway); ``context`` is ``_links.context``.
    """

    site: Site
    base: str
    context: str
    flavour: str
    search_style: bool = False
    # Characters of `body.storage` served; None serves the full body (every route but
    # `/search`, whose hits carry a cut body).
    body_limit: int | None = None
    _user_cache: dict[str, JSON] = field(default_factory=dict)

    @property
    def api(self) -> str:
        """The absolute API root, e.g. ``http://127.0.0.1:8090/wiki/rest/api``."""
        return self.base + "/rest/api"


# --- users ------------------------------------------------------------------------


def user_json(ctx: ShapeContext, account_id: str, *, current: bool = False) -> JSON:
    """Build a User; Cloud shape with ``accountId``, Data Center shape with ``userKey``."""
    if not current:
        cached = ctx._user_cache.get(account_id)
        if cached is not None:
            return cached
    user = ctx.site.user(account_id)
    body = _user_body(ctx, account_id, user, current=current)
    if not current:
        ctx._user_cache[account_id] = body
    return body


def _user_body(ctx: ShapeContext, account_id: str, user: User | None, *, current: bool) -> JSON:
    display = user.display_name if user else "Unknown user"
    if ctx.flavour == "datacenter":
        username = user.username if user else account_id
        user_key = user.user_key if user else account_id
        body: JSON = {
            "type": "known",
            "username": username,
            "userKey": user_key,
            "profilePicture": {
                "path": ctx.context + "/images/icons/profilepics/default.svg",
                "width": 48,
                "height": 48,
                "isDefault": True,
            },
            "displayName": display,
            "_expandable": {"status": ""},
            "_links": {"self": f"{ctx.api}/user?key={user_key}"},
        }
        if current and user is not None:
            body["timeZone"] = user.time_zone
        return body
    body = {
        "type": "known",
        "accountId": account_id,
        "accountType": "atlassian",
        "email": user.email if user else "",
        "publicName": display,
        "profilePicture": {
            "path": f"/wiki/aa-avatar/{account_id}",
            "width": 48,
            "height": 48,
            "isDefault": False,
        },
        "displayName": display,
        "isExternalCollaborator": False,
    }
    if current:
        body["isGuest"] = False
        body["locale"] = "en_US"
        body["accountStatus"] = "active"
        body["timeZone"] = user.time_zone if user else None
    body["_expandable"] = {"operations": "", "personalSpace": ""}
    body["_links"] = {"self": f"{ctx.api}/user?accountId={account_id}"}
    return body


# --- spaces -----------------------------------------------------------------------


def space_json(ctx: ShapeContext, space: Space, expand: Expand, *, single: bool = False) -> JSON:
    """Build a Space; ``single`` adds the ``_links`` of a single-object GET."""
    body: JSON = {"id": space.id, "key": space.key, "name": space.name}
    expandable: JSON = {
        "settings": f"/rest/api/space/{space.key}/settings",
        "metadata": "",
        "operations": "",
        "lookAndFeel": f"/rest/api/settings/lookandfeel?spaceKey={space.key}",
        "identifiers": "",
        "permissions": "",
        "roles": "",
        "icon": "",
        "description": "",
        "theme": f"/rest/api/space/{space.key}/theme",
        "history": "",
    }
    if space.homepage_id is not None:
        expandable["homepage"] = f"/rest/api/content/{space.homepage_id}"

    if "icon" in expand:
        body["icon"] = {
            "path": f"/download/attachments/{space.id}/{space.key}-default?version=1&api=v2",
            "width": 48,
            "height": 48,
            "isDefault": False,
        }
        del expandable["icon"]
    if "description" in expand:
        body["description"] = _description_json(space, expand["description"])
        del expandable["description"]
    if "homepage" in expand and space.homepage_id is not None:
        homepage = ctx.site.content(space.homepage_id)
        if homepage is not None:
            body["homepage"] = content_json(ctx, homepage, expand["homepage"])
        del expandable["homepage"]
    if "history" in expand:
        body["history"] = {
            "createdDate": format_time(space.created),
            "createdBy": user_json(ctx, space.creator),
        }
        del expandable["history"]
    if "metadata" in expand:
        if "labels" in expand["metadata"]:
            # Space categories are labels with the `team` prefix.
            labels = [
                {"prefix": "team", "name": name, "id": "", "label": name} for name in space.labels
            ]
            body["metadata"] = {
                "labels": {"results": labels, "start": 0, "limit": 200, "size": len(labels)}
            }
        else:
            body["metadata"] = {"_expandable": {"labels": ""}}
        del expandable["metadata"]
    if "permissions" in expand:
        body["permissions"] = []
        del expandable["permissions"]

    body["type"] = space.type
    body["status"] = space.status
    body["_expandable"] = expandable
    links: JSON = {"webui": f"/spaces/{space.key}", "self": f"{ctx.api}/space/{space.key}"}
    if single:
        links["context"] = ctx.context
        links["collection"] = "/rest/api/space"
        links["base"] = ctx.base
    body["_links"] = links
    return body


def _description_json(space: Space, expand: Expand) -> JSON:
    # A bare `expand=description` returns only the `_expandable` of the description.
    description: JSON = {}
    expandable: JSON = {"view": "", "plain": ""}
    if "plain" in expand:
        description["plain"] = {
            "value": space.description,
            "representation": "plain",
            "embeddedContent": [],
        }
        del expandable["plain"]
    if "view" in expand:
        description["view"] = {
            "value": f"<p>{escape_html(space.description)}</p>" if space.description else "",
            "representation": "view",
            "embeddedContent": [],
        }
        del expandable["view"]
    if expandable:
        description["_expandable"] = expandable
    return description


def escape_html(text: str) -> str:
    """Escape text for HTML the way Confluence escapes search titles (``"`` included)."""
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


# --- content ----------------------------------------------------------------------


def content_path(content: Content) -> str:
    """Return the context-relative API path of a content item."""
    return f"/rest/api/content/{content.id}"


def webui_link(ctx: ShapeContext, content: Content) -> str:
    """Return the ``_links.webui`` of a content item.

    Cloud links pages as ``/spaces/KEY/pages/ID/Title``; Data Center as
    ``/display/KEY/Title``.
    """
    space = ctx.site.space(content.space_key)
    key = content.space_key
    if ctx.flavour == "datacenter" and content.type is ContentType.PAGE:
        return f"/display/{key}/{title_slug(content.title)}"
    if ctx.flavour == "datacenter" and content.type is ContentType.BLOGPOST:
        day = content.created.astimezone(UTC)
        return f"/display/{key}/{day:%Y/%m/%d}/{title_slug(content.title)}"
    if content.type is ContentType.PAGE:
        if space is not None and space.homepage_id == content.id:
            return f"/spaces/{key}/overview"
        return f"/spaces/{key}/pages/{content.id}/{title_slug(content.title)}"
    if content.type is ContentType.BLOGPOST:
        day = content.created.astimezone(UTC)
        return f"/spaces/{key}/blog/{day:%Y/%m/%d}/{content.id}/{title_slug(content.title)}"
    container = ctx.site.content(content.container_id) if content.container_id else None
    container_id = container.id if container else ""
    container_title = title_slug(container.title) if container else ""
    if content.type is ContentType.COMMENT:
        return (
            f"/spaces/{key}/pages/{container_id}/{container_title}"
            f"?focusedCommentId={content.id}#comment-{content.id}"
        )
    return (
        f"/spaces/{key}/pages/{container_id}/{container_title}"
        f"?preview=/{container_id}/{content.id}/{quote(content.title)}"
    )


def download_link(ctx: ShapeContext, content: Content) -> str:
    """Return the ``_links.download`` of an attachment.

    Cloud sends the API path that redirects to the media service; Data Center sends the
    older ``/download/attachments/...`` form.
    """
    container_id = content.container_id or ""
    if ctx.flavour == "datacenter":
        millis = int(content.last_modified.timestamp() * 1000)
        return (
            f"/download/attachments/{container_id}/{quote(content.title)}"
            f"?version={content.version.number}&modificationDate={millis}&api=v2"
        )
    return f"/rest/api/content/{container_id}/child/attachment/{content.id}/download"


def version_json(ctx: ShapeContext, content: Content, version: Version, expand: Expand) -> JSON:
    """Build a Version of a content item."""
    body: JSON = {
        "by": user_json(ctx, version.by),
        "when": format_time(version.when),
        "friendlyWhen": friendly_date(version.when),
        "message": version.message,
        "number": version.number,
        "minorEdit": version.minor_edit,
    }
    if ctx.flavour != "datacenter":
        body["confRev"] = f"confluence$content${content.id}.{version.number}"
        body["contentTypeModified"] = False
    expandable: JSON = {"collaborators": "", "content": content_path(content)}
    if "content" in expand:
        body["content"] = content_json(ctx, content, expand["content"])
        del expandable["content"]
    if "collaborators" in expand:
        body["collaborators"] = {
            "users": [user_json(ctx, version.by)],
            "userKeys": [version.by],
        }
        del expandable["collaborators"]
    body["_expandable"] = expandable
    body["_links"] = {"self": f"{ctx.api}/content/{content.id}/version/{version.number}"}
    return body


def history_json(ctx: ShapeContext, content: Content, expand: Expand) -> JSON:
    """Build the ContentHistory of a content item."""
    body: JSON = {}
    expandable: JSON = {
        "lastUpdated": "",
        "previousVersion": "",
        "contributors": "",
        "nextVersion": "",
        "lastOwnedBy": "",
        "ownedBy": "",
    }

    if "lastUpdated" in expand:
        body["lastUpdated"] = version_json(ctx, content, content.version, expand["lastUpdated"])
        del expandable["lastUpdated"]
    if "previousVersion" in expand:
        if len(content.versions) > 1:
            body["previousVersion"] = version_json(
                ctx, content, content.versions[-2], expand["previousVersion"]
            )
        del expandable["previousVersion"]

    body["latest"] = True
    body["createdBy"] = user_json(ctx, content.created_by)
    body["createdDate"] = format_time(content.created)

    if "contributors" in expand:
        contributors: JSON = {}
        if "publishers" in expand["contributors"]:
            publishers = list(dict.fromkeys(version.by for version in content.versions))
            contributors["publishers"] = {
                "users": [user_json(ctx, account_id) for account_id in publishers],
                "userKeys": publishers,
            }
        else:
            contributors["_expandable"] = {"publishers": ""}
        body["contributors"] = contributors
        del expandable["contributors"]
    if "nextVersion" in expand:
        del expandable["nextVersion"]

    body["_expandable"] = expandable
    body["_links"] = {"self": f"{ctx.api}/content/{content.id}/history"}
    return body


def label_json(label: Label) -> JSON:
    """Build a Label."""
    return {"prefix": label.prefix, "name": label.name, "id": label.id, "label": label.name}


def label_array_json(ctx: ShapeContext, content: Content) -> JSON:
    """Build the LabelArray embedded by ``metadata.labels`` (first 200 labels)."""
    labels = content.labels[:200]
    array: JSON = {
        "results": [label_json(label) for label in labels],
        "start": 0,
        "limit": 200,
        "size": len(labels),
        "_links": {"self": f"{ctx.api}/content/{content.id}/label"},
    }
    if len(content.labels) > 200:
        array["_links"]["next"] = (
            f"/rest/api/content/{content.id}/label?next=true&limit=200&start=200"
        )
    return array


def metadata_json(ctx: ShapeContext, content: Content, expand: Expand) -> JSON:
    """Build the ``metadata`` of a content item."""
    body: JSON = {}
    expandable: JSON = {
        "currentuser": "",
        "comments": "",
        "sourceTemplateEntityId": "",
        "simple": "",
        "properties": "",
        "frontend": "",
        "labels": "",
        "likes": "",
    }
    if "labels" in expand:
        body["labels"] = label_array_json(ctx, content)
        del expandable["labels"]
    if content.type is ContentType.ATTACHMENT:
        body["mediaType"] = content.media_type or "application/octet-stream"
    body["_expandable"] = expandable
    return body


def restriction_json(ctx: ShapeContext, content: Content, operation: str, expand: Expand) -> JSON:
    """Build one ContentRestriction (``read`` or ``update``) of a content item."""
    body: JSON = {"operation": operation}
    users = content.read_restriction_users if operation == "read" else []
    groups = content.read_restriction_groups if operation == "read" else []
    if "restrictions" in expand:
        sub = expand["restrictions"]
        restrictions: JSON = {}
        expandable: JSON = {}
        if "user" in sub:
            restrictions["user"] = {
                "results": [user_json(ctx, account_id) for account_id in users],
                "start": 0,
                "limit": 200,
                "size": len(users),
            }
        else:
            expandable["user"] = ""
        if "group" in sub:
            restrictions["group"] = {
                "results": [
                    {"type": "group", "name": name, "id": _group_id(name)} for name in groups
                ],
                "start": 0,
                "limit": 200,
                "size": len(groups),
            }
        else:
            expandable["group"] = ""
        if expandable:
            restrictions["_expandable"] = expandable
        body["restrictions"] = restrictions
        body["_expandable"] = {"content": content_path(content)}
    else:
        body["_expandable"] = {"restrictions": "", "content": content_path(content)}
    body["_links"] = {"self": f"{ctx.api}/content/{content.id}/restriction/byOperation/{operation}"}
    return body


def _group_id(name: str) -> str:
    digest = name.encode().hex().ljust(32, "0")[:32]
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def restrictions_json(ctx: ShapeContext, content: Content, expand: Expand) -> JSON:
    """Build the ``restrictions`` of a content item (read and update by operation)."""
    body: JSON = {}
    expandable: JSON = {}
    for operation in ("read", "update"):
        if operation in expand:
            body[operation] = restriction_json(ctx, content, operation, expand[operation])
        else:
            expandable[operation] = ""
    if expandable:
        body["_expandable"] = expandable
    body["_links"] = {"self": f"{ctx.api}/content/{content.id}/restriction/byOperation"}
    return body


def body_json(ctx: ShapeContext, content: Content, expand: Expand) -> JSON:
    """Build the ``body`` of a content item; ``storage`` always contains the full body."""
    body: JSON = {}
    expandable: JSON = {
        "editor": "",
        "atlas_doc_format": "",
        "view": "",
        "export_view": "",
        "styled_view": "",
        "dynamic": "",
        "storage": "",
        "editor2": "",
        "anonymous_export_view": "",
    }
    for representation in ("storage", "view", "export_view", "styled_view", "editor"):
        if representation not in expand:
            continue
        # NOTE: the emulator has no renderer, so the view representations carry the
        # storage markup unchanged.
        value = content.body_storage
        if ctx.body_limit is not None:
            value = value[: ctx.body_limit]
        rendered: JSON = {
            "value": value,
            "representation": representation,
        }
        if representation == "storage":
            rendered["embeddedContent"] = []
            rendered["_expandable"] = {"content": content_path(content)}
        else:
            rendered["_expandable"] = {
                "webresource": "",
                "embeddedContent": "",
                "mediaToken": "",
                "content": content_path(content),
            }
        body[representation] = rendered
        del expandable[representation]
    body["_expandable"] = expandable
    return body


def child_types_json(ctx: ShapeContext, content: Content) -> JSON:
    """Build ``childTypes``: which kinds of children a content item has."""
    types: JSON = {}
    kinds = child_kinds(content)
    for kind in kinds:
        has = bool(ctx.site.children(content.id, kind))
        types[kind.value] = {
            "value": has,
            "_links": {"self": f"{ctx.api}/content/{content.id}/child/{kind.value}"},
        }
    return types


def child_kinds(content: Content) -> tuple[ContentType, ...]:
    """Return the child types a content item can have (pages only under pages)."""
    if content.type is ContentType.PAGE:
        return (ContentType.ATTACHMENT, ContentType.COMMENT, ContentType.PAGE)
    if content.type is ContentType.BLOGPOST:
        return (ContentType.ATTACHMENT, ContentType.COMMENT)
    if content.type is ContentType.COMMENT:
        return (ContentType.ATTACHMENT, ContentType.COMMENT)
    return ()


def embedded_children_json(
    ctx: ShapeContext,
    content: Content,
    expand: Expand,
    *,
    descendants: bool,
) -> JSON:
    """Build ``children`` or ``descendants``: a ContentArray per expanded type."""
    segment = "descendant" if descendants else "child"
    body: JSON = {}
    expandable: JSON = {}
    for kind in sorted(child_kinds(content), key=lambda kind: kind.value):
        if kind.value in expand:
            if descendants:
                items = ctx.site.descendants(content.id, kind)
            else:
                items = ctx.site.children(content.id, kind)
            visible = [item for item in items if item.status is ContentStatus.CURRENT]
            page = visible[:25]
            array: JSON = {
                "results": [content_json(ctx, item, expand[kind.value]) for item in page],
                "start": 0,
                "limit": 25,
                "size": len(page),
                "_links": {"self": f"{ctx.api}/content/{content.id}/{segment}/{kind.value}"},
            }
            if len(visible) > 25:
                array["_links"]["next"] = (
                    f"/rest/api/content/{content.id}/{segment}/{kind.value}"
                    "?next=true&limit=25&start=25"
                )
            body[kind.value] = array
        else:
            expandable[kind.value] = f"/rest/api/content/{content.id}/{segment}/{kind.value}"
    if expandable:
        body["_expandable"] = expandable
    body["_links"] = {"self": f"{ctx.api}/content/{content.id}/{segment}"}
    return body


def extensions_json(content: Content) -> JSON | None:
    """Build ``extensions``: position of pages, location of comments, file facts."""
    if content.type is ContentType.PAGE:
        return {"position": content.position}
    if content.type is ContentType.COMMENT:
        location = content.comment_location or "footer"
        extensions: JSON = {"location": location}
        if location == "inline":
            extensions["inlineProperties"] = {
                "markerRef": content.inline_marker_ref or "",
                "originalSelection": "",
            }
            extensions["resolution"] = {"status": "open"}
        return extensions
    if content.type is ContentType.ATTACHMENT:
        return {
            "mediaType": content.media_type or "application/octet-stream",
            "fileSize": content.file_size or 0,
            "comment": "",
            "mediaTypeDescription": _media_description(content.media_type),
            "fileId": _file_id(content.id),
            "collectionName": f"contentId-{content.container_id}",
        }
    return None


def _media_description(media_type: str | None) -> str:
    if media_type is None:
        return "File"
    if media_type.startswith("image/"):
        return media_type.split("/", 1)[1].upper() + " Image"
    if media_type == "application/pdf":
        return "PDF Document"
    return "File"


def _file_id(content_id: str) -> str:
    digest = content_id.rjust(32, "0")[-32:]
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def content_lite(ctx: ShapeContext, content: Content, expand: Expand) -> JSON:
    """Build a content item as it appears in ``ancestors`` and ``container``."""
    return content_json(ctx, content, expand)


def content_json(
    ctx: ShapeContext,
    content: Content,
    expand: Expand,
    *,
    single: bool = False,
) -> JSON:
    """Build a Content (page, blog post, comment or attachment) with its expansions."""
    cid = content.id
    body: JSON = {
        "id": cid,
        "type": content.type.value,
        "status": content.status.value,
        "title": content.title,
    }
    search_style = ctx.search_style
    space_link = f"/rest/api/space/{content.space_key}"
    if content.container_id is not None and content.type in (
        ContentType.COMMENT,
        ContentType.ATTACHMENT,
    ):
        container_link = f"/rest/api/content/{content.container_id}"
    else:
        container_link = space_link
    expandable: JSON = {
        "childTypes": "",
        "container": "" if search_style else container_link,
        "metadata": "",
        "operations": "",
        "schedulePublishInfo": "",
        "schedulePublishDate": "",
        "children": "" if search_style else f"/rest/api/content/{cid}/child",
        "restrictions": f"/rest/api/content/{cid}/restriction/byOperation",
        "history": f"/rest/api/content/{cid}/history",
        "ancestors": "",
        "body": "",
        "version": "",
        "descendants": "" if search_style else f"/rest/api/content/{cid}/descendant",
        "space": space_link,
    }
    if search_style:
        expandable["extensions"] = ""
        del expandable["schedulePublishInfo"]
        del expandable["schedulePublishDate"]

    if "childTypes" in expand:
        body["childTypes"] = child_types_json(ctx, content)
        del expandable["childTypes"]
    elif search_style:
        body["childTypes"] = {}
        del expandable["childTypes"]
    if "space" in expand:
        space = ctx.site.space(content.space_key)
        if space is not None:
            body["space"] = space_json(ctx, space, expand["space"])
        del expandable["space"]
    if "history" in expand:
        body["history"] = history_json(ctx, content, expand["history"])
        del expandable["history"]
    if "version" in expand:
        body["version"] = version_json(ctx, content, content.version, expand["version"])
        del expandable["version"]
    if "ancestors" in expand:
        sub = expand["ancestors"]
        body["ancestors"] = [
            content_lite(ctx, ancestor, sub) for ancestor in ctx.site.ancestors(cid)
        ]
        del expandable["ancestors"]
    if "container" in expand:
        body["container"] = _container_json(ctx, content, expand["container"])
        del expandable["container"]
    if "children" in expand:
        body["children"] = embedded_children_json(
            ctx, content, expand["children"], descendants=False
        )
        del expandable["children"]
    if "descendants" in expand:
        body["descendants"] = embedded_children_json(
            ctx, content, expand["descendants"], descendants=True
        )
        del expandable["descendants"]
    body["macroRenderedOutput"] = {}
    if "body" in expand:
        body["body"] = body_json(ctx, content, expand["body"])
        del expandable["body"]
    if "metadata" in expand:
        body["metadata"] = metadata_json(ctx, content, expand["metadata"])
        del expandable["metadata"]
    if "restrictions" in expand:
        body["restrictions"] = restrictions_json(ctx, content, expand["restrictions"])
        del expandable["restrictions"]
    elif search_style:
        body["restrictions"] = {}
        del expandable["restrictions"]
    if not search_style or "extensions" in expand:
        extensions = extensions_json(content)
        if extensions is not None:
            body["extensions"] = extensions
        expandable.pop("extensions", None)
    if "operations" in expand:
        body["operations"] = [
            {"operation": "read", "targetType": content.type.value},
        ]
        del expandable["operations"]
    body["_expandable"] = expandable
    links: JSON = {
        "self": f"{ctx.api}/content/{cid}",
        "tinyui": f"/x/{tiny_id(cid)}",
        "editui": f"/pages/resumedraft.action?draftId={cid}",
        "webui": webui_link(ctx, content),
    }
    if search_style:
        # Content inside `/search` hits carries no edit link.
        del links["editui"]
    if content.type is ContentType.ATTACHMENT:
        links["download"] = download_link(ctx, content)
    if single:
        links["context"] = ctx.context
        links["collection"] = "/rest/api/content"
        links["base"] = ctx.base
    body["_links"] = links
    return body


def _container_json(ctx: ShapeContext, content: Content, expand: Expand) -> JSON:
    if content.container_id is not None:
        container = ctx.site.content(content.container_id)
        if container is not None:
            return content_lite(ctx, container, expand)
    space = ctx.site.space(content.space_key)
    if space is None:
        return {}
    return space_json(ctx, space, expand)


def content_array(
    ctx: ShapeContext,
    items: Sequence[Content],
    expand: Expand,
    *,
    start: int,
    limit: int,
    links: JSON,
) -> JSON:
    """Build a ContentArray envelope around already-sliced items."""
    return {
        "results": [content_json(ctx, item, expand) for item in items],
        "start": start,
        "limit": limit,
        "size": len(items),
        "_links": {"base": ctx.base, "context": ctx.context, **links},
    }


def search_result_json(ctx: ShapeContext, content: Content, expand: Expand) -> JSON:
    """Build one ``/search`` result wrapper around a content item.

    The ``excerpt`` is a short plain-text extract, never the full body, so a crawler that
    takes bodies from search hits gets truncated text.
    """
    space = ctx.site.space(content.space_key)
    text = content.text
    excerpt = text[:300]
    if len(text) > 300:
        excerpt = excerpt.rsplit(" ", 1)[0] + "\u2026"
    web = webui_link(ctx, content)
    result: JSON = {
        "content": content_json(ctx, content, expand),
        "title": escape_html(content.title),
        "excerpt": excerpt,
        "url": web,
        "resultGlobalContainer": {
            "title": space.name if space else content.space_key,
            "displayUrl": f"/spaces/{content.space_key}",
        },
        "breadcrumbs": [],
        "entityType": "content",
        "iconCssClass": f"aui-icon content-type-{content.type.value}",
        "lastModified": format_time(content.last_modified),
        "friendlyLastModified": friendly_date(content.last_modified),
        "score": 0.0,
    }
    return result


def space_result_json(ctx: ShapeContext, space: Space, expand: Expand) -> JSON:
    """Build one ``/search`` result wrapper around a space (``type = space``).

    ``expand`` applies to the wrapped space; on ``/search`` it comes from ``space.``
    expansions.
    """
    # NOTE: the url, iconCssClass and lastModified of a space hit follow client test
    # fixtures, not a recorded Cloud response.
    last_modified = space.created
    if space.changed_at > space.created.timestamp():
        last_modified = datetime.fromtimestamp(space.changed_at, UTC)
    description = space.description
    return {
        "space": space_json(ctx, space, expand),
        "title": escape_html(space.name),
        "excerpt": description[:300],
        "url": f"/spaces/{space.key}/overview",
        "resultGlobalContainer": {
            "title": space.name,
            "displayUrl": f"/spaces/{space.key}/overview",
        },
        "breadcrumbs": [],
        "entityType": "space",
        "iconCssClass": "aui-icon content-type-space",
        "lastModified": format_time(last_modified),
        "friendlyLastModified": friendly_date(last_modified),
        "score": 0.0,
    }


def user_result_json(ctx: ShapeContext, account_id: str) -> JSON:
    """Build one ``/search`` result wrapper around a user (``type = user``)."""
    user = user_json(ctx, account_id)
    return {
        "user": user,
        "title": escape_html(str(user.get("displayName", ""))),
        "excerpt": "",
        "url": f"/people/{account_id}",
        "breadcrumbs": [],
        "entityType": "user",
        "iconCssClass": "aui-icon content-type-profile",
        "score": 0.0,
    }
