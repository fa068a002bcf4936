"""Tests of the consume loop against the real Kafka broker, with in-memory handlers."""

from __future__ import annotations

import logging
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    CursorNotFound,
    OperationFailure,
    WriteConcernError,
)

from consumer.errors import PoisonRecordError, TransientError, is_transient
from consumer.runtime import (
    HEADER_ERROR_CLASS,
    HEADER_SOURCE_OFFSET,
    ConsumedRecord,
    ConsumerOptions,
    backoff_delay,
    topic_record_types,
)
from consumer.stream import StreamWriter
from schemas.catalogue import RecordType
from tests.consumer.conftest import (
    ConsumerEnv,
    ConsumerThread,
    RecordingHandler,
    RecordPublisher,
    TcpProxy,
    committed_offsets,
    read_topic,
    sample_content,
    wait_until,
)


def options(env: ConsumerEnv, name: str = "test-runtime", **changes: Any) -> ConsumerOptions:
    values: dict[str, Any] = {
        "name": name,
        "group_id": env.group(name),
        "topics": [env.topics.content],
        "batch_size": 10,
        "batch_timeout_s": 0.2,
        "log_interval_s": 1.0,
        "initial_backoff_s": 0.05,
        "max_backoff_s": 0.2,
    }
    values.update(changes)
    return ConsumerOptions(**values)


def publish_pages(env: ConsumerEnv, count: int, first_id: int = 1) -> RecordPublisher:
    publisher = RecordPublisher(env)
    for number in range(first_id, first_id + count):
        record = sample_content(source_id=env.source_id, id=str(number), title=f"Page {number}")
        publisher.publish(RecordType.CONTENT, record)
    publisher.flush()
    return publisher


# Pure functions


def test_backoff_doubles_until_cap() -> None:
    delays = [backoff_delay(attempt, 0.5, 4.0) for attempt in range(1, 8)]

    assert 0.4 <= delays[0] <= 0.5
    assert 0.8 <= delays[1] <= 1.0
    assert 1.6 <= delays[2] <= 2.0
    for delay in delays[3:]:
        assert 3.2 <= delay <= 4.0


def test_backoff_huge_attempt_stays_capped() -> None:
    assert backoff_delay(10_000, 0.5, 30.0) <= 30.0


def test_topic_record_types_maps_prefix() -> None:
    mapping = topic_record_types(["p.content", "p.job-history"], "p")

    assert mapping == {"p.content": RecordType.CONTENT, "p.job-history": RecordType.JOB}


def test_topic_record_types_rejects_foreign_topic() -> None:
    with pytest.raises(ValueError, match=r"other\.content"):
        topic_record_types(["other.content"], "p")


@pytest.mark.parametrize(
    "changes",
    [{"topics": []}, {"batch_size": 0}, {"batch_timeout_s": 0}, {"metrics_port": 70000}],
)
def test_options_reject_invalid_values(changes: dict[str, Any]) -> None:
    values: dict[str, Any] = {"name": "n", "group_id": "g", "topics": ["p.content"]}
    values.update(changes)
    with pytest.raises(ValueError, match="invalid options of consumer 'n'"):
        ConsumerOptions(**values)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TransientError("down"), True),
        (AutoReconnect("connection reset"), True),
        (WriteConcernError("waiting for replication timed out", 64, {}), True),
        (BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}), True),
        (BulkWriteError({"writeErrors": [{"code": 11000}], "writeConcernErrors": []}), False),
        (BulkWriteError({"writeErrors": [{"code": 189}]}), True),
        (OperationFailure("not primary", code=10107), True),
        (CursorNotFound("cursor id 7 not found", code=43), True),
        (OperationFailure("bad update", code=9), False),
        (ValueError("bug"), False),
    ],
)
def test_is_transient_classifies(error: BaseException, expected: bool) -> None:
    assert is_transient(error) is expected


# The loop against the broker


