"""Shared helpers of the consumer tests.

- ``consumer_env``: a factory of ``ConsumerEnv`` objects. Each has its own topic prefix
  (with every topic of the contract created), consumer group names, MongoDB database
  and settings, and is torn down at the end of the test: topics deleted, database dropped.
- ``RecordPublisher``: publishes records with the contract's codec and keys, or raw bytes,
  and confirms delivery.
- ``ConsumerThread``: runs a ``consumer.runtime.ConsumerRuntime`` in a thread until stopped.
- ``read_topic``: reads every record of a topic, for example a dead-letter topic.
- ``wait_until``: polls a condition with a deadline that only guards against hangs.
- ``TcpProxy``: a proxy in front of the MongoDB-protocol server that can cut connections.
- ``sample_*``: valid records of each type.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient

from connections.kafka import admin_config, consumer_config, producer_config
from connections.settings import Settings, load_settings
from connections.topics import ensure_topics
from consumer.runtime import BatchHandler, ConsumerOptions, ConsumerRuntime, HandleResult
from schemas import keys
from schemas.catalogue import RecordType
from schemas.codec import SingleObjectCodec
from schemas.topics import Topics
from tests.test_codec import (
    sample_content,
    sample_job,
    sample_relationship,
    sample_space,
    sample_structure_listing,
)

__all__ = [
    "ConsumerEnv",
    "ConsumerThread",
    "RecordPublisher",
    "RecordingHandler",
    "read_topic",
    "sample_content",
    "sample_job",
    "sample_relationship",
    "sample_space",
    "sample_structure_listing",
    "wait_until",
]

# Deadline of every wait on Kafka or MongoDB; a healthy setup finishes in a few seconds,
# so reaching it means the test hangs, not that the code is slow.
WAIT_DEADLINE_SECONDS = 90.0
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = REPOSITORY_ROOT / ".venv" / "bin" / "confluence-consumer"


def wait_until(
    condition: Callable[[], bool], what: str, deadline_s: float = WAIT_DEADLINE_SECONDS
) -> None:
    """Poll ``condition`` every 0.2 s; fail the test naming ``what`` after the deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {deadline_s:g} s waiting for {what}")


