"""Command line of the consumers: ``confluence-consumer``.

    confluence-consumer stream [options]         space, content and relationship records
                                                 into source_{id}_stream
    confluence-consumer job-history [options]    job records into job_history
    confluence-consumer relationships [options]  edges derived from content and structure
    confluence-consumer replay --group NAME (--from-beginning | --from-time TIME)
                               [--topic T ...]

Settings come from the environment (``KAFKA_*``, ``MONGODB_*``, ``SCHEMA_REGISTRY_*``,
see ``connections.settings``). SIGTERM and SIGINT stop a consumer after its current
batch, with exit status 0. Exit status 1 means a fatal error, which is logged; 2 means
invalid arguments or settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from connections.mongo import create_client, get_database
from connections.settings import ConfigurationError, Settings, load_settings
from consumer import jobs, stream
from consumer.errors import is_transient
from consumer.metrics import DEFAULT_METRICS_HOST
from consumer.replay import ReplayError, parse_time, reset_offsets
from consumer.runtime import ConsumerOptions, backoff_delay, run_consumer
from schemas.topics import Topics

log = logging.getLogger(__name__)

EXIT_FAILURE = 1
# Seconds a stream or job-history consumer waits at start-up for MongoDB to respond.
STARTUP_WAIT_SECONDS = 300.0
EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid; use 1 or more")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is invalid; use a number above 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"port {value} is invalid; use 0 to 65535")
    return value


def _add_consumer_options(parser: argparse.ArgumentParser, default_group: str) -> None:
    parser.add_argument(
        "--group", default=default_group, help=f"consumer group id (default: {default_group})"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=500,
        help="maximum number of records per batch (default: 500)",
    )
    parser.add_argument(
        "--batch-timeout",
        type=_positive_float,
        default=1.0,
        help="seconds to wait for a full batch before handling a partial one (default: 1)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve Prometheus metrics on this port; 0 picks a free port (default: off)",
    )
    parser.add_argument(
        "--metrics-host",
        default=DEFAULT_METRICS_HOST,
        help=f"address the metrics endpoint binds (default: {DEFAULT_METRICS_HOST})",
    )
    parser.add_argument(
        "--log-interval",
        type=_positive_float,
        default=30.0,
        help="seconds between two log lines with the counters (default: 30)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="confluence-consumer",
        description="Consume Confluence records from Kafka and write them into MongoDB.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of the log lines written to stderr (default: INFO)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    stream_parser = commands.add_parser(
        "stream",
        help="write space, content and relationship records into source_{id}_stream",
    )
    _add_consumer_options(stream_parser, stream.DEFAULT_GROUP)

    jobs_parser = commands.add_parser(
        "job-history", help="materialise the job-history topic into job_history"
    )
    _add_consumer_options(jobs_parser, jobs.DEFAULT_GROUP)

    relationships_parser = commands.add_parser(
        "relationships",
        help="derive relationship records from content and structure records",
    )
    _add_consumer_options(relationships_parser, "confluence-relationships")

    replay_parser = commands.add_parser(
        "replay",
        help="reset the committed offsets of a stopped consumer group",
        description=(
            "Reset the committed offsets of a consumer group without active members, so its "
            "next run consumes the topics again from the chosen position."
        ),
    )
    replay_parser.add_argument("--group", required=True, help="consumer group id to reset")
    position = replay_parser.add_mutually_exclusive_group(required=True)
    position.add_argument(
        "--from-beginning", action="store_true", help="reset to the earliest offsets"
    )
    position.add_argument(
        "--from-time",
        metavar="TIME",
        help="reset to the first records at or after TIME (ISO 8601; UTC without a zone)",
    )
    replay_parser.add_argument(
        "--topic",
        action="append",
        default=[],
        help="topic to reset, repeatable (default: the topics the group committed offsets for)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(f"confluence-consumer: {error}", file=sys.stderr)
        return EXIT_USAGE
    log.info("settings %s", settings.describe())

    if args.command == "replay":
        return _replay(args, settings)
    if args.command == "relationships":
        return _relationships(args, settings)
    return _run_writer(args, settings)


def _options(
    args: argparse.Namespace, name: str, topics: list[str], **extra: Any
) -> ConsumerOptions:
    return ConsumerOptions(
        name=name,
        group_id=args.group,
        topics=topics,
        batch_size=args.batch_size,
        batch_timeout_s=args.batch_timeout,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        log_interval_s=args.log_interval,
        **extra,
    )


def _run_writer(args: argparse.Namespace, settings: Settings) -> int:
    topics = Topics(prefix=settings.kafka.topic_prefix)
    client = create_client(settings, appname=f"confluence-consumer-{args.command}")
    try:
        database = get_database(client, settings)
        handler: stream.StreamWriter | jobs.JobHistoryWriter
        if args.command == "stream":
            handler = stream.StreamWriter(database)
            options = _options(
                args, "stream-writer", [topics.spaces, topics.content, topics.relationships]
            )
        else:
            handler = jobs.JobHistoryWriter(database)
            options = _options(args, "job-history", [topics.job_history], deliver_tombstones=True)
        if not _prepare(
            handler,
            settings,
            initial_backoff_s=options.initial_backoff_s,
            max_backoff_s=options.max_backoff_s,
        ):
            return EXIT_FAILURE
        return run_consumer(options, handler, settings)
    finally:
        client.close()


def _prepare(
    handler: stream.StreamWriter | jobs.JobHistoryWriter,
    settings: Settings,
    *,
    wait_s: float = STARTUP_WAIT_SECONDS,
    initial_backoff_s: float = 0.5,
    max_backoff_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Create the handler's indexes; return False when that failed for good.

    A transient error (MongoDB unreachable) is retried with the consumer's backoff for up
    to ``wait_s`` seconds, so a consumer restarted during a short MongoDB outage waits instead of
    exiting.
    """
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            handler.prepare()
            return True
        except Exception as error:
            attempt += 1
            delay = backoff_delay(attempt, initial_backoff_s, max_backoff_s)
            waited = time.monotonic() - started
            if not is_transient(error) or waited + delay > wait_s:
                log.error(
                    "creating the MongoDB indexes failed database=%s attempts=%d error=%s; "
                    "check MONGODB_URI and that the server is running",
                    settings.mongodb.database,
                    attempt,
                    error,
                )
                return False
            log.warning(
                "creating the MongoDB indexes failed with a transient error, retrying "
                "database=%s attempt=%d wait_s=%.1f error=%s: %s",
                settings.mongodb.database,
                attempt,
                delay,
                type(error).__name__,
                error,
            )
            sleep(delay)


def _relationships(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from consumer.relationships import service
    except ImportError as error:
        log.error(
            "the relationships consumer is not available in this installation: %s; install a "
            "version of confluence-stream that contains consumer.relationships.service",
            error,
        )
        return EXIT_FAILURE
    options = service.consumer_options(
        settings,
        group_id=args.group,
        batch_size=args.batch_size,
        batch_timeout_s=args.batch_timeout,
        metrics_port=args.metrics_port,
        log_interval_s=args.log_interval,
    )
    options = dataclasses.replace(options, metrics_host=args.metrics_host)
    return int(service.run(settings, options))


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from_time = parse_time(args.from_time) if args.from_time else None
        plan = reset_offsets(settings, args.group, args.topic, from_time)
    except ReplayError as error:
        print(f"confluence-consumer replay: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"reset the committed offsets of consumer group {args.group!r}:")
    print("topic\tpartition\toffset")
    for offset in plan.offsets:
        print(f"{offset.topic}\t{offset.partition}\t{offset.offset}")
    print("the group's next run consumes from these offsets; its writes are idempotent upserts")
    return 0