def test_records_reach_handler_decoded(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publish_pages(env, 25)
    handler = RecordingHandler()
    consumer = ConsumerThread(options(env), handler, env.settings).start()

    wait_until(lambda: handler.count() >= 25, "25 records at the handler")
    status = consumer.stop()

    assert status == 0
    ids = sorted(int(record.value["id"]) for record in handler.records)
    assert ids == list(range(1, 26))
    first: ConsumedRecord = handler.records[0]
    assert first.record_type is RecordType.CONTENT
    assert first.topic == env.topics.content
    assert first.key == f"{env.source_id}:content:{first.value['id']}"
    assert first.timestamp_ms > 0
    assert handler.batches >= 3


def test_stop_commits_offsets(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = publish_pages(env, 12)
    ends: dict[int, int] = {}
    for message in publisher.delivered:
        partition, offset = message.partition(), message.offset()
        assert partition is not None
        assert offset is not None
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    handler = RecordingHandler()
    run_options = options(env)
    consumer = ConsumerThread(run_options, handler, env.settings).start()

    wait_until(lambda: handler.count() >= 12, "12 records at the handler")
    consumer.stop()

    committed = committed_offsets(env, run_options.group_id, env.topics.content)
    for partition, end in ends.items():
        assert committed[partition] == end
    assert handler.revokes >= 1


def test_restart_resumes_after_commit(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publish_pages(env, 8)
    first = RecordingHandler()
    run_options = options(env)
    consumer = ConsumerThread(run_options, first, env.settings).start()
    wait_until(lambda: first.count() >= 8, "8 records at the first handler")
    consumer.stop()

    publish_pages(env, 5, first_id=100)
    second = RecordingHandler()
    consumer = ConsumerThread(run_options, second, env.settings).start()
    wait_until(lambda: second.count() >= 5, "5 new records at the second handler")
    consumer.stop()

    assert sorted(int(record.value["id"]) for record in second.records) == list(range(100, 105))


def test_transient_error_retries_same_batch(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publish_pages(env, 6)
    failures = {"left": 3}

    def fail_three_times(batch: Sequence[ConsumedRecord]) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise AutoReconnect("connection refused")

    handler = RecordingHandler(fail=fail_three_times)
    consumer = ConsumerThread(options(env), handler, env.settings).start()

    wait_until(lambda: handler.count() >= 6, "6 records after the retries")
    consumer.stop()

    assert failures["left"] == 0
    assert consumer.runtime.metrics.snapshot().retries == 3
    assert sorted(int(record.value["id"]) for record in handler.records) == list(range(1, 7))


def test_handler_poison_goes_to_dead_letters(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env(partitions=1)
    publish_pages(env, 5)

    def reject_page_three(batch: Sequence[ConsumedRecord]) -> None:
        for record in batch:
            if record.value["id"] == "3":
                raise PoisonRecordError(record, "page 3 has a body the handler cannot store")

    handler = RecordingHandler(fail=reject_page_three)
    consumer = ConsumerThread(options(env), handler, env.settings).start()

    wait_until(lambda: handler.count() >= 4, "the 4 other records")
    consumer.stop()

    assert sorted(record.value["id"] for record in handler.records) == ["1", "2", "4", "5"]
    (dead,) = read_topic(env, env.topics.dead_letter_for(env.topics.content), 1)
    headers = dict(dead.headers() or [])
    assert headers[HEADER_ERROR_CLASS] == b"PoisonRecordError"
    assert headers[HEADER_SOURCE_OFFSET] == b"2"
    assert dead.key() == f"{env.source_id}:content:3".encode()


def test_unexpected_error_exits_one(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publish_pages(env, 3)

    def crash(batch: Sequence[ConsumedRecord]) -> None:
        raise RuntimeError("bug in the handler")

    run_options = options(env)
    consumer = ConsumerThread(run_options, RecordingHandler(fail=crash), env.settings).start()

    assert consumer.join() == 1
    committed = committed_offsets(env, run_options.group_id, env.topics.content)
    assert all(offset < 0 for offset in committed.values())


def test_tombstones_skipped_unless_requested(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env(partitions=1)
    publisher = RecordPublisher(env)
    publisher.publish_raw(env.topics.content, f"{env.source_id}:content:9", None)
    publisher.flush()
    publish_pages(env, 1)

    skipping = RecordingHandler()
    consumer = ConsumerThread(options(env, "skipper"), skipping, env.settings).start()
    wait_until(lambda: skipping.count() >= 1, "the page after the tombstone")
    consumer.stop()
    delivering = RecordingHandler()
    consumer = ConsumerThread(
        options(env, "deliverer", deliver_tombstones=True), delivering, env.settings
    ).start()
    wait_until(lambda: delivering.count() >= 2, "the tombstone and the page")
    consumer.stop()

    assert [record.tombstone for record in skipping.records] == [False]
    assert [record.tombstone for record in delivering.records] == [True, False]
    assert delivering.records[0].value == {}


def test_metrics_endpoint_serves_counters(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publish_pages(env, 4)
    handler = RecordingHandler()
    consumer = ConsumerThread(options(env, metrics_port=0), handler, env.settings).start()
    runtime = consumer.runtime

    wait_until(lambda: handler.count() >= 4 and runtime.metrics_port is not None, "4 records")
    wait_until(lambda: runtime.metrics.snapshot().lag == 0, "lag 0 after the 4 records")
    url = f"http://127.0.0.1:{runtime.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    consumer.stop()

    assert 'confluence_consumer_records_consumed_total{consumer="test-runtime"} 4.0' in body
    assert 'confluence_consumer_records_written_total{consumer="test-runtime"} 4.0' in body
    assert runtime.metrics.snapshot().consumed == 4
    assert 'confluence_consumer_lag_records{consumer="test-runtime"' in body


def test_mongodb_outage_loses_nothing(
    consumer_env: Callable[..., ConsumerEnv], mongo_uri: str
) -> None:
    env = consumer_env()
    address = urllib.parse.urlsplit(mongo_uri)
    proxy = TcpProxy(address.hostname or "127.0.0.1", address.port or 27017)
    client: MongoClient[dict[str, Any]] = MongoClient(
        f"mongodb://127.0.0.1:{proxy.port}",
        serverSelectionTimeoutMS=1000,
        connectTimeoutMS=1000,
        socketTimeoutMS=5000,
    )
    database = client[env.database_name]
    collection = env.database()[env.stream_collection]
    run_options = options(env, "outage", topics=[env.topics.content], max_backoff_s=1.0)
    consumer = ConsumerThread(run_options, StreamWriter(database), env.settings).start()
    try:
        publish_pages(env, 10)
        wait_until(lambda: collection.count_documents({}) >= 10, "10 documents before the outage")

        proxy.cut()
        publish_pages(env, 10, first_id=11)
        wait_until(lambda: consumer.runtime.metrics.snapshot().retries >= 3, "3 retries")
        proxy.restore()
        wait_until(lambda: collection.count_documents({}) >= 20, "20 documents after the outage")
    finally:
        status = consumer.stop()
        proxy.close()
        client.close()

    assert status == 0
    ids = sorted(document["_id"] for document in collection.find())
    assert ids == sorted(f"content:{number}@v1" for number in range(1, 21))


def test_revocation_commits_before_handover(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env(partitions=4)
    publish_pages(env, 20)
    run_options = options(env, "handover")
    first_handler = RecordingHandler()
    first = ConsumerThread(run_options, first_handler, env.settings).start()
    wait_until(lambda: first_handler.count() >= 20, "20 records at the first member")

    # The second member joins at once, before the 5 s auto-commit, so only the commit on
    # revocation keeps it from receiving the same records again.
    second_handler = RecordingHandler()
    second = ConsumerThread(run_options, second_handler, env.settings).start()
    wait_until(second_handler.assigned.is_set, "an assignment for the second member")
    publish_pages(env, 20, first_id=21)
    wait_until(
        lambda: first_handler.count() + second_handler.count() >= 40, "40 records in the group"
    )
    first.stop()
    second.stop()

    ids = [int(record.value["id"]) for record in first_handler.records + second_handler.records]
    assert sorted(ids) == list(range(1, 41))
    assert first_handler.revokes >= 1
    assert second_handler.count() > 0


def test_counters_logged_during_slow_batch(
    consumer_env: Callable[..., ConsumerEnv], caplog: pytest.LogCaptureFixture
) -> None:
    env = consumer_env()
    publish_pages(env, 3)
    release = threading.Event()
    handler = RecordingHandler(fail=lambda batch: release.wait(30))
    consumer = ConsumerThread(
        options(env, "slow-batch", log_interval_s=0.2), handler, env.settings
    ).start()
    caplog.set_level(logging.INFO, logger="consumer.metrics")
    try:
        wait_until(lambda: counter_lines(caplog) >= 3, "counter lines while the batch waits")
        assert handler.count() == 0
    finally:
        release.set()
        consumer.stop()


def counter_lines(caplog: pytest.LogCaptureFixture) -> int:
    return sum("consumer counters consumer=slow-batch" in line for line in caplog.messages)
