"""Mapping of Confluence REST v1 JSON to the Avro records of the wire contract.

Pure functions: no I/O. Each takes one item of a list response (``results[]``) plus the
job context and returns a dict that the codec encodes with the current schema. Fields
the API did not return become ``None`` (or the schema default), never a guess.
Cloud identifies users by ``accountId``; Data Center by ``userKey`` or ``username``, so
both are read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CONTENT_TYPES = ("page", "blogpost", "comment", "attachment")
CONTENT_STATUSES = ("current", "draft", "trashed", "archived", "historical", "deleted")
COMMENT_LOCATIONS = ("footer", "inline", "resolved")
SPACE_TYPES = ("global", "personal")
SPACE_STATUSES = ("current", "archived")
_HOMEPAGE_PREFIX = "/rest/api/content/"


class RecordMappingError(ValueError):
    """An API item lacks a field every record needs (id, type or version number)."""


@dataclass(frozen=True)
class RecordContext:
    """Job context that every record of a job carries."""

    source_id: str
    job_id: str
    # ``_links.base`` of the site, e.g. https://example.atlassian.net/wiki; web links are
    # relative to it.
    site_base: str | None


def parse_timestamp(value: Any) -> datetime | None:
    """Parse an API timestamp such as ``2023-02-17T09:08:30.734Z``; None when absent or invalid."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _string(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _enum(value: Any, symbols: tuple[str, ...]) -> str:
    return value if isinstance(value, str) and value in symbols else "unknown"


def user_id(user: Any) -> str | None:
    """Return the id of a user object: ``accountId`` on Cloud, ``userKey`` or ``username`` on DC."""
    data = _dict(user)
    for field in ("accountId", "userKey", "username"):
        found = _string(data.get(field))
        if found is not None:
            return found
    return None


def web_url(item: Mapping[str, Any], site_base: str | None) -> str | None:
    """Return the absolute web UI link of an item, or None without ``_links.webui`` or a base."""
    link = _string(_dict(item.get("_links")).get("webui"))
    if link is None:
        return None
    if link.startswith(("http://", "https://")):
        return link
    if site_base is None:
        return None
    return site_base.rstrip("/") + link


def _require(item: Mapping[str, Any], kind: str) -> tuple[str, str]:
    item_id = _string(item.get("id"))
    item_type = _string(item.get("type"))
    if item_id is None or item_type is None:
        raise RecordMappingError(
            f"{kind} item without an id or type: {str(dict(item))[:200]}; the API response "
            f"is not a Confluence content or space object"
        )
    return item_id, item_type


def space_record(
    item: Mapping[str, Any], context: RecordContext, fetched_at: datetime
) -> dict[str, Any]:
    """Map one ``/space`` result (or a CQL ``space`` result) to a Space record."""
    key = _string(item.get("key"))
    space_id = _integer(item.get("id"))
    if key is None or space_id is None:
        raise RecordMappingError(
            f"space item without a key or numeric id: {str(dict(item))[:200]}; the API "
            f"response is not a Confluence space object"
        )
    description = _dict(_dict(item.get("description")).get("plain")).get("value")
    homepage_id = _string(_dict(item.get("homepage")).get("id"))
    if homepage_id is None:
        link = _string(_dict(item.get("_expandable")).get("homepage"))
        if link is not None and link.startswith(_HOMEPAGE_PREFIX):
            homepage_id = link[len(_HOMEPAGE_PREFIX) :] or None
    history = _dict(item.get("history"))
    return {
        "source_id": context.source_id,
        "job_id": context.job_id,
        "id": space_id,
        "key": key,
        "name": _string(item.get("name")) or key,
        "type": _enum(item.get("type"), SPACE_TYPES),
        "status": _enum(item.get("status"), SPACE_STATUSES),
        "description": description if isinstance(description, str) and description else None,
        "homepage_id": homepage_id,
        "created_at": parse_timestamp(history.get("createdDate")),
        "created_by_account_id": user_id(history.get("createdBy")),
        "web_url": web_url(item, context.site_base),
        "fetched_at": fetched_at,
        "deleted": False,
    }


def labels_of(item: Mapping[str, Any]) -> list[str]:
    """Return the labels of an item as ``prefix:name`` from ``metadata.labels``."""
    results = _dict(_dict(item.get("metadata")).get("labels")).get("results")
    labels: list[str] = []
    for label in results if isinstance(results, list) else []:
        data = _dict(label)
        name = _string(data.get("name"))
        if name is not None:
            labels.append(f"{_string(data.get('prefix')) or 'global'}:{name}")
    return labels


def ancestor_ids(item: Mapping[str, Any]) -> list[str]:
    """Return the ancestor ids, root first, as the API orders ``ancestors``."""
    ancestors = item.get("ancestors")
    ids: list[str] = []
    for ancestor in ancestors if isinstance(ancestors, list) else []:
        found = _string(_dict(ancestor).get("id"))
        if found is not None:
            ids.append(found)
    return ids


