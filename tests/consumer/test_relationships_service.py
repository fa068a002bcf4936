"""Tests of the relationships consumer: the batch handler on the MongoDB-protocol server,
and the whole service through the Kafka broker.

The content tree is the one of ``test_relationships_derive``: space DOC with pages
1 "Home" > 2 "Guide" > 3 "Install" and 1 > 4 "FAQ", blog post 10, comments 20 and 21 on
page 3, attachment 30 on page 2, and space OPS with page 100 "Runbook".
"""

from __future__ import annotations

import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from pymongo import MongoClient
from pymongo.database import Database

from connections.kafka import consumer_config
from consumer.errors import PoisonRecordError
from consumer.relationships.derive import Edge, Relation
from consumer.relationships.service import (
    EdgeChange,
    RelationshipHandler,
    consumer_options,
    relationship_record,
    run,
)
from consumer.relationships.state import RelationshipStateStore, WorkingState
from consumer.runtime import ConsumedRecord
from schemas.catalogue import RecordType
from schemas.codec import SingleObjectCodec
from tests.consumer.conftest import (
    ConsumerEnv,
    RecordPublisher,
    start_console_script,
    wait_until,
)
from tests.consumer.test_relationships_derive import TREE, content

SOURCE = "src1"
FETCHED_AT = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
LISTING_STARTED_AT = FETCHED_AT + timedelta(hours=1)

DOC = "DOC"


def contains(item_type: str, item: str, space: str = DOC) -> Edge:
    return Edge("space", space, Relation.SPACE_CONTAINS, item_type, item)


def child(parent: str, page: str, ancestors: Sequence[str]) -> set[Edge]:
    """Return the parent_of and ancestor_of edges of ``page`` under the ancestor chain."""
    edges = {Edge("page", parent, Relation.PARENT_OF, "page", page)}
    for index, ancestor in enumerate(ancestors):
        depth = len(ancestors) - index
        edges.add(Edge("page", ancestor, Relation.ANCESTOR_OF, "page", page, depth=depth))
    return edges


def link(source: str, target: str | None, title: str | None = None, space: str = DOC) -> Edge:
    if title is None:
        return Edge("page", source, Relation.LINKS_TO, "page", target)
    return Edge("page", source, Relation.LINKS_TO, "page", target, space, title, target is not None)


EDGES_OF: dict[str, set[Edge]] = {
    "1": {contains("page", "1")},
    "2": {contains("page", "2")} | child("1", "2", ["1"]),
    "3": {
        contains("page", "3"),
        Edge("label", "global:howto", Relation.LABEL_ON, "page", "3"),
        Edge("label", "my:todo", Relation.LABEL_ON, "page", "3"),
        link("3", "4", "FAQ"),
        Edge("page", "3", Relation.LINKS_TO, "blogpost", "10", DOC, "Release 1.0"),
        link("3", "100", "Runbook", "OPS"),
        link("3", "1"),
        link("3", "2"),
        link("3", None, "Missing page"),
    }
    | child("2", "3", ["1", "2"]),
    "4": {contains("page", "4")} | child("1", "4", ["1"]),
    "10": {contains("blogpost", "10")},
    "20": {contains("comment", "20"), Edge("comment", "20", Relation.COMMENT_ON, "page", "3")},
    "21": {
        contains("comment", "21"),
        Edge("comment", "21", Relation.COMMENT_ON, "page", "3"),
        Edge("comment", "20", Relation.PARENT_OF, "comment", "21"),
    },
    "30": {
        contains("attachment", "30"),
        Edge("attachment", "30", Relation.ATTACHMENT_OF, "page", "2"),
    },
    "100": {contains("page", "100", "OPS")},
}


def expected_edges(*without: str) -> set[Edge]:
    return {edge for item, edges in EDGES_OF.items() if item not in without for edge in edges}


def tree_record(content_id: str, **changes: Any) -> dict[str, Any]:
    record = dict(TREE[content_id], fetched_at=FETCHED_AT)
    record.update(changes)
    return record