@dataclass
class ConsumerEnv:
    """Topics, group names, database and settings of one test, unique per test."""

    run_id: str
    bootstrap: str
    mongo_uri: str
    partitions: int
    source_id: str = "src1"
    _clients: list[MongoClient[dict[str, Any]]] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"test-{self.run_id}"

    @property
    def database_name(self) -> str:
        return f"test_{self.run_id}"

    @property
    def topics(self) -> Topics:
        return Topics(prefix=self.prefix)

    @property
    def stream_collection(self) -> str:
        return f"source_{self.source_id}_stream"

    def environ(self) -> dict[str, str]:
        """Return the environment variables of a consumer process for this test."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_TOPIC_PREFIX": self.prefix,
            "MONGODB_URI": self.mongo_uri,
            "MONGODB_DATABASE": self.database_name,
        }

    @property
    def settings(self) -> Settings:
        return load_settings(self.environ())

    def group(self, name: str) -> str:
        """Return a consumer group id unique to this test."""
        return f"{name}-{self.run_id}"

    def mongo(self) -> MongoClient[dict[str, Any]]:
        """Return a MongoDB client of the test server; it is closed at teardown."""
        client: MongoClient[dict[str, Any]] = MongoClient(self.mongo_uri, tz_aware=True)
        self._clients.append(client)
        return client

    def database(self) -> Any:
        return self.mongo()[self.database_name]

    def admin(self) -> AdminClient:
        return AdminClient(admin_config(self.settings, "test-admin"))

    def create_topics(self) -> None:
        ensure_topics(
            self.admin(), self.topics.specs(), partitions=self.partitions, replication_factor=1
        )

    def delete_topics(self) -> None:
        names = [spec.name for spec in self.topics.specs()]
        admin = self.admin()
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()

    def close(self) -> None:
        client: MongoClient[dict[str, Any]] = MongoClient(self.mongo_uri)
        try:
            client.drop_database(self.database_name)
        finally:
            client.close()
        for opened in self._clients:
            opened.close()
        self.delete_topics()


@pytest.fixture
def consumer_env(kafka_bootstrap: str, mongo_uri: str) -> Iterator[Callable[..., ConsumerEnv]]:
    """Return a factory ``(partitions=2) -> ConsumerEnv`` with its topics created."""
    created: list[ConsumerEnv] = []

    def make(partitions: int = 2) -> ConsumerEnv:
        env = ConsumerEnv(uuid.uuid4().hex[:10], kafka_bootstrap, mongo_uri, partitions)
        env.create_topics()
        created.append(env)
        return env

    yield make
    for env in created:
        env.close()


def default_key(record_type: RecordType, record: dict[str, Any]) -> str:
    """Return the contract key of ``record``."""
    source_id = record["source_id"]
    if record_type is RecordType.CONTENT:
        return keys.content_key(source_id, record["id"])
    if record_type is RecordType.SPACE:
        return keys.space_key(source_id, record["key"])
    if record_type is RecordType.STRUCTURE_LISTING:
        return keys.structure_key(source_id, record["space_key"])
    if record_type is RecordType.JOB:
        return keys.job_key(source_id, record["job_id"])
    return keys.relationship_key(
        source_id,
        record["from_type"],
        record["from_id"],
        record["relation"],
        record["to_type"],
        record["to_id"],
        to_space_key=record["to_space_key"],
        to_title=record["to_title"],
    )


class RecordPublisher:
    """Test producer: encodes records with the contract codec and confirms delivery."""

    def __init__(self, env: ConsumerEnv) -> None:
        self.env = env
        self.codec = SingleObjectCodec()
        self._producer = Producer(producer_config(env.settings, "test-publisher"))
        self._errors: list[str] = []
        self.delivered: list[Message] = []

    def publish(
        self,
        record_type: RecordType,
        record: dict[str, Any],
        *,
        key: str | None = None,
        partition: int | None = None,
    ) -> None:
        """Encode and produce ``record`` to the topic of its type."""
        topic = self.env.topics.topic_for(record_type)
        value = self.codec.encode(record_type, record)
        self.publish_raw(topic, key or default_key(record_type, record), value, partition=partition)

    def publish_raw(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        """Produce ``value`` unchanged, for example bytes that are not Avro."""
        arguments: dict[str, Any] = {"key": key, "value": value, "on_delivery": self._delivered}
        if partition is not None:
            arguments["partition"] = partition
        if headers is not None:
            arguments["headers"] = list(headers)
        self._producer.produce(topic, **arguments)
        self._producer.poll(0)

    def flush(self) -> list[Message]:
        """Wait for every delivery report; fail the test if one reports an error."""
        remaining = self._producer.flush(WAIT_DEADLINE_SECONDS)
        assert remaining == 0, f"{remaining} records were not delivered"
        assert not self._errors, self._errors
        return self.delivered

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(f"{message.topic()}: {error.str()}")
        else:
            self.delivered.append(message)


def read_topic(env: ConsumerEnv, topic: str, count: int) -> list[Message]:
    """Read ``count`` records of ``topic`` from the beginning; fail if fewer arrive."""
    consumer = Consumer(consumer_config(env.settings, env.group(f"reader-{uuid.uuid4().hex[:6]}")))
    received: list[Message] = []
    try:
        consumer.subscribe([topic])
        end = time.monotonic() + WAIT_DEADLINE_SECONDS
        while len(received) < count and time.monotonic() < end:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            received.append(message)
    finally:
        consumer.close()
    assert len(received) >= count, f"{len(received)} of {count} records arrived on {topic}"
    return received


def committed_offsets(env: ConsumerEnv, group: str, topic: str) -> dict[int, int]:
    """Return the committed offset per partition of ``topic`` for ``group``."""
    consumer = Consumer(consumer_config(env.settings, group))
    try:
        partitions = [TopicPartition(topic, number) for number in range(env.partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=30)}
    finally:
        consumer.close()


class RecordingHandler:
    """Handler that keeps every record it was given; ``fail`` hooks inject failures."""

    def __init__(self, fail: Callable[[Sequence[Any]], None] | None = None) -> None:
        self.records: list[Any] = []
        self.batches = 0
        self.revokes = 0
        # Set from the consumer's own thread. Calling Consumer.assignment() from another
        # thread can deadlock with a rebalance callback that waits for the GIL.
        self.assigned = threading.Event()
        self._fail = fail
        self._lock = threading.Lock()

    def handle(self, batch: Sequence[Any]) -> HandleResult | None:
        if self._fail is not None:
            self._fail(batch)
        with self._lock:
            self.records.extend(batch)
            self.batches += 1
        return None

    def on_revoke(self) -> None:
        self.revokes += 1

    def on_assign(self, partitions: list[tuple[str, int]]) -> None:
        if partitions:
            self.assigned.set()

    def count(self) -> int:
        with self._lock:
            return len(self.records)


class ConsumerThread:
    """Run a ``ConsumerRuntime`` in a background thread until ``stop()``."""

    def __init__(
        self, options: ConsumerOptions, handler: BatchHandler, settings: Settings, **extra: Any
    ) -> None:
        self.runtime = ConsumerRuntime(options, handler, settings, **extra)
        self.status: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.status = self.runtime.run()

    def start(self) -> ConsumerThread:
        self._thread.start()
        return self

    def stop(self) -> int | None:
        """Request a stop, wait for the thread and return the exit status."""
        self.runtime.stop_event.set()
        return self.join()

    def join(self) -> int | None:
        """Wait for the thread to end and return the exit status."""
        self._thread.join(WAIT_DEADLINE_SECONDS)
        assert not self._thread.is_alive(), "consumer thread did not stop"
        return self.status


def start_console_script(
    env: ConsumerEnv, arguments: Sequence[str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Start ``confluence-consumer ARGUMENTS`` with the test's settings; log to ``log_path``."""
    environ = {**os.environ, **env.environ()}
    if CONSOLE_SCRIPT.exists():
        command = [str(CONSOLE_SCRIPT)]
    else:
        command = [
            sys.executable,
            "-c",
            "import sys; from consumer.cli import main; sys.exit(main())",
        ]
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [*command, *arguments],
            env=environ,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPOSITORY_ROOT,
        )


class TcpProxy:
    """A TCP proxy on 127.0.0.1 whose ``cut()`` simulates a server outage.

    ``cut()`` closes the listening socket and every open connection, so clients see
    refused connections; ``restore()`` listens again on the same port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._connections.extend([client, upstream])
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
