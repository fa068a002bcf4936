"""Tests of the stream writer: document ids, version guard, sanitising and real writes."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
from pymongo import MongoClient, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from consumer.runtime import ConsumedRecord, ConsumerOptions
from consumer.stream import (
    HEADS_SUFFIX,
    STREAM_INDEXES,
    Head,
    StreamWriter,
    collapse,
    plan_writes,
    sanitise,
    stream_collection_name,
    to_version,
)
from schemas.catalogue import RecordType
from tests.consumer.conftest import (
    ConsumerEnv,
    ConsumerThread,
    RecordPublisher,
    sample_content,
    sample_relationship,
    sample_space,
    wait_until,
)
from tests.test_codec import FETCHED_AT


def consumed(
    record_type: RecordType, value: dict[str, Any], offset: int = 0, partition: int = 0
) -> ConsumedRecord:
    return ConsumedRecord("t", partition, offset, None, value, record_type, 1_700_000_000_000)


# Pure parts


def test_sanitise_replaces_forbidden_keys() -> None:
    result = sanitise({"a.b": 1, "$where": 2, "ok": {"x.y": 3}})

    assert result == {"a\uff0eb": 1, "\uff04where": 2, "ok": {"x\uff0ey": 3}}


def test_sanitise_replaces_nul_and_non_finite() -> None:
    result = sanitise({"text": "a\x00b", "nan": math.nan, "inf": math.inf, "zero": 0.0})

    assert result == {"text": "a\ufffdb", "nan": None, "inf": None, "zero": 0.0}


def test_sanitise_wraps_nested_arrays() -> None:
    result = sanitise({"rows": [[1, 2], [3, [4]]], "flat": [1, 2]})

    assert result == {
        "rows": [{"items": [1, 2]}, {"items": [3, {"items": [4]}]}],
        "flat": [1, 2],
    }


def test_content_version_id_uses_version_number() -> None:
    version = to_version(consumed(RecordType.CONTENT, sample_content(version_number=7), 42))

    assert version.document_id == "content:98487@v7"
    assert version.entity_id == "content:98487"
    assert version.order[0] == 7
    assert version.order[-1] == 42


def test_space_version_ignores_fetch_metadata() -> None:
    first = to_version(consumed(RecordType.SPACE, sample_space(), 1))
    refetched = sample_space()
    refetched["job_id"] = "20240101T000000000Z-00000000"
    refetched["fetched_at"] = FETCHED_AT + timedelta(days=3)
    again = to_version(consumed(RecordType.SPACE, refetched, 9))
    renamed = to_version(consumed(RecordType.SPACE, {**sample_space(), "name": "New name"}, 10))

    assert first.document_id == again.document_id
    assert first.document_id.startswith("space:AIRBYTE@h")
    assert renamed.document_id != first.document_id
    assert again.order > first.order


def test_relationship_entity_id_from_key() -> None:
    version = to_version(consumed(RecordType.RELATIONSHIP, sample_relationship()))

    assert version.entity_id == (
        "relationship:page:98487:links_to:page:unresolved:AIRBYTE:Getting%20started"
    )
    assert version.order[0] == 1


def test_collapse_keeps_highest_order() -> None:
    older = to_version(consumed(RecordType.CONTENT, sample_content(title="old"), 5))
    newer = to_version(consumed(RecordType.CONTENT, sample_content(title="new"), 6))

    collapsed = collapse([newer, older])

    assert list(collapsed) == ["content:98487@v1"]
    assert collapsed["content:98487@v1"].fields["title"] == "new"


def test_plan_keeps_newer_version_current() -> None:
    v2 = to_version(consumed(RecordType.CONTENT, sample_content(version_number=2), 1))
    v1 = to_version(consumed(RecordType.CONTENT, sample_content(version_number=1), 2))
    heads: dict[str, Head] = {}

    first = plan_writes(collapse([v2]), heads, FETCHED_AT)
    heads = {head.entity_id: head for head in first.new_heads}
    second = plan_writes(collapse([v1]), heads, FETCHED_AT)

    assert first.written == 1
    assert second.written == 1
    assert heads["content:98487"].current_id == "content:98487@v2"
    assert second.updates == []
    (inserted,) = second.inserts
    assert inserted["_id"] == "content:98487@v1"
    assert inserted["current"] is False


def test_plan_new_entity_inserts_head() -> None:
    v1 = to_version(consumed(RecordType.CONTENT, sample_content(version_number=1), 1, 3))
    v2 = to_version(consumed(RecordType.CONTENT, sample_content(version_number=2), 2, 3))

    plan = plan_writes(collapse([v2, v1]), {}, FETCHED_AT)

    assert plan.updates == []
    assert {document["_id"]: document["current"] for document in plan.inserts} == {
        "content:98487@v1": False,
        "content:98487@v2": True,
    }
    (head,) = plan.new_heads
    assert head.current_id == "content:98487@v2"
    assert head.partition == 3
    assert plan.changed_heads == []


def test_plan_flips_previous_current() -> None:
    v1 = to_version(consumed(RecordType.CONTENT, sample_content(version_number=1), 1))
    v2 = to_version(consumed(RecordType.CONTENT, sample_content(version_number=2), 2))
    heads = {head.entity_id: head for head in plan_writes(collapse([v1]), {}, FETCHED_AT).new_heads}

    plan = plan_writes(collapse([v2]), heads, FETCHED_AT)

    assert [document["_id"] for document in plan.inserts] == ["content:98487@v2"]
    assert len(plan.updates) == 1
    assert plan.updates[0]._filter == {"_id": "content:98487@v1"}
    assert plan.updates[0]._doc == {"$set": {"current": False}}
    assert [head.entity_id for head in plan.changed_heads] == ["content:98487"]


def test_plan_rewrites_newer_refetch() -> None:
    older = to_version(consumed(RecordType.CONTENT, sample_content(title="old"), 3))
    newer = to_version(consumed(RecordType.CONTENT, sample_content(title="new"), 8))
    heads = {
        head.entity_id: head for head in plan_writes(collapse([older]), {}, FETCHED_AT).new_heads
    }

    plan = plan_writes(collapse([newer]), heads, FETCHED_AT)

    assert plan.inserts == []
    (update,) = plan.updates
    assert update._filter == {"_id": "content:98487@v1"}
    fields: dict[str, Any] = update._doc["$set"]  # type: ignore[call-overload]
    assert fields["title"] == "new"
    assert fields["current"] is True


def test_plan_skips_stale_refetch() -> None:
    newer = to_version(consumed(RecordType.CONTENT, sample_content(), 8))
    older = to_version(consumed(RecordType.CONTENT, sample_content(), 3))
    heads = {
        head.entity_id: head for head in plan_writes(collapse([newer]), {}, FETCHED_AT).new_heads
    }

    plan = plan_writes(collapse([older]), heads, FETCHED_AT)

    assert plan.written == 0
    assert plan.skipped == 1
    assert plan.inserts == []
    assert plan.updates == []


# Handler against the MongoDB-protocol server, without Kafka

SOURCE = sample_content()["source_id"]
STREAM = stream_collection_name(SOURCE)


@pytest.fixture
def database(mongo_uri: str) -> Iterator[Database[dict[str, Any]]]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, tz_aware=True)
    name = f"test_stream_{uuid.uuid4().hex[:10]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


class SimulatedCrash(Exception):
    """Raised by ``CrashBeforeHeads`` in place of the first write to a heads collection."""


class CrashBeforeHeads(StreamWriter):
    """A stream writer that fails like a killed process right before writing heads.

    Setting ``crash`` to False makes it write normally, as a retry after a transient error.
    """

    crash = True

    def _insert(
        self,
        collection: Collection[dict[str, Any]],
        documents: list[dict[str, Any]],
        records: Mapping[str, ConsumedRecord],
    ) -> list[str]:
        if self.crash and collection.name.endswith(HEADS_SUFFIX):
            raise SimulatedCrash(collection.name)
        return super()._insert(collection, documents, records)

    def _bulk_write(
        self,
        collection: Collection[dict[str, Any]],
        operations: list[UpdateOne],
        records: Sequence[ConsumedRecord | None],
    ) -> None:
        if self.crash and collection.name.endswith(HEADS_SUFFIX):
            raise SimulatedCrash(collection.name)
        super()._bulk_write(collection, operations, records)


def content(page_id: str, version: int, offset: int, partition: int = 0) -> ConsumedRecord:
    value = sample_content(id=page_id, version_number=version, title=f"{page_id} v{version}")
    return consumed(RecordType.CONTENT, value, offset, partition)


def current_ids(database: Database[dict[str, Any]]) -> list[str]:
    return sorted(document["_id"] for document in database[STREAM].find({"current": True}))


def head_currents(database: Database[dict[str, Any]]) -> dict[str, str]:
    heads = database[STREAM + HEADS_SUFFIX].find()
    return {head["_id"]: head["current_id"] for head in heads}


def test_handler_writes_versions_and_heads(database: Database[dict[str, Any]]) -> None:
    writer = StreamWriter(database)

    result = writer.handle([content("1", 1, 0), content("1", 2, 1), content("2", 1, 2)])

    assert result.written == 3
    assert current_ids(database) == ["content:1@v2", "content:2@v1"]
    assert database[STREAM].count_documents({}) == 3
    head = database[STREAM + HEADS_SUFFIX].find_one({"_id": "content:1"})
    assert head is not None
    assert head["current_id"] == "content:1@v2"
    assert head["topic"] == "t"
    assert head["partition"] == 0
    assert sorted(head["versions"]) == ["v1", "v2"]


def test_crash_before_heads_then_redelivery(database: Database[dict[str, Any]]) -> None:
    StreamWriter(database).handle([content("1", 1, 0), content("2", 1, 1)])
    batch = [content("1", 2, 2), content("2", 3, 3), content("3", 1, 4), content("2", 2, 5)]
    with pytest.raises(SimulatedCrash):
        CrashBeforeHeads(database).handle(batch)

    # The restarted process receives the batch again, with one more record after it.
    restarted = StreamWriter(database)
    restarted.handle([*batch, content("1", 3, 6)])

    assert current_ids(database) == ["content:1@v3", "content:2@v3", "content:3@v1"]
    assert head_currents(database) == {
        "content:1": "content:1@v3",
        "content:2": "content:2@v3",
        "content:3": "content:3@v1",
    }
    assert database[STREAM].count_documents({}) == 7


def test_crash_of_new_entities_then_redelivery(database: Database[dict[str, Any]]) -> None:
    batch = [content("1", 1, 0), content("1", 2, 1), content("2", 1, 2)]
    with pytest.raises(SimulatedCrash):
        CrashBeforeHeads(database).handle(batch)

    # The batch comes back split in two, as when the restarted consumer polls fewer records.
    restarted = StreamWriter(database)
    restarted.handle(batch[:1])
    restarted.handle(batch[1:])

    assert current_ids(database) == ["content:1@v2", "content:2@v1"]
    assert head_currents(database) == {"content:1": "content:1@v2", "content:2": "content:2@v1"}


def test_retry_in_same_writer_after_failure(database: Database[dict[str, Any]]) -> None:
    writer = CrashBeforeHeads(database)
    with pytest.raises(SimulatedCrash):
        writer.handle([content("1", 1, 0)])
    # The same instance retries, as after a transient error, now with working head writes.
    writer.crash = False
    writer.handle([content("1", 1, 0), content("1", 2, 1)])

    assert current_ids(database) == ["content:1@v2"]
    assert head_currents(database) == {"content:1": "content:1@v2"}


def test_older_version_after_newer(database: Database[dict[str, Any]]) -> None:
    writer = StreamWriter(database)
    writer.handle([content("1", 2, 0)])

    result = writer.handle([content("1", 1, 1)])

    assert result.written == 1
    older = database[STREAM].find_one({"_id": "content:1@v1"})
    assert older is not None
    assert older["current"] is False
    assert older["title"] == "1 v1"
    assert current_ids(database) == ["content:1@v2"]
    assert head_currents(database) == {"content:1": "content:1@v2"}


def test_redelivered_batch_is_skipped(database: Database[dict[str, Any]]) -> None:
    writer = StreamWriter(database)
    batch = [content("1", 1, 0), content("1", 2, 1)]
    writer.handle(batch)

    result = writer.handle(batch)

    assert result.written == 0
    assert result.skipped == 2
    assert current_ids(database) == ["content:1@v2"]


def test_reassigned_partition_loads_heads(database: Database[dict[str, Any]]) -> None:
    first = StreamWriter(database)
    first.on_assign([("t", 0), ("t", 1)])
    first.handle([content("1", 1, 0, partition=0), content("2", 1, 0, partition=1)])
    first.on_revoke()

    # Partition 0 moves to a new instance, which continues from the stored heads.
    second = StreamWriter(database)
    second.on_assign([("t", 0)])
    second.handle([content("1", 2, 1, partition=0), content("1", 1, 0, partition=0)])
    assert current_ids(database) == ["content:1@v2", "content:2@v1"]

    # Partition 0 comes back to the first instance, whose earlier heads are stale.
    first.on_assign([("t", 0)])
    first.handle([content("1", 3, 2, partition=0)])

    assert current_ids(database) == ["content:1@v3", "content:2@v1"]
    assert head_currents(database) == {"content:1": "content:1@v3", "content:2": "content:2@v1"}
    assert database[STREAM].count_documents({}) == 4


def test_lost_partition_reassigned_reloads(database: Database[dict[str, Any]]) -> None:
    first = StreamWriter(database)
    first.handle([content("1", 1, 0)])
    # The first instance loses partition 0 without a revocation, as after a session timeout.
    StreamWriter(database).handle([content("1", 2, 1)])

    first.on_assign([("t", 0)])
    first.handle([content("1", 3, 2)])

    assert current_ids(database) == ["content:1@v3"]


def test_key_moved_to_other_partition(database: Database[dict[str, Any]]) -> None:
    StreamWriter(database).handle([content("1", 1, 0, partition=0), content("1", 2, 1)])

    # After a partition count change the same entity arrives on partition 1.
    writer = StreamWriter(database)
    writer.handle([content("1", 3, 0, partition=1), content("2", 1, 1, partition=1)])

    assert current_ids(database) == ["content:1@v3", "content:2@v1"]
    head = database[STREAM + HEADS_SUFFIX].find_one({"_id": "content:1"})
    assert head is not None
    assert head["partition"] == 1
    assert sorted(head["versions"]) == ["v1", "v2", "v3"]


def test_moved_key_with_older_version(database: Database[dict[str, Any]]) -> None:
    StreamWriter(database).handle([content("1", 2, 5, partition=0)])

    writer = StreamWriter(database)
    writer.handle([content("1", 1, 0, partition=1)])
    writer.handle([content("1", 2, 5, partition=1)])

    assert current_ids(database) == ["content:1@v2"]
    older = database[STREAM].find_one({"_id": "content:1@v1"})
    assert older is not None
    assert older["current"] is False


# Against Kafka and the MongoDB-protocol server


def stream_options(env: ConsumerEnv, name: str = "stream-writer") -> ConsumerOptions:
    return ConsumerOptions(
        name=name,
        group_id=env.group(name),
        topics=[env.topics.spaces, env.topics.content, env.topics.relationships],
        batch_size=50,
        batch_timeout_s=0.2,
        initial_backoff_s=0.1,
        max_backoff_s=1.0,
    )


def run_stream_writer(env: ConsumerEnv, expected_documents: int) -> list[dict[str, Any]]:
    """Run the stream writer until the collection has ``expected_documents``, then stop it."""
    database = env.database()
    writer = StreamWriter(database)
    writer.prepare()
    consumer = ConsumerThread(stream_options(env), writer, env.settings).start()
    collection = database[env.stream_collection]
    try:
        wait_until(
            lambda: collection.count_documents({}) >= expected_documents,
            f"{expected_documents} documents in {env.stream_collection}",
        )
    finally:
        status = consumer.stop()
    assert status == 0
    return sorted(collection.find(), key=lambda document: document["_id"])


def page(env: ConsumerEnv, page_id: str, version: int, **changes: Any) -> dict[str, Any]:
    return sample_content(source_id=env.source_id, id=page_id, version_number=version, **changes)


def test_writes_every_record_type(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    publisher.publish(RecordType.SPACE, {**sample_space(), "source_id": env.source_id})
    publisher.publish(RecordType.CONTENT, page(env, "10", 1))
    publisher.publish(RecordType.CONTENT, page(env, "10", 2))
    publisher.publish(
        RecordType.RELATIONSHIP, {**sample_relationship(), "source_id": env.source_id}
    )
    publisher.flush()

    documents = run_stream_writer(env, 4)

    by_type = {document["entity_type"]: document for document in documents}
    assert [document["_id"] for document in documents if document["entity_type"] == "content"] == [
        "content:10@v1",
        "content:10@v2",
    ]
    assert by_type["space"]["_id"].startswith("space:AIRBYTE@h")
    assert by_type["relationship"]["entity_id"].startswith("relationship:page:98487:links_to")
    content = by_type["content"]
    assert content["source_id"] == env.source_id
    assert content["job_id"] == sample_content()["job_id"]
    assert content["kafka"]["topic"] == env.topics.content
    assert content["kafka"]["offset"] >= 0
    assert content["ingested_at"] is not None
    assert content["first_ingested_at"] is not None
    assert content["labels"] == ["global:overview", "my:favourite"]


def test_indexes_created_at_start(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    publisher.publish(RecordType.CONTENT, page(env, "11", 1))
    publisher.flush()
    run_stream_writer(env, 1)

    indexes = env.database()[env.stream_collection].index_information()

    for field_name in STREAM_INDEXES:
        assert f"{field_name}_1" in indexes


def test_out_of_order_versions_keep_newer(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    publisher.publish(RecordType.CONTENT, page(env, "20", 2, title="Second"))
    publisher.publish(RecordType.CONTENT, page(env, "20", 1, title="First"))
    publisher.flush()

    documents = run_stream_writer(env, 2)

    current = {document["_id"]: document["current"] for document in documents}
    assert current == {"content:20@v1": False, "content:20@v2": True}
    head = env.database()[env.stream_collection + HEADS_SUFFIX].find_one({"_id": "content:20"})
    assert head is not None
    assert head["current_id"] == "content:20@v2"


def test_newer_version_takes_current(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    publisher.publish(RecordType.CONTENT, page(env, "21", 1))
    publisher.flush()
    run_stream_writer(env, 1)
    publisher.publish(RecordType.CONTENT, page(env, "21", 2))
    publisher.flush()

    documents = run_stream_writer(env, 2)

    current = {document["_id"]: document["current"] for document in documents}
    assert current == {"content:21@v1": False, "content:21@v2": True}


def test_stale_refetch_never_overwrites(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env(partitions=1)
    later = FETCHED_AT + timedelta(hours=1)
    publisher = RecordPublisher(env)
    publisher.publish(RecordType.CONTENT, page(env, "30", 4, title="Newer", fetched_at=later))
    publisher.flush()
    run_stream_writer(env, 1)
    # The same version fetched earlier arrives afterwards, as after a producer retry.
    publisher.publish(RecordType.CONTENT, page(env, "30", 4, title="Older", fetched_at=FETCHED_AT))
    publisher.flush()

    database = env.database()
    writer = StreamWriter(database)
    consumer = ConsumerThread(stream_options(env), writer, env.settings).start()
    wait_until(lambda: consumer.runtime.metrics.snapshot().skipped >= 1, "the stale record")
    consumer.stop()

    (document,) = list(database[env.stream_collection].find())
    assert document["title"] == "Newer"


def test_unchanged_space_is_one_document(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    space = {**sample_space(), "source_id": env.source_id}
    for day in range(3):
        publisher.publish(
            RecordType.SPACE,
            {
                **space,
                "job_id": f"2024010{day + 1}T000000000Z-0000000{day}",
                "fetched_at": FETCHED_AT + timedelta(days=day),
            },
        )
    publisher.publish(RecordType.SPACE, {**space, "name": "Renamed"})
    publisher.flush()

    documents = run_stream_writer(env, 2)

    assert len(documents) == 2
    assert sorted(document["name"] for document in documents) == ["Airbyte", "Renamed"]


def test_nul_in_body_is_sanitised(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    publisher.publish(RecordType.CONTENT, page(env, "40", 1, body_storage="<p>a\x00b</p>"))
    publisher.flush()

    (document,) = run_stream_writer(env, 1)

    assert document["body_storage"] == "<p>a\ufffdb</p>"


def test_dropped_collection_rebuilds(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    publisher.publish(RecordType.CONTENT, page(env, "50", 1))
    publisher.flush()
    run_stream_writer(env, 1)
    env.database()[env.stream_collection].drop()

    # A new group receives the topic again, as after a replay from the beginning.
    database = env.database()
    writer = StreamWriter(database)
    writer.prepare()
    options = stream_options(env, "second-writer")
    consumer = ConsumerThread(options, writer, env.settings).start()
    collection = database[env.stream_collection]
    wait_until(lambda: collection.count_documents({}) >= 1, "the rebuilt document")
    consumer.stop()

    assert [document["_id"] for document in collection.find()] == ["content:50@v1"]


class AssignmentRecorder(StreamWriter):
    """A stream writer that keeps every assignment the runtime passes to it."""

    def __init__(self, database: Database[dict[str, Any]]) -> None:
        super().__init__(database)
        self.assigned: list[tuple[str, int]] = []

    def on_assign(self, partitions: Sequence[tuple[str, int]]) -> None:
        self.assigned.extend(partitions)
        super().on_assign(partitions)


def test_runtime_passes_assignment(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    publisher.publish(RecordType.CONTENT, page(env, "60", 1))
    publisher.flush()
    writer = AssignmentRecorder(env.database())
    consumer = ConsumerThread(stream_options(env), writer, env.settings).start()
    collection = env.database()[env.stream_collection]
    try:
        wait_until(lambda: collection.count_documents({}) >= 1, "the first document")
    finally:
        status = consumer.stop()

    assert status == 0
    topics = [env.topics.spaces, env.topics.content, env.topics.relationships]
    assert sorted(writer.assigned) == sorted((topic, p) for topic in topics for p in range(2))
    assert [document["current"] for document in collection.find()] == [True]
