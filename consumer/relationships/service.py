"""The relationships consumer: derives edges from content and structure records.

It consumes ``{prefix}.content`` and ``{prefix}.structure`` and publishes Relationship
records to ``{prefix}.relationships``, keyed by ``schemas.keys.relationship_key``:

- a Content record replaces the stored facts of its item (older versions are ignored),
  and the item's new edge set is compared with the stored one: new or changed edges are
  published as ``upsert``, vanished ones as ``remove``;
- when an item appears, is renamed, trashed or removed, the items whose edges depend on
  it are derived again: links to its title or id, children, comments and attachments.
  So an unresolved link becomes resolved when its target appears, and the other way;
- a structure listing is buffered chunk by chunk in the state collection. Only when its
  ``complete`` chunk arrives, after every chunk in sequence, does it change anything.
  The space's known items that the listing no longer contains are removed with all
  their edges, together with the comments and attachments of a removed item. The listed
  parent and status of known pages are applied. An ``aborted`` listing, one with a
  missing chunk, and one whose ``complete`` never arrives remove nothing.

A listing can only remove or change an item whose newest record was fetched before the
listing started, because an item created after that is missing from the listing for no
fault of its own. ``{prefix}.spaces`` is not consumed: the space of every edge comes from
the content records.

Several instances of one group share the partitions. Because a source's state spans
partitions (links, the title index, a listing's removals), they take turns on it: a batch
holds the source's lease (``consumer.relationships.lease``) from reading the state to
writing it, and an instance reads the state again when another one held it meanwhile.
So instances add availability, not throughput, for one source.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from confluent_kafka import KafkaError, Message, Producer
from pymongo.database import Database

from connections.kafka import producer_config
from connections.mongo import create_client, get_database
from connections.registry import create_codec
from connections.settings import Settings
from consumer.errors import PoisonRecordError, TransientError
from consumer.relationships.derive import (
    LINKABLE_TYPES,
    LIVE_STATUSES,
    REMOVED_STATUS,
    Edge,
    ItemFacts,
    derive_edges,
    diff_edges,
    facts_from_content,
    id_reference,
    identity_references,
    references,
    title_reference,
)
from consumer.relationships.lease import StateLease
from consumer.relationships.state import (
    Document,
    RelationshipStateStore,
    WorkingState,
    WriteGroup,
    chunk_id,
    edges_from_document,
    edges_to_documents,
    facts_from_document,
    item_document,
    item_id,
    listing_chunk_ids,
    listing_id,
    references_id,
    space_id,
    title_index_id,
)
from consumer.runtime import ConsumedRecord, ConsumerOptions, HandleResult, run_consumer
from schemas.catalogue import RecordType
from schemas.codec import Codec
from schemas.keys import validate_source_id
from schemas.topics import Topics

log = logging.getLogger(__name__)

CONSUMER_NAME = "relationships"
DEFAULT_GROUP_ID = "confluence-relationships"
# Seconds to wait for the broker to acknowledge a batch's Relationship records; after
# that the batch counts as failed and is retried.
PUBLISH_TIMEOUT_SECONDS = 120.0
# Statuses a structure listing may set on a known item; others leave it unchanged.
_LISTED_STATUSES = LIVE_STATUSES | {"trashed", "deleted", "draft"}
# A historical record is an old version, not the item's state. A status this schema
# version does not list decodes as unknown, and guessing its meaning could drop every
# edge of the item, so such records leave the item as it is.
_IGNORED_STATUSES = frozenset({"historical", "unknown"})

Op = Literal["upsert", "remove"]


@dataclass(frozen=True)
class Cause:
    """Origin of an edge change.

    ``topic``, ``partition``, ``offset``, ``job_id`` and ``listing_id`` name the consumed
    record that caused the change. ``content_id`` and ``content_version`` name the item
    that owns the edge, at the version the state holds for it.
    """

    topic: str
    partition: int
    offset: int
    job_id: str
    content_id: str | None = None
    content_version: int | None = None
    listing_id: str | None = None


@dataclass(frozen=True)
class EdgeChange:
    """One Relationship record to publish."""

    source_id: str
    key: str
    edge: Edge
    op: Op
    cause: Cause


def _millis(value: datetime | int | None) -> int:
    if value is None:
        return 0
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


class SourceBatch:
    """Applies one source's records of one batch to a ``WorkingState``.

    Records change item facts, indexes and listing buffers right away. Edges are derived
    once per touched item in ``finish()``, so one batch publishes the net change of each
    item even when several of its records arrive together.
    """

    def __init__(self, state: WorkingState) -> None:
        self.state = state
        self.skipped = 0
        # Items whose edges must be derived again, with the record that caused it.
        self._touched: dict[str, Cause] = {}
        # Items whose facts a record changed; written after the dependent items.
        self._direct: set[str] = set()

    def prefetch(self, records: Sequence[ConsumedRecord]) -> None:
        """Load the state documents that applying content ``records`` reads first."""
        document_ids: set[str] = set()
        for record in records:
            if record.record_type is not RecordType.CONTENT:
                continue
            value = record.value
            content_id = str(value["id"])
            document_ids.add(item_id(content_id))
            document_ids.add(references_id(id_reference(content_id)))
            if value["type"] in LINKABLE_TYPES:
                reference = title_reference(value["type"], value["space_key"], value["title"])
                document_ids.add(references_id(reference))
                document_ids.add(title_index_id(value["type"], value["space_key"], value["title"]))
        self.state.prefetch(document_ids)

    # Content records

    def apply_content(self, record: ConsumedRecord) -> None:
        value = record.value
        content_id = str(value["id"])
        version = int(value["version_number"])
        fetched_at = _millis(value.get("fetched_at"))
        if value["status"] in _IGNORED_STATUSES:
            self.skipped += 1
            return
        document = self.state.item(content_id)
        if document is not None and self._is_stale(document, version, fetched_at):
            log.debug(
                "content record skipped as stale content_id=%s version=%d stored_version=%d",
                content_id,
                version,
                document["version"],
            )
            self.skipped += 1
            return

        previous = facts_from_document(self.state.source_id, document) if document else None
        previous_links = previous.links if previous is not None else None
        facts = facts_from_content(value, previous_links=previous_links)
        cause = Cause(
            record.topic,
            record.partition,
            record.offset,
            str(value["job_id"]),
            content_id=content_id,
            content_version=version,
        )
        seen_at = max(fetched_at, int(document["seen_at"]) if document else 0)
        # A revived tombstone keeps at least its version, so edge versions never decrease.
        stored_version = max(version, int(document["version"]) if document else 0)
        self._replace_facts(document, previous, facts, stored_version, seen_at, cause)

    @staticmethod
    def _is_stale(document: Document, version: int, fetched_at: int) -> bool:
        stored_version = int(document["version"])
        if document.get("removed"):
            # The listing that removed the item saw every record fetched before it started,
            # even a newer version, so only a record fetched after that brings it back.
            removed_at = int(document.get("removed_by_listing_started_at") or 0)
            return fetched_at <= removed_at
        if version != stored_version:
            return version < stored_version
        # The same version again: a redelivery, or a refetch. A record fetched before the
        # newest evidence (a later listing that moved the page) is older than the state.
        return fetched_at < int(document["seen_at"])

    def _replace_facts(
        self,
        document: Document | None,
        previous: ItemFacts | None,
        facts: ItemFacts,
        version: int,
        seen_at: int,
        cause: Cause,
        *,
        removed: bool = False,
        removed_at: int | None = None,
    ) -> None:
        content_id = facts.content_id
        state = self.state

        if previous is None or previous.identity != facts.identity:
            self._update_identity(previous, facts, cause)

        old_references = references(previous) if previous is not None else set()
        new_references = references(facts)
        for reference in sorted(old_references - new_references):
            state.remove_reference(reference, content_id)
        for reference in sorted(new_references - old_references):
            state.add_reference(reference, content_id)

        updated = item_document(
            facts,
            version=version,
            seen_at=seen_at,
            edges=edges_from_document(document),
            removed=removed,
            removed_by_listing_started_at=removed_at,
        )
        state.put(updated, WriteGroup.ITEMS)
        self._direct.add(content_id)
        self._touch(content_id, cause)

    def _update_identity(self, previous: ItemFacts | None, facts: ItemFacts, cause: Cause) -> None:
        state = self.state
        content_id = facts.content_id
        if previous is not None and previous.live and previous.content_type in LINKABLE_TYPES:
            state.drop_title_candidate(
                previous.content_type, previous.space_key, previous.title, content_id
            )
        if facts.live and facts.content_type in LINKABLE_TYPES:
            state.set_title_candidate(
                facts.content_type, facts.space_key, facts.title, content_id, facts.posting_day
            )
        dependent_on = identity_references(facts)
        if previous is not None:
            dependent_on |= identity_references(previous)
        for reference in sorted(dependent_on):
            for holder in self._holders(reference):
                if holder != content_id:
                    self._touch(holder, cause)

    def _holders(self, reference: str) -> list[str]:
        """Return the items whose current facts contain ``reference``.

        A stored holder whose facts no longer contain it is left over from a batch that
        stopped between its writes, and is removed from the reference here.
        """
        state = self.state
        holders = sorted(state.reference_holders(reference))
        state.prefetch(item_id(holder) for holder in holders)
        current: list[str] = []
        for holder in holders:
            facts = state.facts(holder)
            if facts is not None and reference in references(facts):
                current.append(holder)
            else:
                state.remove_reference(reference, holder)
        return current

    def _touch(self, content_id: str, cause: Cause) -> None:
        self._touched[content_id] = cause

    # Structure listings

    def apply_listing(self, record: ConsumedRecord) -> None:
        value = record.value
        listing = str(value["listing_id"])
        space_key = str(value["space_key"])
        sequence = int(value["sequence"])
        kind = str(value["kind"])
        state = self.state

        header = state.get(listing_id(listing))
        if header is not None and header["state"] != "open":
            log.debug(
                "structure chunk skipped: listing already finished listing_id=%s sequence=%d "
                "listing_state=%s",
                listing,
                sequence,
                header["state"],
            )
            self.skipped += 1
            return
        header = (
            dict(header) if header is not None else self._open_listing(value, listing, space_key)
        )

        if kind == "items":
            self._buffer_chunk(header, value, sequence)
        elif kind == "aborted":
            log.info(
                "structure listing aborted, no deletions derived space_key=%s listing_id=%s "
                "reason=%s",
                space_key,
                listing,
                value.get("abort_reason"),
            )
            self._finish_listing(header, "aborted")
        else:
            cause = Cause(
                record.topic,
                record.partition,
                record.offset,
                str(value["job_id"]),
                listing_id=listing,
            )
            self._complete_listing(header, value, sequence, cause)

    def _open_listing(self, value: Mapping[str, Any], listing: str, space_key: str) -> Document:
        state = self.state
        # The space's pointer names its newest listing and the one before. It is written
        # first, so a batch that stopped before the older listing was marked superseded
        # still finds that listing on redelivery, or when the next listing starts.
        pointer = state.get(space_id(space_key)) or {}
        previous = pointer.get("listing_id")
        earlier = pointer.get("previous_listing_id")
        for older_id in (previous, earlier):
            if older_id is None or older_id == listing:
                continue
            older = state.get(listing_id(older_id))
            if older is not None and older["state"] == "open":
                log.warning(
                    "structure listing never finished, superseded by a newer one; no "
                    "deletions derived from it space_key=%s listing_id=%s newer_listing_id=%s",
                    space_key,
                    older_id,
                    listing,
                )
                self._finish_listing(dict(older), "superseded")
        state.put(
            {
                "_id": space_id(space_key),
                "kind": "space",
                "space_key": space_key,
                "listing_id": listing,
                "previous_listing_id": earlier if previous == listing else previous,
            },
            WriteGroup.INDEXES,
        )
        return {
            "_id": listing_id(listing),
            "kind": "listing",
            "listing_id": listing,
            "space_key": space_key,
            "job_id": str(value["job_id"]),
            "started_at": _millis(value.get("started_at")),
            "last_sequence": -1,
            "broken": False,
            "state": "open",
        }

    def _buffer_chunk(self, header: Document, value: Mapping[str, Any], sequence: int) -> None:
        listing = header["listing_id"]
        if sequence > header["last_sequence"] + 1:
            log.warning(
                "structure listing chunk out of sequence, no deletions will be derived from "
                "this listing space_key=%s listing_id=%s expected_sequence=%d sequence=%d",
                header["space_key"],
                listing,
                header["last_sequence"] + 1,
                sequence,
            )
            header["broken"] = True
        items = [
            {
                "id": str(item["id"]),
                "type": str(item["type"]),
                "parent_id": item.get("parent_id"),
                "status": str(item["status"]),
                "version_number": int(item["version_number"]),
            }
            for item in value.get("items") or ()
        ]
        self.state.put(
            {"_id": chunk_id(listing, sequence), "kind": "chunk", "items": items},
            WriteGroup.INDEXES,
        )
        header["last_sequence"] = max(header["last_sequence"], sequence)
        self.state.put(header, WriteGroup.LISTINGS)

    def _finish_listing(self, header: Document, final_state: str) -> None:
        for doc_id in listing_chunk_ids(header["listing_id"], header["last_sequence"]):
            self.state.delete(doc_id, WriteGroup.CLEANUP)
        header["state"] = final_state
        self.state.put(header, WriteGroup.LISTINGS)

    def _complete_listing(
        self, header: Document, value: Mapping[str, Any], sequence: int, cause: Cause
    ) -> None:
        listing = header["listing_id"]
        space_key = header["space_key"]
        problems: list[str] = []
        if header["broken"]:
            problems.append("a chunk arrived out of sequence")
        if sequence != header["last_sequence"] + 1:
            problems.append(
                f"the complete chunk has sequence {sequence}, expected "
                f"{header['last_sequence'] + 1}"
            )
        chunk_ids = list(listing_chunk_ids(listing, header["last_sequence"]))
        self.state.prefetch(chunk_ids)
        listed: dict[str, Document] = {}
        listed_count = 0
        for doc_id in chunk_ids:
            chunk = self.state.get(doc_id)
            if chunk is None:
                problems.append(f"chunk {doc_id} is missing from the buffer")
                continue
            for item in chunk["items"]:
                listed[item["id"]] = item
                listed_count += 1
        item_count = value.get("item_count")
        if item_count is not None and int(item_count) != listed_count:
            problems.append(f"item_count is {item_count} but the chunks hold {listed_count} items")

        if problems:
            log.warning(
                "structure listing incomplete, no deletions derived space_key=%s "
                "listing_id=%s problems=%s",
                space_key,
                listing,
                "; ".join(problems),
            )
            self._finish_listing(header, "incomplete")
            return

        covered = set(value.get("content_types") or ()) or set(LINKABLE_TYPES)
        removed = self._apply_listed_structure(header, listed, covered, cause)
        log.info(
            "structure listing complete space_key=%s listing_id=%s items=%d removed=%d",
            space_key,
            listing,
            listed_count,
            removed,
        )
        self._finish_listing(header, "done")

    def _apply_listed_structure(
        self,
        header: Document,
        listed: Mapping[str, Document],
        covered: set[str],
        cause: Cause,
    ) -> int:
        """Apply a complete listing to the space's known items; return how many were removed.

        Only items of the ``covered`` content types can be missing from the listing.
        Listings of schema version 1 carry no types and cover pages and blog posts.
        """
        state = self.state
        started_at = int(header["started_at"])
        missing: set[str] = set()
        contained: dict[str, str] = {}
        for content_id in sorted(state.live_item_ids_in_space(header["space_key"])):
            document = state.item(content_id)
            if document is None or document.get("removed"):
                continue
            if int(document["seen_at"]) >= started_at:
                continue
            if document["type"] in ("comment", "attachment") and document.get("container_id"):
                contained[content_id] = document["container_id"]
            entry = listed.get(content_id)
            if entry is None:
                if document["type"] in covered:
                    missing.add(content_id)
                continue
            self._apply_listed_item(document, entry, listed, started_at, cause)

        # Comments and attachments go with their container. The container's tombstone is
        # checked too, because a batch that stopped between its writes may have stored
        # the container's removal but not yet theirs.
        state.prefetch(item_id(container) for container in contained.values())
        removed = set(missing)
        for content_id, container in contained.items():
            if container in missing or state.is_removed(container):
                removed.add(content_id)
        for content_id in sorted(removed):
            document = state.item(content_id)
            if document is None:
                continue
            previous = facts_from_document(state.source_id, document)
            facts = dataclasses.replace(previous, status=REMOVED_STATUS, links=(), labels=())
            self._replace_facts(
                document,
                previous,
                facts,
                int(document["version"]),
                int(document["seen_at"]),
                cause,
                removed=True,
                removed_at=started_at,
            )
        return len(removed)

    def _apply_listed_item(
        self,
        document: Document,
        entry: Mapping[str, Any],
        listed: Mapping[str, Document],
        started_at: int,
        cause: Cause,
    ) -> None:
        """Apply the status and, for pages, the parent that a newer listing shows."""
        previous = facts_from_document(self.state.source_id, document)
        facts = previous
        if entry["status"] in _LISTED_STATUSES and entry["status"] != previous.status:
            facts = dataclasses.replace(facts, status=entry["status"])
        if previous.content_type == "page":
            parent = entry.get("parent_id")
            current_parent = previous.ancestor_ids[-1] if previous.ancestor_ids else None
            if parent != current_parent:
                ancestors = _ancestor_chain(parent, listed)
                facts = dataclasses.replace(facts, parent_id=parent, ancestor_ids=ancestors)
        if facts == previous:
            return
        version = max(int(document["version"]), int(entry["version_number"]))
        self._replace_facts(document, previous, facts, version, started_at, cause)

    # Deriving edges

    def finish(self) -> list[EdgeChange]:
        """Derive the edges of every touched item and return the changes to publish."""
        state = self.state
        state.prefetch(item_id(content_id) for content_id in self._touched)
        lookups: set[str] = set()
        for content_id in self._touched:
            document = state.item(content_id)
            if document is not None:
                lookups |= _lookup_ids(facts_from_document(state.source_id, document))
        state.prefetch(lookups)

        changes: list[EdgeChange] = []
        for content_id in sorted(self._touched):
            document = state.item(content_id)
            if document is None:
                continue
            facts = facts_from_document(state.source_id, document)
            previous_edges = edges_from_document(document)
            current_edges = derive_edges(facts, state)
            upserts, removes = diff_edges(previous_edges, current_edges)
            if not upserts and not removes:
                continue
            # The owner's version goes on every record of its edges, so the records of one
            # edge never go down in content_version. The stream writer orders an edge's
            # records by it, even when another item's record or a listing caused the change.
            cause = dataclasses.replace(
                self._touched[content_id],
                content_id=content_id,
                content_version=int(document["version"]),
            )
            for key, edge in removes:
                changes.append(EdgeChange(state.source_id, key, edge, "remove", cause))
            for key, edge in upserts:
                changes.append(EdgeChange(state.source_id, key, edge, "upsert", cause))
            group = WriteGroup.ITEMS if content_id in self._direct else WriteGroup.DEPENDENT_ITEMS
            state.put(dict(document, edges=edges_to_documents(current_edges)), group)
        return changes


def _ancestor_chain(parent: str | None, listed: Mapping[str, Document]) -> tuple[str, ...]:
    """Return the ancestor ids from the root down to ``parent``, following listed parents."""
    chain: list[str] = []
    seen: set[str] = set()
    current = parent
    while current and current not in seen:
        chain.append(current)
        seen.add(current)
        entry = listed.get(current)
        current = entry.get("parent_id") if entry is not None else None
    chain.reverse()
    return tuple(chain)


def _lookup_ids(facts: ItemFacts) -> set[str]:
    """Return the state documents that deriving the edges of ``facts`` reads."""
    ids: set[str] = set()
    for other in (*facts.ancestor_ids, facts.parent_id, facts.container_id):
        if other:
            ids.add(item_id(other))
    for target in facts.links:
        if target.content_id is not None:
            ids.add(item_id(target.content_id))
        elif target.space_key is not None and target.title is not None:
            ids.add(title_index_id(target.kind, target.space_key, target.title))
    return ids


# Publishing


class RelationshipPublisher:
    """Encodes and produces Relationship records and waits until the broker has them."""

    def __init__(self, producer: Producer, codec: Codec, topic: str) -> None:
        self._producer = producer
        self._codec = codec
        self.topic = topic
        self._lock = threading.Lock()
        self._errors: list[str] = []

    def publish(self, changes: Sequence[EdgeChange], derived_at: datetime) -> None:
        """Produce one record per change; raise ``TransientError`` unless all were delivered."""
        if not changes:
            return
        with self._lock:
            self._errors = []
        for change in changes:
            value = relationship_record(change, derived_at)
            payload = self._codec.encode(RecordType.RELATIONSHIP, value)
            self._produce(change.key, payload)
        remaining = self._producer.flush(PUBLISH_TIMEOUT_SECONDS)
        with self._lock:
            errors = list(self._errors)
        if remaining or errors:
            shown = "; ".join(errors[:3])
            raise TransientError(
                f"{remaining} of {len(changes)} relationship records to {self.topic} were not "
                f"acknowledged within {PUBLISH_TIMEOUT_SECONDS:g} s and {len(errors)} failed "
                f"({shown or 'no delivery error reported'}); the batch is retried, check that "
                f"the topic exists and the brokers are reachable"
            )

    def _produce(self, key: str, payload: bytes) -> None:
        while True:
            try:
                self._producer.produce(self.topic, payload, key, on_delivery=self._on_delivery)
                break
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self._producer.poll(0.5)
        self._producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            with self._lock:
                self._errors.append(f"key {message.key()!r}: {error.str()}")

    def close(self) -> None:
        self._producer.flush(PUBLISH_TIMEOUT_SECONDS)


def relationship_record(change: EdgeChange, derived_at: datetime) -> dict[str, Any]:
    """Return the Relationship record of one edge change."""
    edge = change.edge
    cause = change.cause
    return {
        "source_id": change.source_id,
        "job_id": cause.job_id,
        "from_type": edge.from_type,
        "from_id": edge.from_id,
        "relation": edge.relation.value,
        "to_type": edge.to_type,
        "to_id": edge.to_id,
        "to_space_key": edge.to_space_key,
        "to_title": edge.to_title,
        "resolved": edge.resolved,
        "depth": edge.depth,
        "op": change.op,
        "derived_from": {
            "topic": cause.topic,
            "partition": cause.partition,
            "offset": cause.offset,
            "content_id": cause.content_id,
            "content_version": cause.content_version,
            "listing_id": cause.listing_id,
        },
        "derived_at": derived_at,
    }


# The batch handler


class EdgePublisher(Protocol):
    """Destination of a batch's edge changes; ``publish`` returns once they are durable."""

    def publish(self, changes: Sequence[EdgeChange], derived_at: datetime) -> None: ...

    def close(self) -> None: ...