def read_restrictions(item: Mapping[str, Any]) -> dict[str, list[str]] | None:
    """Return the users and groups of ``restrictions.read``; None when it was not expanded."""
    read = item.get("restrictions")
    if not isinstance(read, dict) or not isinstance(read.get("read"), dict):
        return None
    restrictions = _dict(read["read"].get("restrictions"))
    users = _dict(restrictions.get("user")).get("results")
    groups = _dict(restrictions.get("group")).get("results")
    if users is None and groups is None:
        return None
    user_ids = [found for user in users or [] if (found := user_id(user)) is not None]
    group_names = [
        found for group in groups or [] if (found := _string(_dict(group).get("name"))) is not None
    ]
    return {"user_account_ids": user_ids, "group_names": group_names}


def content_record(
    item: Mapping[str, Any],
    context: RecordContext,
    fetched_at: datetime,
    *,
    space_key: str,
    space_id: int | None = None,
) -> dict[str, Any]:
    """Map one content item (page, blog post, comment or attachment) to a Content record.

    ``space_key`` and ``space_id`` are those of the space being crawled, used when the item
    has no ``space`` expansion.
    """
    item_id, item_type = _require(item, "content")
    version = _dict(item.get("version"))
    version_number = _integer(version.get("number"))
    if version_number is None:
        raise RecordMappingError(
            f"content {item_id} has no version.number; request it with expand=version"
        )
    history = _dict(item.get("history"))
    space = _dict(item.get("space"))
    container = _dict(item.get("container"))
    extensions = _dict(item.get("extensions"))
    ancestors = ancestor_ids(item)
    is_attached = item_type in ("comment", "attachment")

    container_id = _string(container.get("id")) if is_attached else None
    container_type = _string(container.get("type")) if container_id is not None else None
    # A page's last ancestor is its parent page. A reply's ancestors are the comments above
    # it, and a top-level comment has none. Blog posts and attachments have no parent.
    parent_id = ancestors[-1] if item_type in ("page", "comment") and ancestors else None

    body_value = _dict(_dict(item.get("body")).get("storage")).get("value")
    body = body_value if isinstance(body_value, str) else None
    message = version.get("message")
    location = extensions.get("location") if item_type == "comment" else None
    comment_location = _enum(location, COMMENT_LOCATIONS) if location is not None else None
    download = _string(_dict(item.get("_links")).get("download"))

    return {
        "source_id": context.source_id,
        "job_id": context.job_id,
        "id": item_id,
        "type": _enum(item_type, CONTENT_TYPES),
        "status": _enum(item.get("status"), CONTENT_STATUSES),
        "title": _string(item.get("title")) or "",
        "space_key": _string(space.get("key")) or space_key,
        "space_id": _integer(space.get("id")) if space else space_id,
        "version_number": version_number,
        "version_created_at": parse_timestamp(version.get("when")),
        "version_author_account_id": user_id(version.get("by")),
        "version_message": message if isinstance(message, str) and message else None,
        "version_minor_edit": version.get("minorEdit") is True,
        "created_at": parse_timestamp(history.get("createdDate")),
        "created_by_account_id": user_id(history.get("createdBy")),
        "ancestor_ids": ancestors,
        "parent_id": parent_id,
        "container_id": container_id,
        "container_type": _enum(container_type, CONTENT_TYPES) if container_type else None,
        "position": _integer(extensions.get("position")),
        "labels": labels_of(item),
        "body_storage": body,
        "body_storage_sha256": sha256_hex(body) if body is not None else None,
        "comment_location": comment_location,
        "attachment_media_type": _string(extensions.get("mediaType"))
        if item_type == "attachment"
        else None,
        "attachment_file_size": _integer(extensions.get("fileSize"))
        if item_type == "attachment"
        else None,
        "attachment_download_path": download if item_type == "attachment" else None,
        "read_restrictions": read_restrictions(item),
        "web_url": web_url(item, context.site_base),
        "fetched_at": fetched_at,
    }


def structure_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """Map one item of a structure listing (``expand=ancestors,version``) to a StructureItem."""
    item_id, item_type = _require(item, "structure")
    version_number = _integer(_dict(item.get("version")).get("number"))
    if version_number is None:
        raise RecordMappingError(
            f"content {item_id} has no version.number; request it with expand=version"
        )
    ancestors = ancestor_ids(item)
    if item_type in ("comment", "attachment"):
        parent_id = _string(_dict(item.get("container")).get("id"))
    else:
        parent_id = ancestors[-1] if ancestors else None
    return {
        "id": item_id,
        "type": _enum(item_type, CONTENT_TYPES),
        "parent_id": parent_id,
        "version_number": version_number,
        "status": _enum(item.get("status"), CONTENT_STATUSES),
    }


def site_base_of(raw_page: Mapping[str, Any]) -> str | None:
    """Return ``_links.base`` of a list response, or None."""
    return _string(_dict(raw_page.get("_links")).get("base"))
