"""Command line of the crawl job: ``confluence-producer``.

::

    confluence-producer crawl --source ID [--sources PATH] [--full] [--since TIME] [--dry-run]
    confluence-producer jobs [--source ID] [--limit N]
    confluence-producer check ...

Exit codes of ``crawl``: 0 succeeded, 1 failed, 2 configuration error, 3 partial (the job
finished but skipped units after errors; its Job record lists them). ``jobs`` and
``check`` exit 0 on success, 1 on failure and 2 on a configuration error.

Kafka settings come from the environment (``KAFKA_*``, see ``connections.settings``);
the sources file from ``--sources``, else ``CONFLUENCE_SOURCES``, else ``./sources.toml``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connections import settings as connection_settings
from connections.kafka import common_config, producer_config
from connections.registry import create_codec
from producer.check import add_check_arguments, run_check
from producer.crawl import CrawlJob, CrawlOptions, JobResult
from producer.errors import ConfigurationError, ProducerError
from producer.history import (
    DEFAULT_READ_TIMEOUT_SECONDS,
    HistoryReadError,
    format_jobs_table,
    read_job_history,
)
from producer.memory import limit_malloc_arenas
from producer.progress import Progress
from producer.publisher import DryRunPublisher, KafkaPublisher, Publisher
from producer.window import parse_time
from schemas.topics import Topics

log = logging.getLogger(__name__)

SOURCES_ENV = "CONFLUENCE_SOURCES"
DEFAULT_SOURCES_PATH = "sources.toml"
EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_CONFIGURATION = 2
EXIT_PARTIAL = 3
LOG_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
# Cap of librdkafka's local queue (its default is 1 GiB): when the broker is slower than
# the crawl, produce() blocks on a full queue instead of the queue growing with the site.
PRODUCER_QUEUE_MAX_KBYTES = 65536


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="confluence-producer",
        description="Crawl a Confluence site into Avro-encoded Kafka topics, one job per run.",
        epilog="Exit codes of crawl: 0 succeeded, 1 failed, 2 configuration error, 3 partial.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="lowest level of the log lines written to stderr (default INFO)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    crawl = commands.add_parser("crawl", help="run one crawl job for one source")
    crawl.add_argument("--source", required=True, help="id of the source in the sources file")
    _add_sources_option(crawl)
    crawl.add_argument(
        "--full",
        action="store_true",
        help="crawl every item of the selected spaces and ignore the job history",
    )
    crawl.add_argument(
        "--since",
        metavar="TIME",
        help="start of the modification window (ISO-8601 with a zone, or a UTC date); "
        "overrides the start taken from the last successful job",
    )
    crawl.add_argument(
        "--dry-run",
        action="store_true",
        help="crawl and encode every record but publish nothing to Kafka; the job history is "
        "read when Kafka is reachable and no job record is written",
    )
    crawl.add_argument(
        "--no-progress",
        action="store_true",
        help="do not show or log progress counters while the job runs",
    )

    jobs = commands.add_parser("jobs", help="show the latest jobs from the job-history topic")
    jobs.add_argument("--source", help="show only the jobs of this source id")
    jobs.add_argument(
        "--limit", type=int, default=20, help="number of jobs to show, newest first (default 20)"
    )
    jobs.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT_SECONDS,
        help="seconds to wait for the topic to be read to its end (default 60)",
    )

    check = commands.add_parser(
        "check", help="check the credentials, scopes, API surface and spaces of a source"
    )
    add_check_arguments(check)
    return parser


def _add_sources_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sources",
        type=Path,
        help=f"TOML sources file (default: ${SOURCES_ENV}, else ./{DEFAULT_SOURCES_PATH})",
    )


def sources_path(option: Path | None) -> Path:
    """Return the sources file: the option, else ``$CONFLUENCE_SOURCES``, else ./sources.toml."""
    if option is not None:
        return option
    return Path(os.environ.get(SOURCES_ENV) or DEFAULT_SOURCES_PATH)


def configure_logging(level: str) -> None:
    """Send key=value log lines to stderr; only the command line configures handlers."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)