def listed(content_id: str, **changes: Any) -> dict[str, Any]:
    """Return the structure item of a tree page or blog post."""
    record = TREE[content_id]
    ancestors = record["ancestor_ids"]
    item = {
        "id": content_id,
        "type": record["type"],
        "parent_id": ancestors[-1] if ancestors else None,
        "version_number": record["version_number"],
        "status": "current",
    }
    item.update(changes)
    return item


def listing_value(
    listing_id: str,
    sequence: int,
    kind: str,
    items: Sequence[dict[str, Any]] = (),
    item_count: int | None = None,
    content_types: Sequence[str] = ("page", "blogpost"),
) -> dict[str, Any]:
    """Return a StructureListing chunk of space DOC."""
    return {
        "content_types": list(content_types),
        "source_id": SOURCE,
        "job_id": "job-2",
        "space_key": DOC,
        "space_id": None,
        "listing_id": listing_id,
        "sequence": sequence,
        "kind": kind,
        "items": list(items),
        "item_count": item_count,
        "abort_reason": "GET /rest/api/content answered 503" if kind == "aborted" else None,
        "started_at": LISTING_STARTED_AT,
        "fetched_at": LISTING_STARTED_AT,
    }


def complete_listing_values(
    listing_id: str,
    items: Sequence[dict[str, Any]],
    content_types: Sequence[str] = ("page", "blogpost"),
) -> list[dict[str, Any]]:
    """Return the chunks of a complete listing of ``items``, two items per chunk."""
    values = [
        listing_value(listing_id, sequence, "items", items[start : start + 2], None, content_types)
        for sequence, start in enumerate(range(0, len(items), 2))
    ]
    values.append(listing_value(listing_id, len(values), "complete", (), len(items), content_types))
    return values


DOC_PAGES = ("1", "2", "3", "4", "10")


class RecordingPublisher:
    """Publisher that keeps the changes; ``crash_after_publish`` simulates a crash."""

    def __init__(self) -> None:
        self.changes: list[EdgeChange] = []
        self.crash_after_publish = False

    def publish(self, changes: Sequence[EdgeChange], derived_at: datetime) -> None:
        self.changes.extend(changes)
        if self.crash_after_publish:
            self.crash_after_publish = False
            raise SimulatedCrashError("process stopped after publishing")

    def close(self) -> None:
        pass


class SimulatedCrashError(Exception):
    pass


def apply_changes(changes: Iterable[EdgeChange]) -> dict[str, Edge]:
    """Return the edge set a stream writer ends with after applying ``changes`` in order."""
    edges: dict[str, Edge] = {}
    for change in changes:
        if change.op == "upsert":
            edges[change.key] = change.edge
        else:
            edges.pop(change.key, None)
    return edges


class Harness:
    """A handler on a fresh database, fed with hand-made consumed records."""

    def __init__(self, database: Database[dict[str, Any]]) -> None:
        self.database = database
        self.publisher = RecordingPublisher()
        self.handler = RelationshipHandler(database, self.publisher)
        self._offset = 0

    def restart(self) -> None:
        """Replace the handler, as a new process with the same state would."""
        self.handler = RelationshipHandler(self.database, self.publisher)

    def consumed(self, record_type: RecordType, value: dict[str, Any]) -> ConsumedRecord:
        self._offset += 1
        topic = "test.content" if record_type is RecordType.CONTENT else "test.structure"
        return ConsumedRecord(topic, 0, self._offset, None, value, record_type, 0)

    def content(self, value: dict[str, Any]) -> ConsumedRecord:
        return self.consumed(RecordType.CONTENT, value)

    def listing_chunk(
        self,
        listing_id: str,
        sequence: int,
        kind: str,
        items: Sequence[dict[str, Any]] = (),
        item_count: int | None = None,
    ) -> ConsumedRecord:
        value = listing_value(listing_id, sequence, kind, items, item_count)
        return self.consumed(RecordType.STRUCTURE_LISTING, value)

    def complete_listing(
        self,
        listing_id: str,
        items: Sequence[dict[str, Any]],
        content_types: Sequence[str] = ("page", "blogpost"),
    ) -> list[ConsumedRecord]:
        return [
            self.consumed(RecordType.STRUCTURE_LISTING, value)
            for value in complete_listing_values(listing_id, items, content_types)
        ]

    def handle(self, *records: ConsumedRecord) -> list[EdgeChange]:
        """Handle one batch; return the changes it published."""
        before = len(self.publisher.changes)
        self.handler.handle(records)
        return self.publisher.changes[before:]

    def handle_tree(self) -> list[EdgeChange]:
        return self.handle(*(self.content(tree_record(content_id)) for content_id in TREE))

    def edges(self) -> set[Edge]:
        return set(apply_changes(self.publisher.changes).values())

    def state_documents(self) -> dict[str, dict[str, Any]]:
        return RelationshipStateStore(self.database, SOURCE).stored_documents()


