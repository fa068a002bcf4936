"""The job-history materialiser: the compacted job-history topic into ``job_history``.

``confluence-consumer job-history`` keeps one document per job (``_id`` = job id) with the
job's latest state: the Job record's fields, ``kafka`` (topic, partition, offset,
timestamp), ``ingested_at`` and ``first_ingested_at``. A record is written only when its
``sequence`` is higher than the stored one, so a replayed older state never regresses a
newer one, and rebuilding from an empty collection gives the same documents. A tombstone
(a job key without a value) deletes the job's document.

The collection contains one document per job, far fewer than the stream collections, so the
stored sequences of a batch are read with one ``$in`` query.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DeleteOne, UpdateOne
from pymongo.database import Database

from connections.mongo import bulk_write
from consumer.errors import PoisonRecordError
from consumer.runtime import ConsumedRecord, HandleResult
from consumer.stream import sanitise
from schemas import keys

log = logging.getLogger(__name__)

DEFAULT_GROUP = "confluence-job-history"
COLLECTION = "job_history"
JOB_INDEXES = ("source_id", "status", "started_at")


def job_id_of(record: ConsumedRecord) -> str:
    """Return the job id of a Job record or of a tombstone's key."""
    if not record.tombstone:
        return str(record.value["job_id"])
    try:
        parsed = keys.parse_key(record.key or "")
    except ValueError as error:
        raise PoisonRecordError(record, f"tombstone without a job key: {error}") from error
    if parsed.kind != "job" or len(parsed.parts) != 1:
        raise PoisonRecordError(
            record, f"tombstone key {record.key!r} is not a job key '<source id>:job:<job id>'"
        )
    return parsed.parts[0]


class JobHistoryWriter:
    """Batch handler of ``confluence-consumer job-history``."""

    def __init__(self, database: Database[dict[str, Any]]) -> None:
        self.collection = database[COLLECTION]

    def prepare(self) -> None:
        """Create the indexes of ``job_history``."""
        for field_name in JOB_INDEXES:
            self.collection.create_index([(field_name, ASCENDING)], name=f"{field_name}_1")

    def handle(self, batch: Sequence[ConsumedRecord]) -> HandleResult:
        # Records of one job share a key, so they arrive in order. A tombstone after the
        # job's states therefore wins, and among states the highest sequence wins.
        newest: dict[str, ConsumedRecord] = {}
        for record in batch:
            job_id = job_id_of(record)
            known = newest.get(job_id)
            if known is None or _newer(record, known):
                newest[job_id] = record
        if not newest:
            return HandleResult(written=0, skipped=len(batch))

        job_ids = list(newest)
        query = {"_id": job_ids[0]} if len(job_ids) == 1 else {"_id": {"$in": job_ids}}
        stored = {
            document["_id"]: document.get("sequence", -1)
            for document in self.collection.find(query, {"sequence": 1})
        }
        now = datetime.now(UTC)
        operations: list[UpdateOne | DeleteOne] = []
        for job_id, record in newest.items():
            if record.tombstone:
                operations.append(DeleteOne({"_id": job_id}))
                continue
            sequence = record.value["sequence"]
            if job_id in stored and stored[job_id] >= sequence:
                continue
            operations.append(_upsert(job_id, record, now))
        if operations:
            bulk_write(self.collection, operations, ordered=False)
        written = len(operations)
        return HandleResult(written=written, skipped=len(batch) - written)


def _newer(record: ConsumedRecord, known: ConsumedRecord) -> bool:
    if record.tombstone or known.tombstone:
        return record.offset > known.offset
    if record.value["sequence"] != known.value["sequence"]:
        return bool(record.value["sequence"] > known.value["sequence"])
    return record.offset > known.offset


def _upsert(job_id: str, record: ConsumedRecord, now: datetime) -> UpdateOne:
    document = sanitise(record.value)
    document["kafka"] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
    }
    document["ingested_at"] = now
    return UpdateOne(
        {"_id": job_id},
        {"$set": document, "$setOnInsert": {"first_ingested_at": now}},
        upsert=True,
    )
