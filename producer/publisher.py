"""Kafka publishing of wire-contract records with delivery accounting.

``KafkaPublisher`` encodes each record with the codec, produces it to the topic of its
record type with its key, and counts every delivery report. ``produce()`` only enqueues,
so a job is not done until ``finish()`` has flushed the queue and every record was
acknowledged by the broker: ``finish()`` raises ``DeliveryError`` when any delivery
failed or the flush timed out. ``DryRunPublisher`` encodes the same records (so schema
errors still surface) and sends nothing.

Both are safe to call from several worker threads: confluent-kafka's ``Producer`` is
thread-safe and the counters are guarded by a lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.catalogue import RecordType
from schemas.codec import Codec
from schemas.topics import MAX_MESSAGE_BYTES, Topics

log = logging.getLogger(__name__)

DEFAULT_FLUSH_TIMEOUT_SECONDS = 120.0
# Failed deliveries kept with their error for the job record; the rest are only counted.
_MAX_KEPT_FAILURES = 20
# Wait for the local queue to drain when it is full (BufferError), then produce again.
_QUEUE_FULL_POLL_SECONDS = 0.5
_QUEUE_FULL_ATTEMPTS = 600


class RecordTooLargeError(Exception):
    """The broker client rejected one record before sending it, for example as too large."""


class DeliveryError(Exception):
    """Records were not acknowledged by the broker; ``failures`` lists the first errors."""

    def __init__(self, message: str, failures: list[str]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass
class DeliveryStats:
    """Records produced, acknowledged and failed, by topic."""

    produced: int = 0
    acknowledged: int = 0
    failed: int = 0
    produced_by_topic: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return self.produced - self.acknowledged - self.failed


class Publisher(Protocol):
    """Interface of a publisher, as the crawl job uses it."""

    stats: DeliveryStats

    def publish(self, record_type: RecordType, key: str, record: Mapping[str, Any]) -> None: ...

    def poll(self) -> None: ...

    def finish(self, timeout: float = DEFAULT_FLUSH_TIMEOUT_SECONDS) -> None: ...

    def close(self) -> None: ...


class KafkaPublisher:
    """Publishes records to Kafka with an idempotent producer and checks every delivery."""

    def __init__(self, producer_config: Mapping[str, Any], topics: Topics, codec: Codec) -> None:
        self._producer = Producer(dict(producer_config))
        self._topics = topics
        self._codec = codec
        self._lock = threading.Lock()
        self.stats = DeliveryStats()

    def publish(self, record_type: RecordType, key: str, record: Mapping[str, Any]) -> None:
        """Encode ``record`` and enqueue it; raises the codec's error on an invalid record."""
        value = self._codec.encode(record_type, record)
        topic = self._topics.topic_for(record_type)
        encoded_key = key.encode("utf-8")
        for _ in range(_QUEUE_FULL_ATTEMPTS):
            try:
                self._producer.produce(
                    topic, value=value, key=encoded_key, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                self._producer.poll(_QUEUE_FULL_POLL_SECONDS)
            except KafkaException as error:
                raise RecordTooLargeError(
                    f"record {key} of {len(value)} bytes was rejected for topic {topic}: "
                    f"{error}; records above {MAX_MESSAGE_BYTES} bytes cannot be published"
                ) from error
        else:
            raise DeliveryError(
                f"the producer queue stayed full for "
                f"{_QUEUE_FULL_ATTEMPTS * _QUEUE_FULL_POLL_SECONDS:.0f} s while producing to "
                f"{topic}; check that the broker is reachable",
                [],
            )
        with self._lock:
            self.stats.produced += 1
            self.stats.produced_by_topic[topic] = self.stats.produced_by_topic.get(topic, 0) + 1
        self._producer.poll(0)

    def poll(self) -> None:
        """Serve pending delivery reports without waiting."""
        self._producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        with self._lock:
            if error is None:
                self.stats.acknowledged += 1
                return
            self.stats.failed += 1
            key = message.key()
            shown_key = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
            detail = f"topic={message.topic()} key={shown_key} error={error.str()}"
            if len(self.stats.failures) < _MAX_KEPT_FAILURES:
                self.stats.failures.append(detail)
        log.error("delivery failed %s", detail)

    def finish(self, timeout: float = DEFAULT_FLUSH_TIMEOUT_SECONDS) -> None:
        """Flush and raise ``DeliveryError`` unless every produced record was acknowledged."""
        started = time.monotonic()
        remaining = self._producer.flush(timeout)
        with self._lock:
            stats = self.stats
            failed, pending, failures = stats.failed, stats.pending, list(stats.failures)
            produced, acknowledged = stats.produced, stats.acknowledged
        log.info(
            "flush done produced=%d acknowledged=%d failed=%d queued=%d seconds=%.1f",
            produced,
            acknowledged,
            failed,
            remaining,
            time.monotonic() - started,
        )
        if failed or pending or remaining:
            raise DeliveryError(
                f"{failed} of {produced} records failed delivery and {max(pending, remaining)} "
                f"were not acknowledged within {timeout:.0f} s; first failures: "
                f"{'; '.join(failures[:3]) or 'none reported'}; check the broker and that "
                f"the topics exist (confluence-topics create)",
                failures,
            )

    def close(self) -> None:
        """Serve outstanding delivery reports briefly; the producer itself needs no close."""
        self._producer.poll(0)


class DryRunPublisher:
    """Encodes records like ``KafkaPublisher`` and counts them, but sends nothing."""

    def __init__(self, topics: Topics, codec: Codec) -> None:
        self._topics = topics
        self._codec = codec
        self._lock = threading.Lock()
        self.stats = DeliveryStats()

    def publish(self, record_type: RecordType, key: str, record: Mapping[str, Any]) -> None:
        self._codec.encode(record_type, record)
        topic = self._topics.topic_for(record_type)
        with self._lock:
            self.stats.produced += 1
            self.stats.acknowledged += 1
            self.stats.produced_by_topic[topic] = self.stats.produced_by_topic.get(topic, 0) + 1

    def poll(self) -> None:
        return None

    def finish(self, timeout: float = DEFAULT_FLUSH_TIMEOUT_SECONDS) -> None:
        del timeout

    def close(self) -> None:
        return None