@pytest.fixture
def harness(mongo_uri: str) -> Iterator[Harness]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, tz_aware=True)
    name = f"test_rel_{uuid.uuid4().hex[:10]}"
    try:
        yield Harness(client[name])
    finally:
        client.drop_database(name)
        client.close()


def edges_of_changes(changes: Iterable[EdgeChange], op: str) -> set[Edge]:
    return {change.edge for change in changes if change.op == op}


# The batch handler


def test_tree_in_one_batch(harness: Harness) -> None:
    changes = harness.handle_tree()

    assert harness.edges() == expected_edges()
    assert all(change.op == "upsert" for change in changes)
    assert len(changes) == len(expected_edges())


def test_tree_one_record_per_batch(harness: Harness) -> None:
    order = ["3", *(content_id for content_id in reversed(list(TREE)) if content_id != "3")]
    for content_id in order:
        harness.handle(harness.content(tree_record(content_id)))

    assert harness.edges() == expected_edges()
    removed = edges_of_changes(harness.publisher.changes, "remove")
    assert link("3", None, "FAQ") in removed
    assert link("3", None, "Runbook", "OPS") in removed
    assert Edge("page", "3", Relation.LINKS_TO, "unknown", "1") in removed


def test_records_carry_derivation(harness: Harness) -> None:
    changes = harness.handle(harness.content(tree_record("2")))

    record = relationship_record(changes[0], FETCHED_AT)
    encoded = SingleObjectCodec().encode(RecordType.RELATIONSHIP, record)
    decoded = SingleObjectCodec().decode(encoded, RecordType.RELATIONSHIP)

    assert decoded["source_id"] == SOURCE
    assert decoded["job_id"] == "job-1"
    assert decoded["op"] == "upsert"
    assert decoded["derived_from"]["topic"] == "test.content"
    assert decoded["derived_from"]["offset"] == 1
    assert decoded["derived_from"]["content_id"] == "2"
    assert decoded["derived_from"]["content_version"] == 1
    assert decoded["derived_from"]["listing_id"] is None


def test_link_resolves_when_page_appears(harness: Harness) -> None:
    harness.handle_tree()
    new_page = content(id="5", title="Missing page", ancestor_ids=["1"], fetched_at=FETCHED_AT)

    changes = harness.handle(harness.content(new_page))

    assert edges_of_changes(changes, "remove") == {link("3", None, "Missing page")}
    assert edges_of_changes(changes, "upsert") == {
        link("3", "5", "Missing page"),
        contains("page", "5"),
    } | child("1", "5", ["1"])


def test_edit_changes_links_and_labels(harness: Harness) -> None:
    harness.handle_tree()
    edited = tree_record(
        "3",
        version_number=2,
        labels=["global:howto", "global:setup"],
        body_storage='<ac:link><ri:page ri:content-title="FAQ" /></ac:link>',
    )

    changes = harness.handle(harness.content(edited))

    assert edges_of_changes(changes, "upsert") == {
        Edge("label", "global:setup", Relation.LABEL_ON, "page", "3")
    }
    assert edges_of_changes(changes, "remove") == {
        Edge("label", "my:todo", Relation.LABEL_ON, "page", "3"),
        Edge("page", "3", Relation.LINKS_TO, "blogpost", "10", DOC, "Release 1.0"),
        link("3", "100", "Runbook", "OPS"),
        link("3", "1"),
        link("3", "2"),
        link("3", None, "Missing page"),
    }


