"""Command-line interface: `python -m infra up|down|status [kafka|mongo]`.

`up` starts the local Kafka broker and the FerretDB server (both when no service is
named), downloading or building them on first use, and prints one line per service
with its address. `down` stops them and `status` reports them. Ports and folders come
from LOCAL_KAFKA_PORT, LOCAL_KAFKA_CONTROLLER_PORT, LOCAL_MONGO_PORT and
LOCAL_SERVICES_DIR. Expected failures print one line naming the problem and the fix,
and exit with status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from infra import ferretdb, kafka
from infra.process import ServiceError, ServiceStatus

SERVICES = ("kafka", "mongo")

UP_ACTIONS: dict[str, Callable[[], ServiceStatus]] = {
    "kafka": lambda: kafka.up(),
    "mongo": lambda: ferretdb.up(),
}
DOWN_ACTIONS: dict[str, Callable[[], int | None]] = {
    "kafka": lambda: kafka.down(),
    "mongo": lambda: ferretdb.down(),
}
STATUS_ACTIONS: dict[str, Callable[[], ServiceStatus]] = {
    "kafka": lambda: kafka.status(),
    "mongo": lambda: ferretdb.status(),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m infra",
        description="Start, stop or report the local Kafka broker and FerretDB server.",
    )
    parser.add_argument(
        "command",
        choices=("up", "down", "status"),
        help="up starts the services (a no-op for running ones), down stops them, "
        "status reports each as running or stopped",
    )
    parser.add_argument(
        "service",
        nargs="?",
        choices=SERVICES,
        help="the service to act on (default: both)",
    )
    parser.add_argument("--quiet", action="store_true", help="log only warnings and errors")
    return parser.parse_args(argv)


def report_error(service: str, error: ServiceError) -> None:
    print(f"{service}: error: {error}", file=sys.stderr)
    if error.detail:
        print(f"--- last lines of the log ---\n{error.detail}", file=sys.stderr)


def run_up(services: Sequence[str]) -> int:
    """Start the services in parallel, since the Maven download and the Go build are slow."""
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        futures = {service: pool.submit(UP_ACTIONS[service]) for service in services}
    exit_code = 0
    for service, future in futures.items():
        try:
            print(future.result().describe())
        except ServiceError as error:
            report_error(service, error)
            exit_code = 1
    return exit_code


def run_down(services: Sequence[str]) -> int:
    exit_code = 0
    for service in services:
        try:
            pid = DOWN_ACTIONS[service]()
        except ServiceError as error:
            report_error(service, error)
            exit_code = 1
            continue
        print(f"{service}: stopped (pid {pid})" if pid is not None else f"{service}: not running")
    return exit_code


def run_status(services: Sequence[str]) -> int:
    exit_code = 0
    for service in services:
        try:
            print(STATUS_ACTIONS[service]().describe())
        except ServiceError as error:
            report_error(service, error)
            exit_code = 1
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    services = [args.service] if args.service else list(SERVICES)
    if args.command == "up":
        return run_up(services)
    if args.command == "down":
        return run_down(services)
    return run_status(services)


if __name__ == "__main__":
    sys.exit(main())
