"""Leases on a source's relationship state, and handlers of two processes taking turns."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import AutoReconnect

from consumer.errors import TransientError
from consumer.relationships.lease import (
    LeaseUnavailableError,
    StateLease,
    lease_collection_name,
)
from consumer.relationships.service import RelationshipHandler
from tests.consumer.test_relationships_derive import TREE
from tests.consumer.test_relationships_service import (
    SOURCE,
    Harness,
    expected_edges,
    tree_record,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def database(mongo_uri: str) -> Iterator[Database[dict[str, Any]]]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, tz_aware=True)
    name = f"test_lease_{uuid.uuid4().hex[:10]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def lease(
    database: Database[dict[str, Any]], owner: str, clock: FakeClock, **options: float
) -> StateLease:
    return StateLease(database, SOURCE, owner, clock=clock, sleep=clock.sleep, **options)


def test_lease_collection_name_per_source() -> None:
    assert lease_collection_name("src1") == "source_src1_relationship_lease"


def test_first_lease_asks_for_a_reload(database: Database[dict[str, Any]]) -> None:
    clock = FakeClock()
    first = lease(database, "a", clock)

    assert first.acquire() is True
    assert first.held


def test_same_owner_again_keeps_its_state(database: Database[dict[str, Any]]) -> None:
    clock = FakeClock()
    first = lease(database, "a", clock)
    first.acquire()
    first.release()

    assert first.acquire() is False


def test_other_holder_makes_caller_wait(database: Database[dict[str, Any]]) -> None:
    clock = FakeClock()
    holder = lease(database, "a", clock)
    waiter = lease(database, "b", clock, wait_s=2.0)
    holder.acquire()

    with pytest.raises(LeaseUnavailableError, match="held by 'a'"):
        waiter.acquire()
    assert not waiter.held


def test_takeover_asks_both_for_reloads(database: Database[dict[str, Any]]) -> None:
    clock = FakeClock()
    first = lease(database, "a", clock)
    second = lease(database, "b", clock)
    first.acquire()
    first.release()

    assert second.acquire() is True
    second.release()
    assert first.acquire() is True


def test_expired_lease_is_taken_over(database: Database[dict[str, Any]]) -> None:
    clock = FakeClock()
    stopped = lease(database, "a", clock, ttl_s=30.0)
    successor = lease(database, "b", clock, ttl_s=30.0, wait_s=60.0)
    stopped.acquire()

    assert successor.acquire() is True
    assert clock.now >= 1_000_030.0
    with pytest.raises(TransientError, match="taken by 'b'"):
        stopped.confirm()
    assert not stopped.held


def test_confirm_renews_the_lease(database: Database[dict[str, Any]]) -> None:
    clock = FakeClock()
    holder = lease(database, "a", clock, ttl_s=30.0)
    other = lease(database, "b", clock, ttl_s=30.0, wait_s=2.0)
    holder.acquire()
    clock.now += 25.0
    holder.confirm()
    clock.now += 25.0

    with pytest.raises(LeaseUnavailableError):
        other.acquire()


def test_old_epochs_are_deleted(database: Database[dict[str, Any]]) -> None:
    clock = FakeClock()
    owners = [lease(database, "a", clock), lease(database, "b", clock)]
    for turn in range(30):
        owner = owners[turn % 2]
        owner.acquire()
        owner.release()

    stored = list(database[lease_collection_name(SOURCE)].find())
    assert len(stored) <= 11
    assert max(document["_id"] for document in stored) == f"{30:012d}"


def test_handlers_taking_turns_derive_the_tree(database: Database[dict[str, Any]]) -> None:
    """Two processes handle alternate batches; each must see what the other wrote.

    Page 3 links to page 4 by title. The second process handles page 4 after the first
    one cached the state, so the first resolves the link only if it reads the state again.
    """
    harness = Harness(database)
    other = RelationshipHandler(database, harness.publisher)
    order = ["1", "2", "4", "3", *(item for item in TREE if item not in ("1", "2", "3", "4"))]

    for turn, content_id in enumerate(order):
        handler = harness.handler if turn % 2 == 0 else other
        handler.handle([harness.content(tree_record(content_id))])

    assert harness.edges() == expected_edges()


def test_failed_release_keeps_the_lease(
    database: Database[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    holder = lease(database, "a", clock, wait_s=1.0)
    holder.acquire()

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise AutoReconnect("127.0.0.1:27017: connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(holder.collection, "update_one", unreachable)
        with pytest.raises(AutoReconnect):
            holder.release()

    assert holder.held
    assert holder.acquire() is False


def test_own_unreleased_epoch_is_taken_back(database: Database[dict[str, Any]]) -> None:
    clock = FakeClock()
    holder = lease(database, "a", clock, wait_s=1.0)
    holder.acquire()
    epoch = holder.epoch
    holder.epoch = None

    assert holder.acquire() is False
    assert holder.epoch == epoch