def test_move_by_new_version(harness: Harness) -> None:
    harness.handle_tree()
    moved = tree_record("3", version_number=2, ancestor_ids=["1", "4"], parent_id="4")

    changes = harness.handle(harness.content(moved))

    assert edges_of_changes(changes, "upsert") == {
        Edge("page", "4", Relation.PARENT_OF, "page", "3"),
        Edge("page", "4", Relation.ANCESTOR_OF, "page", "3", depth=1),
    }
    assert edges_of_changes(changes, "remove") == {
        Edge("page", "2", Relation.PARENT_OF, "page", "3"),
        Edge("page", "2", Relation.ANCESTOR_OF, "page", "3", depth=1),
    }


def test_trash_then_restore(harness: Harness) -> None:
    harness.handle_tree()

    trashed = harness.handle(harness.content(tree_record("4", status="trashed", version_number=2)))

    assert edges_of_changes(trashed, "remove") == EDGES_OF["4"] | {link("3", "4", "FAQ")}
    assert edges_of_changes(trashed, "upsert") == {link("3", None, "FAQ")}
    assert harness.edges() == expected_edges("4") - {link("3", "4", "FAQ")} | {
        link("3", None, "FAQ")
    }

    harness.handle(harness.content(tree_record("4", version_number=3)))

    assert harness.edges() == expected_edges()


def test_older_version_is_ignored(harness: Harness) -> None:
    harness.handle_tree()
    harness.handle(harness.content(tree_record("3", version_number=2, labels=[])))

    changes = harness.handle(harness.content(tree_record("3")))

    assert changes == []
    labels = {edge for edge in harness.edges() if edge.relation is Relation.LABEL_ON}
    assert labels == set()


def test_unknown_and_historical_status_are_skipped(harness: Harness) -> None:
    harness.handle_tree()

    changes = harness.handle(
        harness.content(tree_record("3", status="unknown", version_number=2)),
        harness.content(tree_record("4", status="historical", version_number=2)),
    )

    assert changes == []
    assert harness.edges() == expected_edges()


def test_edge_versions_never_decrease(harness: Harness) -> None:
    harness.handle_tree()
    harness.handle(harness.content(tree_record("3", version_number=5)))
    new_page = content(id="5", title="Missing page", ancestor_ids=["1"], fetched_at=FETCHED_AT)
    resolved = harness.handle(harness.content(new_page))
    listing = [listed(c) for c in DOC_PAGES if c != "4"]
    removed = harness.handle(*harness.complete_listing("L1", listing))

    versions: dict[str, list[int | None]] = {}
    for change in harness.publisher.changes:
        versions.setdefault(change.key, []).append(change.cause.content_version)
    for key, sequence in versions.items():
        assert sequence == sorted(sequence, key=lambda version: version or 0), key
    link_changes = [c for c in resolved + removed if c.edge.from_id == "3"]
    assert {(c.cause.content_id, c.cause.content_version) for c in link_changes} == {("3", 5)}
    assert {c.cause.offset for c in link_changes if c.cause.listing_id is None} == {
        resolved[0].cause.offset
    }


def test_purge_by_complete_listing(harness: Harness) -> None:
    harness.handle_tree()
    listing = [listed(content_id) for content_id in DOC_PAGES if content_id not in ("3", "4")]

    changes = harness.handle(*harness.complete_listing("L1", listing))

    assert harness.edges() == expected_edges("3", "4", "20", "21")
    assert all(change.cause.listing_id == "L1" for change in changes)
    documents = harness.state_documents()
    for content_id in ("3", "4", "20", "21"):
        assert documents[f"item:{content_id}"]["removed"] is True
    assert documents["item:2"]["removed"] is False
    assert documents["listing:L1"]["state"] == "done"
    assert not any(doc_id.startswith("listing:L1:") for doc_id in documents)


