"""MongoDB client factory."""

from __future__ import annotations

import logging
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from connections.settings import Settings, redact_mongodb_uri

log = logging.getLogger(__name__)

# Fail start-up within 10 s when no server responds, instead of pymongo's 30 s default.
SERVER_SELECTION_TIMEOUT_MS = 10_000
# pymongo waits forever for a reply by default, so a server that stops answering would
# block a consumer silently, even through SIGTERM. A timeout turns that into a
# NetworkTimeout, which consumers retry with backoff and log. Two minutes leaves room for
# a slow bulk write on FerretDB's SQLite backend, which applies updates one at a time.
SOCKET_TIMEOUT_MS = 120_000

MongoDocument = dict[str, Any]


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
