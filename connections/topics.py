"""Topic administration: create the contract's topics and check existing ones.

Console script ``confluence-topics``:

    confluence-topics create [--prefix P] [--partitions N] [--replication-factor N]
                             [--increase-partitions] [--dry-run] [--timeout S]
    confluence-topics describe [--prefix P] [--timeout S]

``create`` is idempotent. A missing topic is created with its configuration. An existing
topic whose configuration differs gets the contract's values (``incremental_alter_configs``).
Partitions are never removed. A topic with fewer partitions than requested is only reported,
unless ``--increase-partitions`` is given, because adding partitions moves keys to other
partitions and so breaks the per-key order of records already on the topic.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from connections.kafka import admin_config
from connections.settings import ConfigurationError, load_settings
from schemas.topics import Topics, TopicSpec

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 30.0


class TopicAdminError(Exception):
    """A topic operation failed; the message is one line with the cause and the fix."""


class BrokerUnreachableError(TopicAdminError):
    """No broker responded to a metadata request within the timeout."""


@dataclass(frozen=True)
class TopicAction:
    """Result of ``ensure_topics`` for one topic: the action taken, or planned with ``dry_run``."""

    topic: str
    action: str  # created, unchanged, altered, partitions-increased, or would-<action>
    details: tuple[str, ...] = ()

    def line(self) -> str:
        return " ".join((self.action, self.topic, *self.details))


@dataclass(frozen=True)
class TopicState:
    """A topic as the broker reports it; ``partitions`` is 0 when the topic is missing."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.partitions > 0