def test_listing_covering_comments_removes_them(harness: Harness) -> None:
    harness.handle_tree()
    covered = ("page", "blogpost", "comment", "attachment")
    listing = [listed(c) for c in DOC_PAGES]
    listing.append({**listed("1"), "id": "20", "type": "comment", "parent_id": "3"})
    listing.append({**listed("1"), "id": "30", "type": "attachment", "parent_id": "2"})

    changes = harness.handle(*harness.complete_listing("L1", listing, covered))
    without_comments = harness.handle(
        *harness.complete_listing("L2", listing[:-2] + listing[-1:], covered)
    )

    assert edges_of_changes(changes, "upsert") == set()
    assert edges_of_changes(changes, "remove") == EDGES_OF["21"]
    assert edges_of_changes(without_comments, "remove") == EDGES_OF["20"]
    assert harness.edges() == expected_edges("20", "21")


@pytest.mark.parametrize("covered", [(), ("page", "blogpost")], ids=["version-1", "pages"])
def test_uncovered_types_are_kept(harness: Harness, covered: tuple[str, ...]) -> None:
    harness.handle_tree()

    changes = harness.handle(
        *harness.complete_listing("L1", [listed(c) for c in DOC_PAGES], covered)
    )

    assert changes == []
    assert harness.edges() == expected_edges()


def test_purged_link_target_becomes_unresolved(harness: Harness) -> None:
    harness.handle_tree()
    listing = [listed(content_id) for content_id in DOC_PAGES if content_id != "4"]

    changes = harness.handle(*harness.complete_listing("L1", listing))

    assert link("3", None, "FAQ") in edges_of_changes(changes, "upsert")
    assert harness.edges() == expected_edges("4") - {link("3", "4", "FAQ")} | {
        link("3", None, "FAQ")
    }


def test_purged_item_stays_removed(harness: Harness) -> None:
    harness.handle_tree()
    listing = [listed(content_id) for content_id in DOC_PAGES if content_id != "4"]
    harness.handle(*harness.complete_listing("L1", listing))

    redelivered = harness.handle(harness.content(tree_record("4")))
    newer_but_fetched_before = harness.handle(harness.content(tree_record("4", version_number=2)))
    recreated = harness.handle(
        harness.content(tree_record("4", fetched_at=LISTING_STARTED_AT + timedelta(hours=1)))
    )

    assert redelivered == []
    assert newer_but_fetched_before == []
    assert edges_of_changes(recreated, "upsert") >= EDGES_OF["4"]
    assert harness.edges() == expected_edges()


def test_aborted_listing_removes_nothing(harness: Harness) -> None:
    harness.handle_tree()
    only_home = [listed("1")]

    aborted = harness.handle(
        harness.listing_chunk("L1", 0, "items", only_home),
        harness.listing_chunk("L1", 1, "aborted"),
    )
    late_complete = harness.handle(harness.listing_chunk("L1", 2, "complete", (), 1))

    assert aborted == []
    assert late_complete == []
    assert harness.edges() == expected_edges()
    assert harness.state_documents()["listing:L1"]["state"] == "aborted"


def test_unfinished_listing_removes_nothing(harness: Harness) -> None:
    harness.handle_tree()

    unfinished = harness.handle(harness.listing_chunk("L1", 0, "items", [listed("1")]))
    superseded = harness.handle(*harness.complete_listing("L2", [listed(c) for c in DOC_PAGES]))

    assert unfinished == []
    assert superseded == []
    documents = harness.state_documents()
    assert documents["listing:L1"]["state"] == "superseded"
    assert "listing:L1:000000000" not in documents
    assert harness.edges() == expected_edges()


def test_listing_with_gap_removes_nothing(harness: Harness) -> None:
    harness.handle_tree()

    changes = harness.handle(
        harness.listing_chunk("L1", 0, "items", [listed("1")]),
        harness.listing_chunk("L1", 2, "items", [listed("2")]),
        harness.listing_chunk("L1", 3, "complete", (), 2),
    )
    wrong_count = harness.handle(
        harness.listing_chunk("L2", 0, "items", [listed("1")]),
        harness.listing_chunk("L2", 1, "complete", (), 5),
    )

    assert changes == []
    assert wrong_count == []
    assert harness.state_documents()["listing:L1"]["state"] == "incomplete"
    assert harness.edges() == expected_edges()


