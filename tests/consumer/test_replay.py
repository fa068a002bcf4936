"""Tests of ``confluence-consumer replay``: offset resets of a stopped consumer group."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumer.replay import ReplayError, parse_time, reset_offsets
from consumer.runtime import ConsumerOptions
from consumer.stream import StreamWriter
from schemas.catalogue import RecordType
from tests.consumer.conftest import (
    WAIT_DEADLINE_SECONDS,
    ConsumerEnv,
    ConsumerThread,
    RecordingHandler,
    RecordPublisher,
    committed_offsets,
    sample_content,
    sample_relationship,
    sample_space,
    start_console_script,
    wait_until,
)

INGESTION_FIELDS = ("ingested_at", "first_ingested_at")


def test_parse_time_defaults_to_utc() -> None:
    assert parse_time("2024-05-01T12:00:00") == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_parse_time_rejects_garbage() -> None:
    with pytest.raises(ReplayError, match="invalid time 'yesterday'"):
        parse_time("yesterday")


def stream_options(env: ConsumerEnv, group: str) -> ConsumerOptions:
    return ConsumerOptions(
        name="stream-writer",
        group_id=group,
        topics=[env.topics.spaces, env.topics.content, env.topics.relationships],
        batch_size=20,
        batch_timeout_s=0.2,
    )


def run_stream_writer(env: ConsumerEnv, group: str, documents: int) -> list[dict[str, Any]]:
    database = env.database()
    writer = StreamWriter(database)
    writer.prepare()
    consumer = ConsumerThread(stream_options(env, group), writer, env.settings).start()
    collection = database[env.stream_collection]
    try:
        wait_until(lambda: collection.count_documents({}) >= documents, f"{documents} documents")
    finally:
        assert consumer.stop() == 0
    return sorted(collection.find(), key=lambda document: document["_id"])


def without_ingestion(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {name: value for name, value in document.items() if name not in INGESTION_FIELDS}
        for document in documents
    ]


def test_replay_rebuilds_identical_documents(
    consumer_env: Callable[..., ConsumerEnv], tmp_path: Path
) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    publisher.publish(RecordType.SPACE, {**sample_space(), "source_id": env.source_id})
    for number in range(1, 11):
        for version in (1, 2):
            record = sample_content(source_id=env.source_id, id=str(number), version_number=version)
            publisher.publish(RecordType.CONTENT, record)
    publisher.publish(
        RecordType.RELATIONSHIP, {**sample_relationship(), "source_id": env.source_id}
    )
    publisher.flush()
    group = env.group("replayed")
    first = run_stream_writer(env, group, 22)
    env.database()[env.stream_collection].drop()

    process = start_console_script(
        env, ["replay", "--group", group, "--from-beginning"], tmp_path / "replay.log"
    )
    status = process.wait(WAIT_DEADLINE_SECONDS)
    rebuilt = run_stream_writer(env, group, 22)

    assert status == 0, (tmp_path / "replay.log").read_text()
    assert "topic\tpartition\toffset" in (tmp_path / "replay.log").read_text()
    assert len(first) == 22
    assert without_ingestion(rebuilt) == without_ingestion(first)


def test_replay_rejects_active_group(
    consumer_env: Callable[..., ConsumerEnv], tmp_path: Path
) -> None:
    env = consumer_env()
    group = env.group("active")
    handler = RecordingHandler()
    options = stream_options(env, group)
    consumer = ConsumerThread(options, handler, env.settings).start()
    log_path = tmp_path / "replay.log"
    try:
        wait_until(handler.assigned.is_set, "the consumer to join")
        process = start_console_script(
            env, ["replay", "--group", group, "--from-beginning"], log_path
        )
        status = process.wait(WAIT_DEADLINE_SECONDS)
    finally:
        consumer.stop()

    assert status == 1
    assert f"consumer group {group!r} has active members" in log_path.read_text()


def test_replay_from_time_skips_older(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    for number in range(1, 6):
        publisher.publish(
            RecordType.CONTENT, sample_content(source_id=env.source_id, id=str(number))
        )
    publisher.flush()
    # Record timestamps have millisecond resolution; the pause separates the two groups.
    time.sleep(0.05)
    boundary = datetime.now(UTC)
    time.sleep(0.05)
    for number in range(6, 9):
        publisher.publish(
            RecordType.CONTENT, sample_content(source_id=env.source_id, id=str(number))
        )
    publisher.flush()
    group = env.group("from-time")
    run_stream_writer(env, group, 8)

    plan = reset_offsets(env.settings, group, [env.topics.content], boundary)
    handler = RecordingHandler()
    consumer = ConsumerThread(stream_options(env, group), handler, env.settings).start()
    wait_until(lambda: handler.count() >= 3, "the 3 newer records")
    consumer.stop()

    assert sorted(int(record.value["id"]) for record in handler.records) == [6, 7, 8]
    assert {tp.topic for tp in plan.offsets} == {env.topics.content}
    assert len(plan.offsets) == env.partitions


def test_replay_defaults_to_committed_topics(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()
    publisher = RecordPublisher(env)
    publisher.publish(RecordType.CONTENT, sample_content(source_id=env.source_id, id="1"))
    publisher.flush()
    group = env.group("defaults")
    run_stream_writer(env, group, 1)

    plan = reset_offsets(env.settings, group)

    assert {tp.topic for tp in plan.offsets} == {env.topics.content}
    assert set(committed_offsets(env, group, env.topics.content).values()) == {0}


def test_replay_unknown_group_needs_topics(consumer_env: Callable[..., ConsumerEnv]) -> None:
    env = consumer_env()

    with pytest.raises(ReplayError, match="pass them with --topic"):
        reset_offsets(env.settings, env.group("never-ran"))
