"""Smoke tests of the contract against the real Kafka broker and MongoDB-protocol server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient

from connections.kafka import admin_config, consumer_config, producer_config
from connections.mongo import create_client, get_database
from connections.settings import Settings, load_settings
from connections.topics import ensure_topics, fetch_topic_config
from schemas.catalogue import RecordType
from schemas.codec import SingleObjectCodec
from schemas.keys import content_key, job_key
from schemas.topics import Topics
from tests.test_codec import sample_content, sample_job

# Upper bound for waiting on the broker; a healthy broker responds within a second or two.
POLL_DEADLINE_SECONDS = 60.0


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, mongo_uri: str) -> Settings:
    run = uuid.uuid4().hex[:10]
    return load_settings(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC_PREFIX": f"smoke-{run}",
            "MONGODB_URI": mongo_uri,
            "MONGODB_DATABASE": f"smoke_{run}",
        }
    )


@pytest.fixture(scope="module")
def topics(settings: Settings) -> Iterator[Topics]:
    admin = AdminClient(admin_config(settings, "smoke-admin"))
    topics = Topics(prefix=settings.kafka.topic_prefix)
    actions = ensure_topics(admin, topics.specs(), partitions=2, replication_factor=1)
    assert [action.action for action in actions] == ["created"] * len(actions)
    yield topics
    names = [spec.name for spec in topics.specs()]
    for future in admin.delete_topics(names, operation_timeout=30).values():
        future.result()


def produce_one(settings: Settings, topic: str, key: str, value: bytes) -> Message:
    delivered: list[tuple[KafkaError | None, Message]] = []
    producer = Producer(producer_config(settings, "smoke-producer"))
    producer.produce(
        topic, value=value, key=key, on_delivery=lambda error, msg: delivered.append((error, msg))
    )
    remaining = producer.flush(POLL_DEADLINE_SECONDS)
    assert remaining == 0
    ((error, message),) = delivered
    assert error is None, error
    return message


def consume_one(settings: Settings, topic: str) -> Message:
    consumer = Consumer(consumer_config(settings, f"smoke-{uuid.uuid4().hex[:8]}", "smoke"))
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + POLL_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            consumer.store_offsets(message)
            consumer.commit(asynchronous=False)
            return message
        pytest.fail(f"no message arrived on {topic} within {POLL_DEADLINE_SECONDS:g} s")
    finally:
        consumer.close()


def test_content_record_round_trip(settings: Settings, topics: Topics) -> None:
    codec = SingleObjectCodec()
    record = sample_content()
    key = content_key(record["source_id"], record["id"])

    delivered = produce_one(settings, topics.content, key, codec.encode(RecordType.CONTENT, record))
    received = consume_one(settings, topics.content)

    assert received.key() == key.encode()
    assert received.partition() == delivered.partition()
    assert received.offset() == delivered.offset()
    value = received.value()
    assert value is not None
    assert value[:2] == b"\xc3\x01"
    assert codec.decode(value, expected=RecordType.CONTENT) == record


def test_job_record_on_compacted_topic(settings: Settings, topics: Topics) -> None:
    codec = SingleObjectCodec()
    record = sample_job()
    key = job_key(record["source_id"], record["job_id"])

    produce_one(settings, topics.job_history, key, codec.encode(RecordType.JOB, record))
    received = consume_one(settings, topics.job_history)

    value = received.value()
    assert value is not None
    assert codec.decode(value, expected=RecordType.JOB) == record


def test_job_history_topic_is_compacted(settings: Settings, topics: Topics) -> None:
    admin = AdminClient(admin_config(settings, "smoke-admin"))

    config = fetch_topic_config(admin, topics.job_history)

    assert config["cleanup.policy"] == "compact"
    assert fetch_topic_config(admin, topics.content)["cleanup.policy"] == "delete"


def test_mongo_insert_upsert_read(settings: Settings) -> None:
    client = create_client(settings, "confluence-stream-smoke")
    database = get_database(client, settings)
    collection = database["source_smoke_stream"]
    document_id = content_key("smoke", "98487")
    try:
        collection.insert_one({"_id": document_id, "title": "Overview", "version": 1})
        collection.update_one(
            {"_id": document_id},
            {"$set": {"title": "Overview (edited)", "version": 2}},
            upsert=True,
        )
        collection.update_one(
            {"_id": content_key("smoke", "98500")},
            {"$set": {"title": "New page", "version": 1}, "$setOnInsert": {"first_seen": 1}},
            upsert=True,
        )

        stored: dict[str, Any] | None = collection.find_one({"_id": document_id})
        inserted: dict[str, Any] | None = collection.find_one(
            {"_id": content_key("smoke", "98500")}
        )

        assert stored == {"_id": document_id, "title": "Overview (edited)", "version": 2}
        assert inserted is not None
        assert inserted["first_seen"] == 1
        assert collection.count_documents({}) == 2
    finally:
        client.drop_database(database.name)
        client.close()
