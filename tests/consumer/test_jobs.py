"""Tests of the job-history materialiser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from consumer.errors import PoisonRecordError
from consumer.jobs import COLLECTION, JobHistoryWriter, job_id_of
from consumer.runtime import ConsumedRecord, ConsumerOptions
from schemas.catalogue import RecordType
from tests.consumer.conftest import (
    ConsumerEnv,
    ConsumerThread,
    RecordPublisher,
    sample_job,
    wait_until,
)

INGESTION_FIELDS = ("ingested_at", "first_ingested_at")


def tombstone(key: str | None) -> ConsumedRecord:
    return ConsumedRecord("t", 0, 0, key, {}, RecordType.JOB, 0, tombstone=True)


def test_job_id_of_tombstone_key() -> None:
    assert job_id_of(tombstone("src1:job:20240101T000000000Z-abcdef01")) == (
        "20240101T000000000Z-abcdef01"
    )


def test_job_id_of_foreign_key_is_poison() -> None:
    with pytest.raises(PoisonRecordError, match="not a job key"):
        job_id_of(tombstone("src1:content:12"))


def job(env: ConsumerEnv, job_id: str, sequence: int, status: str) -> dict[str, Any]:
    record = sample_job()
    record.update(source_id=env.source_id, job_id=job_id, sequence=sequence, status=status)
    if status == "running":
        record.update(finished_at=None)
    return record


def job_options(env: ConsumerEnv, name: str) -> ConsumerOptions:
    return ConsumerOptions(
        name=name,
        group_id=env.group(name),
        topics=[env.topics.job_history],
        batch_size=50,
        batch_timeout_s=0.2,
        deliver_tombstones=True,
    )


def materialise(env: ConsumerEnv, name: str, until: Callable[[Any], bool]) -> list[dict[str, Any]]:
    """Run the materialiser as group ``name`` until ``until(collection)`` holds."""
    database = env.database()
    writer = JobHistoryWriter(database)
    writer.prepare()
    consumer = ConsumerThread(job_options(env, name), writer, env.settings).start()
    collection = database[COLLECTION]
    try:
        wait_until(lambda: until(collection), f"the job history of group {name}")
    finally:
        status = consumer.stop()
    assert status == 0
    return sorted(collection.find(), key=lambda document: document["_id"])


def without_ingestion(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {name: value for name, value in document.items() if name not in INGESTION_FIELDS}
        for document in documents
    ]


def test_latest_state_per_job(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    publisher.publish(RecordType.JOB, job(env, "job-a", 1, "running"))
    publisher.publish(RecordType.JOB, job(env, "job-a", 2, "succeeded"))
    publisher.publish(RecordType.JOB, job(env, "job-b", 1, "running"))
    # An older state published again, as by a producer that retried: it must not win.
    publisher.publish(RecordType.JOB, job(env, "job-a", 1, "running"))
    publisher.flush()

    documents = materialise(env, "jobs", lambda collection: collection.count_documents({}) >= 2)

    by_id = {document["_id"]: document for document in documents}
    assert sorted(by_id) == ["job-a", "job-b"]
    assert by_id["job-a"]["status"] == "succeeded"
    assert by_id["job-a"]["sequence"] == 2
    assert by_id["job-b"]["status"] == "running"
    assert by_id["job-a"]["counts"] == sample_job()["counts"]
    assert by_id["job-a"]["errors"][0]["status"] == 504


def test_rebuild_gives_same_documents(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    for number in range(5):
        publisher.publish(RecordType.JOB, job(env, f"job-{number}", 1, "running"))
        publisher.publish(RecordType.JOB, job(env, f"job-{number}", 2, "partial"))
    publisher.flush()

    def all_finished(collection: Any) -> bool:
        return bool(collection.count_documents({"status": "partial"}) >= 5)

    first = materialise(env, "jobs-first", all_finished)
    env.database()[COLLECTION].drop()
    rebuilt = materialise(env, "jobs-rebuild", all_finished)

    assert len(first) == 5
    assert without_ingestion(rebuilt) == without_ingestion(first)


def test_tombstone_deletes_job(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env(partitions=1)
    publisher = RecordPublisher(env)
    publisher.publish(RecordType.JOB, job(env, "job-gone", 1, "running"))
    publisher.publish(RecordType.JOB, job(env, "job-kept", 1, "running"))
    publisher.publish_raw(env.topics.job_history, f"{env.source_id}:job:job-gone", None)
    publisher.flush()

    def tombstone_applied(collection: Any) -> bool:
        ids = [document["_id"] for document in collection.find()]
        return ids == ["job-kept"]

    documents = materialise(env, "jobs-tombstone", tombstone_applied)

    assert [document["_id"] for document in documents] == ["job-kept"]
