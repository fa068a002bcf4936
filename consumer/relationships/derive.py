"""Pure derivation of relationship edges from what is known about one content item.

Every edge has exactly one owner, the content item whose record it is derived from:

    space_contains  space -> item                    owned by the item
    parent_of       parent page -> page              owned by the child page
    parent_of       parent comment -> reply          owned by the reply
    ancestor_of     ancestor page -> page (depth)    owned by the descendant page
    comment_on      comment -> page or blog post     owned by the comment
    attachment_of   attachment -> page or blog post  owned by the attachment
    label_on        label -> item                    owned by the item
    links_to        item -> linked page or blog post owned by the linking item

So an item's current edge set is a function of its own facts (``ItemFacts``) and of a
``TargetLookup`` that resolves link titles and reports removed items. The records to
publish for an item are the difference between its previous and its current edge set.

Only live items (status ``current`` or ``archived``) have edges. A trashed, deleted or
draft item has none, so trashing an item removes every edge it owns. Links to it by
title become unresolved, because only live items resolve titles. The edges of its
children, comments and attachments and links to it by id stay until it is purged, because
a trashed item can be restored. Edges to an item that the lookup reports as removed
(purged) are left out.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from consumer.relationships.links import LinkTarget, extract_links, site_host_of
from schemas.keys import relationship_key

# Content statuses whose items take part in the content tree.
LIVE_STATUSES = frozenset({"current", "archived"})
# The status the state gives an item that a complete structure listing no longer contains.
REMOVED_STATUS = "removed"
CONTENT_TYPES = frozenset({"page", "blogpost", "comment", "attachment", "unknown"})
LINKABLE_TYPES = ("page", "blogpost")

_BLOG_DAY_IN_URL = re.compile(r"/blog/(\d{4})/(\d{2})/(\d{2})/")


class Relation(enum.StrEnum):
    """Edge types of the Relationship record, read as 'from RELATION to'."""

    SPACE_CONTAINS = "space_contains"
    PARENT_OF = "parent_of"
    ANCESTOR_OF = "ancestor_of"
    COMMENT_ON = "comment_on"
    ATTACHMENT_OF = "attachment_of"
    LABEL_ON = "label_on"
    LINKS_TO = "links_to"


@dataclass(frozen=True, slots=True)
class Edge:
    """One relationship edge, without the op and provenance of a published record."""

    from_type: str
    from_id: str
    relation: Relation
    to_type: str
    to_id: str | None
    to_space_key: str | None = None
    to_title: str | None = None
    resolved: bool = True
    depth: int | None = None

    def key(self, source_id: str) -> str:
        """Return the record key of this edge, which the stream writer upserts by."""
        return relationship_key(
            source_id,
            self.from_type,
            self.from_id,
            self.relation.value,
            self.to_type,
            self.to_id,
            to_space_key=self.to_space_key,
            to_title=self.to_title,
        )

    def to_document(self) -> dict[str, Any]:
        return {
            "from_type": self.from_type,
            "from_id": self.from_id,
            "relation": self.relation.value,
            "to_type": self.to_type,
            "to_id": self.to_id,
            "to_space_key": self.to_space_key,
            "to_title": self.to_title,
            "resolved": self.resolved,
            "depth": self.depth,
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Edge:
        return cls(
            from_type=document["from_type"],
            from_id=document["from_id"],
            relation=Relation(document["relation"]),
            to_type=document["to_type"],
            to_id=document.get("to_id"),
            to_space_key=document.get("to_space_key"),
            to_title=document.get("to_title"),
            resolved=bool(document.get("resolved", True)),
            depth=document.get("depth"),
        )


@dataclass(frozen=True, slots=True)
class ItemFacts:
    """Facts about one content item that the relationships consumer keeps to derive its edges."""

    source_id: str
    content_id: str
    content_type: str
    status: str
    space_key: str
    title: str
    posting_day: str | None = None
    parent_id: str | None = None
    ancestor_ids: tuple[str, ...] = ()
    container_id: str | None = None
    container_type: str | None = None
    labels: tuple[str, ...] = ()
    links: tuple[LinkTarget, ...] = field(default=())

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def identity(self) -> tuple[bool, str, str, str, str | None]:
        """The attributes other items' edges depend on: liveness, type, space, title, day."""
        return (self.live, self.content_type, self.space_key, self.title, self.posting_day)


