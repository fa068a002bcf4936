"""A MongoDB outage of more than a minute under the three consumer processes.

``confluence-consumer stream``, ``relationships`` and ``job-history`` run as real
processes and reach the MongoDB-protocol server through an ``OutageProxy``. Part of the
records land first. Then MongoDB is cut off for 70 s, while the consumers are in the
middle of their batches: for ``RESET_PHASE_SECONDS`` every connection is reset, then for
``REFUSE_PHASE_SECONDS`` connections are refused. More records are published in both
phases. After the proxy forwards again, every record must be in MongoDB exactly once.
No consumer may exit, commit an offset of a record published during the outage, or send
a record to a dead-letter topic. A second test stops the stream consumer with SIGTERM
during an outage and checks that a new one writes every record after the restore.

The content tree and its edges are those of ``test_relationships_service``, plus pages of
a space ``BULK`` whose only edge is "space contains page".
"""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from connections.kafka import consumer_config
from consumer.relationships.derive import Edge
from consumer.runtime import ConsumedRecord
from consumer.stream import stream_collection_name, to_version
from demo.lag import GroupTopics, wait_for_catch_up
from demo.run import consumer_topics
from schemas.catalogue import RecordType
from schemas.codec import SingleObjectCodec
from schemas.topics import Topics
from tests.consumer.conftest import (
    ConsumerEnv,
    RecordPublisher,
    committed_offsets,
    sample_job,
    start_console_script,
    wait_until,
)
from tests.consumer.test_relationships_derive import content
from tests.consumer.test_relationships_service import (
    FETCHED_AT,
    SOURCE,
    RelationshipTopicReader,
    contains,
    expected_edges,
    tree_record,
)
from tests.tcp_proxy import OutageProxy

pytestmark = pytest.mark.integration

# An outage of a minute must lose nothing, so the outage here lasts longer than that.
RESET_PHASE_SECONDS = 25.0
REFUSE_PHASE_SECONDS = 45.0
# Deadline of the catch-up after the outage. A consumer may have just started its longest
# backoff (30 s) when MongoDB returns. The rest of the deadline guards against hangs.
CATCH_UP_DEADLINE_SECONDS = 240.0
STOP_DEADLINE_SECONDS = 60.0

# Consumer processes by subcommand, with the consumer name their log lines carry.
CONSUMER_NAMES = {
    "stream": "stream-writer",
    "relationships": "relationships",
    "job-history": "job-history",
}
BULK_SPACE = "BULK"

# Records published before, during the reset phase and during the refuse phase.
TREE_PARTS = (("1", "2", "10"), ("3", "4", "20", "21"), ("30", "100"))
BULK_PARTS = (range(1, 21), range(21, 81), range(81, 101))
# (job id, sequence, status) of the job records of each part.
JOB_PARTS = (
    (("job-a", 1, "running"), ("job-b", 1, "running")),
    (("job-a", 2, "succeeded"), ("job-c", 1, "running")),
    (("job-b", 2, "failed"), ("job-c", 2, "succeeded")),
)
EXPECTED_JOBS = {"job-a": (2, "succeeded"), "job-b": (2, "failed"), "job-c": (2, "succeeded")}


def bulk_id(number: int) -> str:
    return str(5000 + number)


def bulk_page(number: int) -> dict[str, Any]:
    """Return a page of space BULK without parent, labels or links."""
    return content(
        id=bulk_id(number),
        title=f"Bulk page {number}",
        space_key=BULK_SPACE,
        fetched_at=FETCHED_AT,
    )


def job_record(job_id: str, sequence: int, status: str) -> dict[str, Any]:
    return sample_job() | {
        "job_id": job_id,
        "source_id": SOURCE,
        "sequence": sequence,
        "status": status,
        "previous_job_id": None,
        "started_at": datetime(2024, 6, 1, 12, 0, tzinfo=UTC),
        "finished_at": None if status == "running" else datetime(2024, 6, 1, 12, 5, tzinfo=UTC),
    }


def publish_content(publisher: RecordPublisher, part: int) -> None:
    for content_id in TREE_PARTS[part]:
        publisher.publish(RecordType.CONTENT, tree_record(content_id))
    for number in BULK_PARTS[part]:
        publisher.publish(RecordType.CONTENT, bulk_page(number))
    publisher.flush()


def publish_jobs(publisher: RecordPublisher, part: int) -> None:
    for job_id, sequence, status in JOB_PARTS[part]:
        publisher.publish(RecordType.JOB, job_record(job_id, sequence, status))
    publisher.flush()


