"""Job history: read the compacted job-history topic and build Job records.

The topic contains full Job records keyed by ``{source_id}:job:{job_id}``; the record with
the highest ``sequence`` per key is a job's latest state. ``read_job_history`` reads the
whole topic the way a table is materialised from a compacted topic: assign every
partition, start at the beginning, and stop at the high-water marks taken at the start.
No consumer group offsets are committed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from schemas.catalogue import RecordType
from schemas.codec import Codec
from schemas.errors import CodecError

log = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT_SECONDS = 60.0
_POLL_SECONDS = 1.0
_LEADER_WAIT_SECONDS = 0.2
_LEADER_ERRORS = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE})
# Non-fatal errors kept in full on a Job record. Later ones are only counted, so the
# state and the record stay small when every item of a large site fails.
MAX_KEPT_ERRORS = 200


class HistoryReadError(Exception):
    """The job-history topic could not be read to its end."""


def read_job_history(
    consumer_config: Mapping[str, Any],
    topic: str,
    codec: Codec,
    *,
    timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
) -> dict[str, dict[str, Any]]:
    """Return the latest Job record per job id from ``topic``, read to its end.

    ``consumer_config`` needs only the connection properties; group and offset settings
    are set here. Raises ``HistoryReadError`` when the topic is missing or the end is not
    reached within ``timeout`` seconds. Records that do not decode are logged and skipped.
    """
    config = dict(consumer_config)
    config.update(
        {
            # A group id is required by the client even though offsets are never committed.
            "group.id": f"confluence-producer-history-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "isolation.level": "read_committed",
        }
    )
    consumer = Consumer(config)
    try:
        return _read_to_end(consumer, topic, codec, timeout)
    finally:
        consumer.close()


def _read_to_end(
    consumer: Consumer, topic: str, codec: Codec, timeout: float
) -> dict[str, dict[str, Any]]:
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as error:
        raise HistoryReadError(
            f"cannot read the metadata of job-history topic {topic}: {error}; check "
            f"KAFKA_BOOTSTRAP_SERVERS"
        ) from error
    topic_metadata = metadata.topics.get(topic)
    if topic_metadata is None or topic_metadata.error is not None or not topic_metadata.partitions:
        raise HistoryReadError(
            f"job-history topic {topic} does not exist; create the topics with "
            f"'confluence-topics create' (prefix from KAFKA_TOPIC_PREFIX)"
        )
    deadline = time.monotonic() + timeout
    ends: dict[int, int] = {}
    assignments: list[TopicPartition] = []
    for partition in sorted(topic_metadata.partitions):
        low, high = _watermarks(consumer, TopicPartition(topic, partition), deadline)
        if high > low:
            ends[partition] = high
            assignments.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
    jobs: dict[str, dict[str, Any]] = {}
    if not assignments:
        return jobs
    consumer.assign(assignments)
    while ends:
        if time.monotonic() > deadline:
            raise HistoryReadError(
                f"reading job-history topic {topic} did not reach the end within {timeout:.0f} s; "
                f"partitions still unread: {sorted(ends)}"
            )
        message = consumer.poll(_POLL_SECONDS)
        if message is None:
            continue
        failure = message.error()
        if failure is not None:
            if failure.code() == KafkaError._PARTITION_EOF:
                continue
            raise HistoryReadError(f"reading job-history topic {topic} failed: {failure.str()}")
        partition = message.partition()
        offset = message.offset()
        if partition is not None and offset is not None and offset + 1 >= ends.get(partition, 0):
            ends.pop(partition, None)
        _apply(jobs, message.value(), topic, partition, offset, codec)
    return jobs


def _watermarks(consumer: Consumer, partition: TopicPartition, deadline: float) -> tuple[int, int]:
    """Return (low, high) offsets, waiting while a new topic's partition has no leader yet."""
    while True:
        remaining = max(deadline - time.monotonic(), 0.1)
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=remaining, cached=False)
            return int(low), int(high)
        except KafkaException as error:
            code = error.args[0].code() if error.args else None
            if code not in _LEADER_ERRORS or time.monotonic() > deadline:
                raise HistoryReadError(
                    f"cannot read the offsets of {partition.topic} partition "
                    f"{partition.partition}: {error}; check that the broker is healthy"
                ) from error
            time.sleep(_LEADER_WAIT_SECONDS)


