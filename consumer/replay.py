"""Reset the committed offsets of a stopped consumer group, to replay its topics.

``confluence-consumer replay --group NAME (--from-beginning | --from-time TIME)
[--topic T ...]`` sets the group's committed offset of every partition of the topics to
the earliest offset, or to the first offset whose timestamp is at or after TIME. The next
consumer of the group starts there, and because every consumer writes idempotently, the
rebuilt collections equal the ones written the first time.

Kafka only lets the offsets of a group without members be changed, so a group with
active members is rejected: stop its consumers first. Without ``--topic`` the topics
are those the group has committed offsets for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from connections.kafka import admin_config, consumer_config
from connections.settings import Settings

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 30.0


class ReplayError(Exception):
    """The offsets could not be reset; the message names the cause and the fix."""


@dataclass(frozen=True)
class ReplayPlan:
    """The new committed offset of every partition of the replayed topics."""

    group: str
    offsets: tuple[TopicPartition, ...]

    def describe(self) -> str:
        return ",".join(f"{tp.topic}[{tp.partition}]={tp.offset}" for tp in self.offsets)


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 time; a time without a zone is read as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ReplayError(
            f"invalid time {text!r} for --from-time; use ISO 8601, for example "
            f"2024-05-01T12:00:00Z or 2024-05-01"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def reset_offsets(
    settings: Settings,
    group: str,
    topics: Sequence[str] = (),
    from_time: datetime | None = None,
    *,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> ReplayPlan:
    """Reset ``group``'s offsets to the beginning, or to ``from_time`` when given."""
    admin = AdminClient(admin_config(settings, "confluence-replay"))
    _require_no_members(admin, group, timeout)
    chosen = list(topics) or _committed_topics(admin, group, timeout)
    if not chosen:
        raise ReplayError(
            f"consumer group {group!r} has no committed offsets, so the topics to replay are "
            f"unknown; pass them with --topic"
        )
    partitions = _partitions(admin, chosen, timeout)
    offsets = _target_offsets(settings, group, partitions, from_time, timeout)
    request = ConsumerGroupTopicPartitions(group, list(offsets))
    try:
        future = admin.alter_consumer_group_offsets([request], request_timeout=timeout)[group]
        future.result()
    except KafkaException as error:
        raise ReplayError(
            f"resetting the offsets of consumer group {group!r} failed: {error}; check that "
            f"no consumer of the group is running"
        ) from error
    plan = ReplayPlan(group, tuple(offsets))
    log.info("consumer group offsets reset group=%s offsets=%s", group, plan.describe())
    return plan


def _require_no_members(admin: AdminClient, group: str, timeout: float) -> None:
    try:
        description = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
        result = description.result()
    except KafkaException as error:
        raise ReplayError(f"describing consumer group {group!r} failed: {error}") from error
    if result.members or result.state in (
        ConsumerGroupState.PREPARING_REBALANCING,
        ConsumerGroupState.COMPLETING_REBALANCING,
        ConsumerGroupState.STABLE,
    ):
        members = (
            ", ".join(f"{member.client_id}@{member.host}" for member in result.members)
            or "rebalancing"
        )
        raise ReplayError(
            f"consumer group {group!r} has active members ({members}); stop its consumers, "
            f"then run the replay again"
        )


def _committed_topics(admin: AdminClient, group: str, timeout: float) -> list[str]:
    request = ConsumerGroupTopicPartitions(group)
    try:
        future = admin.list_consumer_group_offsets([request], request_timeout=timeout)[group]
        result = future.result()
    except KafkaException as error:
        raise ReplayError(f"listing the offsets of group {group!r} failed: {error}") from error
    return sorted({tp.topic for tp in result.topic_partitions or [] if tp.offset >= 0})


def _partitions(admin: AdminClient, topics: Sequence[str], timeout: float) -> list[TopicPartition]:
    metadata = admin.list_topics(timeout=timeout)
    partitions: list[TopicPartition] = []
    for topic in topics:
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise ReplayError(
                f"topic {topic!r} does not exist; check --topic and KAFKA_TOPIC_PREFIX"
            )
        partitions.extend(TopicPartition(topic, number) for number in sorted(described.partitions))
    return partitions


def _target_offsets(
    settings: Settings,
    group: str,
    partitions: list[TopicPartition],
    from_time: datetime | None,
    timeout: float,
) -> list[TopicPartition]:
    # A consumer that never subscribes does not join the group; it only reads watermarks.
    consumer = Consumer(consumer_config(settings, group, "confluence-replay"))
    try:
        targets: list[TopicPartition] = []
        if from_time is not None:
            millis = int(from_time.timestamp() * 1000)
            query = [TopicPartition(tp.topic, tp.partition, millis) for tp in partitions]
            found = consumer.offsets_for_times(query, timeout=timeout)
        else:
            found = [TopicPartition(tp.topic, tp.partition, -1) for tp in partitions]
        for tp in found:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=timeout
            )
            if from_time is None:
                offset = low
            elif tp.offset >= 0:
                offset = tp.offset
            else:
                # offsets_for_times returns -1 when every record is older than the time.
                offset = high
            targets.append(TopicPartition(tp.topic, tp.partition, offset))
        return targets
    except KafkaException as error:
        raise ReplayError(
            f"reading the offsets of {len(partitions)} partitions failed: {error}"
        ) from error
    finally:
        consumer.close()
