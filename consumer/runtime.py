"""The consume loop that every consumer process runs.

``run_consumer`` subscribes a consumer group to its topics and repeats: receive up to
``batch_size`` messages, decode each with the record codec, pass the decoded batch to a
``BatchHandler``, and store the batch's offsets only after the handler returned.

Delivery is at least once. A crash after the handler wrote a batch but before its
offsets were committed makes the group receive that batch again, so handlers must be
idempotent. Offsets are committed in two ways:

- librdkafka's background auto-commit (every 5 s, ``connections.kafka.consumer_config``)
  commits the offsets stored so far. It commits only stored offsets, because
  ``enable.auto.offset.store`` is false, so it never commits a record the handler has
  not finished. A synchronous commit per batch would add a broker round trip to every
  batch and protect nothing that idempotent writes do not already cover. After a crash,
  at most the last 5 s of batches are received again and rewritten to the same ``_id``s.
- A synchronous commit when partitions are revoked and at shutdown, so the next owner of
  a partition starts exactly after the last record this process finished.

Failures, by kind:

- A message that does not decode (bytes that are not Avro, an unknown schema
  fingerprint, a record that fails validation) goes to ``{topic}.dlq`` with headers that
  name its source topic, partition and offset and the error, and the loop moves on.
- ``PoisonRecordError`` from the handler sends that one record to the dead-letter topic
  and the rest of the batch is handled again.
- A transient error (``consumer.errors.is_transient``: ``TransientError`` or a MongoDB
  connection or write concern failure) pauses the assigned partitions, waits with a
  capped exponential backoff while still polling (so the group does not remove this
  member after ``max.poll.interval.ms``), and retries the same batch. Nothing is stored
  or committed until it succeeds, so an outage of any length loses no record.
- SIGTERM and SIGINT finish the current batch, commit, and return 0.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from connections.kafka import PRODUCER_DELIVERY_TIMEOUT_MS, consumer_config, producer_config
from connections.registry import create_codec
from connections.settings import Settings
from consumer.errors import (
    DeadLetterError,
    FatalConsumerError,
    PoisonRecordError,
    is_transient,
)
from consumer.metrics import DEFAULT_METRICS_HOST, ConsumerMetrics, PeriodicLogger
from schemas.catalogue import RecordType
from schemas.codec import Codec
from schemas.errors import CodecError
from schemas.topics import Topics

log = logging.getLogger(__name__)
kafka_log = logging.getLogger(__name__ + ".librdkafka")

# Dead-letter header names; the original headers of the message are kept before them.
HEADER_SOURCE_TOPIC = "dlq.source.topic"
HEADER_SOURCE_PARTITION = "dlq.source.partition"
HEADER_SOURCE_OFFSET = "dlq.source.offset"
HEADER_ERROR_CLASS = "dlq.error.class"
HEADER_ERROR_MESSAGE = "dlq.error.message"
HEADER_CONSUMER_GROUP = "dlq.consumer.group"
# Longer error messages are cut, so one huge message cannot bloat the dead-letter record.
MAX_HEADER_MESSAGE_CHARS = 2000

# Upper bound of one poll while waiting out a transient failure, so a stop request or a
# rebalance is served within this time.
RETRY_POLL_SECONDS = 1.0
# A repeated Kafka error of the same code and topic is logged at most this often.
KAFKA_ERROR_LOG_INTERVAL_SECONDS = 60.0
# Lag is measured from locally cached watermarks at most this often.
LAG_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True)
class ConsumedRecord:
    """One decoded Kafka record.

    ``value`` is the Avro record decoded with the current reader schema of
    ``record_type``. A tombstone is a message without a value, as on a compacted topic.
    Its ``value`` is empty and ``tombstone`` is true, and it reaches the handler only
    when ``ConsumerOptions.deliver_tombstones`` is set.
    """

    topic: str
    partition: int
    offset: int
    key: str | None
    value: dict[str, Any]
    record_type: RecordType
    timestamp_ms: int
    tombstone: bool = False


@dataclass(frozen=True)
class HandleResult:
    """Counts a handler may return from ``handle`` for the periodic counters."""

    written: int
    skipped: int = 0


class BatchHandler(Protocol):
    """Interface of the code that processes each batch of decoded records.

    ``handle`` must be idempotent, because a batch is received again after a crash.
    It raises ``consumer.errors.TransientError`` (or lets a transient pymongo error
    propagate) to have the same batch retried after a backoff, and
    ``consumer.errors.PoisonRecordError`` for one record that can never be processed.
    Output published to Kafka must be flushed and its delivery confirmed before
    ``handle`` returns. Returning None counts every record as written.

    A handler may also define ``on_revoke(self) -> None``: the runtime calls it before
    offsets are committed on partition revocation and at shutdown, to flush state. And
    ``on_assign(self, partitions: list[tuple[str, int]]) -> None``: the runtime calls it
    with the (topic, partition) pairs of each new assignment, before any of their records
    reach ``handle``.
    """

    def handle(self, batch: Sequence[ConsumedRecord]) -> HandleResult | None: ...


@dataclass(frozen=True)
class ConsumerOptions:
    """Options of one consumer process."""

    name: str
    group_id: str
    topics: list[str]
    batch_size: int = 500
    batch_timeout_s: float = 1.0
    metrics_port: int | None = None
    log_interval_s: float = 30.0
    metrics_host: str = DEFAULT_METRICS_HOST
    # Pass tombstones to the handler instead of counting them as skipped.
    deliver_tombstones: bool = False
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    # librdkafka properties that replace the computed consumer configuration.
    kafka_overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not self.topics:
            problems.append("no topics to consume; pass at least one topic")
        if self.batch_size < 1:
            problems.append(f"batch size {self.batch_size} is invalid; use 1 or more")
        if self.batch_timeout_s <= 0:
            problems.append(f"batch timeout {self.batch_timeout_s} s is invalid; use more than 0")
        if self.log_interval_s <= 0:
            problems.append(f"log interval {self.log_interval_s} s is invalid; use more than 0")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            problems.append(f"metrics port {self.metrics_port} is invalid; use 0 to 65535")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            problems.append(
                f"backoff {self.initial_backoff_s} s to {self.max_backoff_s} s is invalid; the "
                f"initial backoff must be above 0 and at most the maximum"
            )
        if problems:
            raise ValueError(f"invalid options of consumer {self.name!r}: {'; '.join(problems)}")


def topic_record_types(topics: Sequence[str], prefix: str) -> dict[str, RecordType]:
    """Map each topic name to the record type it carries, for topics of ``prefix``.

    Raise ``ValueError`` naming a topic that is not a data topic of the contract.
    """
    known = {
        Topics(prefix=prefix).topic_for(record_type): record_type for record_type in RecordType
    }
    unknown = [topic for topic in topics if topic not in known]
    if unknown:
        raise ValueError(
            f"topics {unknown} are not data topics of prefix {prefix!r}; expected some of "
            f"{sorted(known)}; check KAFKA_TOPIC_PREFIX"
        )
    return {topic: known[topic] for topic in topics}


def backoff_delay(attempt: int, initial_s: float, max_s: float) -> float:
    """Return the wait before retry ``attempt`` (1-based): doubling, capped, with jitter.

    The jitter takes up to 20% off, so consumers that failed together do not retry in step.
    """
    base = min(max_s, initial_s * float(2 ** min(attempt - 1, 32)))
    return base * random.uniform(0.8, 1.0)


Position = tuple[str, int, int]


@dataclass
class _Batch:
    """The messages of one poll and their decoded records, until their offsets are stored."""

    messages: list[Message]
    records: list[ConsumedRecord]
    done: bool = False

    def drop_partitions(self, partitions: set[tuple[str, int]]) -> int:
        """Forget the messages of ``partitions``; return how many records were dropped."""
        before = len(self.records)
        self.messages = [m for m in self.messages if (m.topic(), m.partition()) not in partitions]
        self.records = [r for r in self.records if (r.topic, r.partition) not in partitions]
        return before - len(self.records)


class _StopRequested(Exception):
    """Raised inside the retry loop when a stop was requested while the batch was failing."""


class ConsumerRuntime:
    """One consumer process: the Kafka consumer, dead-letter producer, counters and loop."""

    def __init__(
        self,
        options: ConsumerOptions,
        handler: BatchHandler,
        settings: Settings,
        *,
        codec: Codec | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.options = options
        self.handler = handler
        self.settings = settings
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.metrics = ConsumerMetrics(options.name)
        self.metrics_port: int | None = None
        self._record_types = topic_record_types(options.topics, settings.kafka.topic_prefix)
        self._codec = codec if codec is not None else create_codec(settings, auto_register=False)
        config = consumer_config(
            settings,
            options.group_id,
            client_id=options.name,
            logger=kafka_log,
            overrides=options.kafka_overrides,
        )
        self._consumer = Consumer(config)
        self._dead_letter_producer: Producer | None = None
        self._dead_letter_errors: list[str] = []
        self._batch: _Batch | None = None
        self._backlog: list[Message] = []
        self._periodic = PeriodicLogger(self.metrics, options.log_interval_s)
        self._last_lag_check = 0.0
        self._kafka_error_logged: dict[tuple[int, str], float] = {}

    # Main loop

    def run(self) -> int:
        """Consume until a stop is requested; return the process exit status."""
        options = self.options
        if options.metrics_port is not None:
            self.metrics_port = self.metrics.serve(options.metrics_port, options.metrics_host)
        log.info(
            "consumer started consumer=%s group=%s topics=%s batch_size=%d",
            options.name,
            options.group_id,
            ",".join(options.topics),
            options.batch_size,
        )
        self._consumer.subscribe(
            options.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._periodic.start()
        status = 0
        try:
            while not self.stop_event.is_set():
                messages = self._next_messages()
                if messages:
                    self._process(messages)
                self._tick()
        except _StopRequested:
            log.warning(
                "consumer stopped while a batch was failing consumer=%s; its records were not "
                "stored and will be received again",
                options.name,
            )
        except FatalConsumerError as error:
            log.error("consumer failed consumer=%s error=%s", options.name, error)
            status = 1
        except Exception:
            log.exception("consumer failed with an unexpected error consumer=%s", options.name)
            status = 1
        finally:
            self._batch = None
            self._shutdown()
        return status

    def _next_messages(self) -> list[Message]:
        if self._backlog:
            messages, self._backlog = self._backlog, []
            return messages
        return list(
            self._consumer.consume(
                num_messages=self.options.batch_size, timeout=self.options.batch_timeout_s
            )
        )

    def _process(self, messages: list[Message]) -> None:
        """Decode, handle and store the offsets of one polled batch."""
        usable: list[Message] = []
        for message in messages:
            if self._kafka_error(message):
                continue
            usable.append(message)
        if not usable:
            return
        self.metrics.add(consumed=len(usable))

        records = [record for message in usable if (record := self._decode(message)) is not None]
        self._confirm_dead_letters()
        batch = _Batch(messages=usable, records=records)
        self._batch = batch
        try:
            self._handle(batch)
            if not batch.done:
                self._store_offsets(batch)
        finally:
            self._batch = None

    def _handle(self, batch: _Batch) -> None:
        """Pass the batch to the handler until it succeeds, dead-lettering poison records."""
        attempt = 0
        while not batch.done:
            if not batch.records:
                return
            try:
                result = self.handler.handle(batch.records)
            except PoisonRecordError as error:
                self._dead_letter_poison(batch, error)
                continue
            except Exception as error:
                if not is_transient(error):
                    raise
                attempt += 1
                delay = backoff_delay(
                    attempt, self.options.initial_backoff_s, self.options.max_backoff_s
                )
                self.metrics.add(retries=1)
                log.warning(
                    "batch failed with a transient error, retrying consumer=%s attempt=%d "
                    "wait_s=%.1f records=%d error=%s: %s",
                    self.options.name,
                    attempt,
                    delay,
                    len(batch.records),
                    type(error).__name__,
                    error,
                )
                self._wait_paused(delay)
                continue
            self._count_result(result, len(batch.records))
            return
        # The batch was finished inside on_revoke during a retry wait.

    def _count_result(self, result: HandleResult | None, size: int) -> None:
        if result is None:
            self.metrics.add(written=size, batches=1)
        else:
            self.metrics.add(written=result.written, skipped=result.skipped, batches=1)

    def _wait_paused(self, delay: float) -> None:
        """Wait ``delay`` seconds with the assignment paused, serving polls and callbacks."""
        self._pause_assignment()
        deadline = time.monotonic() + delay
        try:
            while not self.stop_event.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                messages = self._consumer.consume(
                    num_messages=self.options.batch_size,
                    timeout=min(RETRY_POLL_SECONDS, remaining),
                )
                if messages:
                    # Partitions assigned during the wait are not paused yet; keep what they
                    # delivered for the next batch and pause them too.
                    self._backlog.extend(messages)
                    self._pause_assignment()
        finally:
            self._resume_assignment()
        if self.stop_event.is_set():
            raise _StopRequested

    def _pause_assignment(self) -> None:
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.pause(assignment)

    def _resume_assignment(self) -> None:
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.resume(assignment)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_check >= LAG_INTERVAL_SECONDS:
            self._last_lag_check = now
            self.metrics.set_lag(self._measure_lag())

    def _shutdown(self) -> None:
        try:
            self._flush_handler()
            self._commit("shutdown")
        finally:
            # close() calls on_revoke for the assignment, which commits once more, then
            # leaves the group so its partitions move to other members at once.
            self._consumer.close()
            if self._dead_letter_producer is not None:
                self._dead_letter_producer.flush(10)
            self.metrics.close()
            self._periodic.stop()
            log.info("consumer stopped consumer=%s", self.options.name)

    # Decoding and dead letters

    def _kafka_error(self, message: Message) -> bool:
        """Return True when ``message`` carries an error instead of a record."""
        error = message.error()
        if error is None:
            return False
        if error.fatal():
            raise FatalConsumerError(f"Kafka consumer error {error.name()}: {error.str()}")
        topic = message.topic() or ""
        now = time.monotonic()
        last = self._kafka_error_logged.get((error.code(), topic))
        if last is None or now - last >= KAFKA_ERROR_LOG_INTERVAL_SECONDS:
            self._kafka_error_logged[(error.code(), topic)] = now
            log.warning(
                "Kafka consumer error consumer=%s topic=%s code=%s error=%s; check that the "
                "topic exists (confluence-topics create) and the broker is reachable",
                self.options.name,
                topic,
                error.name(),
                error.str(),
            )
        return True

    def _decode(self, message: Message) -> ConsumedRecord | None:
        """Decode one message; dead-letter it and return None when it is poison."""
        topic = message.topic()
        partition = message.partition()
        offset = message.offset()
        assert topic is not None
        assert partition is not None
        assert offset is not None
        record_type = self._record_types[topic]
        _, timestamp_ms = message.timestamp()
        raw_key = message.key()
        try:
            key = raw_key.decode("utf-8") if isinstance(raw_key, bytes) else raw_key
        except UnicodeDecodeError as error:
            self._dead_letter(message, "InvalidKeyError", f"record key is not UTF-8: {error}")
            return None
        value = message.value()
        if value is None:
            if not self.options.deliver_tombstones:
                self.metrics.add(skipped=1)
                return None
            return ConsumedRecord(
                topic, partition, offset, key, {}, record_type, timestamp_ms, tombstone=True
            )
        while True:
            try:
                decoded = self._codec.decode(value, expected=record_type)
                break
            except CodecError as error:
                if error.poison:
                    self._dead_letter(
                        message, type(error).__name__, error.message, error.dead_letter_headers()
                    )
                    return None
                log.warning(
                    "record decoding failed, retrying consumer=%s topic=%s partition=%d "
                    "offset=%d error=%s",
                    self.options.name,
                    topic,
                    partition,
                    offset,
                    error,
                )
                self._wait_paused(self.options.max_backoff_s)
        return ConsumedRecord(topic, partition, offset, key, decoded, record_type, timestamp_ms)

    def _dead_letter_poison(self, batch: _Batch, error: PoisonRecordError) -> None:
        record = error.record
        position = (record.topic, record.partition, record.offset)
        message = next((m for m in batch.messages if _position(m) == position), None)
        if message is None:
            raise FatalConsumerError(
                f"handler raised PoisonRecordError for {record.topic}[{record.partition}]@"
                f"{record.offset}, which is not in the current batch; raise it with a record "
                f"of the batch"
            )
        log.warning(
            "handler rejected a record consumer=%s topic=%s partition=%d offset=%d reason=%s",
            self.options.name,
            record.topic,
            record.partition,
            record.offset,
            error.reason,
        )
        self._dead_letter(message, "PoisonRecordError", error.reason)
        self._confirm_dead_letters()
        batch.records = [r for r in batch.records if (r.topic, r.partition, r.offset) != position]

    def _dead_letter(
        self,
        message: Message,
        error_class: str,
        error_message: str,
        extra_headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Produce ``message``'s key and value unchanged to its dead-letter topic."""
        topic, partition, offset = _position(message)
        original = message.headers() or []
        headers: list[tuple[str, str | bytes | None]] = (
            list(original.items()) if isinstance(original, dict) else list(original)
        )
        headers.extend(
            [
                (HEADER_SOURCE_TOPIC, topic.encode()),
                (HEADER_SOURCE_PARTITION, str(partition).encode()),
                (HEADER_SOURCE_OFFSET, str(offset).encode()),
                (HEADER_ERROR_CLASS, error_class.encode()),
                (HEADER_ERROR_MESSAGE, error_message[:MAX_HEADER_MESSAGE_CHARS].encode()),
                (HEADER_CONSUMER_GROUP, self.options.group_id.encode()),
            ]
        )
        headers.extend(extra_headers)
        dead_letter_topic = Topics.dead_letter_for(topic)
        producer = self._producer()
        while True:
            try:
                producer.produce(
                    dead_letter_topic,
                    key=message.key(),
                    value=message.value(),
                    headers=headers,
                    on_delivery=self._on_dead_letter_delivery,
                )
                break
            except BufferError:
                producer.poll(1.0)
        self.metrics.add(dead_lettered=1)
        log.warning(
            "record sent to the dead-letter topic consumer=%s topic=%s partition=%d offset=%d "
            "dead_letter_topic=%s error_class=%s error=%s",
            self.options.name,
            topic,
            partition,
            offset,
            dead_letter_topic,
            error_class,
            error_message[:200],
        )

    def _producer(self) -> Producer:
        if self._dead_letter_producer is None:
            config = producer_config(
                self.settings, f"{self.options.name}-dead-letters", logger=kafka_log
            )
            self._dead_letter_producer = Producer(config)
        return self._dead_letter_producer

    def _on_dead_letter_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._dead_letter_errors.append(f"{message.topic()}: {error.str()}")

    def _confirm_dead_letters(self) -> None:
        """Wait until every dead-letter record is acknowledged; raise if one failed."""
        if self._dead_letter_producer is None:
            return
        timeout_s = PRODUCER_DELIVERY_TIMEOUT_MS / 1000 + 10
        remaining = self._dead_letter_producer.flush(timeout_s)
        if remaining:
            self._dead_letter_errors.append(
                f"{remaining} records not acknowledged in {timeout_s} s"
            )
        if self._dead_letter_errors:
            errors, self._dead_letter_errors = self._dead_letter_errors, []
            raise DeadLetterError(
                f"could not write to the dead-letter topic: {'; '.join(errors)}; create the "
                f"dead-letter topics with `confluence-topics create` and check the broker"
            )

    # Offsets and rebalances

    def _store_offsets(self, batch: _Batch) -> None:
        """Store the offset after the last message of each partition in ``batch``."""
        next_offsets: dict[tuple[str, int], int] = {}
        for message in batch.messages:
            topic, partition, offset = _position(message)
            next_offsets[(topic, partition)] = max(
                next_offsets.get((topic, partition), 0), offset + 1
            )
        batch.done = True
        if not next_offsets:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        try:
            self._consumer.store_offsets(offsets=offsets)
        except KafkaException as error:
            # A partition revoked meanwhile cannot be stored; its next owner receives it.
            log.warning(
                "storing offsets failed consumer=%s offsets=%s error=%s",
                self.options.name,
                _describe_offsets(offsets),
                error,
            )

    def _commit(self, reason: str) -> None:
        """Commit the stored offsets synchronously."""
        try:
            committed = self._consumer.commit(asynchronous=False)
        except KafkaException as error:
            kafka_error = error.args[0] if error.args else None
            if isinstance(kafka_error, KafkaError) and kafka_error.code() == KafkaError._NO_OFFSET:
                return
            # REBALANCE_IN_PROGRESS and ILLEGAL_GENERATION end here: the offsets stay stored
            # and the records after the last commit are received again by the next owner.
            log.warning(
                "offset commit failed consumer=%s reason=%s error=%s",
                self.options.name,
                reason,
                error,
            )
            return
        if committed:
            log.info(
                "offsets committed consumer=%s reason=%s offsets=%s",
                self.options.name,
                reason,
                _describe_offsets(committed),
            )

    def _flush_handler(self) -> None:
        on_revoke: Callable[[], None] | None = getattr(self.handler, "on_revoke", None)
        if on_revoke is not None:
            on_revoke()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info(
            "partitions assigned consumer=%s partitions=%s",
            self.options.name,
            _describe_partitions(partitions),
        )
        on_assign: Callable[[list[tuple[str, int]]], None] | None = getattr(
            self.handler, "on_assign", None
        )
        if on_assign is not None:
            on_assign([(tp.topic, tp.partition) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info(
            "partitions revoked consumer=%s partitions=%s",
            self.options.name,
            _describe_partitions(partitions),
        )
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._finish_batch_before_revoke(revoked)
        self._backlog = [m for m in self._backlog if (m.topic(), m.partition()) not in revoked]
        try:
            self._flush_handler()
        except Exception:
            log.exception("handler flush failed on revocation consumer=%s", self.options.name)
        self._commit("revoke")

    def _finish_batch_before_revoke(self, revoked: set[tuple[str, int]]) -> None:
        """Try once to finish an in-flight batch, else give up its revoked records."""
        batch = self._batch
        if batch is None or batch.done:
            return
        if not any((r.topic, r.partition) in revoked for r in batch.records):
            batch.drop_partitions(revoked)
            return
        try:
            result = self.handler.handle(batch.records)
        except Exception as error:
            dropped = batch.drop_partitions(revoked)
            log.warning(
                "in-flight batch could not be finished before revocation consumer=%s "
                "records_given_up=%d error=%s: %s; the next owner receives them",
                self.options.name,
                dropped,
                type(error).__name__,
                error,
            )
            return
        self._count_result(result, len(batch.records))
        self._store_offsets(batch)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The partitions already belong to another member: committing would overwrite its
        # offsets, so the in-flight records of these partitions are only dropped.
        log.warning(
            "partitions lost consumer=%s partitions=%s",
            self.options.name,
            _describe_partitions(partitions),
        )
        lost = {(tp.topic, tp.partition) for tp in partitions}
        if self._batch is not None:
            self._batch.drop_partitions(lost)
        self._backlog = [m for m in self._backlog if (m.topic(), m.partition()) not in lost]

    def _measure_lag(self) -> dict[tuple[str, int], int]:
        lag: dict[tuple[str, int], int] = {}
        try:
            assignment = self._consumer.assignment()
            if not assignment:
                return lag
            for position in self._consumer.position(assignment):
                low, high = self._consumer.get_watermark_offsets(position, cached=True)
                if high < 0:
                    continue
                start = position.offset if position.offset >= 0 else low
                lag[(position.topic, position.partition)] = max(0, high - start)
        except KafkaException as error:
            log.debug("lag measurement failed consumer=%s error=%s", self.options.name, error)
        return lag


def _position(message: Message) -> Position:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None
    assert partition is not None
    assert offset is not None
    return topic, partition, offset


def _describe_partitions(partitions: Sequence[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "none"


def _describe_offsets(offsets: Sequence[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}[{tp.partition}]={tp.offset}" for tp in offsets) or "none"


@contextlib.contextmanager
def stop_on_signals(stop_event: threading.Event) -> Iterator[None]:
    """Set ``stop_event`` on SIGTERM and SIGINT while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("stop requested signal=%s", signal.Signals(signum).name)
        stop_event.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_consumer(
    options: ConsumerOptions,
    handler: BatchHandler,
    settings: Settings,
    *,
    codec: Codec | None = None,
    stop_event: threading.Event | None = None,
) -> int:
    """Run a consumer until SIGTERM, SIGINT or ``stop_event``; return the exit status.

    Returns 0 after a requested stop and 1 after a fatal error, which is logged.
    """
    runtime = ConsumerRuntime(options, handler, settings, codec=codec, stop_event=stop_event)
    with stop_on_signals(runtime.stop_event):
        return runtime.run()
