"""``connections.mongo.bulk_write``: bulk writes in commands that FerretDB can finish."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import DeleteOne, InsertOne, MongoClient, ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from connections.mongo import MAX_UPDATES_PER_COMMAND, WriteModel, _slices, bulk_write

Document = dict[str, Any]


def _update(number: int) -> UpdateOne:
    return UpdateOne({"_id": f"d{number}"}, {"$set": {"v": number}}, upsert=True)


class TestSlices:
    def test_no_operations_give_no_slices(self) -> None:
        assert _slices([]) == []

    def test_updates_are_split_at_the_limit(self) -> None:
        operations: list[WriteModel] = [_update(n) for n in range(2 * MAX_UPDATES_PER_COMMAND + 1)]
        slices = _slices(operations)
        assert [(start, len(chunk)) for start, chunk in slices] == [
            (0, MAX_UPDATES_PER_COMMAND),
            (MAX_UPDATES_PER_COMMAND, MAX_UPDATES_PER_COMMAND),
            (2 * MAX_UPDATES_PER_COMMAND, 1),
        ]

    def test_inserts_and_deletes_do_not_count(self) -> None:
        operations: list[WriteModel] = [InsertOne({"_id": n}) for n in range(500)]
        operations += [DeleteOne({"_id": n}) for n in range(500)]
        assert [(start, len(chunk)) for start, chunk in _slices(operations)] == [(0, 1000)]

    def test_replacements_count_as_updates(self) -> None:
        operations: list[WriteModel] = [
            ReplaceOne({"_id": n}, {"v": n}, upsert=True)
            for n in range(MAX_UPDATES_PER_COMMAND + 1)
        ]
        assert len(_slices(operations)) == 2


@pytest.fixture()
def collection(mongo_uri: str) -> Iterator[Collection[Document]]:
    # A short socket timeout turns a command without a reply into a test failure within
    # seconds instead of at the suite's timeout.
    client: MongoClient[Document] = MongoClient(mongo_uri, socketTimeoutMS=30_000)
    name = f"bulk_{uuid.uuid4().hex[:10]}"
    try:
        yield client[name]["documents"]
    finally:
        client.drop_database(name)
        client.close()


@pytest.mark.integration
def test_250_updates_of_stored_documents(collection: Collection[Document]) -> None:
    collection.insert_many([{"_id": f"d{n}", "v": -1} for n in range(250)])

    # FerretDB 1.24 sends no reply to an update command in which 100 statements match.
    bulk_write(collection, [_update(n) for n in range(250)], ordered=False)

    assert collection.count_documents({"v": {"$gte": 0}}) == 250
    assert collection.find_one({"_id": "d249"}) == {"_id": "d249", "v": 249}


@pytest.mark.integration
def test_ordered_write_stops_at_the_first_error(collection: Collection[Document]) -> None:
    collection.insert_one({"_id": "taken"})
    operations: list[WriteModel] = [_update(n) for n in range(120)]
    operations.append(InsertOne({"_id": "taken"}))
    operations += [_update(n) for n in range(120, 130)]

    with pytest.raises(BulkWriteError) as raised:
        bulk_write(collection, operations, ordered=True)

    errors = (raised.value.details or {})["writeErrors"]
    assert [error["index"] for error in errors] == [120]
    assert errors[0]["code"] == 11000
    assert collection.count_documents({"v": {"$exists": True}}) == 120


@pytest.mark.integration
def test_unordered_write_reports_every_error(
    collection: Collection[Document],
) -> None:
    collection.insert_many([{"_id": "taken-1"}, {"_id": "taken-2"}])
    operations: list[WriteModel] = [InsertOne({"_id": "taken-1"})]
    operations += [_update(n) for n in range(100)]
    operations.append(InsertOne({"_id": "taken-2"}))

    with pytest.raises(BulkWriteError) as raised:
        bulk_write(collection, operations, ordered=False)

    errors = (raised.value.details or {})["writeErrors"]
    assert sorted(error["index"] for error in errors) == [0, 101]
    assert collection.count_documents({"v": {"$exists": True}}) == 100
