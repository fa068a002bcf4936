"""Persistent state of the relationships consumer in MongoDB.

One collection per source, ``source_{source_id}_relationship_state``, keeps state
documents of the kinds below, each named by a string key. The collection never updates a
document in place: every write inserts a new version with ``_id`` ``{key}@{revision}``,
the key in ``key`` and a revision number in ``rev`` that grows with every write, and a
deleted key gets a version with ``deleted: true``. Versions that a newer one replaced are
deleted after the batch's inserts. The newest version of a key is its state. FerretDB
1.24 with SQLite runs every update as a transaction of its own, while ``insert_many``
writes a batch in one, so a batch costs an insert and deletes instead of one
transaction per changed document.

``item:{content id}``
    The facts of one content item (type, status, space, title, parents, container,
    labels, parsed link targets), its version, the newest ``fetched_at`` of the records
    applied to it (``seen_at``, milliseconds), and the edge set published for it.
    A removed item keeps its document as a tombstone with ``removed: true`` and no edges,
    so a redelivered older record cannot bring it back.
``index:title:{type}:{space key}:{title}``
    The live pages or blog posts with that title, for resolving links by title.
``refs:{reference}``
    The items whose edges depend on a reference (``id:{content id}`` or a title
    reference), so that a change of the referenced item re-derives exactly those items.
``listing:{listing id}`` and ``listing:{listing id}:{sequence}``
    A structure listing in progress and its buffered chunks. ``space:{space key}`` names
    the space's newest listing and the one before, so an unfinished older one is
    cleaned up.

``RelationshipStateStore`` reads the whole collection with one query the first time a
batch needs it and then keeps it in memory, updated by its own writes, so that no batch
queries the collection. Only the process that holds the source's lease
(``consumer.relationships.lease``) changes the state, so the copy stays true while this
process keeps taking the lease. The handler drops the copy when another process held the
lease in between, on every assignment change and after a failed write, and reads it
again. ``WorkingState`` collects a batch's changes in memory, and
``operations()`` returns the writes that change something, in an order that keeps a crash
between two writes harmless (see ``WriteGroup``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Mapping
from enum import IntEnum
from typing import Any

from pymongo import DeleteOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from connections.mongo import bulk_write
from consumer.errors import TransientError
from consumer.relationships.derive import Edge, ItemFacts, title_reference
from consumer.relationships.links import LinkTarget
from schemas.keys import validate_source_id

log = logging.getLogger(__name__)

Document = dict[str, Any]
# A write of one key: the document to store, or None to delete the key.
KeyWrite = tuple[str, Document | None]

# MongoDB's error code for a duplicate key, which FerretDB returns too.
_DUPLICATE_KEY = 11000


class WriteGroup(IntEnum):
    """Order of the state writes of one batch; lower groups are written first.

    A batch's outputs are published before any state write, and a redelivered batch is
    derived again from the state. The item document of a record in the batch (group
    ``ITEMS``) is written after everything that follows from that record: indexes,
    references and the edges of the items that depend on it. If the process stops in
    between, the redelivered record still looks new and is applied again in full.
    A listing is marked done only after its removals, and its buffered chunks are
    deleted last.

    References are added first and removed last, so the stored holders of a reference
    are a superset of the true ones at every point. A redelivered batch then still finds
    every dependent item, and ``WorkingState`` users drop a holder whose facts no longer
    contain the reference.
    """

    INDEXES = 0
    DEPENDENT_ITEMS = 1
    ITEMS = 2
    LISTINGS = 3
    CLEANUP = 4


def collection_name(source_id: str) -> str:
    """Return the state collection name of one source."""
    return f"source_{validate_source_id(source_id)}_relationship_state"


def _quote(text: str) -> str:
    return text.replace("%", "%25").replace(":", "%3A")


def item_id(content_id: str) -> str:
    return f"item:{_quote(content_id)}"


def title_index_id(content_type: str, space_key: str, title: str) -> str:
    return f"index:{title_reference(content_type, space_key, title)}"


def references_id(reference: str) -> str:
    return f"refs:{reference}"


def listing_id(listing: str) -> str:
    return f"listing:{_quote(listing)}"


def chunk_id(listing: str, sequence: int) -> str:
    return f"listing:{_quote(listing)}:{sequence:09d}"


def space_id(space_key: str) -> str:
    return f"space:{_quote(space_key)}"


class RelationshipStateStore:
    """The state collection of one source."""

    def __init__(self, database: Database[Document], source_id: str) -> None:
        self.source_id = source_id
        self.collection: Collection[Document] = database[collection_name(source_id)]
        # The newest document of every key, with ``_id`` set to the key, or None until the
        # first load.
        self._cache: dict[str, Document] | None = None
        # The stored version ids of every key, oldest first.
        self._versions: dict[str, list[str]] = {}
        # Version ids to delete with the next write: replaced versions, then tombstones.
        self._replaced: list[str] = []
        self._tombstones: list[str] = []
        self._revision = 0

    def invalidate(self) -> None:
        """Drop the in-memory copy, so the next load reads the collection again."""
        self._cache = None
        self._versions = {}
        self._replaced = []
        self._tombstones = []

    def _documents(self) -> dict[str, Document]:
        if self._cache is None:
            self._load_all()
        assert self._cache is not None
        return self._cache

    def _load_all(self) -> None:
        # One query reads every version; afterwards batches read only the copy in memory.
        stored = sorted(self.collection.find(), key=_revision_of)

        cache: dict[str, Document] = {}
        versions: dict[str, list[str]] = {}
        revision = 0
        for document in stored:
            key = str(document.get("key", document["_id"]))
            versions.setdefault(key, []).append(document["_id"])
            revision = max(revision, _revision_of(document))
            if document.get("deleted"):
                cache.pop(key, None)
            else:
                cache[key] = _logical(document, key)

        self._cache = cache
        self._versions = {}
        self._replaced = []
        self._tombstones = []
        for key, ids in versions.items():
            # Versions left over by a batch that stopped before its deletes.
            self._replaced.extend(ids[:-1])
            if key in cache:
                self._versions[key] = ids[-1:]
            else:
                self._tombstones.extend(ids[-1:])
        self._revision = revision

        log.info(
            "relationship state loaded collection=%s keys=%d stored_versions=%d",
            self.collection.name,
            len(cache),
            len(stored),
        )

    def load(self, document_ids: Iterable[str]) -> dict[str, Document]:
        """Return copies of the stored documents among ``document_ids``, by id."""
        documents = self._documents()
        found: dict[str, Document] = {}
        for doc_id in set(document_ids):
            document = documents.get(doc_id)
            if document is not None:
                found[doc_id] = copy.deepcopy(document)
        return found

    def live_item_ids_in_space(self, space_key: str) -> list[str]:
        """Return the ids of the item documents of a space that are not removed."""
        return [
            doc_id
            for doc_id, document in self._documents().items()
            if document.get("kind") == "item"
            and document.get("space_key") == space_key
            and document.get("removed") is False
        ]

    def stored_documents(self) -> dict[str, Document]:
        """Read the collection and return the newest document of every key, by key."""
        newest: dict[str, Document] = {}
        for document in sorted(self.collection.find(), key=_revision_of):
            key = str(document.get("key", document["_id"]))
            newest[key] = document
        return {
            key: _logical(document, key)
            for key, document in newest.items()
            if not document.get("deleted")
        }

    def write(self, writes: list[KeyWrite]) -> None:
        """Store the writes in order; a failure leaves a prefix of them stored.

        Each write inserts a new version of its key. The versions it replaces are deleted
        afterwards, and the tombstones of deleted keys after those, so that a stop in
        between never lets an older version reappear. Raise ``TransientError`` when a
        version's ``_id`` is taken, which happens only when another process wrote the same
        key since this process read the state: the batch is then derived again.
        """
        self._documents()
        if not writes:
            return
        inserted: list[Document] = []
        replaced: list[str] = []
        tombstones: list[str] = []
        revision = self._revision
        versions = {key: list(ids) for key, ids in self._versions.items()}
        for key, document in writes:
            revision += 1
            version_id = f"{key}@{revision:012d}"
            stored: Document = {"_id": version_id, "key": key, "rev": revision}
            if document is None:
                stored["deleted"] = True
                tombstones.append(version_id)
            else:
                stored.update((name, value) for name, value in document.items() if name != "_id")
            inserted.append(stored)
            replaced.extend(versions.pop(key, []))
            if document is not None:
                versions[key] = [version_id]
        try:
            self.collection.insert_many(inserted, ordered=True)
        except BulkWriteError as error:
            self.invalidate()
            write_errors = (error.details or {}).get("writeErrors") or []
            if write_errors and all(item.get("code") == _DUPLICATE_KEY for item in write_errors):
                duplicate_id = write_errors[0].get("op", {}).get("_id")
                log.warning(
                    "state document written by another process, batch will be retried "
                    "collection=%s document_id=%s",
                    self.collection.name,
                    duplicate_id,
                )
                raise TransientError(
                    f"state document {duplicate_id!r} in {self.collection.name} was created by "
                    f"another process while this batch ran; the batch is retried from the "
                    f"state as it is now"
                ) from error
            raise
        except BaseException:
            self.invalidate()
            raise
        cache = self._documents()
        for key, document in writes:
            if document is None:
                cache.pop(key, None)
            else:
                cache[key] = copy.deepcopy(document)
        self._versions = versions
        self._revision = revision
        self._replaced.extend(replaced)
        self._tombstones.extend(tombstones)
        self._delete_replaced()

    def _delete_replaced(self) -> None:
        """Delete replaced versions, then tombstones, one ``_id`` filter each.

        One filter per document lets the server use its ``_id`` index: FerretDB 1.24 reads
        every document of the collection for a ``$in`` filter.
        """
        try:
            for ids in (self._replaced, self._tombstones):
                if ids:
                    operations = [DeleteOne({"_id": doc_id}) for doc_id in ids]
                    bulk_write(self.collection, operations, ordered=False)
                del ids[:]
        except BaseException:
            # The versions stay stored and are found again when the state is next read.
            self.invalidate()
            raise


def _revision_of(document: Mapping[str, Any]) -> int:
    # Documents written before versions existed have no revision and count as the oldest.
    return int(document.get("rev", 0))


def _logical(stored: Mapping[str, Any], key: str) -> Document:
    """Return the state document of a stored version: ``_id`` is the key again."""
    document = {name: value for name, value in stored.items() if name not in ("key", "rev")}
    document["_id"] = key
    return document


class WorkingState:
    """The state documents one batch reads and changes, with the changes kept in memory."""

    def __init__(self, store: RelationshipStateStore) -> None:
        self.store = store
        self.source_id = store.source_id
        self._documents: dict[str, Document | None] = {}
        self._changed: dict[str, WriteGroup] = {}
        self._deleted: dict[str, WriteGroup] = {}
        self._reference_adds: dict[str, set[str]] = {}
        self._reference_removes: dict[str, set[str]] = {}
        # Documents that the store did not contain when this batch read them.
        self._absent: set[str] = set()
        # The stored documents as this batch read them, to skip writes that change nothing.
        self._loaded: dict[str, Document] = {}

    # Reading

    def prefetch(self, document_ids: Iterable[str]) -> None:
        """Load the documents not read yet, in as few queries as possible."""
        missing = [doc_id for doc_id in set(document_ids) if doc_id not in self._documents]
        if not missing:
            return
        found = self.store.load(missing)
        for doc_id in missing:
            document = found.get(doc_id)
            self._documents[doc_id] = document
            if document is None:
                self._absent.add(doc_id)
            else:
                self._loaded[doc_id] = copy.deepcopy(document)

    def get(self, document_id: str) -> Document | None:
        """Return the current document (with this batch's changes), or None."""
        if document_id not in self._documents:
            self.prefetch([document_id])
        return self._documents[document_id]

    # Changing

    def put(self, document: Document, group: WriteGroup) -> None:
        """Store ``document`` (replacing the one with its ``_id``) when the batch is written."""
        doc_id = document["_id"]
        self._documents[doc_id] = document
        self._deleted.pop(doc_id, None)
        previous = self._changed.get(doc_id)
        self._changed[doc_id] = group if previous is None else max(previous, group)

    def delete(self, document_id: str, group: WriteGroup) -> None:
        self._documents[document_id] = None
        self._changed.pop(document_id, None)
        self._deleted[document_id] = group

    def add_reference(self, reference: str, holder: str) -> None:
        """Record that item ``holder`` depends on ``reference``."""
        doc_id = references_id(reference)
        self.get(doc_id)
        self._reference_removes.get(doc_id, set()).discard(holder)
        self._reference_adds.setdefault(doc_id, set()).add(holder)

    def remove_reference(self, reference: str, holder: str) -> None:
        doc_id = references_id(reference)
        self.get(doc_id)
        self._reference_adds.get(doc_id, set()).discard(holder)
        self._reference_removes.setdefault(doc_id, set()).add(holder)

    def reference_holders(self, reference: str) -> set[str]:
        """Return the content ids of the items that depend on ``reference``."""
        doc_id = references_id(reference)
        document = self.get(doc_id)
        holders = set(document.get("holders", [])) if document else set()
        holders |= self._reference_adds.get(doc_id, set())
        holders -= self._reference_removes.get(doc_id, set())
        return holders

    # Items

    def item(self, content_id: str) -> Document | None:
        return self.get(item_id(content_id))

    def facts(self, content_id: str) -> ItemFacts | None:
        """Return the facts of a known, not removed item, or None."""
        document = self.item(content_id)
        if document is None or document.get("removed"):
            return None
        return facts_from_document(self.source_id, document)

    def live_item_ids_in_space(self, space_key: str) -> set[str]:
        """Return the content ids of the space's items that are not removed, with this batch."""
        stored = set(self.store.live_item_ids_in_space(space_key))
        for doc_id, document in self._documents.items():
            if doc_id.startswith("item:") and document is not None:
                if document["space_key"] == space_key and not document.get("removed"):
                    stored.add(doc_id)
                else:
                    stored.discard(doc_id)
        self.prefetch(stored)
        content_ids: set[str] = set()
        for doc_id in stored:
            document = self.get(doc_id)
            if document is not None:
                content_ids.add(document["content_id"])
        return content_ids

    # Title index

    def set_title_candidate(
        self, content_type: str, space_key: str, title: str, content_id: str, day: str | None
    ) -> None:
        doc_id = title_index_id(content_type, space_key, title)
        document = copy.deepcopy(self.get(doc_id)) or {"_id": doc_id, "kind": "title"}
        candidates = [c for c in document.get("candidates", []) if c["id"] != content_id]
        candidates.append({"id": content_id, "day": day})
        document["candidates"] = sorted(candidates, key=lambda c: _id_order(c["id"]))
        self.put(document, WriteGroup.INDEXES)

    def drop_title_candidate(
        self, content_type: str, space_key: str, title: str, content_id: str
    ) -> None:
        doc_id = title_index_id(content_type, space_key, title)
        document = self.get(doc_id)
        if document is None:
            return
        candidates = [c for c in document.get("candidates", []) if c["id"] != content_id]
        if candidates:
            changed = dict(document, candidates=candidates)
            self.put(changed, WriteGroup.INDEXES)
        else:
            self.delete(doc_id, WriteGroup.INDEXES)

    # TargetLookup

    def find_by_title(
        self, content_type: str, space_key: str, title: str, posting_day: str | None
    ) -> str | None:
        """Return the id of the live item with this title, or None.

        Confluence keeps page titles unique per space, and blog post titles per space and
        posting day. Where several candidates remain (duplicate titles are allowed on
        some Cloud sites), the oldest id wins, so the choice is stable.
        """
        document = self.get(title_index_id(content_type, space_key, title))
        if document is None:
            return None
        candidates = list(document.get("candidates", []))
        if posting_day is not None:
            same_day = [c for c in candidates if c.get("day") == posting_day]
            candidates = same_day or candidates
        if not candidates:
            return None
        return str(min(candidates, key=lambda c: _id_order(c["id"]))["id"])

    def content_type_of(self, content_id: str) -> str | None:
        document = self.item(content_id)
        if document is None:
            return None
        return str(document["type"])

    def is_removed(self, content_id: str) -> bool:
        document = self.item(content_id)
        return bool(document and document.get("removed"))

    # Writing

    def operations(self) -> list[KeyWrite]:
        """Return this batch's writes in ``WriteGroup`` order, without unchanged ones."""
        grouped: dict[WriteGroup, list[KeyWrite]] = {group: [] for group in WriteGroup}
        for doc_id in sorted(self._changed):
            document = self._documents[doc_id]
            if document is None or self._loaded.get(doc_id) == document:
                continue
            grouped[self._changed[doc_id]].append((doc_id, document))
        for doc_id in sorted(set(self._reference_adds) | set(self._reference_removes)):
            stored = self._stored_holders(doc_id)
            added = stored | self._reference_adds.get(doc_id, set())
            final = added - self._reference_removes.get(doc_id, set())
            if added != stored:
                grouped[WriteGroup.INDEXES].append((doc_id, _references_document(doc_id, added)))
            if final == added:
                continue
            if final:
                document = _references_document(doc_id, final)
                grouped[WriteGroup.CLEANUP].append((doc_id, document))
            else:
                grouped[WriteGroup.CLEANUP].append((doc_id, None))
        for doc_id in sorted(self._deleted):
            if doc_id not in self._absent:
                grouped[self._deleted[doc_id]].append((doc_id, None))
        return [write for group in WriteGroup for write in grouped[group]]

    def _stored_holders(self, doc_id: str) -> set[str]:
        # Reference documents are read before they change, so this is the stored set.
        loaded = self._loaded.get(doc_id)
        return set(loaded.get("holders", [])) if loaded is not None else set()

    def write(self) -> int:
        """Write this batch's changes and return the number of documents written."""
        writes = self.operations()
        self.store.write(writes)
        return len(writes)


def _references_document(doc_id: str, holders: set[str]) -> Document:
    return {"_id": doc_id, "kind": "refs", "holders": sorted(holders)}


def _id_order(content_id: str) -> tuple[int, str]:
    # Confluence content ids are decimal numbers that grow with creation time.
    return (len(content_id), content_id)


# Item documents


def facts_from_document(source_id: str, document: Mapping[str, Any]) -> ItemFacts:
    """Rebuild the facts stored in an item document."""
    return ItemFacts(
        source_id=source_id,
        content_id=document["content_id"],
        content_type=document["type"],
        status=document["status"],
        space_key=document["space_key"],
        title=document["title"],
        posting_day=document.get("posting_day"),
        parent_id=document.get("parent_id"),
        ancestor_ids=tuple(document.get("ancestor_ids") or ()),
        container_id=document.get("container_id"),
        container_type=document.get("container_type"),
        labels=tuple(document.get("labels") or ()),
        links=tuple(_link_from_document(link) for link in document.get("links") or ()),
    )


def item_document(
    facts: ItemFacts,
    *,
    version: int,
    seen_at: int,
    edges: Mapping[str, Edge],
    removed: bool = False,
    removed_by_listing_started_at: int | None = None,
) -> Document:
    """Return the item document that stores ``facts`` and the published ``edges``."""
    return {
        "_id": item_id(facts.content_id),
        "kind": "item",
        "content_id": facts.content_id,
        "type": facts.content_type,
        "status": facts.status,
        "space_key": facts.space_key,
        "title": facts.title,
        "posting_day": facts.posting_day,
        "parent_id": facts.parent_id,
        "ancestor_ids": list(facts.ancestor_ids),
        "container_id": facts.container_id,
        "container_type": facts.container_type,
        "labels": list(facts.labels),
        "links": [_link_to_document(link) for link in facts.links],
        "version": version,
        "seen_at": seen_at,
        "removed": removed,
        "removed_by_listing_started_at": removed_by_listing_started_at,
        "edges": edges_to_documents(edges),
    }


def edges_to_documents(edges: Mapping[str, Edge]) -> list[Document]:
    return [dict(edge.to_document(), key=key) for key, edge in sorted(edges.items())]


def edges_from_document(document: Mapping[str, Any] | None) -> dict[str, Edge]:
    """Return the edge set stored in an item document, by record key."""
    if document is None:
        return {}
    return {edge["key"]: Edge.from_document(edge) for edge in document.get("edges") or ()}


def _link_to_document(link: LinkTarget) -> Document:
    return {
        "kind": link.kind,
        "space_key": link.space_key,
        "title": link.title,
        "posting_day": link.posting_day,
        "content_id": link.content_id,
    }


def _link_from_document(document: Mapping[str, Any]) -> LinkTarget:
    return LinkTarget(
        kind=document["kind"],
        space_key=document.get("space_key"),
        title=document.get("title"),
        posting_day=document.get("posting_day"),
        content_id=document.get("content_id"),
    )


# Structure listings


def listing_chunk_ids(listing: str, last_sequence: int) -> Iterator[str]:
    """Return the ids of the buffered chunks 0 to ``last_sequence`` of a listing."""
    return (chunk_id(listing, sequence) for sequence in range(last_sequence + 1))
