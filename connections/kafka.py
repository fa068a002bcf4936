"""librdkafka configuration dictionaries for producers, consumers and admin clients.

Each function returns a plain dict of librdkafka properties that can be passed to
``confluent_kafka.Producer``, ``Consumer`` or ``AdminClient``; ``overrides`` entries
replace the computed ones. Property names and defaults are those of librdkafka's
CONFIGURATION.md (librdkafka 2.x, as shipped with confluent-kafka 2.16).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connections.settings import KafkaSettings, Settings
from schemas.topics import MAX_MESSAGE_BYTES

KafkaConfig = dict[str, Any]

# Producer batching: waiting up to 20 ms fills larger, better compressed batches; the
# librdkafka default of 5 ms sends many small requests when a crawl produces in bursts.
PRODUCER_LINGER_MS = 20
# A record not acknowledged within 5 minutes is reported as failed by its delivery report.
PRODUCER_DELIVERY_TIMEOUT_MS = 300_000


def common_config(kafka: KafkaSettings, client_id: str) -> KafkaConfig:
    """Return the connection and security properties every client shares."""
    config: KafkaConfig = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": client_id,
        "security.protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism is not None:
        config["sasl.mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_username is not None:
        config["sasl.username"] = kafka.sasl_username
    if kafka.sasl_password is not None:
        config["sasl.password"] = kafka.sasl_password.get_secret_value()
    if kafka.ssl_ca_location is not None:
        config["ssl.ca.location"] = kafka.ssl_ca_location
    if kafka.ssl_certificate_location is not None:
        config["ssl.certificate.location"] = kafka.ssl_certificate_location
    if kafka.ssl_key_location is not None:
        config["ssl.key.location"] = kafka.ssl_key_location
    if kafka.ssl_key_password is not None:
        config["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    return config


def producer_config(
    settings: Settings,
    client_id: str = "confluence-producer",
    *,
    logger: logging.Logger | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> KafkaConfig:
    """Return the configuration of an idempotent, compressing producer.

    ``enable.idempotence`` implies ``acks=all``, at most 5 requests in flight and
    unlimited retries within ``delivery.timeout.ms``, so records of one partition are
    written once and in order. ``partitioner=murmur2_random`` places keys on the same
    partitions as the Java clients do, so producers in either language agree.
    """
    config = common_config(settings.kafka, client_id)
    config.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "zstd",
            "linger.ms": PRODUCER_LINGER_MS,
            "delivery.timeout.ms": PRODUCER_DELIVERY_TIMEOUT_MS,
            "request.timeout.ms": 30_000,
            "message.max.bytes": MAX_MESSAGE_BYTES,
            "partitioner": "murmur2_random",
        }
    )
    return _finish(config, logger, overrides)


def consumer_config(
    settings: Settings,
    group_id: str,
    client_id: str = "confluence-consumer",
    *,
    logger: logging.Logger | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> KafkaConfig:
    """Return the configuration of an at-least-once consumer with manual offset storage.

    Offsets are stored only when the consumer calls ``store_offsets()`` after its MongoDB
    write succeeded (``enable.auto.offset.store=false``); the background auto-commit then
    commits only stored offsets. A consumer must still commit synchronously when its
    partitions are revoked. A new group starts at the earliest offset, so it replays the
    whole topic.
    """
    config = common_config(settings.kafka, client_id)
    config.update(
        {
            "group.id": group_id,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": 5_000,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
        }
    )
    return _finish(config, logger, overrides)


def admin_config(
    settings: Settings,
    client_id: str = "confluence-admin",
    *,
    logger: logging.Logger | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> KafkaConfig:
    """Return the configuration of an admin client."""
    return _finish(common_config(settings.kafka, client_id), logger, overrides)


def _finish(
    config: KafkaConfig, logger: logging.Logger | None, overrides: Mapping[str, Any] | None
) -> KafkaConfig:
    # Without a logger librdkafka writes its own lines to stderr; with one they go through
    # the logging module like every other log line of the process.
    if logger is not None:
        config["logger"] = logger
    if overrides:
        config.update(overrides)
    return config


def describe_config(config: Mapping[str, Any]) -> str:
    """Return ``config`` as one ``key=value`` line for logs, with passwords masked."""
    items = []
    for key in sorted(config):
        value = config[key]
        if "password" in key or "secret" in key:
            value = "***"
        elif isinstance(value, logging.Logger):
            value = value.name
        items.append(f"{key}={value}")
    return " ".join(items)
