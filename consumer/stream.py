"""The stream writer: every space, content and relationship record into ``source_{id}_stream``.

``confluence-consumer stream`` consumes ``{prefix}.spaces``, ``{prefix}.content`` and
``{prefix}.relationships``. Structure listings are not written: they are chunks of a
space's page tree, read by the relationships consumer, and every fact they carry reaches
the stream as relationship records.

Documents: one per record version, with a deterministic string ``_id``
``{entity id}@{version key}``, so replays and retries rewrite the same document.

===============  ==============================================  ===========================
record           entity id                                       version key
===============  ==============================================  ===========================
content          ``content:{id}``                                ``v{version_number}``
space            ``space:{key}``                                 ``h`` + 16 hex digits of the
                                                                 SHA-256 of the record without
                                                                 ``job_id`` and ``fetched_at``
relationship     ``relationship:{from}:{relation}:{to}``         same hash over the edge
                 (the Kafka key without the source id)           without ``job_id``,
                                                                 ``derived_at``, ``derived_from``
===============  ==============================================  ===========================

So a space fetched unchanged by many jobs is one document, and a changed space is a new
one. A document contains the record's fields at the top level, plus ``entity_type``,
``entity_id``, ``version_key``, ``order``, ``current``, ``kafka`` (topic, partition,
offset, timestamp), ``ingested_at`` (last write) and ``first_ingested_at``.

Version guard: records of one entity are ordered by ``order``, a list compared
element-wise: content ``[version_number, fetched_at ms, offset]``, spaces
``[fetched_at ms, offset]``, relationships ``[content_version or -1, derived_at ms,
offset]``. A record whose order is not higher than the stored order of its version
document is skipped, so a replayed older fetch never overwrites a newer one. Per entity
exactly one version document has ``current: true``: the one with the highest order, even
when versions arrive out of order (version 2, then version 1 keeps version 2 current).

The orders live in ``source_{id}_stream_heads`` (``_id`` = entity id; ``current_id``,
``current_order``, ``versions`` mapping version key to order, and the ``topic`` and
``partition`` its records were read from). It is emptied when the writer finds the stream
collection empty, so dropping the stream collection and replaying the topics rebuilds both.

Why the writes look the way they do: FerretDB 1.24 with its SQLite backend runs every
update or upsert as a transaction of its own, while ``insert_many(ordered=False)`` writes
a batch at once, and a ``$in`` filter on ``_id`` scans the whole collection. Medians of
``bench/sink_throughput.py`` (3 runs of 1,000 content records of 2 KB, batches of 500, on
a shared and loaded 2-core machine, two sessions): bulk upserts 46 and 66 documents/s,
``insert_many`` 2,085 and 2,820, this writer's handler 1,643, and 41 for the earlier
writer that upserted every document and its head. Updates go through
``connections.mongo.bulk_write``, because FerretDB 1.24 never answers an update command
in which 100 or more statements match a document. So the writer

- keeps the heads of its assigned partitions in memory. Each Kafka key, hence each entity,
  lives in one partition, and one consumer owns a partition at a time. The heads of a
  (collection, topic, partition) are read with one query the first time a batch touches
  that partition after an assignment, and dropped on revocation and on a new assignment.
  No read per batch. A head with one version takes about 700 bytes in memory (measured
  with ``tracemalloc`` on CPython 3.11), so 100,000 entities take about 70 MB, and each
  further version of an entity adds about 120 bytes.
- inserts version documents and heads of new entities with ``insert_many(ordered=False)``
  and updates only what changes: a version stored with a lower order (a refetch), the
  previous current version flipped to ``current: false``, and the head of an entity that
  got a new version. An older version arriving after a newer one is inserted with
  ``current: false`` and leaves the current version as it is.
- treats an entity that has no head in memory as new. A duplicate key error on one of its
  version documents or on its head insert means it has stored state after all: an earlier
  attempt of the batch failed before the head write, the partition count of the topic
  changed so keys moved to other partitions (its head names the old partition), or the
  head was written before heads carried a partition. Only then are the stored heads of
  those entities read (one query), and their documents' ``current`` flags and heads are
  rewritten against them, so no entity ends with two current versions.

A duplicate key error on a version document of an entity whose head is in memory means an
earlier delivery of the batch crashed before writing the heads; the document is rewritten
with the decision of this run. Duplicates never decide anything themselves: decisions come
from the heads. Works the same on MongoDB, which reports duplicates of an unordered
``insert_many`` the same way.

NOTE: after a partition count change, the previous owner of an entity's old partition
keeps its head in memory until its next rebalance; it never receives that entity again
unless the key moves back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from connections.mongo import bulk_write
from consumer.errors import PoisonRecordError, is_transient
from consumer.runtime import ConsumedRecord, HandleResult
from schemas import keys
from schemas.catalogue import RecordType

log = logging.getLogger(__name__)

STREAM_RECORD_TYPES = (RecordType.SPACE, RecordType.CONTENT, RecordType.RELATIONSHIP)
DEFAULT_GROUP = "confluence-stream-writer"
HEADS_SUFFIX = "_heads"
STREAM_INDEXES = ("entity_id", "type", "space_key", "job_id")
# Fields left out of the hash that names a space or relationship version: they change with
# every fetch or derivation even when the entity did not change.
_SPACE_VOLATILE_FIELDS = frozenset({"job_id", "fetched_at"})
_RELATIONSHIP_VOLATILE_FIELDS = frozenset({"job_id", "derived_at", "derived_from"})
# MongoDB's error code of a duplicate key, also used by FerretDB.
DUPLICATE_KEY = 11000
# Replacements of what FerretDB cannot store: "." in keys, "$" at a key's start, NUL in strings.
_DOT_REPLACEMENT = "\uff0e"
_DOLLAR_REPLACEMENT = "\uff04"
_NUL_REPLACEMENT = "\ufffd"

Order = list[int]


def stream_collection_name(source_id: str) -> str:
    """Return the stream collection of ``source_id``."""
    return f"source_{keys.validate_source_id(source_id)}_stream"


# Sanitising for FerretDB


def sanitise(value: Any) -> Any:
    """Return ``value`` in a form both MongoDB and FerretDB store unchanged.

    Keys: ``.`` becomes U+FF0E and a leading ``$`` becomes U+FF04 (the full-width forms).
    Strings: NUL becomes U+FFFD. An array inside an array becomes ``{"items": [...]}``.
    NaN and infinite floats become None. Everything else is returned as it is.
    """
    return _sanitise(value, inside_array=False)


def _sanitise(value: Any, *, inside_array: bool) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", _NUL_REPLACEMENT) if "\x00" in value else value
    if isinstance(value, Mapping):
        return {_sanitise_key(str(k)): _sanitise(v, inside_array=False) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_sanitise(item, inside_array=True) for item in value]
        return {"items": items} if inside_array else items
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _sanitise_key(key: str) -> str:
    key = key.replace(".", _DOT_REPLACEMENT).replace("\x00", _NUL_REPLACEMENT)
    if key.startswith("$"):
        key = _DOLLAR_REPLACEMENT + key[1:]
    return key


# Mapping records to version documents


@dataclass
class StreamVersion:
    """One record as a version document of the stream collection."""

    entity_type: str
    entity_id: str
    version_key: str
    order: Order
    fields: dict[str, Any]
    record: ConsumedRecord

    @property
    def document_id(self) -> str:
        return f"{self.entity_id}@{self.version_key}"


def _millis(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value) if value is not None else -1


def _hash_fields(record: Mapping[str, Any], volatile: frozenset[str]) -> str:
    stable = {name: value for name, value in record.items() if name not in volatile}
    text = json.dumps(stable, sort_keys=True, default=str, separators=(",", ":"))
    return "h" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _without_source(key: str) -> str:
    return key.split(keys.SEPARATOR, 1)[1]


def to_version(record: ConsumedRecord) -> StreamVersion:
    """Map a space, content or relationship record to its version document."""
    value = record.value
    source_id = value["source_id"]
    if record.record_type is RecordType.CONTENT:
        entity_id = _without_source(keys.content_key(source_id, value["id"]))
        version_key = f"v{value['version_number']}"
        order = [value["version_number"], _millis(value["fetched_at"]), record.offset]
        entity_type = "content"
    elif record.record_type is RecordType.SPACE:
        entity_id = _without_source(keys.space_key(source_id, value["key"]))
        version_key = _hash_fields(value, _SPACE_VOLATILE_FIELDS)
        order = [_millis(value["fetched_at"]), record.offset]
        entity_type = "space"
    elif record.record_type is RecordType.RELATIONSHIP:
        key = keys.relationship_key(
            source_id,
            value["from_type"],
            value["from_id"],
            value["relation"],
            value["to_type"],
            value["to_id"],
            to_space_key=value["to_space_key"],
            to_title=value["to_title"],
        )
        entity_id = _without_source(key)
        version_key = _hash_fields(value, _RELATIONSHIP_VOLATILE_FIELDS)
        content_version = (value.get("derived_from") or {}).get("content_version")
        order = [
            content_version if content_version is not None else -1,
            _millis(value["derived_at"]),
            record.offset,
        ]
        entity_type = "relationship"
    else:
        raise PoisonRecordError(
            record,
            f"the stream writer does not store {record.record_type.value} records; consume "
            f"only {', '.join(t.value for t in STREAM_RECORD_TYPES)} topics",
        )
    return StreamVersion(entity_type, entity_id, version_key, order, value, record)


def collapse(versions: Iterable[StreamVersion]) -> dict[str, StreamVersion]:
    """Keep the highest-order record per version document id."""
    newest: dict[str, StreamVersion] = {}
    for version in versions:
        known = newest.get(version.document_id)
        if known is None or version.order > known.order:
            newest[version.document_id] = version
    return newest


# Heads: the stored order of every version and the current version of each entity


@dataclass(slots=True)
class Head:
    """Stored state of one entity: its current version, the order of every version, and
    the Kafka partition its records were last read from."""

    entity_id: str
    current_id: str | None = None
    current_order: Order | None = None
    versions: dict[str, Order] = field(default_factory=dict)
    topic: str | None = None
    partition: int | None = None

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Head:
        return cls(
            document["_id"],
            document.get("current_id"),
            document.get("current_order"),
            dict(document.get("versions") or {}),
            document.get("topic"),
            document.get("partition"),
        )

    def copy(self) -> Head:
        return Head(
            self.entity_id,
            self.current_id,
            self.current_order,
            dict(self.versions),
            self.topic,
            self.partition,
        )

    def document(self) -> dict[str, Any]:
        return {
            "current_id": self.current_id,
            "current_order": self.current_order,
            "versions": dict(self.versions),
            "topic": self.topic,
            "partition": self.partition,
        }

    def accept(self, versions: Iterable[StreamVersion]) -> tuple[list[StreamVersion], int]:
        """Record the versions whose order is higher than the stored one of their version key.

        Return the accepted versions and the number skipped. The current version becomes
        the one with the highest order of all versions, stored and accepted.
        """
        accepted: list[StreamVersion] = []
        skipped = 0
        for version in versions:
            stored = self.versions.get(version.version_key)
            if stored is not None and stored >= version.order:
                skipped += 1
                continue
            self.versions[version.version_key] = version.order
            if self.current_order is None or version.order > self.current_order:
                self.current_id = version.document_id
                self.current_order = version.order
            self.topic = version.record.topic
            self.partition = version.record.partition
            accepted.append(version)
        return accepted, skipped


@dataclass
class WritePlan:
    """The writes of one batch for one stream collection, in the order they run.

    ``inserts`` are version documents never stored before. ``updates`` rewrite a stored
    version with a higher order, or flip the previous current version to
    ``current: false``. ``new_heads`` are inserted and ``changed_heads`` replaced.
    ``documents`` maps every written document id to its fields without ``_id``, so a
    duplicate insert can be turned into an update.
    """

    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[UpdateOne] = field(default_factory=list)
    update_records: list[ConsumedRecord | None] = field(default_factory=list)
    new_heads: list[Head] = field(default_factory=list)
    changed_heads: list[Head] = field(default_factory=list)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, ConsumedRecord] = field(default_factory=dict)
    written: int = 0
    skipped: int = 0


def group_by_entity(versions: Mapping[str, StreamVersion]) -> dict[str, list[StreamVersion]]:
    """Group collapsed versions by entity id, keeping batch order within each entity."""
    grouped: dict[str, list[StreamVersion]] = {}
    for version in versions.values():
        grouped.setdefault(version.entity_id, []).append(version)
    return grouped


def plan_writes(
    versions: Mapping[str, StreamVersion], heads: Mapping[str, Head], now: datetime
) -> WritePlan:
    """Compute the writes of a collapsed batch against the heads of its entities.

    ``heads`` contains the known heads and is updated in place. An entity without a head
    is planned as new: its versions are inserted and its head goes to ``new_heads``.
    Pure: no I/O.
    """
    plan = WritePlan()
    for entity_id, entity_versions in group_by_entity(versions).items():
        known = heads.get(entity_id)
        head = known if known is not None else Head(entity_id)
        previous_current = head.current_id
        stored_keys = set(head.versions)
        accepted, skipped = head.accept(entity_versions)
        plan.skipped += skipped
        if not accepted:
            continue
        rewritten: set[str] = set()
        for version in accepted:
            document = version_document(version, head.current_id == version.document_id, now)
            plan.documents[version.document_id] = document
            plan.records[version.document_id] = version.record
            plan.written += 1
            if version.version_key in stored_keys:
                # NOTE: a refetch of a stored version (same version key, newer fetch) costs
                # two updates, its document and its head, so a repeated full crawl of an
                # unchanged site writes at the update rate (12-100/s on FerretDB 1.24).
                rewritten.add(version.document_id)
                plan.updates.append(_rewrite(version.document_id, document, now))
                plan.update_records.append(version.record)
            else:
                plan.inserts.append(
                    {"_id": version.document_id, **document, "first_ingested_at": now}
                )
        if (
            previous_current is not None
            and previous_current != head.current_id
            and previous_current not in rewritten
        ):
            plan.updates.append(_flip_off(previous_current))
            plan.update_records.append(None)
        if known is None:
            plan.new_heads.append(head)
        else:
            plan.changed_heads.append(head)
    return plan


def version_document(version: StreamVersion, is_current: bool, now: datetime) -> dict[str, Any]:
    """Return the fields of ``version``'s document, without ``_id`` and ``first_ingested_at``."""
    record = version.record
    document: dict[str, Any] = sanitise(version.fields)
    document.update(
        {
            "entity_type": version.entity_type,
            "entity_id": version.entity_id,
            "version_key": version.version_key,
            "order": version.order,
            "current": is_current,
            "kafka": {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp_ms": record.timestamp_ms,
            },
            "ingested_at": now,
        }
    )
    return document