class RelationshipHandler:
    """``BatchHandler`` of the relationships consumer."""

    def __init__(
        self,
        database: Database[Document],
        publisher: EdgePublisher,
        store_factory: Callable[
            [Database[Document], str], RelationshipStateStore
        ] = RelationshipStateStore,
        *,
        owner: str | None = None,
    ) -> None:
        self._database = database
        self._publisher = publisher
        self._store_factory = store_factory
        self._stores: dict[str, RelationshipStateStore] = {}
        # Names this process in the leases, so that a takeover is recognised.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._leases: dict[str, StateLease] = {}

    def _lease(self, source_id: str) -> StateLease:
        lease = self._leases.get(source_id)
        if lease is None:
            lease = StateLease(self._database, source_id, self.owner)
            self._leases[source_id] = lease
        return lease

    def _store(self, source_id: str) -> RelationshipStateStore:
        store = self._stores.get(source_id)
        if store is None:
            store = self._store_factory(self._database, source_id)
            self._stores[source_id] = store
        return store

    def handle(self, batch: Sequence[ConsumedRecord]) -> HandleResult:
        by_source: dict[str, list[ConsumedRecord]] = defaultdict(list)
        ignored = 0
        for record in batch:
            if record.record_type not in (RecordType.CONTENT, RecordType.STRUCTURE_LISTING):
                ignored += 1
                continue
            _check_record(record)
            by_source[record.value["source_id"]].append(record)

        try:
            return self._handle_leased(batch, by_source, ignored)
        finally:
            for lease in self._leases.values():
                lease.release()

    def _handle_leased(
        self,
        batch: Sequence[ConsumedRecord],
        by_source: Mapping[str, list[ConsumedRecord]],
        ignored: int,
    ) -> HandleResult:
        for source_id in sorted(by_source):
            if self._lease(source_id).acquire():
                # Another process changed the state since this one last held it.
                self._store(source_id).invalidate()

        states: list[WorkingState] = []
        changes: list[EdgeChange] = []
        skipped = ignored
        for source_id in sorted(by_source):
            state = WorkingState(self._store(source_id))
            source_batch = SourceBatch(state)
            source_batch.prefetch(by_source[source_id])
            for record in by_source[source_id]:
                if record.record_type is RecordType.CONTENT:
                    source_batch.apply_content(record)
                else:
                    source_batch.apply_listing(record)
            changes.extend(source_batch.finish())
            skipped += source_batch.skipped
            states.append(state)

        # Order matters for crash safety. The records are published and their delivery
        # confirmed before any state is written, and the runtime stores offsets only
        # after this method returns. A crash after publishing but before the state write
        # makes the batch arrive again. It is then derived from the same state, so the
        # same records are published again, and the stream writer's upsert by
        # relationship key absorbs them. Writing the state first instead would lose those
        # records for good, because the redelivered batch would find nothing changed.
        for source_id in sorted(by_source):
            self._leases[source_id].confirm()
        self._publisher.publish(changes, datetime.now(UTC))
        writes = 0
        for state in states:
            self._leases[state.source_id].confirm()
            writes += state.write()
        log.debug(
            "relationship batch handled records=%d published=%d state_writes=%d skipped=%d",
            len(batch),
            len(changes),
            writes,
            skipped,
        )
        return HandleResult(written=len(batch) - skipped, skipped=skipped)

    def on_assign(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Drop the in-memory state, because another process may have written it meanwhile."""
        self._drop_cached_state()

    def on_revoke(self) -> None:
        """Drop the in-memory state; every batch is already written when ``handle`` returns."""
        self._drop_cached_state()

    def _drop_cached_state(self) -> None:
        for store in self._stores.values():
            store.invalidate()

    def close(self) -> None:
        self._publisher.close()


def _check_record(record: ConsumedRecord) -> None:
    value = record.value
    try:
        validate_source_id(str(value.get("source_id", "")))
    except ValueError as error:
        raise PoisonRecordError(record, str(error)) from None
    if record.record_type is RecordType.CONTENT:
        if not value.get("id") or not value.get("space_key"):
            raise PoisonRecordError(
                record,
                f"content record has an empty id ({value.get('id')!r}) or space key "
                f"({value.get('space_key')!r}); edges need both",
            )
    elif not value.get("listing_id") or not value.get("space_key"):
        raise PoisonRecordError(
            record,
            f"structure listing chunk has an empty listing id ({value.get('listing_id')!r}) "
            f"or space key ({value.get('space_key')!r})",
        )


def consumer_options(
    settings: Settings,
    *,
    group_id: str = DEFAULT_GROUP_ID,
    batch_size: int = 500,
    batch_timeout_s: float = 1.0,
    metrics_port: int | None = None,
    log_interval_s: float = 30.0,
) -> ConsumerOptions:
    """Return the options of the relationships consumer for the configured topic prefix."""
    topics = Topics(prefix=settings.kafka.topic_prefix)
    return ConsumerOptions(
        name=CONSUMER_NAME,
        group_id=group_id,
        topics=[topics.content, topics.structure],
        batch_size=batch_size,
        batch_timeout_s=batch_timeout_s,
        metrics_port=metrics_port,
        log_interval_s=log_interval_s,
    )


def run(
    settings: Settings,
    options: ConsumerOptions | None = None,
    *,
    stop_event: threading.Event | None = None,
) -> int:
    """Run the relationships consumer until stopped; return the process exit status."""
    options = options or consumer_options(settings)
    topics = Topics(prefix=settings.kafka.topic_prefix)
    client = create_client(settings, appname="confluence-relationships")
    producer = Producer(producer_config(settings, "confluence-relationships", logger=log))
    publisher = RelationshipPublisher(producer, create_codec(settings), topics.relationships)
    handler = RelationshipHandler(get_database(client, settings), publisher)
    started = time.monotonic()
    try:
        return run_consumer(options, handler, settings, stop_event=stop_event)
    finally:
        handler.close()
        client.close()
        log.info(
            "relationships consumer stopped group_id=%s uptime_s=%.0f",
            options.group_id,
            time.monotonic() - started,
        )
