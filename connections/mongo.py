"""MongoDB client factory."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pymongo import DeleteMany, DeleteOne, InsertOne, MongoClient, ReplaceOne, UpdateMany, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from connections.settings import Settings, redact_mongodb_uri

log = logging.getLogger(__name__)

# Fail start-up within 10 s when no server responds, instead of pymongo's 30 s default.
SERVER_SELECTION_TIMEOUT_MS = 10_000
# pymongo waits forever for a reply by default, so a server that stops answering would
# block a consumer silently, even through SIGTERM. A timeout turns that into a
# NetworkTimeout, which consumers retry with backoff and log. Two minutes leaves room for
# a slow bulk write on FerretDB's SQLite backend, which applies updates one at a time.
SOCKET_TIMEOUT_MS = 120_000

# FerretDB 1.24 with SQLite keeps a pooled SQLite connection for each statement of an
# update command that matched a document, until the whole command has finished, and the
# pool has 100 connections. An update command in which 100 or more statements match
# therefore waits forever for a connection, and the database stays blocked for every
# client until the server restarts. pymongo puts up to 100,000 statements in one command,
# so bulk writes go through ``bulk_write``, which sends at most this many updates per
# command. On MongoDB it costs a few round trips.
MAX_UPDATES_PER_COMMAND = 50

MongoDocument = dict[str, Any]
WriteModel = (
    InsertOne[MongoDocument]
    | UpdateOne
    | UpdateMany
    | ReplaceOne[MongoDocument]
    | DeleteOne
    | DeleteMany
)


def create_client(settings: Settings, appname: str, **options: Any) -> MongoClient[MongoDocument]:
    """Create a ``MongoClient`` from the settings.

    Datetimes come back timezone-aware (UTC). ``appname`` shows up in the server's logs
    and ``currentOp``. ``options`` are passed on to ``MongoClient`` and win over the
    computed ones. The client connects lazily: the first operation raises if the server
    cannot be reached.
    """
    mongo = settings.mongodb
    kwargs: dict[str, Any] = {
        "tz_aware": True,
        "appname": appname,
        "serverSelectionTimeoutMS": SERVER_SELECTION_TIMEOUT_MS,
        "socketTimeoutMS": SOCKET_TIMEOUT_MS,
    }
    if mongo.tls_ca_file is not None:
        kwargs["tls"] = True
        kwargs["tlsCAFile"] = mongo.tls_ca_file
    kwargs.update(options)
    uri = mongo.uri.get_secret_value()
    log.info(
        "mongodb client created uri=%s database=%s appname=%s tls_ca_file=%s",
        redact_mongodb_uri(uri),
        mongo.database,
        appname,
        mongo.tls_ca_file,
    )
    return MongoClient(uri, **kwargs)


def get_database(client: MongoClient[MongoDocument], settings: Settings) -> Database[MongoDocument]:
    """Return the configured database (``MONGODB_DATABASE``) of ``client``."""
    return client[settings.mongodb.database]


def bulk_write(
    collection: Collection[MongoDocument], operations: Sequence[WriteModel], *, ordered: bool
) -> None:
    """Apply ``operations`` like ``Collection.bulk_write``, in commands FerretDB can finish.

    The operations are sent in order, in slices of at most ``MAX_UPDATES_PER_COMMAND``
    updates and replacements. Ordered writes stop at the first failed slice. Unordered
    writes go on with the other slices and then raise one ``BulkWriteError`` with every
    write error, its ``index`` counted in ``operations`` as ``Collection.bulk_write``
    counts it.
    """
    write_errors: list[dict[str, Any]] = []
    first_error: BulkWriteError | None = None
    for start, chunk in _slices(operations):
        try:
            collection.bulk_write(list(chunk), ordered=ordered)
        except BulkWriteError as error:
            details = error.details or {}
            shifted = [
                dict(item, index=int(item.get("index", 0)) + start)
                for item in details.get("writeErrors") or []
            ]
            if ordered:
                raise BulkWriteError(dict(details, writeErrors=shifted)) from error
            write_errors.extend(shifted)
            first_error = first_error or error
    if first_error is not None:
        details = dict(first_error.details or {}, writeErrors=write_errors)
        raise BulkWriteError(details) from first_error


def _slices(operations: Sequence[WriteModel]) -> list[tuple[int, Sequence[WriteModel]]]:
    """Split ``operations`` into runs with at most ``MAX_UPDATES_PER_COMMAND`` updates."""
    slices: list[tuple[int, Sequence[WriteModel]]] = []
    start = 0
    updates = 0
    for index, operation in enumerate(operations):
        if isinstance(operation, UpdateOne | UpdateMany | ReplaceOne):
            if updates == MAX_UPDATES_PER_COMMAND:
                slices.append((start, operations[start:index]))
                start, updates = index, 0
            updates += 1
    if start < len(operations):
        slices.append((start, operations[start:]))
    return slices