def _rewrite(document_id: str, document: dict[str, Any], now: datetime) -> UpdateOne:
    return UpdateOne(
        {"_id": document_id},
        {"$set": document, "$setOnInsert": {"first_ingested_at": now}},
        upsert=True,
    )


def _flip_off(document_id: str) -> UpdateOne:
    return UpdateOne({"_id": document_id}, {"$set": {"current": False}})


# The handler

PartitionKey = tuple[str, str, int]


class StreamWriter:
    """Batch handler of ``confluence-consumer stream``."""

    def __init__(self, database: Database[dict[str, Any]]) -> None:
        self.database = database
        # Heads of the assigned partitions: (collection, topic, partition) to entity id to
        # head. A key is present once that partition's heads were loaded from MongoDB.
        self._heads: dict[PartitionKey, dict[str, Head]] = {}
        self._prepared: set[str] = set()

    def prepare(self) -> None:
        """Create the indexes of every stream collection that exists already."""
        for name in self.database.list_collection_names():
            if name.startswith("source_") and name.endswith("_stream"):
                self._prepare_collection(name)

    def handle(self, batch: Sequence[ConsumedRecord]) -> HandleResult:
        by_collection: dict[str, list[StreamVersion]] = {}
        for record in batch:
            if record.tombstone:
                continue
            try:
                version = to_version(record)
                name = stream_collection_name(record.value["source_id"])
            except ValueError as error:
                # An id that fits the Avro schema but not the key rules, e.g. an empty id.
                raise PoisonRecordError(record, str(error)) from error
            by_collection.setdefault(name, []).append(version)
        written = 0
        skipped = len(batch) - sum(len(versions) for versions in by_collection.values())
        for name, versions in by_collection.items():
            plan = self._write(name, versions)
            written += plan.written
            skipped += plan.skipped
        return HandleResult(written=written, skipped=skipped)

    def on_assign(self, partitions: Sequence[tuple[str, int]]) -> None:
        # Heads of a partition this process owned before may be stale (another member may
        # have written it meanwhile, e.g. after a lost assignment), so they are read again.
        assigned = set(partitions)
        for key in [key for key in self._heads if (key[1], key[2]) in assigned]:
            del self._heads[key]

    def on_revoke(self) -> None:
        # Another process may write these entities next, so the heads in memory may go stale.
        self._heads.clear()

    def _write(self, name: str, versions: list[StreamVersion]) -> WritePlan:
        self._prepare_collection(name)
        collapsed = collapse(versions)
        known: dict[str, Head] = {}
        for version in collapsed.values():
            partition_heads = self._partition_heads(
                name, version.record.topic, version.record.partition
            )
            head = partition_heads.get(version.entity_id)
            if head is not None:
                # A copy, so a failed write leaves the heads in memory as they were.
                known[version.entity_id] = head.copy()
        now = datetime.now(UTC)
        plan = plan_writes(collapsed, known, now)

        # Write order: version documents, then flips, then heads. Every decision comes from
        # the heads, which are written last, so after a crash at any point the redelivered
        # batch is planned against the heads as they were before it: its version documents
        # are inserted again (duplicates become updates with the same decision), the flips
        # run again, and the heads are written. Both runs end in the same documents.
        collection = self.database[name]
        duplicates = self._insert(collection, plan.inserts, plan.records)
        unknown: set[str] = set()
        repairs: list[UpdateOne] = []
        repair_records: list[ConsumedRecord | None] = []
        for document_id in duplicates:
            entity_id = plan.documents[document_id]["entity_id"]
            if entity_id in known:
                repairs.append(_rewrite(document_id, plan.documents[document_id], now))
                repair_records.append(plan.records[document_id])
            else:
                unknown.add(entity_id)
        self._bulk_write(collection, plan.updates + repairs, plan.update_records + repair_records)
        if unknown:
            self._reconcile(name, unknown, collapsed, plan, now)

        heads_collection = self.database[name + HEADS_SUFFIX]
        new_heads = [head for head in plan.new_heads if head.entity_id not in unknown]
        conflicts = set(
            self._insert(
                heads_collection,
                [{"_id": head.entity_id, **head.document()} for head in new_heads],
                {},
            )
        )
        head_updates = [
            UpdateOne({"_id": head.entity_id}, {"$set": head.document()})
            for head in plan.changed_heads
        ]
        self._bulk_write(heads_collection, head_updates, [None] * len(head_updates))
        if conflicts:
            self._reconcile(name, conflicts, collapsed, plan, now)

        for head in [*new_heads, *plan.changed_heads]:
            if head.entity_id not in conflicts:
                self._remember(name, head)
        return plan

    def _reconcile(
        self,
        name: str,
        entity_ids: set[str],
        collapsed: Mapping[str, StreamVersion],
        plan: WritePlan,
        now: datetime,
    ) -> None:
        """Rewrite the versions and heads of entities planned as new that have stored state.

        Such an entity was written by an earlier attempt of this batch that failed before
        its head was written, by this partition's previous owner before the topic's
        partition count changed (its head names another partition), or by a writer version
        whose heads carried no partition. Its stored head is read, the batch's versions
        are judged against it, and every document of the batch and the previous current
        version get their ``current`` flag set explicitly.
        """
        heads_collection = self.database[name + HEADS_SUFFIX]
        ids = sorted(entity_ids)
        query: dict[str, Any] = {"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": ids}}
        stored = {
            document["_id"]: Head.from_document(document)
            for document in heads_collection.find(query)
        }
        log.info(
            "reading stored heads of entities not in memory collection=%s entities=%d found=%d",
            name,
            len(ids),
            len(stored),
        )
        grouped = group_by_entity(
            {key: version for key, version in collapsed.items() if version.entity_id in entity_ids}
        )
        updates: list[UpdateOne] = []
        records: list[ConsumedRecord | None] = []
        heads: list[Head] = []
        for entity_id, entity_versions in grouped.items():
            head = stored.get(entity_id, Head(entity_id))
            previous_current = head.current_id
            accepted, skipped = head.accept(entity_versions)
            # plan_writes counted every version of a new entity as written.
            plan.written -= skipped
            plan.skipped += skipped
            accepted_ids: set[str] = set()
            for version in accepted:
                is_current = head.current_id == version.document_id
                document = version_document(version, is_current, now)
                updates.append(_rewrite(version.document_id, document, now))
                records.append(version.record)
                accepted_ids.add(version.document_id)
            if (
                previous_current is not None
                and previous_current != head.current_id
                and previous_current not in accepted_ids
            ):
                updates.append(_flip_off(previous_current))
                records.append(None)
            heads.append(head)
        self._bulk_write(self.database[name], updates, records)
        head_updates = [
            UpdateOne({"_id": head.entity_id}, {"$set": head.document()}, upsert=True)
            for head in heads
        ]
        self._bulk_write(heads_collection, head_updates, [None] * len(head_updates))
        for head in heads:
            self._remember(name, head)

    def _partition_heads(self, name: str, topic: str, partition: int) -> dict[str, Head]:
        """Return the heads of one partition, read from MongoDB on first use."""
        key = (name, topic, partition)
        heads = self._heads.get(key)
        if heads is None:
            started = time.monotonic()
            cursor = self.database[name + HEADS_SUFFIX].find(
                {"topic": topic, "partition": partition}
            )
            heads = {document["_id"]: Head.from_document(document) for document in cursor}
            self._heads[key] = heads
            log.info(
                "heads loaded collection=%s topic=%s partition=%d heads=%d seconds=%.2f",
                name,
                topic,
                partition,
                len(heads),
                time.monotonic() - started,
            )
        return heads

    def _remember(self, name: str, head: Head) -> None:
        if head.topic is None or head.partition is None:
            return
        key = (name, head.topic, head.partition)
        if key in self._heads:
            self._heads[key][head.entity_id] = head

    def _insert(
        self,
        collection: Collection[dict[str, Any]],
        documents: list[dict[str, Any]],
        records: Mapping[str, ConsumedRecord],
    ) -> list[str]:
        """Insert ``documents``; return the ids that were stored already.

        A duplicate key error (code 11000) means the document was written before, by an
        earlier delivery of the same record. Any other write error is raised: as
        ``PoisonRecordError`` for the record of ``records`` it came from.
        """
        if not documents:
            return []
        try:
            collection.insert_many(documents, ordered=False)
        except BulkWriteError as error:
            if is_transient(error):
                raise
            duplicates: list[str] = []
            for write_error in error.details.get("writeErrors", []):
                document = documents[write_error["index"]]
                if write_error.get("code") == DUPLICATE_KEY:
                    duplicates.append(document["_id"])
                    continue
                record = records.get(document["_id"])
                if record is None:
                    raise
                raise PoisonRecordError(
                    record,
                    f"MongoDB rejected document {document['_id']!r} in {collection.name}: "
                    f"{write_error.get('errmsg')}",
                ) from error
            return duplicates
        return []

    def _bulk_write(
        self,
        collection: Collection[dict[str, Any]],
        operations: list[UpdateOne],
        records: Sequence[ConsumedRecord | None],
    ) -> None:
        if not operations:
            return
        try:
            bulk_write(collection, operations, ordered=False)
        except BulkWriteError as error:
            if is_transient(error):
                raise
            # FerretDB stops at the first failed update and reports it at index 0, so the
            # failing record is found by writing the operations one at a time.
            self._find_poison(collection, operations, records, error)

    def _find_poison(
        self,
        collection: Collection[dict[str, Any]],
        operations: list[UpdateOne],
        records: Sequence[ConsumedRecord | None],
        bulk_error: BulkWriteError,
    ) -> None:
        for operation, record in zip(operations, records, strict=True):
            try:
                collection.bulk_write([operation], ordered=True)
            except PyMongoError as error:
                if is_transient(error) or record is None:
                    raise
                raise PoisonRecordError(
                    record, f"MongoDB rejected its document in {collection.name}: {error}"
                ) from error
        log.warning(
            "bulk write failed but every operation succeeded alone collection=%s error=%s",
            collection.name,
            bulk_error,
        )

    def _prepare_collection(self, name: str) -> None:
        if name in self._prepared:
            return
        collection = self.database[name]
        heads = self.database[name + HEADS_SUFFIX]
        # Heads without stream documents are left from a dropped stream collection; a
        # replay must rewrite every version, so they are removed.
        if collection.find_one({}, {"_id": 1}) is None and heads.find_one({}, {"_id": 1}):
            log.warning(
                "stream collection is empty but its heads are not; dropping the heads so a "
                "replay rewrites every version collection=%s",
                name,
            )
            heads.drop()
            self._heads = {key: value for key, value in self._heads.items() if key[0] != name}
        for field_name in STREAM_INDEXES:
            collection.create_index([(field_name, ASCENDING)], name=f"{field_name}_1")
        self._prepared.add(name)
        log.info("stream collection ready collection=%s indexes=%s", name, ",".join(STREAM_INDEXES))
