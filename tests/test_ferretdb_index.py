"""The local FerretDB adds the index that its lookups by ``_id`` use to every collection."""

from __future__ import annotations

import sqlite3
import time
import uuid
from typing import Any

import pytest
from pymongo import MongoClient

from infra.ferretdb import FerretDBSettings

pytestmark = pytest.mark.integration

# The server looks for new tables every second.
DEADLINE_SECONDS = 15.0


def test_id_lookup_uses_an_index(mongo_uri: str) -> None:
    settings = FerretDBSettings.from_env()
    if mongo_uri.rstrip("/") != settings.uri.rstrip("/"):
        pytest.skip(f"{mongo_uri} is not the local FerretDB at {settings.uri}")
    name = f"test_index_{uuid.uuid4().hex[:10]}"
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        client[name]["documents"].insert_many([{"_id": f"d{n}", "v": n} for n in range(10)])
        path = settings.data_dir / f"{name}.sqlite"
        deadline = time.monotonic() + DEADLINE_SECONDS
        plan = ""
        while time.monotonic() < deadline:
            plan = query_plan(path)
            if "USING INDEX" in plan:
                break
            time.sleep(0.5)

        assert "__id_path" in plan
        document = client[name]["documents"].find_one({"_id": "d7"})
        assert document == {"_id": "d7", "v": 7}
    finally:
        client.drop_database(name)
        client.close()


def query_plan(path: Any) -> str:
    """Return SQLite's plan for the lookup by _id that FerretDB sends, for the first table."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (table,) = connection.execute("SELECT table_name FROM _ferretdb_collections").fetchone()
        rows = connection.execute(
            f"EXPLAIN QUERY PLAN SELECT 1 FROM \"{table}\" WHERE _ferretdb_sjson->'$._id' = ?",
            ('"d7"',),
        ).fetchall()
    finally:
        connection.close()
    return " ".join(str(row[-1]) for row in rows)