def posting_day_of(web_url: str | None, created_at: datetime | int | None) -> str | None:
    """Return a blog post's posting day as ``yyyy/MM/dd``, the form ``ri:posting-day`` uses.

    The day in the web URL is the site's own. The creation time in UTC is the fallback,
    which can be one day off for posts created near midnight in the site's time zone.
    """
    if web_url:
        match = _BLOG_DAY_IN_URL.search(web_url)
        if match is not None:
            return "/".join(match.groups())
    if isinstance(created_at, datetime):
        return created_at.astimezone(UTC).strftime("%Y/%m/%d")
    if isinstance(created_at, int):
        return datetime.fromtimestamp(created_at / 1000, UTC).strftime("%Y/%m/%d")
    return None


def facts_from_content(
    record: Mapping[str, Any], previous_links: tuple[LinkTarget, ...] | None = None
) -> ItemFacts:
    """Build the facts of a decoded Content record.

    A record without a body (``body_storage`` null, for example when the producer did not
    fetch bodies) carries no links, so ``previous_links`` are kept for it.
    """
    content_type = str(record["type"])
    if content_type not in CONTENT_TYPES:
        content_type = "unknown"
    space_key = str(record["space_key"])
    body = record.get("body_storage")
    if body is not None:
        links = tuple(extract_links(body, space_key, site_host_of(record.get("web_url"))))
    else:
        links = previous_links or ()
    ancestor_ids = tuple(str(ancestor) for ancestor in record.get("ancestor_ids") or ())
    posting_day = None
    if content_type == "blogpost":
        posting_day = posting_day_of(record.get("web_url"), record.get("created_at"))
    return ItemFacts(
        source_id=str(record["source_id"]),
        content_id=str(record["id"]),
        content_type=content_type,
        status=str(record["status"]),
        space_key=space_key,
        title=str(record["title"]),
        posting_day=posting_day,
        parent_id=record.get("parent_id"),
        ancestor_ids=ancestor_ids,
        container_id=record.get("container_id"),
        container_type=record.get("container_type"),
        labels=tuple(dict.fromkeys(str(label) for label in record.get("labels") or ())),
        links=links,
    )


class TargetLookup(Protocol):
    """Read access to other items' state, as derivation needs it."""

    def find_by_title(
        self, content_type: str, space_key: str, title: str, posting_day: str | None
    ) -> str | None:
        """Return the id of the live page or blog post with this title, or None."""
        ...

    def content_type_of(self, content_id: str) -> str | None:
        """Return the type of a known item, or None when the item is unknown."""
        ...

    def is_removed(self, content_id: str) -> bool:
        """Return True for an item that a complete structure listing no longer contains."""
        ...


def derive_edges(facts: ItemFacts, lookup: TargetLookup) -> dict[str, Edge]:
    """Return the current edge set of one item, by record key."""
    if not facts.live:
        return {}
    edges: list[Edge] = []
    item_type = facts.content_type
    item_id = facts.content_id

    edges.append(Edge("space", facts.space_key, Relation.SPACE_CONTAINS, item_type, item_id))

    if item_type == "page":
        edges.extend(_page_tree_edges(facts, lookup))
    elif item_type in ("comment", "attachment"):
        edges.extend(_container_edges(facts, lookup))

    for label in facts.labels:
        edges.append(Edge("label", label, Relation.LABEL_ON, item_type, item_id))

    for target in facts.links:
        edge = _link_edge(facts, target, lookup)
        if edge is not None:
            edges.append(edge)

    # Two links can name the same target (by title and by id); the first one in the body wins.
    by_key: dict[str, Edge] = {}
    for edge in edges:
        by_key.setdefault(edge.key(facts.source_id), edge)
    return by_key


def _page_tree_edges(facts: ItemFacts, lookup: TargetLookup) -> Iterable[Edge]:
    ancestors = list(facts.ancestor_ids)
    if not ancestors and facts.parent_id:
        ancestors = [facts.parent_id]
    for index, ancestor in enumerate(ancestors):
        if ancestor == facts.content_id or lookup.is_removed(ancestor):
            continue
        depth = len(ancestors) - index
        if depth == 1:
            yield Edge("page", ancestor, Relation.PARENT_OF, "page", facts.content_id)
        yield Edge("page", ancestor, Relation.ANCESTOR_OF, "page", facts.content_id, depth=depth)