def publish_part(publisher: RecordPublisher, part: int) -> None:
    publish_content(publisher, part)
    publish_jobs(publisher, part)


def content_ids(parts: range) -> set[str]:
    ids = {content_id for part in parts for content_id in TREE_PARTS[part]}
    return ids | {bulk_id(number) for part in parts for number in BULK_PARTS[part]}


def content_document_ids(parts: range) -> set[str]:
    """Return the stream ``_id``s of the content records of ``parts`` (all version 1)."""
    return {f"content:{content_id}@v1" for content_id in content_ids(parts)}


def expected_all_edges() -> set[Edge]:
    bulk = {contains("page", bulk_id(number), BULK_SPACE) for part in BULK_PARTS for number in part}
    return expected_edges() | bulk


def expected_edges_before_outage() -> set[Edge]:
    """Return the edges of the first part: pages 1 > 2, blog post 10 and pages of BULK."""
    tree = expected_edges("3", "4", "20", "21", "30", "100")
    bulk = {contains("page", bulk_id(number), BULK_SPACE) for number in BULK_PARTS[0]}
    return tree | bulk


def read_whole_topic(env: ConsumerEnv, topic: str) -> list[Message]:
    """Read every record of ``topic`` up to its current end."""
    consumer = Consumer(consumer_config(env.settings, env.group("outage-reader")))
    messages: list[Message] = []
    try:
        ends: dict[int, int] = {}
        for partition in range(env.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 30)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, partition, 0) for partition in ends])
        positions = dict.fromkeys(ends, 0)

        def read_to_end() -> bool:
            for message in consumer.consume(500, 0.5):
                partition, offset = message.partition(), message.offset()
                if message.error() is None and partition is not None and offset is not None:
                    messages.append(message)
                    positions[partition] = offset + 1
            return all(positions[partition] >= end for partition, end in ends.items())

        wait_until(read_to_end, f"every record of {topic}")
    finally:
        consumer.close()
    return messages


def relationship_document_ids(env: ConsumerEnv) -> set[str]:
    """Return the stream ``_id`` of every record on the relationships topic."""
    codec = SingleObjectCodec()
    ids = set()
    for message in read_whole_topic(env, env.topics.relationships):
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        key, payload = message.key(), message.value()
        assert topic is not None
        assert partition is not None
        assert offset is not None
        assert key is not None
        assert payload is not None
        value = codec.decode(payload, RecordType.RELATIONSHIP)
        record = ConsumedRecord(
            topic,
            partition,
            offset,
            key.decode(),
            value,
            RecordType.RELATIONSHIP,
            message.timestamp()[1],
        )
        ids.add(to_version(record).document_id)
    return ids


