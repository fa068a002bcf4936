"""Fixtures that find a Kafka broker and a MongoDB-protocol server for integration tests.

`kafka_bootstrap` (a "host:port" string) and `mongo_uri` (a MongoDB connection string)
are session-scoped and look for a service in this order:

1. the environment variables TEST_KAFKA_BOOTSTRAP_SERVERS and TEST_MONGODB_URI;
2. Testcontainers (Kafka in KRaft mode, MongoDB), when a Docker engine responds to ping;
3. the local launchers of `python -m infra`: Kafka from its Maven jars and FerretDB.

A local service that was already running is used as it is. One that the fixture had to
start is left running after the session too, so later test runs skip the start-up and
other test sessions on the machine share it. `make services-down` stops it.

When no service can be found, the fixture fails the test under CI=true and skips it
elsewhere, with the reason. Every test that uses one of these fixtures gets the
`integration` mark, so `pytest -m 'not integration'` deselects it.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import NoReturn

import pytest

from infra import ferretdb, kafka
from infra.process import ServiceError, ServiceStatus

KAFKA_ENV = "TEST_KAFKA_BOOTSTRAP_SERVERS"
MONGO_ENV = "TEST_MONGODB_URI"
INTEGRATION_FIXTURES = frozenset({"kafka_bootstrap", "mongo_uri"})

# Images for the Testcontainers path: KRaft needs cp-kafka 7.0.0 or newer.
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
MONGO_IMAGE = "mongo:7.0"
DOCKER_PING_TIMEOUT_SECONDS = 3


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a service fixture as `integration`.

    `tryfirst` lets this run before the `-m` option deselects tests by mark.
    """
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def service_unavailable(reason: str) -> NoReturn:
    """Fail under CI, where the integration suite must run, and skip the test elsewhere."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@cache
def docker_engine_responds() -> bool:
    """Return True when a Docker engine responds to ping; an installed docker CLI is not enough."""
    docker_host = os.environ.get("DOCKER_HOST", "")
    if not docker_host and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker
    except ImportError:
        return False
    # A failed connection attempt leaves an unclosed socket behind, whose ResourceWarning
    # would turn into an error under `filterwarnings = error`; collect it here instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_SECONDS)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # Any failure means no usable engine.
            return False
        finally:
            gc.collect()


def start_local_service(start: Callable[[], ServiceStatus], description: str) -> str:
    """Start a local launcher service, or reuse a running one, and return its address."""
    try:
        return start().address
    except ServiceError as error:
        failure = error
    # Reported outside the except block so that the skip or failure carries no chained traceback.
    detail = f"\n{failure.detail}" if failure.detail else ""
    service_unavailable(
        f"{description} is not set, no Docker engine responds, and the local "
        f"launcher failed: {failure}{detail}"
    )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Return the bootstrap servers ("host:port") of a Kafka broker for the test session."""
    configured = os.environ.get(KAFKA_ENV, "").strip()
    if configured:
        yield configured
        return

    if docker_engine_responds():
        # NOTE: this path has not run on the project's machines, which have no Docker engine.
        from testcontainers.community.kafka import KafkaContainer

        container = (
            KafkaContainer(image=KAFKA_IMAGE)
            .with_kraft()
            .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
            .with_env("KAFKA_LOG_CLEANER_BACKOFF_MS", "1000")
        )
        try:
            container.start()
        except Exception as error:  # Docker raises many error types.
            service_unavailable(f"the Kafka container ({KAFKA_IMAGE}) did not start: {error}")
        try:
            yield str(container.get_bootstrap_server())
        finally:
            container.stop()
        return

    yield start_local_service(kafka.up, KAFKA_ENV)


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """Return the connection string of a MongoDB-protocol server for the test session."""
    configured = os.environ.get(MONGO_ENV, "").strip()
    if configured:
        yield configured
        return

    if docker_engine_responds():
        # NOTE: this path has not run on the project's machines, which have no Docker engine.
        from testcontainers.community.mongodb import MongoDbContainer

        container = MongoDbContainer(image=MONGO_IMAGE)
        try:
            container.start()
        except Exception as error:  # Docker raises many error types.
            service_unavailable(f"the MongoDB container ({MONGO_IMAGE}) did not start: {error}")
        try:
            yield str(container.get_connection_url())
        finally:
            container.stop()
        return

    yield start_local_service(ferretdb.up, MONGO_ENV)