def test_listing_keeps_items_fetched_later(harness: Harness) -> None:
    harness.handle_tree()
    created_later = content(
        id="5", title="New", ancestor_ids=["1"], fetched_at=LISTING_STARTED_AT + timedelta(1)
    )
    harness.handle(harness.content(created_later))

    changes = harness.handle(*harness.complete_listing("L1", [listed(c) for c in DOC_PAGES]))

    assert changes == []
    assert contains("page", "5") in harness.edges()


def test_listing_applies_move_and_trash(harness: Harness) -> None:
    harness.handle_tree()
    items = [listed(c) for c in DOC_PAGES if c not in ("3", "10")]
    items += [listed("3", parent_id="4"), listed("10", status="trashed")]

    changes = harness.handle(*harness.complete_listing("L1", items))

    assert edges_of_changes(changes, "upsert") == {
        Edge("page", "4", Relation.PARENT_OF, "page", "3"),
        Edge("page", "4", Relation.ANCESTOR_OF, "page", "3", depth=1),
        Edge("page", "3", Relation.LINKS_TO, "blogpost", None, DOC, "Release 1.0", False),
    }
    assert edges_of_changes(changes, "remove") == {
        Edge("page", "2", Relation.PARENT_OF, "page", "3"),
        Edge("page", "2", Relation.ANCESTOR_OF, "page", "3", depth=1),
        Edge("page", "3", Relation.LINKS_TO, "blogpost", "10", DOC, "Release 1.0"),
        contains("blogpost", "10"),
    }


def test_redelivered_batch_changes_nothing(harness: Harness) -> None:
    records = [harness.content(tree_record(content_id)) for content_id in TREE]
    records += harness.complete_listing("L1", [listed(c) for c in DOC_PAGES if c != "4"])
    harness.handle(*records)
    state_after_first = harness.state_documents()

    again = harness.handle(*records)

    assert again == []
    assert harness.state_documents() == state_after_first


def test_crash_after_publish_republishes(harness: Harness) -> None:
    harness.handle_tree()
    new_page = content(id="5", title="Missing page", ancestor_ids=["1"], fetched_at=FETCHED_AT)
    listing = [listed(c) for c in DOC_PAGES if c != "4"]
    listing.append(listed("1", id="5", parent_id="1"))
    batch = [harness.content(new_page), *harness.complete_listing("L1", listing)]
    before = len(harness.publisher.changes)
    harness.publisher.crash_after_publish = True
    with pytest.raises(SimulatedCrashError):
        harness.handle(*batch)
    first_attempt = harness.publisher.changes[before:]

    harness.restart()
    retried = harness.handle(*batch)

    assert len(first_attempt) > 0
    assert [(c.op, c.key, c.edge) for c in retried] == [
        (c.op, c.key, c.edge) for c in first_attempt
    ]
    assert harness.edges() == (
        expected_edges("4") - {link("3", "4", "FAQ"), link("3", None, "Missing page")}
    ) | {link("3", None, "FAQ"), link("3", "5", "Missing page"), contains("page", "5")} | child(
        "1", "5", ["1"]
    )


class CrashingStore(RelationshipStateStore):
    """State store whose next write applies only ``limit`` operations, then raises."""

    limit: int | None = None
    last_operation_count = 0

    def write(self, operations: list[Any]) -> None:
        CrashingStore.last_operation_count = len(operations)
        limit = CrashingStore.limit
        if limit is None:
            super().write(operations)
            return
        CrashingStore.limit = None
        super().write(operations[:limit])
        raise SimulatedCrashError(f"process stopped after {limit} of {len(operations)} writes")


def normalized_state(harness: Harness) -> dict[str, dict[str, Any]]:
    documents = harness.state_documents()
    for document in documents.values():
        if "holders" in document:
            document["holders"] = sorted(document["holders"])
    return documents


def crash_scenario(harness: Harness) -> list[ConsumedRecord]:
    """Handle the tree and return a batch that adds, moves, resolves and removes."""
    harness.handler = RelationshipHandler(harness.database, harness.publisher, CrashingStore)
    harness.handle_tree()
    new_page = content(id="5", title="Missing page", ancestor_ids=["1"], fetched_at=FETCHED_AT)
    moved = tree_record("3", version_number=2, ancestor_ids=["1", "4"], parent_id="4")
    listing = [listed(c) for c in DOC_PAGES if c not in ("2", "3")]
    listing += [listed("3", parent_id="4"), listed("1", id="5", parent_id="1")]
    return [
        harness.content(new_page),
        harness.content(moved),
        *harness.complete_listing("L1", listing),
    ]