def fetch_topic_states(
    admin: AdminClient, names: Iterable[str], timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> dict[str, TopicState]:
    """Return the partition count, replication factor and configuration of each topic."""
    wanted = list(names)
    metadata = _list_topics(admin, timeout)
    states: dict[str, TopicState] = {}
    existing = [name for name in wanted if name in metadata.topics]
    configs = _describe_configs(admin, existing, timeout)
    for name in wanted:
        topic = metadata.topics.get(name)
        if topic is None:
            states[name] = TopicState(name, 0, 0)
            continue
        replicas = [len(partition.replicas) for partition in topic.partitions.values()]
        states[name] = TopicState(
            name,
            partitions=len(topic.partitions),
            replication_factor=min(replicas) if replicas else 0,
            config=configs.get(name, {}),
        )
    return states


def fetch_topic_config(
    admin: AdminClient, topic: str, timeout: float = DEFAULT_TIMEOUT_SECONDS
) -> dict[str, str]:
    """Return every configuration value of ``topic`` as the broker reports it."""
    return _describe_configs(admin, [topic], timeout)[topic]


def ensure_topics(
    admin: AdminClient,
    specs: Sequence[TopicSpec],
    partitions: int,
    replication_factor: int,
    *,
    increase_partitions: bool = False,
    dry_run: bool = False,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> list[TopicAction]:
    """Create missing topics and bring the configuration of existing ones to ``specs``."""
    states = fetch_topic_states(admin, [spec.name for spec in specs], timeout)
    missing = [spec for spec in specs if not states[spec.name].exists]
    created: set[str] = set()
    if missing and not dry_run:
        created = _create_topics(admin, missing, partitions, replication_factor, timeout)
        _wait_for_topics(admin, created, timeout)
        # A topic that another client created after our metadata request, or that the
        # broker's metadata did not list yet, exists now: check it like any existing topic.
        raced = [spec.name for spec in missing if spec.name not in created]
        if raced:
            states.update(fetch_topic_states(admin, raced, timeout))

    actions: list[TopicAction] = []
    for spec in specs:
        state = states[spec.name]
        if spec.name in created or (dry_run and not state.exists):
            details = (f"partitions={partitions}", f"replication_factor={replication_factor}")
            action = "created" if spec.name in created else "would-create"
            actions.append(TopicAction(spec.name, action, details))
            continue
        actions.append(
            _reconcile(
                admin,
                spec,
                state,
                partitions,
                replication_factor,
                increase_partitions=increase_partitions,
                dry_run=dry_run,
                timeout=timeout,
            )
        )
    return actions


def _wait_for_topics(admin: AdminClient, names: set[str], timeout: float) -> None:
    """Wait until the broker's metadata lists every partition of ``names`` with a leader.

    Creation returns before the metadata lists the topic, and a describe or produce call
    made in that gap fails or finds the topic missing.
    """
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        metadata = _list_topics(admin, timeout)
        for name in list(pending):
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None or not topic.partitions:
                continue
            if all(partition.leader >= 0 for partition in topic.partitions.values()):
                pending.discard(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicAdminError(
                f"topics {sorted(pending)} were created but have no partition leader after "
                f"{timeout:g} s; check the broker log"
            )
        time.sleep(0.1)


def _reconcile(
    admin: AdminClient,
    spec: TopicSpec,
    state: TopicState,
    partitions: int,
    replication_factor: int,
    *,
    increase_partitions: bool,
    dry_run: bool,
    timeout: float,
) -> TopicAction:
    changes = {key: value for key, value in spec.config.items() if state.config.get(key) != value}
    details = [
        f"{key}: {state.config.get(key)} -> {value}" for key, value in sorted(changes.items())
    ]

    # Notes explain what is left as it is; details list what changes.
    notes: list[str] = []
    grow = False
    if state.partitions > partitions:
        notes.append(f"(keeps {state.partitions} partitions; partitions are never removed)")
    elif state.partitions < partitions:
        if increase_partitions:
            grow = True
            details.append(f"partitions: {state.partitions} -> {partitions}")
        else:
            notes.append(
                f"(has {state.partitions} partitions, fewer than {partitions}; "
                f"pass --increase-partitions to add them)"
            )
    if state.replication_factor != replication_factor:
        notes.append(
            f"(replication factor is {state.replication_factor}, not {replication_factor}; "
            f"change it with a partition reassignment)"
        )

    if not changes and not grow:
        return TopicAction(spec.name, "unchanged", tuple(notes))
    action = "partitions-increased" if grow and not changes else "altered"
    if dry_run:
        return TopicAction(spec.name, f"would-{action}", (*details, *notes))

    if changes:
        _alter_configs(admin, spec.name, changes, timeout)
    if grow:
        _create_partitions(admin, spec.name, partitions, timeout)
    return TopicAction(spec.name, action, (*details, *notes))


def _list_topics(admin: AdminClient, timeout: float) -> ClusterMetadata:
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as error:
        raise BrokerUnreachableError(
            f"no broker responded to a metadata request within {timeout:g} s ({_reason(error)}); "
            f"check KAFKA_BOOTSTRAP_SERVERS and that the broker is running"
        ) from error


def _describe_configs(
    admin: AdminClient, topics: Sequence[str], timeout: float
) -> dict[str, dict[str, str]]:
    if not topics:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in topics]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    configs: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        try:
            entries = future.result(timeout=timeout)
        except (KafkaException, TimeoutError) as error:
            raise TopicAdminError(
                f"reading the configuration of topic {resource.name} failed: {_reason(error)}; "
                f"check the broker log and the client's ACLs (DescribeConfigs)"
            ) from error
        configs[resource.name] = {
            name: entry.value for name, entry in entries.items() if entry.value is not None
        }
    return configs


def _create_topics(
    admin: AdminClient,
    specs: Sequence[TopicSpec],
    partitions: int,
    replication_factor: int,
    timeout: float,
) -> set[str]:
    if not specs:
        return set()
    new_topics = [
        NewTopic(spec.name, partitions, replication_factor, config=dict(spec.config))
        for spec in specs
    ]
    futures = admin.create_topics(new_topics, operation_timeout=timeout, request_timeout=timeout)
    created: set[str] = set()
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as error:
            if error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TopicAdminError(
                f"creating topic {name} with {partitions} partitions and replication factor "
                f"{replication_factor} failed: {_reason(error)}; check that the cluster has at "
                f"least {replication_factor} brokers and the client may create topics"
            ) from error
        except TimeoutError as error:
            raise TopicAdminError(
                f"creating topic {name} did not finish within {timeout:g} s; check the broker "
                f"log, then run the command again"
            ) from error
        created.add(name)
        log.info("topic created topic=%s partitions=%d", name, partitions)
    return created


def _alter_configs(admin: AdminClient, topic: str, changes: dict[str, str], timeout: float) -> None:
    entries = [
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
        for key, value in sorted(changes.items())
    ]
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    futures = admin.incremental_alter_configs([resource], request_timeout=timeout)
    for future in futures.values():
        try:
            future.result(timeout=timeout)
        except (KafkaException, TimeoutError) as error:
            raise TopicAdminError(
                f"changing the configuration of topic {topic} ({', '.join(sorted(changes))}) "
                f"failed: {_reason(error)}; check the values and the client's ACLs (AlterConfigs)"
            ) from error
    log.info("topic config altered topic=%s keys=%s", topic, ",".join(sorted(changes)))


def _create_partitions(admin: AdminClient, topic: str, total: int, timeout: float) -> None:
    futures = admin.create_partitions(
        [NewPartitions(topic, total)], operation_timeout=timeout, request_timeout=timeout
    )
    for future in futures.values():
        try:
            future.result(timeout=timeout)
        except (KafkaException, TimeoutError) as error:
            raise TopicAdminError(
                f"adding partitions to topic {topic} (to {total}) failed: {_reason(error)}"
            ) from error
    log.info("topic partitions increased topic=%s partitions=%d", topic, total)


def _reason(error: BaseException) -> str:
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return str(error.args[0].str())
    return str(error) or type(error).__name__


# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="confluence-topics",
        description=(
            "Create and check the Kafka topics of confluence-stream. Connection settings come "
            "from KAFKA_* environment variables."
        ),
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also print librdkafka's own log lines"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    create = commands.add_parser("create", help="create missing topics and fix their config")
    describe = commands.add_parser("describe", help="show each topic's partitions and config")
    for command in (create, describe):
        command.add_argument(
            "--prefix", help="topic name prefix (default: KAFKA_TOPIC_PREFIX or 'confluence')"
        )
        command.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT_SECONDS,
            help=f"seconds to wait for the broker (default: {DEFAULT_TIMEOUT_SECONDS:g})",
        )
    create.add_argument(
        "--partitions",
        type=int,
        help="partitions per new topic (default: KAFKA_TOPIC_PARTITIONS or 6)",
    )
    create.add_argument(
        "--replication-factor",
        type=int,
        help="replicas per partition (default: KAFKA_TOPIC_REPLICATION_FACTOR or 1)",
    )
    create.add_argument(
        "--increase-partitions",
        action="store_true",
        help="add partitions to existing topics that have fewer than requested",
    )
    create.add_argument(
        "--dry-run", action="store_true", help="print what would change without changing it"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    librdkafka_log = logging.getLogger("connections.topics.librdkafka")
    # librdkafka logs every failed connection attempt, so only the one-line error below is shown.
    librdkafka_log.setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)

    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(f"confluence-topics: {error}", file=sys.stderr)
        return 1

    for option in ("partitions", "replication_factor"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout:g}")
    prefix = args.prefix if args.prefix is not None else settings.kafka.topic_prefix
    partitions = getattr(args, "partitions", None) or settings.kafka.topic_partitions
    replication_factor = (
        getattr(args, "replication_factor", None) or settings.kafka.topic_replication_factor
    )
    try:
        topics = Topics(
            prefix=prefix,
            retention_ms=settings.kafka.topic_retention_ms,
            replication_factor=replication_factor,
        )
    except ValueError as error:
        parser.error(str(error))

    config = admin_config(settings, "confluence-topics", logger=librdkafka_log)
    admin = AdminClient(config)
    try:
        if args.command == "create":
            actions = ensure_topics(
                admin,
                topics.specs(),
                partitions,
                replication_factor,
                increase_partitions=args.increase_partitions,
                dry_run=args.dry_run,
                timeout=args.timeout,
            )
            for action in actions:
                print(action.line())
            return 0
        return _print_description(admin, topics, args.timeout)
    except BrokerUnreachableError as error:
        bootstrap = settings.kafka.bootstrap_servers
        print(f"confluence-topics: cannot reach Kafka at {bootstrap}: {error}", file=sys.stderr)
        return 1
    except TopicAdminError as error:
        print(f"confluence-topics: {error}", file=sys.stderr)
        return 1


def _print_description(admin: AdminClient, topics: Topics, timeout: float) -> int:
    specs = topics.specs()
    states = fetch_topic_states(admin, [spec.name for spec in specs], timeout)
    missing = 0
    for spec in specs:
        state = states[spec.name]
        if not state.exists:
            missing += 1
            print(f"missing {spec.name}")
            continue
        shown = " ".join(f"{key}={state.config.get(key)}" for key in sorted(spec.config))
        print(
            f"exists {spec.name} partitions={state.partitions} "
            f"replication_factor={state.replication_factor} {shown}"
        )
    if missing:
        print(
            f"confluence-topics: {missing} topics are missing; run 'confluence-topics create'",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
