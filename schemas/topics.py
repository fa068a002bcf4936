"""Kafka topic names and topic configurations of the wire contract.

Every name starts with a configurable prefix (default ``confluence``):

    {prefix}.spaces          Space records
    {prefix}.content         Content records (pages, blog posts, comments, attachments)
    {prefix}.structure       StructureListing chunks
    {prefix}.relationships   Relationship records
    {prefix}.job-history     Job records, compacted so the latest state per job stays
    {topic}.dlq              one dead-letter topic per topic above, for poison messages

Data topics keep records forever by default (``retention.ms=-1``), because Kafka is the
system of record and consumers rebuild MongoDB by replaying from the start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType

from schemas.catalogue import RecordType

DEFAULT_PREFIX = "confluence"
DEAD_LETTER_SUFFIX = ".dlq"
# Kafka accepts topic names of at most 249 characters from this set; ".job-history.dlq" is
# the longest suffix added here.
_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")
_MAX_TOPIC_NAME_LENGTH = 249
_LONGEST_SUFFIX = ".job-history" + DEAD_LETTER_SUFFIX

# Content bodies in storage format can exceed the broker's 1 MiB default message size; the
# producer's message.max.bytes in connections.kafka matches this value.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

_SUFFIXES = {
    RecordType.SPACE: "spaces",
    RecordType.CONTENT: "content",
    RecordType.STRUCTURE_LISTING: "structure",
    RecordType.RELATIONSHIP: "relationships",
    RecordType.JOB: "job-history",
}

# Job history: compacted, so the last record per job key is kept. A low dirty ratio and
# one-hour segments let the cleaner drop superseded job states within hours rather than
# the broker defaults (ratio 0.5, 7-day segments); tombstones stay for a day so a lagging
# mirror still sees deletions.
_COMPACTED_CONFIG = {
    "cleanup.policy": "compact",
    "min.cleanable.dirty.ratio": "0.1",
    "segment.ms": "3600000",
    "delete.retention.ms": "86400000",
    "min.compaction.lag.ms": "0",
}


def prefix_problem(prefix: str) -> str | None:
    """Return why ``prefix`` cannot start a Kafka topic name, or None if it can."""
    if not prefix or not _TOPIC_CHARS.match(prefix):
        return "use only letters, digits, '.', '_' and '-'"
    if len(prefix) + len(_LONGEST_SUFFIX) > _MAX_TOPIC_NAME_LENGTH:
        return (
            f"Kafka topic names have at most {_MAX_TOPIC_NAME_LENGTH} characters, so the "
            f"prefix may have at most {_MAX_TOPIC_NAME_LENGTH - len(_LONGEST_SUFFIX)}"
        )
    return None


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can start a Kafka topic name, else raise ``ValueError``."""
    problem = prefix_problem(prefix)
    if problem is not None:
        raise ValueError(f"invalid topic prefix {prefix!r}: {problem}")
    return prefix


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: its name, the record type it carries and its topic configuration."""

    name: str
    config: MappingProxyType[str, str]
    record_type: RecordType
    dead_letter: bool = False


@dataclass(frozen=True)
class Topics:
    """Topic names and configurations for one prefix."""

    prefix: str = DEFAULT_PREFIX
    # retention.ms of the data and dead-letter topics; -1 keeps records forever.
    retention_ms: int = -1
    replication_factor: int = field(default=1, compare=False)

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)
        if self.retention_ms != -1 and self.retention_ms <= 0:
            raise ValueError(
                f"invalid retention {self.retention_ms} ms: use -1 (keep forever) or a "
                f"positive number of milliseconds"
            )

    def topic_for(self, record_type: RecordType) -> str:
        """Return the topic that carries ``record_type`` records."""
        return f"{self.prefix}.{_SUFFIXES[record_type]}"

    @property
    def spaces(self) -> str:
        return self.topic_for(RecordType.SPACE)

    @property
    def content(self) -> str:
        return self.topic_for(RecordType.CONTENT)

    @property
    def structure(self) -> str:
        return self.topic_for(RecordType.STRUCTURE_LISTING)

    @property
    def relationships(self) -> str:
        return self.topic_for(RecordType.RELATIONSHIP)

    @property
    def job_history(self) -> str:
        return self.topic_for(RecordType.JOB)

    @staticmethod
    def dead_letter_for(topic: str) -> str:
        """Return the dead-letter topic of ``topic``."""
        return topic + DEAD_LETTER_SUFFIX

    def value_subject(self, record_type: RecordType) -> str:
        """Return the Schema Registry subject of ``record_type`` (topic name strategy)."""
        return f"{self.topic_for(record_type)}-value"

    def specs(self) -> list[TopicSpec]:
        """Return every topic of the contract with its configuration, dead-letter topics too."""
        specs: list[TopicSpec] = []
        for record_type in RecordType:
            name = self.topic_for(record_type)
            specs.append(TopicSpec(name, self._config(record_type, dead_letter=False), record_type))
            specs.append(
                TopicSpec(
                    self.dead_letter_for(name),
                    self._config(record_type, dead_letter=True),
                    record_type,
                    dead_letter=True,
                )
            )
        return specs

    def _config(self, record_type: RecordType, *, dead_letter: bool) -> MappingProxyType[str, str]:
        config: dict[str, str]
        if record_type is RecordType.JOB and not dead_letter:
            config = dict(_COMPACTED_CONFIG)
        else:
            config = {
                "cleanup.policy": "delete",
                "retention.ms": str(self.retention_ms),
                "retention.bytes": "-1",
            }
        config["max.message.bytes"] = str(MAX_MESSAGE_BYTES)
        # With three or more replicas an acknowledged record survives one broker loss.
        config["min.insync.replicas"] = "2" if self.replication_factor >= 3 else "1"
        return MappingProxyType(config)