def _apply(
    jobs: dict[str, dict[str, Any]],
    value: bytes | None,
    topic: str,
    partition: int | None,
    offset: int | None,
    codec: Codec,
) -> None:
    if value is None:
        return  # A tombstone; the job was deleted from the history.
    try:
        record = codec.decode(value, RecordType.JOB)
    except CodecError as error:
        log.warning(
            "skipped undecodable job record topic=%s partition=%s offset=%s error=%s",
            topic,
            partition,
            offset,
            error,
        )
        return
    job_id = str(record["job_id"])
    known = jobs.get(job_id)
    if known is None or int(record["sequence"]) > int(known["sequence"]):
        jobs[job_id] = record


def last_successful_job(
    jobs: Iterable[Mapping[str, Any]], source_id: str
) -> Mapping[str, Any] | None:
    """Return the latest succeeded job of ``source_id`` (by job id, which sorts by start)."""
    succeeded = [
        job for job in jobs if job["source_id"] == source_id and job["status"] == "succeeded"
    ]
    return max(succeeded, key=lambda job: str(job["job_id"]), default=None)


@dataclass
class JobError:
    """One error of a job, as it goes into the Job record."""

    unit: str
    message: str
    method: str | None = None
    url: str | None = None
    status: int | None = None
    excerpt: str | None = None
    fatal: bool = False
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_record(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "method": self.method,
            "url": self.url,
            "status": self.status,
            "message": self.message,
            "excerpt": self.excerpt,
            "fatal": self.fatal,
            "occurred_at": self.occurred_at,
        }


@dataclass
class JobState:
    """State of the running job; ``to_record`` returns the next full Job record."""

    job_id: str
    source_id: str
    mode: str
    started_at: datetime
    window_start: datetime | None
    window_end: datetime
    previous_job_id: str | None
    producer_version: str
    status: str = "running"
    finished_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[JobError] = field(default_factory=list)
    errors_not_kept: int = 0
    api_calls: int = 0
    retries: int = 0
    rate_limit_waits: int = 0
    rate_limit_wait_seconds: float = 0.0
    sequence: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, record_kind: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[record_kind] = self.counts.get(record_kind, 0) + amount

    def add_error(self, error: JobError) -> None:
        """Keep ``error`` for the Job record; past ``MAX_KEPT_ERRORS`` only fatal ones."""
        with self._lock:
            if error.fatal or len(self.errors) < MAX_KEPT_ERRORS:
                self.errors.append(error)
            else:
                self.errors_not_kept += 1

    def to_record(self) -> dict[str, Any]:
        """Return the job as a Job record with the next sequence number."""
        with self._lock:
            self.sequence += 1
            return {
                "job_id": self.job_id,
                "source_id": self.source_id,
                "sequence": self.sequence,
                "status": self.status,
                "mode": self.mode,
                "window_start": self.window_start,
                "window_end": self.window_end,
                "previous_job_id": self.previous_job_id,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "counts": dict(self.counts),
                "api_calls": self.api_calls,
                "retries": self.retries,
                "rate_limit_waits": self.rate_limit_waits,
                "rate_limit_wait_seconds": self.rate_limit_wait_seconds,
                "errors": self._error_records(),
                "producer_version": self.producer_version,
            }

    def _error_records(self) -> list[dict[str, Any]]:
        records = [error.to_record() for error in self.errors]
        if self.errors_not_kept:
            summary = JobError(
                unit="job",
                message=(
                    f"{self.errors_not_kept} more non-fatal errors after the first "
                    f"{MAX_KEPT_ERRORS} are not listed here; the producer's log has each one"
                ),
            )
            records.append(summary.to_record())
        return records


def _time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "-"


def format_jobs_table(
    jobs: Iterable[Mapping[str, Any]], *, source_id: str | None = None, limit: int = 20
) -> str:
    """Return the latest ``limit`` jobs as a text table, newest first."""
    selected = [job for job in jobs if source_id is None or job["source_id"] == source_id]
    selected.sort(key=lambda job: str(job["job_id"]), reverse=True)
    header = (
        "JOB ID",
        "SOURCE",
        "STATUS",
        "MODE",
        "STARTED (UTC)",
        "FINISHED (UTC)",
        "RECORDS",
        "ERRORS",
    )
    rows = [header]
    for job in selected[:limit]:
        counts = job.get("counts") or {}
        rows.append(
            (
                str(job["job_id"]),
                str(job["source_id"]),
                str(job["status"]),
                str(job["mode"]),
                _time(job.get("started_at")),
                _time(job.get("finished_at")),
                str(sum(int(value) for value in counts.values())),
                str(len(job.get("errors") or [])),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)
