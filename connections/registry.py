"""Choose the record codec from the settings: single-object encoding or a Schema Registry."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from connections.settings import Settings
from schemas.codec import Codec, ConfluentCodec, SingleObjectCodec
from schemas.topics import Topics

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

log = logging.getLogger(__name__)


def create_registry_client(settings: Settings) -> SchemaRegistryClient | None:
    """Return a Schema Registry client, or None when ``SCHEMA_REGISTRY_URL`` is unset.

    The client needs the ``schemaregistry`` extra of confluent-kafka (Authlib, httpx2,
    cachetools, attrs); it is imported only when a registry is configured.
    """
    registry = settings.schema_registry
    if registry.url is None:
        return None
    from confluent_kafka.schema_registry import SchemaRegistryClient

    config = {"url": registry.url}
    if registry.basic_auth_user_info is not None:
        config["basic.auth.user.info"] = registry.basic_auth_user_info.get_secret_value()
    return SchemaRegistryClient(config)


def create_codec(settings: Settings, *, auto_register: bool = True) -> Codec:
    """Return the codec the settings ask for.

    Without a registry URL: Avro single-object encoding against the schemas in this
    package. With one: Confluent wire format, subjects ``<topic>-value``; producers
    register the current schemas (``auto_register``), consumers only read ids.
    """
    client = create_registry_client(settings)
    if client is None:
        log.info("record codec selected framing=single-object")
        return SingleObjectCodec()
    topics = Topics(prefix=settings.kafka.topic_prefix)
    log.info(
        "record codec selected framing=confluent registry_url=%s", settings.schema_registry.url
    )
    return ConfluentCodec(client, topics.value_subject, auto_register=auto_register)