def _container_edges(facts: ItemFacts, lookup: TargetLookup) -> Iterable[Edge]:
    item_type = facts.content_type
    container = facts.container_id
    if container and not lookup.is_removed(container):
        container_type = facts.container_type or lookup.content_type_of(container) or "unknown"
        relation = Relation.COMMENT_ON if item_type == "comment" else Relation.ATTACHMENT_OF
        yield Edge(item_type, facts.content_id, relation, container_type, container)
    parent = facts.parent_id
    # A reply's parent is the comment it replies to. For top-level comments the producer
    # leaves parent_id null or sets it to the container, which is no parent_of edge.
    if (
        item_type == "comment"
        and parent
        and parent != container
        and parent != facts.content_id
        and not lookup.is_removed(parent)
    ):
        yield Edge("comment", parent, Relation.PARENT_OF, "comment", facts.content_id)


def _link_edge(facts: ItemFacts, target: LinkTarget, lookup: TargetLookup) -> Edge | None:
    from_type = facts.content_type
    if target.content_id is not None:
        if target.content_id == facts.content_id or lookup.is_removed(target.content_id):
            return None
        known_type = lookup.content_type_of(target.content_id)
        to_type = known_type or (target.kind if target.kind != "content" else "unknown")
        return Edge(from_type, facts.content_id, Relation.LINKS_TO, to_type, target.content_id)

    if target.title is None or target.space_key is None:
        return None
    resolved_id = lookup.find_by_title(
        target.kind, target.space_key, target.title, target.posting_day
    )
    if resolved_id == facts.content_id:
        return None
    return Edge(
        from_type,
        facts.content_id,
        Relation.LINKS_TO,
        target.kind,
        resolved_id,
        to_space_key=target.space_key,
        to_title=target.title,
        resolved=resolved_id is not None,
    )


def diff_edges(
    previous: Mapping[str, Edge], current: Mapping[str, Edge]
) -> tuple[list[tuple[str, Edge]], list[tuple[str, Edge]]]:
    """Return (upserts, removes): edges new or changed in ``current``, and edges gone.

    An edge whose key stays but whose attributes change (an ancestor's depth after a move)
    is an upsert. Both lists are sorted by key, so the output does not depend on the order
    in which edges were derived.
    """
    upserts = [(key, edge) for key, edge in current.items() if previous.get(key) != edge]
    removes = [(key, edge) for key, edge in previous.items() if key not in current]
    return sorted(upserts, key=_by_key), sorted(removes, key=_by_key)


def _by_key(item: tuple[str, Edge]) -> str:
    return item[0]


def title_reference(content_type: str, space_key: str, title: str) -> str:
    """Return the reference string that stands for 'the item titled so in that space'."""
    return f"title:{content_type}:{_quote(space_key)}:{_quote(title)}"


def id_reference(content_id: str) -> str:
    """Return the reference string that stands for 'the item with this id'."""
    return f"id:{_quote(content_id)}"


def references(facts: ItemFacts) -> set[str]:
    """Return the references of other items whose state changes can change these edges.

    The state keeps, per reference, the items that hold it, so when an item is created,
    renamed, trashed or removed, the items that link to it or hang below it are found and
    their edges derived again. An item that is not live has no edges, so no references.
    """
    result: set[str] = set()
    if not facts.live:
        return result
    for ancestor in facts.ancestor_ids:
        result.add(id_reference(ancestor))
    for other in (facts.parent_id, facts.container_id):
        if other:
            result.add(id_reference(other))
    for target in facts.links:
        if target.content_id is not None:
            result.add(id_reference(target.content_id))
        elif target.title is not None and target.space_key is not None:
            result.add(title_reference(target.kind, target.space_key, target.title))
    result.discard(id_reference(facts.content_id))
    return result


def identity_references(facts: ItemFacts) -> set[str]:
    """Return the references under which other items can refer to this item."""
    result = {id_reference(facts.content_id)}
    if facts.content_type in LINKABLE_TYPES:
        result.add(title_reference(facts.content_type, facts.space_key, facts.title))
    return result


def _quote(text: str) -> str:
    # Percent-encode ':' and '%' so that the parts of a reference stay apart.
    return text.replace("%", "%25").replace(":", "%3A")
