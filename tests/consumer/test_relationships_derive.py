"""Tests of edge derivation and diffing on a known content tree, without any service.

The tree, in source ``src1``:

    space DOC
      page 1 "Home"
        page 2 "Guide"              attachment 30 "diagram.png"
          page 3 "Install"          labels global:howto, my:todo
            comment 20 on page 3
              comment 21, a reply to comment 20
        page 4 "FAQ"
      blog post 10 "Release 1.0", posted 2024/05/01
    space OPS
      page 100 "Runbook"
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from consumer.relationships.derive import (
    Edge,
    ItemFacts,
    Relation,
    derive_edges,
    diff_edges,
    facts_from_content,
    id_reference,
    identity_references,
    posting_day_of,
    references,
    title_reference,
)
from consumer.relationships.links import LinkTarget

SOURCE = "src1"
SITE = "example.atlassian.net"
INSTALL_BODY = (
    '<p>See <ac:link><ri:page ri:content-title="FAQ" /></ac:link>, '
    '<ac:link><ri:blog-post ri:content-title="Release 1.0" ri:posting-day="2024/05/01" />'
    "</ac:link>, "
    '<ac:link><ri:page ri:space-key="OPS" ri:content-title="Runbook" /></ac:link>, '
    '<ac:link><ri:content-entity ri:content-id="1" /></ac:link>, '
    f'<a href="https://{SITE}/wiki/spaces/DOC/pages/2/Guide">the guide</a> and '
    '<ac:link><ri:page ri:content-title="Missing page" /></ac:link>.</p>'
)


def content(**fields: Any) -> dict[str, Any]:
    """Return a decoded Content record with the fields derivation reads."""
    record: dict[str, Any] = {
        "source_id": SOURCE,
        "job_id": "job-1",
        "id": "0",
        "type": "page",
        "status": "current",
        "title": "",
        "space_key": "DOC",
        "version_number": 1,
        "created_at": datetime(2024, 5, 1, 9, 0, tzinfo=UTC),
        "ancestor_ids": [],
        "parent_id": None,
        "container_id": None,
        "container_type": None,
        "labels": [],
        "body_storage": None,
        "web_url": None,
    }
    record.update(fields)
    return record


TREE = {
    "1": content(id="1", title="Home"),
    "2": content(id="2", title="Guide", ancestor_ids=["1"], parent_id="1"),
    "3": content(
        id="3",
        title="Install",
        ancestor_ids=["1", "2"],
        parent_id="2",
        labels=["global:howto", "my:todo"],
        body_storage=INSTALL_BODY,
        web_url=f"https://{SITE}/wiki/spaces/DOC/pages/3/Install",
    ),
    "4": content(id="4", title="FAQ", ancestor_ids=["1"], parent_id="1"),
    "10": content(
        id="10",
        type="blogpost",
        title="Release 1.0",
        web_url=f"https://{SITE}/wiki/spaces/DOC/blog/2024/05/01/10/Release+1.0",
    ),
    "20": content(
        id="20",
        type="comment",
        title="Re: Install",
        container_id="3",
        container_type="page",
        body_storage="<p>Works for me.</p>",
    ),
    "21": content(
        id="21",
        type="comment",
        title="Re: Install",
        parent_id="20",
        container_id="3",
        container_type="page",
        body_storage="<p>Same.</p>",
    ),
    "30": content(
        id="30",
        type="attachment",
        title="diagram.png",
        container_id="2",
        container_type="page",
    ),
    "100": content(id="100", title="Runbook", space_key="OPS"),
}


class TreeLookup:
    """A ``TargetLookup`` over a fixed set of item facts."""

    def __init__(self, facts: dict[str, ItemFacts], removed: frozenset[str] = frozenset()):
        self.facts = facts
        self.removed = removed

    def find_by_title(
        self, content_type: str, space_key: str, title: str, posting_day: str | None
    ) -> str | None:
        for item in self.facts.values():
            if (
                item.live
                and item.content_type == content_type
                and (item.space_key, item.title) == (space_key, title)
                and (posting_day is None or item.posting_day == posting_day)
                and item.content_id not in self.removed
            ):
                return item.content_id
        return None

    def content_type_of(self, content_id: str) -> str | None:
        item = self.facts.get(content_id)
        return item.content_type if item is not None else None

    def is_removed(self, content_id: str) -> bool:
        return content_id in self.removed


def tree_facts() -> dict[str, ItemFacts]:
    return {content_id: facts_from_content(record) for content_id, record in TREE.items()}


def edge_set(edges: dict[str, Edge]) -> set[Edge]:
    return set(edges.values())


def test_page_edges_in_known_tree() -> None:
    facts = tree_facts()

    edges = derive_edges(facts["3"], TreeLookup(facts))

    assert edge_set(edges) == {
        Edge("space", "DOC", Relation.SPACE_CONTAINS, "page", "3"),
        Edge("page", "2", Relation.PARENT_OF, "page", "3"),
        Edge("page", "1", Relation.ANCESTOR_OF, "page", "3", depth=2),
        Edge("page", "2", Relation.ANCESTOR_OF, "page", "3", depth=1),
        Edge("label", "global:howto", Relation.LABEL_ON, "page", "3"),
        Edge("label", "my:todo", Relation.LABEL_ON, "page", "3"),
        Edge("page", "3", Relation.LINKS_TO, "page", "4", "DOC", "FAQ"),
        Edge("page", "3", Relation.LINKS_TO, "blogpost", "10", "DOC", "Release 1.0"),
        Edge("page", "3", Relation.LINKS_TO, "page", "100", "OPS", "Runbook"),
        Edge("page", "3", Relation.LINKS_TO, "page", "1"),
        Edge("page", "3", Relation.LINKS_TO, "page", "2"),
        Edge(
            "page",
            "3",
            Relation.LINKS_TO,
            "page",
            None,
            "DOC",
            "Missing page",
            resolved=False,
        ),
    }


def test_edges_are_keyed_by_relationship_key() -> None:
    facts = tree_facts()

    edges = derive_edges(facts["3"], TreeLookup(facts))

    unresolved = "src1:relationship:page:3:links_to:page:unresolved:DOC:Missing%20page"
    assert unresolved in edges
    assert "src1:relationship:page:2:ancestor_of:page:3" in edges
    assert all(key == edge.key(SOURCE) for key, edge in edges.items())


def test_root_page_and_blog_post_edges() -> None:
    facts = tree_facts()
    lookup = TreeLookup(facts)

    assert edge_set(derive_edges(facts["1"], lookup)) == {
        Edge("space", "DOC", Relation.SPACE_CONTAINS, "page", "1"),
    }
    assert edge_set(derive_edges(facts["10"], lookup)) == {
        Edge("space", "DOC", Relation.SPACE_CONTAINS, "blogpost", "10"),
    }
    assert edge_set(derive_edges(facts["100"], lookup)) == {
        Edge("space", "OPS", Relation.SPACE_CONTAINS, "page", "100"),
    }


def test_comment_reply_and_attachment_edges() -> None:
    facts = tree_facts()
    lookup = TreeLookup(facts)

    assert edge_set(derive_edges(facts["20"], lookup)) == {
        Edge("space", "DOC", Relation.SPACE_CONTAINS, "comment", "20"),
        Edge("comment", "20", Relation.COMMENT_ON, "page", "3"),
    }
    assert edge_set(derive_edges(facts["21"], lookup)) == {
        Edge("space", "DOC", Relation.SPACE_CONTAINS, "comment", "21"),
        Edge("comment", "21", Relation.COMMENT_ON, "page", "3"),
        Edge("comment", "20", Relation.PARENT_OF, "comment", "21"),
    }
    assert edge_set(derive_edges(facts["30"], lookup)) == {
        Edge("space", "DOC", Relation.SPACE_CONTAINS, "attachment", "30"),
        Edge("attachment", "30", Relation.ATTACHMENT_OF, "page", "2"),
    }


def test_unmatched_blog_post_link_is_unresolved() -> None:
    facts = tree_facts()
    facts["3"] = dataclasses.replace(
        facts["3"],
        links=(LinkTarget("blogpost", "DOC", "Release 1.0", posting_day="2024/06/01"),),
    )

    edges = derive_edges(facts["3"], TreeLookup(facts))

    links = [edge for edge in edges.values() if edge.relation is Relation.LINKS_TO]
    assert links == [
        Edge("page", "3", Relation.LINKS_TO, "blogpost", None, "DOC", "Release 1.0", False)
    ]


def test_unresolved_link_resolves_when_page_appears() -> None:
    facts = tree_facts()
    before = derive_edges(facts["3"], TreeLookup(facts))
    facts["5"] = facts_from_content(content(id="5", title="Missing page", ancestor_ids=["1"]))

    after = derive_edges(facts["3"], TreeLookup(facts))
    upserts, removes = diff_edges(before, after)

    assert [edge for _, edge in upserts] == [
        Edge("page", "3", Relation.LINKS_TO, "page", "5", "DOC", "Missing page")
    ]
    assert [edge for _, edge in removes] == [
        Edge("page", "3", Relation.LINKS_TO, "page", None, "DOC", "Missing page", False)
    ]


def test_move_changes_parent_and_ancestors() -> None:
    facts = tree_facts()
    lookup = TreeLookup(facts)
    before = derive_edges(facts["3"], lookup)
    moved = dataclasses.replace(facts["3"], parent_id="4", ancestor_ids=("1", "4"))

    upserts, removes = diff_edges(before, derive_edges(moved, lookup))

    assert {edge for _, edge in upserts} == {
        Edge("page", "4", Relation.PARENT_OF, "page", "3"),
        Edge("page", "4", Relation.ANCESTOR_OF, "page", "3", depth=1),
    }
    assert {edge for _, edge in removes} == {
        Edge("page", "2", Relation.PARENT_OF, "page", "3"),
        Edge("page", "2", Relation.ANCESTOR_OF, "page", "3", depth=1),
    }


def test_move_to_root_changes_depth() -> None:
    facts = tree_facts()
    lookup = TreeLookup(facts)
    before = derive_edges(facts["3"], lookup)
    moved = dataclasses.replace(facts["3"], parent_id="1", ancestor_ids=("1",))

    upserts, removes = diff_edges(before, derive_edges(moved, lookup))

    assert [edge for _, edge in upserts] == [
        Edge("page", "1", Relation.ANCESTOR_OF, "page", "3", depth=1),
        Edge("page", "1", Relation.PARENT_OF, "page", "3"),
    ]
    assert {edge for _, edge in removes} == {
        Edge("page", "2", Relation.PARENT_OF, "page", "3"),
        Edge("page", "2", Relation.ANCESTOR_OF, "page", "3", depth=1),
    }


def test_edit_changes_links_and_labels() -> None:
    facts = tree_facts()
    lookup = TreeLookup(facts)
    before = derive_edges(facts["3"], lookup)
    edited_record = dict(
        TREE["3"],
        version_number=2,
        labels=["global:howto", "global:setup"],
        body_storage='<ac:link><ri:page ri:content-title="FAQ" /></ac:link>',
    )

    after = derive_edges(facts_from_content(edited_record), lookup)
    upserts, removes = diff_edges(before, after)

    assert [edge for _, edge in upserts] == [
        Edge("label", "global:setup", Relation.LABEL_ON, "page", "3")
    ]
    assert {edge for _, edge in removes} == {
        Edge("label", "my:todo", Relation.LABEL_ON, "page", "3"),
        Edge("page", "3", Relation.LINKS_TO, "blogpost", "10", "DOC", "Release 1.0"),
        Edge("page", "3", Relation.LINKS_TO, "page", "100", "OPS", "Runbook"),
        Edge("page", "3", Relation.LINKS_TO, "page", "1"),
        Edge("page", "3", Relation.LINKS_TO, "page", "2"),
        Edge("page", "3", Relation.LINKS_TO, "page", None, "DOC", "Missing page", False),
    }


def test_trashed_item_has_no_edges() -> None:
    facts = tree_facts()
    lookup = TreeLookup(facts)
    before = derive_edges(facts["3"], lookup)
    trashed = facts_from_content(dict(TREE["3"], status="trashed", version_number=2))

    upserts, removes = diff_edges(before, derive_edges(trashed, lookup))

    assert upserts == []
    assert sorted(key for key, _ in removes) == sorted(before)
    assert references(trashed) == set()


def test_removed_targets_are_left_out() -> None:
    facts = tree_facts()
    lookup = TreeLookup(facts, removed=frozenset({"2", "1"}))

    edges = edge_set(derive_edges(facts["3"], lookup))

    assert Edge("page", "2", Relation.PARENT_OF, "page", "3") not in edges
    assert Edge("page", "1", Relation.ANCESTOR_OF, "page", "3", depth=2) not in edges
    assert Edge("page", "3", Relation.LINKS_TO, "page", "1") not in edges
    assert Edge("page", "3", Relation.LINKS_TO, "page", "4", "DOC", "FAQ") in edges
    assert edge_set(derive_edges(facts["30"], lookup)) == {
        Edge("space", "DOC", Relation.SPACE_CONTAINS, "attachment", "30"),
    }


def test_record_without_body_keeps_previous_links() -> None:
    previous = facts_from_content(TREE["3"])

    refetched = facts_from_content(
        dict(TREE["3"], body_storage=None, version_number=2), previous_links=previous.links
    )

    assert refetched.links == previous.links
    assert len(previous.links) == 6


def test_references_of_a_page() -> None:
    facts = tree_facts()

    assert references(facts["3"]) == {
        id_reference("1"),
        id_reference("2"),
        title_reference("page", "OPS", "Runbook"),
        title_reference("page", "DOC", "FAQ"),
        title_reference("blogpost", "DOC", "Release 1.0"),
        title_reference("page", "DOC", "Missing page"),
    }
    assert identity_references(facts["4"]) == {
        id_reference("4"),
        title_reference("page", "DOC", "FAQ"),
    }
    assert identity_references(facts["20"]) == {id_reference("20")}


def test_title_reference_keeps_parts_apart() -> None:
    assert title_reference("page", "A:B", "C") != title_reference("page", "A", "B:C")


def test_posting_day_sources() -> None:
    url = f"https://{SITE}/wiki/spaces/DOC/blog/2024/05/01/10/Release"
    created = datetime(2024, 5, 2, 23, 30, tzinfo=UTC)

    assert posting_day_of(url, created) == "2024/05/01"
    assert posting_day_of(None, created) == "2024/05/02"
    assert posting_day_of(None, int(created.timestamp() * 1000)) == "2024/05/02"
    assert posting_day_of(None, None) is None


def test_edge_document_round_trip() -> None:
    edge = Edge("page", "3", Relation.LINKS_TO, "page", None, "DOC", "Missing", resolved=False)

    assert Edge.from_document(edge.to_document()) == edge
