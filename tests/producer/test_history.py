"""Tests of the job history: reading the compacted topic and choosing the last good job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connections.kafka import common_config, producer_config
from connections.settings import Settings
from producer.history import (
    MAX_KEPT_ERRORS,
    HistoryReadError,
    JobError,
    JobState,
    format_jobs_table,
    last_successful_job,
    read_job_history,
)
from producer.publisher import KafkaPublisher
from schemas.catalogue import RecordType
from schemas.codec import SingleObjectCodec
from schemas.keys import job_key
from schemas.topics import Topics
from tests.producer.test_publisher import job_record, kafka_settings, unique_settings

__all__ = ["kafka_settings"]


def test_history_reads_latest_state(kafka_settings: Settings) -> None:
    topics = Topics(prefix=kafka_settings.kafka.topic_prefix)
    codec = SingleObjectCodec()
    publisher = KafkaPublisher(producer_config(kafka_settings), topics, codec)
    publisher.publish(RecordType.JOB, job_key("site_a", "job-1"), job_record("job-1", 1))
    publisher.publish(
        RecordType.JOB, job_key("site_a", "job-1"), job_record("job-1", 2, "succeeded")
    )
    publisher.publish(RecordType.JOB, job_key("site_a", "job-2"), job_record("job-2", 1))
    publisher.finish(timeout=60)

    jobs = read_job_history(
        common_config(kafka_settings.kafka, "history-test"), topics.job_history, codec, timeout=30
    )
    assert sorted(jobs) == ["job-1", "job-2"]
    assert jobs["job-1"]["status"] == "succeeded"
    assert jobs["job-1"]["sequence"] == 2
    assert jobs["job-2"]["status"] == "running"


def test_history_empty_topic(kafka_settings: Settings) -> None:
    topics = Topics(prefix=kafka_settings.kafka.topic_prefix)
    jobs = read_job_history(
        common_config(kafka_settings.kafka, "history-test"),
        topics.job_history,
        SingleObjectCodec(),
        timeout=30,
    )
    assert jobs == {}


def test_history_missing_topic_raises(kafka_bootstrap: str) -> None:
    settings = unique_settings(kafka_bootstrap)
    topics = Topics(prefix=settings.kafka.topic_prefix)
    with pytest.raises(HistoryReadError, match="does not exist"):
        read_job_history(
            common_config(settings.kafka, "history-test"),
            topics.job_history,
            SingleObjectCodec(),
            timeout=10,
        )


def test_last_successful_job_picks_newest_succeeded() -> None:
    jobs = [
        job_record("20240101T000000000Z-aaaa", 2, "succeeded"),
        job_record("20240102T000000000Z-bbbb", 2, "partial"),
        job_record("20240103T000000000Z-cccc", 2, "succeeded"),
        job_record("20240104T000000000Z-dddd", 1, "running"),
    ]
    other = job_record("20240105T000000000Z-eeee", 2, "succeeded")
    other["source_id"] = "site_b"
    found = last_successful_job([*jobs, other], "site_a")
    assert found is not None
    assert found["job_id"] == "20240103T000000000Z-cccc"


def test_last_successful_job_none() -> None:
    assert last_successful_job([job_record("j", 1, "failed")], "site_a") is None


def test_job_state_sequence_increases() -> None:
    state = JobState(
        job_id="job-1",
        source_id="site_a",
        mode="full",
        started_at=datetime(2024, 5, 1, tzinfo=UTC),
        window_start=None,
        window_end=datetime(2024, 5, 1, tzinfo=UTC),
        previous_job_id=None,
        producer_version="test",
    )
    first = state.to_record()
    state.count("page", 3)
    state.add_error(JobError(unit="space:X", message="denied", status=403))
    state.status = "partial"
    second = state.to_record()
    assert first["sequence"] == 1
    assert second["sequence"] == 2
    assert second["counts"] == {"page": 3}
    assert second["errors"][0]["status"] == 403
    codec = SingleObjectCodec()
    decoded = codec.decode(codec.encode(RecordType.JOB, second), RecordType.JOB)
    assert decoded["status"] == "partial"


def test_jobs_table_newest_first() -> None:
    older = job_record("20240101T000000000Z-aaaa", 2, "succeeded")
    newer = job_record("20240102T000000000Z-bbbb", 2, "partial")
    newer["counts"] = {"page": 5, "space": 1}
    newer["finished_at"] = datetime(2024, 5, 1, 12, tzinfo=UTC) + timedelta(minutes=3)
    table = format_jobs_table([older, newer], limit=10).splitlines()
    assert table[0].split()[:3] == ["JOB", "ID", "SOURCE"]
    assert table[1].startswith("20240102T000000000Z-bbbb")
    assert "partial" in table[1]
    assert " 6 " in table[1]
    assert table[2].startswith("20240101T000000000Z-aaaa")
    assert len(format_jobs_table([older, newer], limit=1).splitlines()) == 2


def test_job_errors_capped_fatal_kept() -> None:
    state = JobState(
        job_id="20240101T000000000Z-00000001",
        source_id="cloud",
        mode="full",
        started_at=datetime(2024, 1, 1, tzinfo=UTC),
        window_start=None,
        window_end=datetime(2024, 1, 1, tzinfo=UTC),
        previous_job_id=None,
        producer_version="0.0.0",
    )
    for number in range(MAX_KEPT_ERRORS + 50):
        state.add_error(JobError(unit=f"space:ENG:page:{number}", message="HTTP 404"))
    state.add_error(JobError(unit="delivery", message="not acknowledged", fatal=True))

    record = state.to_record()

    errors = record["errors"]
    assert len(errors) == MAX_KEPT_ERRORS + 2
    assert errors[MAX_KEPT_ERRORS]["fatal"] is True
    assert errors[-1]["unit"] == "job"
    assert "50 more non-fatal errors" in errors[-1]["message"]
    assert SingleObjectCodec().encode(RecordType.JOB, record)
