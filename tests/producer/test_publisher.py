"""Tests of the Kafka publisher against the real broker, and shared Kafka helpers.

``kafka_settings`` gives each test its own topic prefix with the contract's topics
created (one partition each) and deleted afterwards; ``read_topic`` reads a topic from
the beginning to its high-water marks and decodes every record.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from connections.kafka import admin_config, common_config, producer_config
from connections.settings import Settings, load_settings
from connections.topics import ensure_topics
from producer.publisher import (
    DeliveryError,
    DryRunPublisher,
    KafkaPublisher,
    RecordTooLargeError,
)
from schemas.catalogue import RecordType
from schemas.codec import SingleObjectCodec
from schemas.errors import RecordValidationError
from schemas.keys import job_key, parse_key
from schemas.topics import Topics

READ_DEADLINE_SECONDS = 60.0


def unique_settings(kafka_bootstrap: str) -> Settings:
    return load_settings(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC_PREFIX": f"crawltest-{uuid.uuid4().hex[:10]}",
        }
    )


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> Iterator[Settings]:
    """Settings with a fresh topic prefix whose data topics exist for this test only."""
    settings = unique_settings(kafka_bootstrap)
    admin = AdminClient(admin_config(settings, "crawl-test-admin"))
    topics = Topics(prefix=settings.kafka.topic_prefix)
    specs = [spec for spec in topics.specs() if not spec.dead_letter]
    ensure_topics(admin, specs, partitions=1, replication_factor=1)
    yield settings
    for future in admin.delete_topics([spec.name for spec in specs], operation_timeout=30).values():
        future.result()


@dataclass
class ReadRecord:
    key: str
    value: dict[str, Any]
    partition: int
    offset: int


def read_topic(settings: Settings, topic: str, record_type: RecordType) -> list[ReadRecord]:
    """Return every record of ``topic`` in offset order per partition, decoded."""
    config = common_config(settings.kafka, "crawl-test-reader")
    config.update({"group.id": f"crawl-test-{uuid.uuid4().hex}", "enable.auto.commit": False})
    consumer = Consumer(config)
    codec = SingleObjectCodec()
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        partitions = sorted(metadata.topics[topic].partitions)
        ends: dict[int, int] = {}
        for partition in partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            if high > 0:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        records: list[ReadRecord] = []
        deadline = time.monotonic() + READ_DEADLINE_SECONDS
        while ends and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            partition = message.partition()
            offset = message.offset()
            assert partition is not None and offset is not None
            key = message.key()
            value = message.value()
            assert isinstance(key, bytes) and isinstance(value, bytes)
            records.append(
                ReadRecord(key.decode(), codec.decode(value, record_type), partition, offset)
            )
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
        assert not ends, f"topic {topic} was not read to its end: {ends}"
        return records
    finally:
        consumer.close()


def job_record(job_id: str, sequence: int, status: str = "running") -> dict[str, Any]:
    started = datetime(2024, 5, 1, 12, tzinfo=UTC)
    return {
        "job_id": job_id,
        "source_id": "site_a",
        "sequence": sequence,
        "status": status,
        "mode": "full",
        "window_start": None,
        "window_end": started,
        "previous_job_id": None,
        "started_at": started,
        "finished_at": None,
        "counts": {},
        "api_calls": 0,
        "retries": 0,
        "rate_limit_waits": 0,
        "rate_limit_wait_seconds": 0.0,
        "errors": [],
        "producer_version": "test",
    }


def test_publisher_delivers_every_record(kafka_settings: Settings) -> None:
    topics = Topics(prefix=kafka_settings.kafka.topic_prefix)
    publisher = KafkaPublisher(producer_config(kafka_settings), topics, SingleObjectCodec())
    for sequence in range(1, 51):
        publisher.publish(
            RecordType.JOB, job_key("site_a", f"job-{sequence:03d}"), job_record("j", sequence)
        )
    publisher.finish(timeout=60)
    assert publisher.stats.produced == 50
    assert publisher.stats.acknowledged == 50
    assert publisher.stats.failed == 0
    records = read_topic(kafka_settings, topics.job_history, RecordType.JOB)
    assert [record.value["sequence"] for record in records] == list(range(1, 51))
    assert parse_key(records[0].key).kind == "job"


def test_publisher_missing_topic_fails_finish(kafka_bootstrap: str) -> None:
    # No topics exist under this prefix and the broker does not create topics on demand.
    settings = unique_settings(kafka_bootstrap)
    topics = Topics(prefix=settings.kafka.topic_prefix)
    config = producer_config(settings, overrides={"delivery.timeout.ms": 3000})
    publisher = KafkaPublisher(config, topics, SingleObjectCodec())
    publisher.publish(RecordType.JOB, job_key("site_a", "job-1"), job_record("job-1", 1))
    with pytest.raises(DeliveryError, match="1 of 1 records failed delivery") as caught:
        publisher.finish(timeout=30)
    assert publisher.stats.failed == 1
    assert publisher.stats.acknowledged == 0
    assert topics.job_history in caught.value.failures[0]


def test_publisher_invalid_record_raises() -> None:
    topics = Topics(prefix="unused")
    publisher = DryRunPublisher(topics, SingleObjectCodec())
    record = job_record("job-1", 1)
    record["status"] = "sleeping"
    with pytest.raises(RecordValidationError, match="status"):
        publisher.publish(RecordType.JOB, job_key("site_a", "job-1"), record)
    assert publisher.stats.produced == 0


def test_dry_run_publisher_counts() -> None:
    topics = Topics(prefix="unused")
    publisher = DryRunPublisher(topics, SingleObjectCodec())
    publisher.publish(RecordType.JOB, job_key("site_a", "job-1"), job_record("job-1", 1))
    publisher.finish()
    assert publisher.stats.produced == 1
    assert publisher.stats.produced_by_topic == {topics.job_history: 1}


def test_publisher_oversized_record_rejected(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap)
    topics = Topics(prefix=settings.kafka.topic_prefix)
    config = producer_config(settings, overrides={"message.max.bytes": 2000})
    publisher = KafkaPublisher(config, topics, SingleObjectCodec())
    record = job_record("job-1", 1)
    record["producer_version"] = "x" * 5000
    with pytest.raises(RecordTooLargeError, match="job-1"):
        publisher.publish(RecordType.JOB, job_key("site_a", "job-1"), record)
    assert publisher.stats.produced == 0
