"""The result a crawl should leave in MongoDB, computed from the emulator's model.

``crawled_items`` is what the producer lists: items of status ``current`` in the spaces
the sources file selects, comments and attachments only when their container is current
too. ``expected_edges`` derives the site's edges from the model and from link extraction
by ``emulator.storage``, independently of the relationships consumer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from emulator.model import Content, ContentStatus, ContentType, Site
from emulator.storage import find_links, parse_posting_day

# An edge as (from_type, from_id, relation, to_type, to_id); an unresolved link has
# "SPACE:TITLE" in place of the missing to_id.
EdgeTuple = tuple[str, str, str, str, str]


def body_sha256(content: Content) -> str | None:
    """Return the SHA-256 of the item's storage body, None for types without a body."""
    if content.type is ContentType.ATTACHMENT:
        return None
    return hashlib.sha256(content.body_storage.encode("utf-8")).hexdigest()


def crawled_items(site: Site, space_keys: Collection[str]) -> dict[str, Content]:
    """Return the items a crawl of ``space_keys`` lists, by content id."""
    items: dict[str, Content] = {}
    for content in site.contents():
        if content.space_key not in space_keys or content.status is not ContentStatus.CURRENT:
            continue
        if content.container_id is not None:
            container = site.content(content.container_id)
            if container is None or container.status is not ContentStatus.CURRENT:
                continue
        items[content.id] = content
    return items


def expected_edges(site: Site, items: Mapping[str, Content]) -> set[EdgeTuple]:
    """Return every edge of the crawled items."""
    edges: set[EdgeTuple] = set()
    for content in items.values():
        kind = content.type.value
        edges.add(("space", content.space_key, "space_contains", kind, content.id))
        if content.type is ContentType.PAGE:
            ancestors = [a for a in content.ancestor_ids if a in items]
            for index, ancestor in enumerate(ancestors):
                depth = len(ancestors) - index
                if depth == 1:
                    edges.add(("page", ancestor, "parent_of", "page", content.id))
                edges.add(("page", ancestor, "ancestor_of", "page", content.id))
        if content.type in (ContentType.COMMENT, ContentType.ATTACHMENT) and content.container_id:
            container = items[content.container_id]
            relation = "comment_on" if content.type is ContentType.COMMENT else "attachment_of"
            edges.add((kind, content.id, relation, container.type.value, container.id))
        if content.type is ContentType.COMMENT and content.parent_id in items:
            edges.add(("comment", str(content.parent_id), "parent_of", "comment", content.id))
        for label in content.labels:
            edges.add(("label", f"{label.prefix}:{label.name}", "label_on", kind, content.id))
        if content.type is not ContentType.ATTACHMENT:
            edges.update(_link_edges(site, items, content))
    return edges


def _link_edges(site: Site, items: Mapping[str, Content], content: Content) -> Iterable[EdgeTuple]:
    for link in find_links(content.body_storage):
        if link.kind not in ("page", "blogpost") or not link.title:
            continue
        space_key = link.space_key or content.space_key
        target: Content | None
        if link.kind == "page":
            target = site.find_page(space_key, link.title)
        elif link.posting_day:
            target = site.find_blog_post(space_key, link.title, parse_posting_day(link.posting_day))
        else:
            target = None
        if target is not None and target.id not in items:
            target = None
        if target is not None and target.id == content.id:
            continue
        to_id = target.id if target is not None else f"{space_key}:{link.title}"
        yield (content.type.value, content.id, "links_to", link.kind, to_id)


def stored_edges(documents: Iterable[Mapping[str, Any]]) -> set[EdgeTuple]:
    """Return the live edges among current relationship documents of a stream collection."""
    edges: set[EdgeTuple] = set()
    for document in documents:
        if document.get("op") != "upsert":
            continue
        to_id = document.get("to_id")
        if to_id is None:
            to_id = f"{document.get('to_space_key')}:{document.get('to_title')}"
        edges.add(
            (
                str(document["from_type"]),
                str(document["from_id"]),
                str(document["relation"]),
                str(document["to_type"]),
                str(to_id),
            )
        )
    return edges