def high_watermarks(env: ConsumerEnv, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
    consumer = Consumer(consumer_config(env.settings, env.group("outage-watermarks")))
    try:
        return {
            (topic, partition): consumer.get_watermark_offsets(
                TopicPartition(topic, partition), 30
            )[1]
            for topic in topics
            for partition in range(env.partitions)
        }
    finally:
        consumer.close()


def consumed_topics(env: ConsumerEnv) -> tuple[str, ...]:
    """Return every topic that one of the three consumers reads."""
    topics = consumer_topics(env.topics).values()
    return tuple(sorted({topic for consumer in topics for topic in consumer}))


def dead_letter_counts(env: ConsumerEnv) -> dict[str, int]:
    """Return the number of records on each dead-letter topic of the consumed topics."""
    dead_letter_topics = tuple(Topics.dead_letter_for(topic) for topic in consumed_topics(env))
    counts = dict.fromkeys(dead_letter_topics, 0)
    for (topic, _), high in high_watermarks(env, dead_letter_topics).items():
        counts[topic] += high
    return counts


def consumer_arguments(env: ConsumerEnv, command: str) -> list[str]:
    """Return the arguments of ``confluence-consumer COMMAND`` with small, quick batches."""
    return [
        command,
        "--group",
        env.group(command),
        "--batch-size",
        "10",
        "--batch-timeout",
        "0.2",
        "--log-interval",
        "10",
    ]


class ConsumerProcesses:
    """The three ``confluence-consumer`` processes of the test, with their logs."""

    def __init__(self, env: ConsumerEnv, folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for command in CONSUMER_NAMES:
            self.processes[command] = start_console_script(
                self.env, consumer_arguments(self.env, command), self.log_path(command)
            )

    def log_path(self, command: str) -> Path:
        return self.folder / f"{command}.log"

    def log(self, command: str) -> str:
        return self.log_path(command).read_text(encoding="utf-8", errors="replace")

    def exited(self) -> dict[str, int]:
        """Return the exit status of each process that has ended."""
        return {
            command: status
            for command, process in self.processes.items()
            if (status := process.poll()) is not None
        }

    def describe_exits(self) -> str | None:
        """Return the exits and the log tails of ended processes, or None when all run."""
        exited = self.exited()
        if not exited:
            return None
        return "\n".join(
            f"consumer {command} exited with status {status}; its log ends with:\n"
            + "\n".join(self.log(command).splitlines()[-20:])
            for command, status in exited.items()
        )

    def stop(self) -> dict[str, int]:
        """Send SIGTERM to every running process; return every exit status."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        statuses: dict[str, int] = {}
        for command, process in self.processes.items():
            try:
                statuses[command] = process.wait(STOP_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                statuses[command] = process.wait(STOP_DEADLINE_SECONDS)
        return statuses


@contextmanager
def running_proxy(mongo_uri: str) -> Iterator[OutageProxy]:
    address = urllib.parse.urlsplit(mongo_uri)
    proxy = OutageProxy(address.hostname or "127.0.0.1", address.port or 27017).start()
    try:
        yield proxy
    finally:
        proxy.close()


def wait_through_outage(
    processes: ConsumerProcesses, seconds: float, publish: Callable[[], None]
) -> None:
    """Publish, then let ``seconds`` pass, failing at once if a consumer exits."""
    end = time.monotonic() + seconds
    publish()
    while time.monotonic() < end:
        problem = processes.describe_exits()
        assert problem is None, problem
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))


def committed_beyond(
    env: ConsumerEnv, watermarks: Mapping[tuple[str, int], int]
) -> dict[str, dict[tuple[str, int], int]]:
    """Return, per consumer, committed offsets above the high watermarks at the cut."""
    beyond: dict[str, dict[tuple[str, int], int]] = {}
    for command, topics in consumer_topics(env.topics).items():
        for topic in topics:
            for partition, offset in committed_offsets(env, env.group(command), topic).items():
                if offset > watermarks[(topic, partition)]:
                    beyond.setdefault(command, {})[(topic, partition)] = offset
    return beyond


def test_outage_of_70_seconds_loses_nothing(
    consumer_env: Callable[..., ConsumerEnv], mongo_uri: str, tmp_path: Path
) -> None:
    env = consumer_env(partitions=2)
    assert env.source_id == SOURCE
    database = env.database()
    stream = database[stream_collection_name(SOURCE)]
    jobs = database["job_history"]
    publisher = RecordPublisher(env)
    reader = RelationshipTopicReader(env)

    with running_proxy(mongo_uri) as proxy:
        proxied = dataclasses.replace(env, mongo_uri=f"mongodb://{proxy.address}", _clients=[])
        processes = ConsumerProcesses(proxied, tmp_path)
        processes.start()
        try:
            publish_part(publisher, 0)
            wait_until(
                lambda: reader.edges() == expected_edges_before_outage(),
                "the edges of the records published before the outage",
            )
            landed = content_document_ids(range(1)) | relationship_document_ids(env)
            wait_until(
                lambda: {d["_id"] for d in stream.find({}, {"_id": 1})} == landed,
                "the stream documents of the records published before the outage",
            )
            wait_until(lambda: jobs.count_documents({}) == 2, "the jobs published before")

            # The cut comes while the consumers work through the content of the second part.
            publish_content(publisher, 1)
            first_bulk_id = {"_id": f"content:{bulk_id(BULK_PARTS[1][0])}@v1"}
            wait_until(
                lambda: stream.count_documents(first_bulk_id) == 1,
                "the first page published just before the outage",
            )
            proxy.reset()
            # Read after the cut, because no record above these offsets can be written
            # before the restore. So none of them may be committed either.
            watermarks_at_cut = high_watermarks(env, consumed_topics(env))
            wait_through_outage(processes, RESET_PHASE_SECONDS, lambda: publish_jobs(publisher, 1))
            proxy.refuse()
            wait_through_outage(processes, REFUSE_PHASE_SECONDS, lambda: publish_part(publisher, 2))
            beyond = committed_beyond(env, watermarks_at_cut)
            proxy.restore()

            wait_until(
                lambda: reader.edges() == expected_all_edges(),
                "every edge after the outage",
                CATCH_UP_DEADLINE_SECONDS,
            )
            groups = [
                GroupTopics(env.group(command), topics)
                for command, topics in consumer_topics(env.topics).items()
            ]
            wait_for_catch_up(
                env.admin(),
                groups,
                CATCH_UP_DEADLINE_SECONDS,
                still_running=processes.describe_exits,
            )
            exits = processes.exited()
        finally:
            statuses = processes.stop()
            reader.close()

    logs = {command: processes.log(command) for command in CONSUMER_NAMES}
    assert exits == {}, processes.describe_exits()
    assert statuses == dict.fromkeys(CONSUMER_NAMES, 0), logs
    assert beyond == {}, "offsets of records published during the outage were committed"
    dead_letters = dead_letter_counts(env)
    assert dead_letters == dict.fromkeys(dead_letters, 0)
    # Connections were opened and reset during the outage, and others open at the cut.
    assert proxy.accepted_in_reset_mode > 0
    assert proxy.resets > proxy.accepted_in_reset_mode

    expected_stream = content_document_ids(range(3)) | relationship_document_ids(env)
    stored_stream = [document["_id"] for document in stream.find({}, {"_id": 1})]
    assert len(stored_stream) == len(expected_stream)
    assert set(stored_stream) == expected_stream
    current = stream.count_documents({"entity_type": "content", "current": True})
    assert current == len(content_ids(range(3)))

    stored_jobs = {
        document["_id"]: (document["sequence"], document["status"]) for document in jobs.find()
    }
    assert stored_jobs == EXPECTED_JOBS

    for command, name in CONSUMER_NAMES.items():
        retry_line = re.compile(
            rf"WARNING consumer\.runtime batch failed with a transient error, retrying "
            rf"consumer={name} attempt=\d+ wait_s=[\d.]+ records=\d+ "
            rf"error=(AutoReconnect|ServerSelectionTimeoutError): {re.escape(proxy.address)}: "
        )
        assert retry_line.search(logs[command]), logs[command][-3000:]
    # Which consumers see which error depends on when each one retries, so both outage
    # modes are checked over all three logs.
    all_logs = "\n".join(logs.values())
    assert "Connection reset by peer" in all_logs
    assert "Connection refused" in all_logs


def stop_process(process: subprocess.Popen[bytes]) -> int:
    """Send SIGTERM and return the exit status.

    A process still running after ``STOP_DEADLINE_SECONDS`` is killed, and
    ``subprocess.TimeoutExpired`` is raised.
    """
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(STOP_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_DEADLINE_SECONDS)
        raise


def test_stop_during_outage_loses_nothing(
    consumer_env: Callable[..., ConsumerEnv], mongo_uri: str, tmp_path: Path
) -> None:
    env = consumer_env(partitions=2)
    stream = env.database()[stream_collection_name(SOURCE)]
    publisher = RecordPublisher(env)
    first_log = tmp_path / "first.log"
    second_log = tmp_path / "second.log"
    expected = {f"content:{bulk_id(number)}@v1" for number in range(1, 81)}

    with running_proxy(mongo_uri) as proxy:
        proxied = dataclasses.replace(env, mongo_uri=f"mongodb://{proxy.address}", _clients=[])
        arguments = consumer_arguments(proxied, "stream")
        first = start_console_script(proxied, arguments, first_log)
        try:
            for number in range(1, 21):
                publisher.publish(RecordType.CONTENT, bulk_page(number))
            publisher.flush()
            wait_until(lambda: stream.count_documents({}) == 20, "20 pages before the outage")

            proxy.refuse()
            watermarks_at_cut = high_watermarks(env, (env.topics.content,))
            for number in range(21, 81):
                publisher.publish(RecordType.CONTENT, bulk_page(number))
            publisher.flush()
            wait_until(
                lambda: "batch failed with a transient error" in first_log.read_text(),
                "a retry during the outage",
            )
            first_status = stop_process(first)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(STOP_DEADLINE_SECONDS)
        committed = committed_offsets(env, env.group("stream"), env.topics.content)

        proxy.restore()
        second = start_console_script(proxied, arguments, second_log)
        try:
            wait_until(
                lambda: stream.count_documents({}) == len(expected),
                "every page after the restart",
                CATCH_UP_DEADLINE_SECONDS,
            )
        finally:
            second_status = stop_process(second)

    assert first_status == 0, first_log.read_text()
    assert second_status == 0, second_log.read_text()
    stopped_line = "consumer stopped while a batch was failing consumer=stream-writer"
    assert stopped_line in first_log.read_text()
    for partition, offset in committed.items():
        assert offset <= watermarks_at_cut[(env.topics.content, partition)]
    stored = [document["_id"] for document in stream.find({}, {"_id": 1})]
    assert len(stored) == len(expected)
    assert set(stored) == expected
