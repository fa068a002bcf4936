"""Consumer group lag, read with the AdminClient, and the wait until every group caught up.

The lag of a partition is its high watermark (the offset the next record will get) minus
the group's committed offset. A partition the group never committed counts from its low
watermark, so a partition that never held a record has lag 0. Consumers commit the
offsets they stored some seconds after the MongoDB write, so lag 0 on every partition
means every record was written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 30.0
POLL_INTERVAL_SECONDS = 1.0
# Zero lag must be read this many times in a row, one second apart, because the
# relationships consumer publishes edges while it consumes: one reading of zero can fall
# between its commit and the arrival of the edges it published.
STABLE_READINGS = 3


@dataclass(frozen=True)
class GroupTopics:
    """A consumer group and the topics it consumes."""

    group: str
    topics: tuple[str, ...]


class CatchUpTimeout(Exception):
    """The consumer groups still had lag when the wait ended."""


class ConsumerStopped(Exception):
    """A consumer process ended while the wait for lag 0 was running."""


def partitions_of(admin: AdminClient, topics: Sequence[str]) -> list[TopicPartition]:
    """Return every partition of ``topics``; raise ``LookupError`` for a missing topic."""
    metadata = admin.list_topics(timeout=REQUEST_TIMEOUT_SECONDS)
    partitions: list[TopicPartition] = []
    for topic in topics:
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise LookupError(
                f"topic {topic!r} does not exist on the broker; create the topics with "
                "`confluence-topics create` and the same KAFKA_TOPIC_PREFIX"
            )
        partitions.extend(TopicPartition(topic, number) for number in sorted(described.partitions))
    return partitions


def _offsets(
    admin: AdminClient, partitions: Sequence[TopicPartition], spec: OffsetSpec
) -> dict[tuple[str, int], int]:
    futures = admin.list_offsets(
        {partition: spec for partition in partitions}, request_timeout=REQUEST_TIMEOUT_SECONDS
    )
    return {
        (partition.topic, partition.partition): int(future.result().offset)
        for partition, future in futures.items()
    }


class CoordinatorNotReady(Exception):
    """The broker cannot return the group's committed offsets yet."""


def _check_coordinator(admin: AdminClient, group: str) -> None:
    """Raise ``CoordinatorNotReady`` unless the group's coordinator responds.

    librdkafka 2.16 crashes the process with a segmentation fault when an AdminClient's
    request for committed offsets gets NOT_COORDINATOR, which a broker returns while it
    is still loading ``__consumer_offsets`` after a start. Describing the group first
    finds out whether the coordinator is ready, and its errors are plain exceptions.
    """
    future = admin.describe_consumer_groups([group], request_timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        future[group].result()
    except KafkaException as error:
        raise CoordinatorNotReady(f"group {group}: {error}") from error


def group_lag(admin: AdminClient, group: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """Return the lag of ``group`` per ``(topic, partition)`` of ``topics``.

    Raise ``CoordinatorNotReady`` while the broker cannot return the group's offsets yet.
    """
    _check_coordinator(admin, group)
    partitions = partitions_of(admin, topics)
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    high = _offsets(admin, partitions, latest)
    request = ConsumerGroupTopicPartitions(group, list(partitions))
    future = admin.list_consumer_group_offsets([request], request_timeout=REQUEST_TIMEOUT_SECONDS)
    committed = {
        (partition.topic, partition.partition): partition.offset
        for partition in future[group].result().topic_partitions
    }
    uncommitted = [
        partition
        for partition in partitions
        if committed.get((partition.topic, partition.partition), -1) < 0
    ]
    earliest = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
    low = _offsets(admin, uncommitted, earliest) if uncommitted else {}
    lag: dict[tuple[str, int], int] = {}
    for key, high_watermark in high.items():
        start = committed.get(key, -1)
        if start < 0:
            start = low[key]
        lag[key] = max(high_watermark - start, 0)
    return lag


def total_lag(admin: AdminClient, groups: Sequence[GroupTopics]) -> dict[str, int]:
    """Return the summed lag of every group."""
    return {
        entry.group: sum(group_lag(admin, entry.group, entry.topics).values()) for entry in groups
    }


def wait_for_catch_up(
    admin: AdminClient,
    groups: Sequence[GroupTopics],
    timeout: float,
    *,
    report: Callable[[Mapping[str, int]], None] | None = None,
    report_interval: float = 15.0,
    still_running: Callable[[], str | None] | None = None,
) -> float:
    """Wait until every group has lag 0 on every partition; return the seconds waited.

    A group whose coordinator is not ready yet shows a lag of -1 in ``report`` and in
    the timeout message.

    ``report`` gets the lag per group every ``report_interval`` seconds. ``still_running``
    returns a message when a consumer process died, which ends the wait at once with
    ``ConsumerStopped``. Raises ``CatchUpTimeout`` naming the groups and their lag after
    ``timeout`` seconds.
    """
    started = time.monotonic()
    last_report = started
    zero_readings = 0
    lags: dict[str, int] = {}
    while True:
        try:
            lags = total_lag(admin, groups)
        except CoordinatorNotReady as error:
            log.debug("consumer lag not readable yet, retrying: %s", error)
            lags = {entry.group: -1 for entry in groups}
        zero_readings = zero_readings + 1 if not any(lags.values()) else 0
        if zero_readings >= STABLE_READINGS:
            return time.monotonic() - started
        now = time.monotonic()
        if still_running is not None:
            problem = still_running()
            if problem is not None:
                raise ConsumerStopped(problem)
        if now - started > timeout:
            waiting = ", ".join(f"{group}={lag}" for group, lag in lags.items() if lag)
            raise CatchUpTimeout(
                f"the consumers did not catch up within {timeout:.0f} s; records still to "
                f"consume per group: {waiting}"
            )
        if report is not None and now - last_report >= report_interval:
            report(lags)
            last_report = now
        time.sleep(POLL_INTERVAL_SECONDS)
