"""Leases that let several relationships consumers of one group share a source's state.

The relationship state of a source spans partitions: a link's target, the title index and
a structure listing's removals concern items of every partition. So only one process at a
time may change a source's state, and a process that takes over from another must read
the state again, because its in-memory copy may be stale.

A lease is a document of ``source_{source_id}_relationship_lease`` with a numbered
``_id`` (its epoch). Taking a lease inserts the next epoch, which succeeds for exactly one
process, because an ``_id`` is unique on MongoDB and on FerretDB alike. FerretDB 1.24 does
not apply a filtered update atomically, so nothing here relies on compare-and-set updates.
The holder renews its lease by updating its own epoch document, which no other process
writes. A lease ends when its holder releases it or when it expires (``ttl_s`` after the
last renewal), and the next epoch can then be taken.

A holder releases its lease at the end of every batch, so that an instance whose
partitions go quiet never keeps the others waiting. Taking the next epoch shows whether
another process held the state in between: only then is the state read again.

NOTE: a holder that stops for longer than ``ttl_s`` between its last renewal and the end
of its state writes can overlap with the next holder. The holder renews before publishing
and before writing, so this takes a pause of over a minute inside one batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from consumer.errors import TransientError
from schemas.keys import validate_source_id

log = logging.getLogger(__name__)

Document = dict[str, Any]

# Seconds after its last renewal that the lease of a stopped holder can be taken over.
DEFAULT_TTL_S = 120.0
# Seconds ``acquire`` waits for another holder before it gives up with TransientError.
# The runtime does not poll Kafka meanwhile, so this stays well below the consumer's
# max.poll.interval.ms (300 s by default).
DEFAULT_WAIT_S = 60.0
# Seconds between two looks at a lease held by another process.
POLL_S = 0.2
# Epoch documents older than the newest by more than this are deleted when a lease is taken.
_KEEP_EPOCHS = 10


def lease_collection_name(source_id: str) -> str:
    """Return the name of the lease collection of one source."""
    return f"source_{validate_source_id(source_id)}_relationship_lease"


def _epoch_id(epoch: int) -> str:
    return f"{epoch:012d}"


class LeaseUnavailableError(TransientError):
    """Raised when another process holds the lease for longer than ``wait_s``."""


class StateLease:
    """The lease of one process on the relationship state of one source."""

    def __init__(
        self,
        database: Database[Document],
        source_id: str,
        owner: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        wait_s: float = DEFAULT_WAIT_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.source_id = source_id
        self.owner = owner
        self.collection: Collection[Document] = database[lease_collection_name(source_id)]
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self._clock = clock
        self._sleep = sleep
        # The epoch this process holds, or None.
        self.epoch: int | None = None

    @property
    def held(self) -> bool:
        return self.epoch is not None

    def acquire(self) -> bool:
        """Take the lease; return True when another process held it since this one did.

        When it returns True, the caller reads the state again, because the other process
        may have changed it. Raise ``LeaseUnavailableError`` when another process keeps
        the lease for ``wait_s``.
        """
        if self.epoch is not None:
            self.confirm()
            return False
        deadline = self._clock() + self.wait_s
        while True:
            current = self._current()
            now = self._clock()
            if (
                current is not None
                and current.get("owner") == self.owner
                and not current.get("released")
            ):
                # This process's own lease, left unreleased when MongoDB failed during
                # its release. No other process held the state since, so it is taken back.
                self.epoch = int(current["_id"])
                self._renew(now)
                return False
            if current is None or current.get("released") or current["expires_at"] <= now:
                epoch = int(current["_id"]) + 1 if current is not None else 1
                if self._take(epoch, now):
                    return current is None or current.get("owner") != self.owner
                continue
            if now >= deadline:
                raise LeaseUnavailableError(
                    f"the relationship state of source {self.source_id!r} is held by "
                    f"{current.get('owner')!r} (lease epoch {int(current['_id'])}) for more "
                    f"than {self.wait_s:g} s; the batch is retried. Relationships consumers "
                    f"of one group take turns on a source's state, one batch at a time"
                )
            self._sleep(POLL_S)

    def confirm(self) -> None:
        """Renew the lease before a write; raise ``TransientError`` if it was lost."""
        if self.epoch is None:
            raise TransientError(
                f"no lease on the relationship state of source {self.source_id!r}; "
                f"the batch is retried"
            )
        current = self._current()
        if current is None or current["_id"] != _epoch_id(self.epoch) or current.get("released"):
            lost = self.epoch
            self.epoch = None
            new_owner = current.get("owner") if current is not None else None
            log.warning(
                "relationship state lease lost source_id=%s owner=%s epoch=%d new_owner=%s",
                self.source_id,
                self.owner,
                lost,
                new_owner,
            )
            raise TransientError(
                f"the lease on the relationship state of source {self.source_id!r} (epoch "
                f"{lost}) expired and was taken by {new_owner!r} before this batch was "
                f"written; the batch is retried from the state as it is now"
            )
        self._renew(self._clock())

    def release(self) -> None:
        """Give the lease up so that another process can take it at once."""
        if self.epoch is None:
            return
        # The epoch is forgotten only once the release is stored. If MongoDB fails here,
        # the next acquire() renews this epoch instead of waiting for it to expire.
        self.collection.update_one(
            {"_id": _epoch_id(self.epoch), "owner": self.owner}, {"$set": {"released": True}}
        )
        self.epoch = None

    def _current(self) -> Document | None:
        """Return the newest epoch document, or None when no lease was ever taken."""
        # The collection keeps at most a few documents, so reading all of them is cheap.
        documents = list(self.collection.find())
        return max(documents, key=lambda document: str(document["_id"]), default=None)

    def _take(self, epoch: int, now: float) -> bool:
        try:
            self.collection.insert_one(
                {
                    "_id": _epoch_id(epoch),
                    "owner": self.owner,
                    "taken_at": now,
                    "expires_at": now + self.ttl_s,
                    "released": False,
                }
            )
        except DuplicateKeyError:
            return False
        self.epoch = epoch
        log.debug(
            "relationship state lease taken source_id=%s owner=%s epoch=%d",
            self.source_id,
            self.owner,
            epoch,
        )
        if epoch > _KEEP_EPOCHS:
            self.collection.delete_many({"_id": {"$lt": _epoch_id(epoch - _KEEP_EPOCHS)}})
        return True

    def _renew(self, now: float) -> None:
        assert self.epoch is not None
        self.collection.update_one(
            {"_id": _epoch_id(self.epoch)}, {"$set": {"expires_at": now + self.ttl_s}}
        )