def test_crash_during_state_write(mongo_uri: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, tz_aware=True)
    names: list[str] = []

    def fresh_harness() -> Harness:
        names.append(f"test_rel_{uuid.uuid4().hex[:10]}")
        return Harness(client[names[-1]])

    try:
        clean = fresh_harness()
        clean.handle(*crash_scenario(clean))
        operation_count = CrashingStore.last_operation_count
        clean_edges = clean.edges()
        clean_state = normalized_state(clean)

        assert operation_count > 10
        for limit in range(operation_count):
            crashed = fresh_harness()
            batch = crash_scenario(crashed)
            CrashingStore.limit = limit
            with pytest.raises(SimulatedCrashError):
                crashed.handle(*batch)
            crashed.handler = RelationshipHandler(
                crashed.database, crashed.publisher, CrashingStore
            )
            crashed.handle(*batch)

            assert crashed.edges() == clean_edges, f"edges after a crash after {limit} writes"
            crashed_state = normalized_state(crashed)
            for doc_id in sorted(set(clean_state) | set(crashed_state)):
                crashed_document = crashed_state.get(doc_id)
                clean_document = clean_state.get(doc_id)
                if doc_id.startswith("refs:") and crashed_document and clean_document:
                    # Holders may stay behind; they are dropped when the reference is read.
                    extra = set(crashed_document["holders"]) - set(clean_document["holders"])
                    assert set(crashed_document["holders"]) >= set(clean_document["holders"])
                    for holder in extra:
                        assert clean_state[f"item:{holder}"]["removed"] is True
                    continue
                assert crashed_document == clean_document, (
                    f"state document {doc_id} after a crash after {limit} writes"
                )
            client.drop_database(names.pop())
    finally:
        CrashingStore.limit = None
        for name in names:
            client.drop_database(name)
        client.close()


def test_restart_continues_from_state(harness: Harness) -> None:
    harness.handle_tree()
    harness.restart()

    changes = harness.handle(
        harness.content(tree_record("4", version_number=2, labels=["global:faq"]))
    )

    assert [(change.op, change.edge) for change in changes] == [
        ("upsert", Edge("label", "global:faq", Relation.LABEL_ON, "page", "4"))
    ]


def test_record_without_space_key_is_poison(harness: Harness) -> None:
    record = harness.content(tree_record("1", space_key=""))

    with pytest.raises(PoisonRecordError, match="space key"):
        harness.handle(record)


def test_working_state_reads_written_edges(harness: Harness) -> None:
    harness.handle_tree()

    state = WorkingState(RelationshipStateStore(harness.database, SOURCE))

    assert state.find_by_title("page", DOC, "FAQ", None) == "4"
    assert state.reference_holders("id:3") == {"20", "21"}


# The service through the Kafka broker


class RelationshipTopicReader:
    """Reads the relationships topic of a test and applies its records in order."""

    def __init__(self, env: ConsumerEnv) -> None:
        self.env = env
        self.codec = SingleObjectCodec()
        group = env.group(f"reader-{uuid.uuid4().hex[:6]}")
        self._consumer = Consumer(consumer_config(env.settings, group))
        self._consumer.subscribe([env.topics.relationships])
        self.records: list[dict[str, Any]] = []
        self._edges: dict[str, Edge] = {}

    def poll(self) -> None:
        """Read what has arrived, waiting at most about a second."""
        for message in self._consumer.consume(500, 1.0):
            if message.error() is not None:
                continue
            record = self.codec.decode(message.value(), RecordType.RELATIONSHIP)
            self.records.append(record)
            key = message.key().decode()
            if record["op"] == "upsert":
                self._edges[key] = edge_of_record(record)
            else:
                self._edges.pop(key, None)

    def edges(self) -> set[Edge]:
        self.poll()
        return set(self._edges.values())

    def close(self) -> None:
        self._consumer.close()