def publisher_config(settings: connection_settings.Settings) -> dict[str, Any]:
    """Return the crawl's producer configuration, with a bounded local queue."""
    return dict(
        producer_config(
            settings,
            logger=log,
            overrides={"queue.buffering.max.kbytes": PRODUCER_QUEUE_MAX_KBYTES},
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIGURATION
    configure_logging(args.log_level)
    if args.command == "check":
        return run_check(args)
    try:
        if args.command == "crawl":
            limit_malloc_arenas()
            return run_crawl(args)
        return run_jobs(args)
    except (ConfigurationError, connection_settings.ConfigurationError) as error:
        print(f"confluence-producer: {error}", file=sys.stderr)
        return EXIT_CONFIGURATION


def run_crawl(args: argparse.Namespace) -> int:
    from producer.client import ConfluenceClient
    from producer.config import load_source

    source = load_source(sources_path(args.sources), args.source)
    since = None
    if args.since is not None:
        try:
            since = parse_time(args.since)
        except ValueError as error:
            raise ConfigurationError([f"--since: {error}"]) from None
    settings = connection_settings.load_settings()
    topics = Topics(prefix=settings.kafka.topic_prefix)
    codec = create_codec(settings)
    consumer_settings = common_config(settings.kafka, "confluence-producer-history")

    def load_history() -> list[dict[str, Any]]:
        try:
            jobs = read_job_history(consumer_settings, topics.job_history, codec)
        except HistoryReadError as error:
            if not args.dry_run:
                raise
            log.warning("job history not read in dry run, planning a full crawl: %s", error)
            return []
        return list(jobs.values())

    publisher: Publisher
    if args.dry_run:
        publisher = DryRunPublisher(topics, codec)
    else:
        publisher = KafkaPublisher(publisher_config(settings), topics, codec)
    progress = Progress(enabled=not args.no_progress)
    client = ConfluenceClient(source)
    try:
        job = CrawlJob(
            source,
            client,
            publisher,
            load_history,
            options=CrawlOptions(full=args.full, since=since),
            progress=progress.start(),
        )
        try:
            result = job.run()
        except HistoryReadError as error:
            print(f"confluence-producer: {error}", file=sys.stderr)
            return EXIT_FAILED
    finally:
        progress.stop()
        client.close()
        publisher.close()
    print(summary(result, dry_run=args.dry_run))
    return result.exit_code


def summary(result: JobResult, *, dry_run: bool = False) -> str:
    """Return the final summary: status, records by type, requests, waits, errors, rate."""
    record = result.record
    counts: dict[str, int] = dict(record["counts"])
    items = sum(count for kind, count in counts.items() if kind != "structure_listing")
    duration = result.duration_seconds
    rate = items / duration if duration > 0 else 0.0
    by_type = " ".join(f"{kind}={count}" for kind, count in sorted(counts.items())) or "none"
    note = " (dry run, nothing published)" if dry_run else ""
    lines = [
        f"job {record['job_id']} {record['status']}{note}"
        f" mode={record['mode']} source={record['source_id']}",
        f"  records: {by_type}",
        f"  requests={record['api_calls']} retries={record['retries']} "
        f"rate_limit_waits={record['rate_limit_waits']} "
        f"rate_limit_wait_seconds={record['rate_limit_wait_seconds']:.1f}",
        f"  errors={len(record['errors'])} duration={duration:.1f}s items_per_second={rate:.1f}",
    ]
    for error in record["errors"]:
        status = error["status"] if error["status"] is not None else "-"
        lines.append(f"  error unit={error['unit']} status={status} {error['message']}")
    for failure in result.delivery_failures[:5]:
        lines.append(f"  delivery failure {failure}")
    return "\n".join(lines)


def run_jobs(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigurationError([f"--limit {args.limit} is invalid: use 1 or more"])
    settings = connection_settings.load_settings()
    topics = Topics(prefix=settings.kafka.topic_prefix)
    codec = create_codec(settings, auto_register=False)
    try:
        jobs = read_job_history(
            common_config(settings.kafka, "confluence-producer-jobs"),
            topics.job_history,
            codec,
            timeout=args.timeout,
        )
    except (HistoryReadError, ProducerError) as error:
        print(f"confluence-producer: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(format_jobs_table(jobs.values(), source_id=args.source, limit=args.limit))
    return EXIT_SUCCEEDED
