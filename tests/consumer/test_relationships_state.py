"""Tests of the relationships consumer's state documents on the MongoDB-protocol server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from consumer.errors import TransientError
from consumer.relationships.derive import Edge, ItemFacts, Relation
from consumer.relationships.links import LinkTarget
from consumer.relationships.state import (
    RelationshipStateStore,
    WorkingState,
    WriteGroup,
    collection_name,
    edges_from_document,
    facts_from_document,
    item_document,
    item_id,
    references_id,
    title_index_id,
)

SOURCE = "src1"


@pytest.fixture
def database(mongo_uri: str) -> Iterator[Database[dict[str, Any]]]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, tz_aware=True)
    name = f"test_state_{uuid.uuid4().hex[:10]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


def page(content_id: str, title: str, **changes: Any) -> ItemFacts:
    fields: dict[str, Any] = {
        "source_id": SOURCE,
        "content_id": content_id,
        "content_type": "page",
        "status": "current",
        "space_key": "DOC",
        "title": title,
    }
    fields.update(changes)
    return ItemFacts(**fields)


def test_collection_name_per_source() -> None:
    assert collection_name("src1") == "source_src1_relationship_state"
    with pytest.raises(ValueError, match="invalid source id"):
        collection_name("bad id")


def test_item_document_round_trip(database: Database[dict[str, Any]]) -> None:
    facts = page(
        "3",
        "Install: step 1",
        parent_id="2",
        ancestor_ids=("1", "2"),
        labels=("global:howto",),
        links=(LinkTarget("page", "DOC", "FAQ"), LinkTarget("content", content_id="7")),
    )
    edge = Edge("page", "2", Relation.PARENT_OF, "page", "3")
    store = RelationshipStateStore(database, SOURCE)
    state = WorkingState(store)
    state.put(
        item_document(facts, version=4, seen_at=1000, edges={edge.key(SOURCE): edge}),
        WriteGroup.ITEMS,
    )

    state.write()
    reread = WorkingState(RelationshipStateStore(database, SOURCE)).item("3")

    assert reread is not None
    assert facts_from_document(SOURCE, reread) == facts
    assert edges_from_document(reread) == {edge.key(SOURCE): edge}
    assert reread["version"] == 4
    assert reread["seen_at"] == 1000
    assert reread["removed"] is False


def test_operations_follow_write_groups(database: Database[dict[str, Any]]) -> None:
    state = WorkingState(RelationshipStateStore(database, SOURCE))
    state.put({"_id": "listing:L1", "kind": "listing"}, WriteGroup.LISTINGS)
    state.put(item_document(page("1", "Home"), version=1, seen_at=1, edges={}), WriteGroup.ITEMS)
    state.put(
        item_document(page("2", "Guide"), version=1, seen_at=1, edges={}),
        WriteGroup.DEPENDENT_ITEMS,
    )
    state.put({"_id": "listing:L1:000000000", "kind": "chunk", "items": []}, WriteGroup.INDEXES)
    state.delete("listing:L0:000000000", WriteGroup.CLEANUP)
    state.add_reference("id:1", "2")

    operations = state.operations()

    assert [key for key, _ in operations] == [
        "listing:L1:000000000",
        "refs:id:1",
        "item:2",
        "item:1",
        "listing:L1",
        "listing:L0:000000000",
    ]
    assert operations[1][1] == {"_id": "refs:id:1", "kind": "refs", "holders": ["2"]}
    assert operations[-1][1] is None


def test_item_written_with_higher_group_wins(database: Database[dict[str, Any]]) -> None:
    state = WorkingState(RelationshipStateStore(database, SOURCE))
    document = item_document(page("1", "Home"), version=1, seen_at=1, edges={})
    state.put(document, WriteGroup.ITEMS)
    state.put(dict(document, version=2), WriteGroup.DEPENDENT_ITEMS)

    operations = state.operations()

    assert len(operations) == 1
    written = operations[0][1]
    assert written is not None
    assert written["version"] == 2


def test_references_persist_as_sets(database: Database[dict[str, Any]]) -> None:
    store = RelationshipStateStore(database, SOURCE)
    first = WorkingState(store)
    first.add_reference("id:1", "2")
    first.add_reference("id:1", "3")
    first.add_reference("id:1", "4")
    first.remove_reference("id:1", "4")
    first.write()

    second = WorkingState(store)
    second.remove_reference("id:1", "2")
    second.add_reference("id:1", "3")
    assert second.reference_holders("id:1") == {"3"}
    second.write()

    document = store.stored_documents()[references_id("id:1")]
    assert document["holders"] == ["3"]
    assert WorkingState(store).reference_holders("id:1") == {"3"}
    assert WorkingState(store).reference_holders("id:unknown") == set()


def test_unchanged_writes_are_skipped(database: Database[dict[str, Any]]) -> None:
    store = RelationshipStateStore(database, SOURCE)
    first = WorkingState(store)
    first.add_reference("id:1", "2")
    first.remove_reference("id:5", "2")
    document = item_document(page("1", "Home"), version=1, seen_at=1, edges={})
    first.put(document, WriteGroup.ITEMS)
    assert first.write() == 2

    again = WorkingState(store)
    again.add_reference("id:1", "2")
    again.remove_reference("id:5", "2")
    stored = again.item("1")
    assert stored is not None
    again.put(dict(stored), WriteGroup.ITEMS)

    assert again.operations() == []
    assert WorkingState(store).reference_holders("id:1") == {"2"}
    assert WorkingState(store).reference_holders("id:5") == set()


def test_cache_follows_updates(database: Database[dict[str, Any]]) -> None:
    store = RelationshipStateStore(database, SOURCE)
    first = WorkingState(store)
    first.add_reference("id:1", "2")
    first.add_reference("id:1", "3")
    first.write()
    second = WorkingState(store)
    second.remove_reference("id:1", "2")
    second.add_reference("id:1", "4")
    second.write()

    cached = WorkingState(store).reference_holders("id:1")
    reread = RelationshipStateStore(database, SOURCE)

    assert cached == {"3", "4"}
    assert WorkingState(reread).reference_holders("id:1") == cached


def test_title_lookup_prefers_day_then_oldest(database: Database[dict[str, Any]]) -> None:
    store = RelationshipStateStore(database, SOURCE)
    state = WorkingState(store)
    state.set_title_candidate("blogpost", "DOC", "News", "120", "2024/05/02")
    state.set_title_candidate("blogpost", "DOC", "News", "99", "2024/05/01")
    state.set_title_candidate("page", "DOC", "Guide", "1000", None)
    state.set_title_candidate("page", "DOC", "Guide", "998", None)
    state.write()

    reread = WorkingState(store)

    assert reread.find_by_title("blogpost", "DOC", "News", "2024/05/02") == "120"
    assert reread.find_by_title("blogpost", "DOC", "News", "2024/05/01") == "99"
    assert reread.find_by_title("blogpost", "DOC", "News", None) == "99"
    assert reread.find_by_title("blogpost", "DOC", "News", "2023/01/01") == "99"
    assert reread.find_by_title("page", "DOC", "Guide", None) == "998"
    assert reread.find_by_title("page", "OPS", "Guide", None) is None


def test_dropping_last_title_candidate_deletes(database: Database[dict[str, Any]]) -> None:
    store = RelationshipStateStore(database, SOURCE)
    state = WorkingState(store)
    state.set_title_candidate("page", "DOC", "Guide", "2", None)
    state.write()

    state = WorkingState(store)
    state.drop_title_candidate("page", "DOC", "Guide", "2")
    state.write()

    key = title_index_id("page", "DOC", "Guide")
    assert key not in store.stored_documents()
    assert store.collection.count_documents({"key": key}) == 0
    assert WorkingState(store).find_by_title("page", "DOC", "Guide", None) is None


def test_live_items_in_space_include_batch(database: Database[dict[str, Any]]) -> None:
    store = RelationshipStateStore(database, SOURCE)
    stored = WorkingState(store)
    for facts in (page("1", "Home"), page("2", "Guide"), page("9", "Other", space_key="OPS")):
        stored.put(item_document(facts, version=1, seen_at=1, edges={}), WriteGroup.ITEMS)
    stored.put(
        item_document(page("3", "Gone"), version=1, seen_at=1, edges={}, removed=True),
        WriteGroup.ITEMS,
    )
    stored.write()

    state = WorkingState(store)
    state.put(item_document(page("4", "New"), version=1, seen_at=1, edges={}), WriteGroup.ITEMS)
    state.put(
        item_document(page("2", "Guide"), version=2, seen_at=2, edges={}, removed=True),
        WriteGroup.ITEMS,
    )

    assert state.live_item_ids_in_space("DOC") == {"1", "4"}
    assert state.is_removed("2")
    assert not state.is_removed("1")
    assert state.content_type_of("9") == "page"
    assert state.content_type_of("404") is None


def test_load_reads_many_ids(database: Database[dict[str, Any]]) -> None:
    store = RelationshipStateStore(database, SOURCE)
    state = WorkingState(store)
    for number in (1, 999, 1000, 1001, 1202):
        facts = page(str(number), f"Page {number}")
        state.put(item_document(facts, version=1, seen_at=1, edges={}), WriteGroup.ITEMS)
    state.write()

    found = store.load(item_id(str(number)) for number in range(0, 1204))

    assert sorted(found) == sorted(item_id(str(number)) for number in (1, 999, 1000, 1001, 1202))
    assert found[item_id("1202")]["title"] == "Page 1202"


def test_insert_race_raises_transient(database: Database[dict[str, Any]]) -> None:
    store = RelationshipStateStore(database, SOURCE)
    first = WorkingState(store)
    second = WorkingState(RelationshipStateStore(database, SOURCE))
    assert first.item("1") is None
    assert second.item("1") is None
    first.put(item_document(page("1", "Home"), version=1, seen_at=1, edges={}), WriteGroup.ITEMS)
    second.put(item_document(page("1", "Start"), version=1, seen_at=2, edges={}), WriteGroup.ITEMS)
    first.write()

    with pytest.raises(TransientError, match="created by another process"):
        second.write()

    retried = WorkingState(store)
    document = retried.item("1")
    assert document is not None
    retried.put(dict(document, title="Start"), WriteGroup.ITEMS)
    retried.write()
    assert WorkingState(store).item("1") == dict(document, title="Start")


def test_replaced_versions_are_deleted(database: Database[dict[str, Any]]) -> None:
    store = RelationshipStateStore(database, SOURCE)
    for version in (1, 2, 3):
        state = WorkingState(store)
        facts = page("1", f"Home {version}")
        state.put(item_document(facts, version=version, seen_at=1, edges={}), WriteGroup.ITEMS)
        state.write()

    stored = list(store.collection.find({"key": item_id("1")}))
    assert len(stored) == 1
    assert stored[0]["version"] == 3
    assert store.stored_documents()[item_id("1")]["title"] == "Home 3"


def test_leftover_older_version_is_ignored(database: Database[dict[str, Any]]) -> None:
    store = RelationshipStateStore(database, SOURCE)
    state = WorkingState(store)
    state.put(item_document(page("1", "Home"), version=2, seen_at=1, edges={}), WriteGroup.ITEMS)
    state.write()
    # A batch that stopped between its inserts and its deletes leaves the older version.
    older = item_document(page("1", "Start"), version=1, seen_at=1, edges={})
    older.update({"_id": f"{item_id('1')}@{0:012d}", "key": item_id("1"), "rev": 0})
    store.collection.insert_one(older)

    reread = RelationshipStateStore(database, SOURCE)
    document = WorkingState(reread).item("1")
    assert document is not None
    assert document["title"] == "Home"

    state = WorkingState(reread)
    state.put(item_document(page("2", "Guide"), version=1, seen_at=1, edges={}), WriteGroup.ITEMS)
    state.write()
    assert store.collection.count_documents({"key": item_id("1")}) == 1


def test_documents_from_before_versions_load(database: Database[dict[str, Any]]) -> None:
    document = item_document(page("1", "Home"), version=1, seen_at=1, edges={})
    database[collection_name(SOURCE)].insert_one(document)
    store = RelationshipStateStore(database, SOURCE)

    assert WorkingState(store).item("1") == document

    state = WorkingState(store)
    state.put(dict(document, title="Start"), WriteGroup.ITEMS)
    state.write()
    assert store.collection.find_one({"_id": item_id("1")}) is None
    assert store.stored_documents()[item_id("1")]["title"] == "Start"