def edge_of_record(record: dict[str, Any]) -> Edge:
    return Edge(
        record["from_type"],
        record["from_id"],
        Relation(record["relation"]),
        record["to_type"],
        record["to_id"],
        record["to_space_key"],
        record["to_title"],
        record["resolved"],
        record["depth"],
    )


class ServiceThread:
    """Runs ``consumer.relationships.service.run`` in a thread until ``stop()``."""

    def __init__(self, env: ConsumerEnv) -> None:
        self.stop_event = threading.Event()
        self.status: int | None = None
        options = consumer_options(
            env.settings, group_id=env.group("relationships"), batch_timeout_s=0.2
        )
        self._thread = threading.Thread(
            target=self._run, args=(env, options), name="relationships", daemon=True
        )
        self._thread.start()

    def _run(self, env: ConsumerEnv, options: Any) -> None:
        self.status = run(env.settings, options, stop_event=self.stop_event)

    def stop(self) -> int | None:
        self.stop_event.set()
        self._thread.join(90)
        assert not self._thread.is_alive(), "relationships consumer did not stop"
        return self.status


def publish_tree(publisher: RecordPublisher) -> None:
    for content_id in TREE:
        publisher.publish(RecordType.CONTENT, tree_record(content_id))
    publisher.flush()


def wait_for_edges(reader: RelationshipTopicReader, expected: set[Edge], what: str) -> None:
    wait_until(lambda: reader.edges() == expected, what)


def test_service_tree_and_purge(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env(partitions=2)
    publisher = RecordPublisher(env)
    reader = RelationshipTopicReader(env)
    publish_tree(publisher)
    service = ServiceThread(env)
    try:
        wait_for_edges(reader, expected_edges(), "the edges of the tree")

        listing = [listed(c) for c in DOC_PAGES if c not in ("3", "4")]
        for value in complete_listing_values("L1", listing):
            publisher.publish(RecordType.STRUCTURE_LISTING, value)
        publisher.flush()

        wait_for_edges(
            reader, expected_edges("3", "4", "20", "21"), "the edges after the purge of 3 and 4"
        )
    finally:
        status = service.stop()
        reader.close()
    assert status == 0
    removals = [record for record in reader.records if record["op"] == "remove"]
    assert {record["derived_from"]["listing_id"] for record in removals} == {"L1"}
    assert all(record["job_id"] == "job-2" for record in removals)


def stop_process(process: subprocess.Popen[bytes], log_path: Path) -> int:
    """Send SIGTERM, wait for the exit and return the exit status."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(90)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)
        pytest.fail(f"consumer did not stop on SIGTERM; log:\n{log_path.read_text()}")


def test_service_restart_continues_from_state(
    consumer_env: Callable[..., ConsumerEnv], tmp_path: Path
) -> None:
    env = consumer_env(partitions=2)
    publisher = RecordPublisher(env)
    reader = RelationshipTopicReader(env)
    arguments = ["relationships", "--group", env.group("relationships"), "--batch-timeout", "0.2"]
    publish_tree(publisher)
    first_log = tmp_path / "first.log"
    first = start_console_script(env, arguments, first_log)
    try:
        wait_for_edges(reader, expected_edges(), "the edges of the tree")
    finally:
        first_status = stop_process(first, first_log)
    published_by_first = len(reader.records)

    publisher.publish(RecordType.CONTENT, tree_record("4", version_number=2, labels=["global:faq"]))
    publisher.flush()
    second_log = tmp_path / "second.log"
    second = start_console_script(env, arguments, second_log)
    label = Edge("label", "global:faq", Relation.LABEL_ON, "page", "4")
    try:
        wait_for_edges(reader, expected_edges() | {label}, "the label edge of version 2")
    finally:
        second_status = stop_process(second, second_log)
    reader.poll()
    reader.close()

    assert first_status == 0, first_log.read_text()
    assert second_status == 0, second_log.read_text()
    assert published_by_first == len(expected_edges())
    assert [edge_of_record(record) for record in reader.records[published_by_first:]] == [label]
