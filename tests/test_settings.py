"""Settings tests: defaults, every variable, the _FILE forms, secrets and error reporting."""

from __future__ import annotations

import logging
from pathlib import Path

import certifi
import pytest

from connections.kafka import admin_config, consumer_config, describe_config, producer_config
from connections.mongo import create_client, get_database
from connections.registry import create_codec
from connections.settings import (
    ConfigurationError,
    Secret,
    Settings,
    load_settings,
    redact_mongodb_uri,
    variable_names,
)
from schemas.codec import ConfluentCodec, SingleObjectCodec


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name in ("ca.pem", "client.pem", "client.key", "mongo-ca.pem"):
        path = tmp_path / name
        path.write_text("-----BEGIN CERTIFICATE-----\n")
        files[name] = str(path)
    return files


def test_defaults() -> None:
    settings = load_settings({})

    assert settings == Settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.kafka.sasl_mechanism is None
    assert settings.kafka.topic_prefix == "confluence"
    assert settings.kafka.topic_partitions == 6
    assert settings.kafka.topic_replication_factor == 1
    assert settings.kafka.topic_retention_ms == -1
    assert settings.schema_registry.url is None
    assert settings.mongodb.uri.get_secret_value() == "mongodb://127.0.0.1:27017"
    assert settings.mongodb.database == "confluence"
    assert settings.mongodb.tls_ca_file is None


def test_every_variable_is_read(pem_files: dict[str, str]) -> None:
    environ = {
        "KAFKA_BOOTSTRAP_SERVERS": "broker-1:9093, broker-2:9093",
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "crawler",
        "KAFKA_SASL_PASSWORD": "kafka-secret",
        "KAFKA_SSL_CA_LOCATION": pem_files["ca.pem"],
        "KAFKA_SSL_CERTIFICATE_LOCATION": pem_files["client.pem"],
        "KAFKA_SSL_KEY_LOCATION": pem_files["client.key"],
        "KAFKA_SSL_KEY_PASSWORD": "key-secret",
        "KAFKA_TOPIC_PREFIX": "wiki.prod",
        "KAFKA_TOPIC_PARTITIONS": "12",
        "KAFKA_TOPIC_REPLICATION_FACTOR": "3",
        "KAFKA_TOPIC_RETENTION_MS": "604800000",
        "SCHEMA_REGISTRY_URL": "https://registry.example.com:8081/",
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "sr-user:sr-secret",
        "MONGODB_URI": "mongodb://writer:mongo-secret@mongo-1:27017/?replicaSet=rs0",
        "MONGODB_DATABASE": "wiki_mirror",
        "MONGODB_TLS_CA_FILE": pem_files["mongo-ca.pem"],
    }

    settings = load_settings(environ)

    kafka = settings.kafka
    assert kafka.bootstrap_servers == "broker-1:9093,broker-2:9093"
    assert kafka.security_protocol == "SASL_SSL"
    assert kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert kafka.sasl_username == "crawler"
    assert kafka.sasl_password == Secret("kafka-secret")
    assert kafka.ssl_ca_location == pem_files["ca.pem"]
    assert kafka.ssl_certificate_location == pem_files["client.pem"]
    assert kafka.ssl_key_location == pem_files["client.key"]
    assert kafka.ssl_key_password == Secret("key-secret")
    assert kafka.topic_prefix == "wiki.prod"
    assert kafka.topic_partitions == 12
    assert kafka.topic_replication_factor == 3
    assert kafka.topic_retention_ms == 604800000
    assert settings.schema_registry.url == "https://registry.example.com:8081"
    assert settings.schema_registry.basic_auth_user_info == Secret("sr-user:sr-secret")
    assert settings.mongodb.uri.get_secret_value() == environ["MONGODB_URI"]
    assert settings.mongodb.database == "wiki_mirror"
    assert settings.mongodb.tls_ca_file == pem_files["mongo-ca.pem"]


def test_variable_names_follow_rule() -> None:
    names = variable_names()

    assert "KAFKA_BOOTSTRAP_SERVERS" in names
    assert "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO" in names
    assert "MONGODB_TLS_CA_FILE" in names
    assert len(names) == 18
    for name in names:
        assert name.startswith(("KAFKA_", "SCHEMA_REGISTRY_", "MONGODB_")), name
        assert name == name.upper(), name


def test_empty_variable_counts_as_unset() -> None:
    settings = load_settings({"KAFKA_SASL_MECHANISM": "", "KAFKA_TOPIC_PREFIX": ""})

    assert settings.kafka.sasl_mechanism is None
    assert settings.kafka.topic_prefix == "confluence"


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    environ = {
        "KAFKA_BOOTSTRAP_SERVERS": "broker-1",
        "KAFKA_SECURITY_PROTOCOL": "TLS",
        "KAFKA_TOPIC_PREFIX": "wiki/prod",
        "KAFKA_TOPIC_PARTITIONS": "zero",
        "KAFKA_TOPIC_REPLICATION_FACTOR": "0",
        "KAFKA_TOPIC_RETENTION_MS": "0",
        "SCHEMA_REGISTRY_URL": "registry:8081",
        "MONGODB_URI": "postgres://db",
        "MONGODB_DATABASE": "wiki.mirror",
        "MONGODB_TLS_CA_FILE": str(tmp_path / "missing.pem"),
    }

    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ)

    problems = caught.value.problems
    assert len(problems) == len(environ)
    for name, value in environ.items():
        matching = [problem for problem in problems if problem.startswith(f"{name}=")]
        assert len(matching) == 1, name
        if name != "MONGODB_URI":
            assert repr(value) in matching[0], name
    assert "10 problems" in str(caught.value)


def test_error_names_value_and_fix() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"KAFKA_TOPIC_PARTITIONS": "-2"})

    (problem,) = caught.value.problems
    assert problem.startswith("KAFKA_TOPIC_PARTITIONS='-2' is invalid: must be at least 1")
    assert "set the number of partitions per topic" in problem


def test_secret_values_masked_in_errors() -> None:
    environ = {
        "MONGODB_URI": "mysql://admin:hunter2@db",
        "SCHEMA_REGISTRY_URL": "http://registry:8081",
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "no-colon-hunter2",
    }

    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ)

    message = str(caught.value)
    assert "hunter2" not in message
    assert "MONGODB_URI=*** is invalid" in message
    assert "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=*** is invalid" in message


def test_secret_repr_and_describe_masked() -> None:
    settings = load_settings(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "crawler",
            "KAFKA_SASL_PASSWORD": "kafka-secret",
            "MONGODB_URI": "mongodb://writer:mongo-secret@mongo-1:27017/confluence",
        }
    )

    assert repr(settings.kafka.sasl_password) == "Secret('***')"
    assert str(settings.kafka.sasl_password) == "***"
    assert "kafka-secret" not in repr(settings)
    assert "mongo-secret" not in repr(settings)
    description = settings.describe()
    assert "kafka-secret" not in description
    assert "mongo-secret" not in description
    assert "kafka.sasl_password=***" in description
    assert "kafka.sasl_username=crawler" in description
    assert "mongodb.uri=mongodb://writer:***@mongo-1:27017/confluence" in description


def test_redact_mongodb_uri_forms() -> None:
    assert redact_mongodb_uri("mongodb://u:p@h/db") == "mongodb://u:***@h/db"
    assert redact_mongodb_uri("mongodb+srv://u:p@cluster.example.com") == (
        "mongodb+srv://u:***@cluster.example.com"
    )
    assert redact_mongodb_uri("mongodb://127.0.0.1:27017") == "mongodb://127.0.0.1:27017"
    assert redact_mongodb_uri("mongodb://h/?tls=true&tlsCertificateKeyFilePassword=pw&w=1") == (
        "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=***&w=1"
    )
    assert (
        redact_mongodb_uri(
            "mongodb://k:s@h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:t"
        )
        == "mongodb://k:***@h/?authMechanism=MONGODB-AWS&authMechanismProperties=***"
    )


def test_file_variant_reads_value(tmp_path: Path) -> None:
    password_file = tmp_path / "sasl-password"
    password_file.write_text("from-a-file\n")
    uri_file = tmp_path / "mongodb-uri"
    uri_file.write_text("mongodb://writer:pw@mongo:27017\r\n")

    settings = load_settings(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "crawler",
            "KAFKA_SASL_PASSWORD_FILE": str(password_file),
            "MONGODB_URI_FILE": str(uri_file),
            "KAFKA_TOPIC_PARTITIONS_FILE": str(_write(tmp_path / "partitions", "3\n")),
        }
    )

    assert settings.kafka.sasl_password == Secret("from-a-file")
    assert settings.mongodb.uri == Secret("mongodb://writer:pw@mongo:27017")
    assert settings.kafka.topic_partitions == 3


def _write(path: Path, content: str) -> Path:
    path.write_text(content)
    return path


def test_file_variant_errors(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty", "\n")
    environ = {
        "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "missing"),
        "MONGODB_URI_FILE": str(empty),
        "MONGODB_DATABASE": "one",
        "MONGODB_DATABASE_FILE": str(_write(tmp_path / "db", "two")),
    }

    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ)

    problems = caught.value.problems
    assert len(problems) == 3
    assert problems[0].startswith(f"KAFKA_SASL_PASSWORD_FILE={str(tmp_path / 'missing')!r}")
    assert "cannot read the file" in problems[0]
    assert "MONGODB_URI_FILE" in problems[1]
    assert "empty" in problems[1]
    assert "MONGODB_DATABASE and MONGODB_DATABASE_FILE are both set" in problems[2]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_MECHANISM is not set"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"},
            "KAFKA_SASL_USERNAME is not set",
        ),
        ({"KAFKA_SASL_USERNAME": "crawler"}, "KAFKA_SASL_USERNAME is set but"),
        ({"KAFKA_SSL_KEY_PASSWORD": "x"}, "KAFKA_SSL_KEY_PASSWORD is set but"),
        ({"SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "u:p"}, "SCHEMA_REGISTRY_URL is not"),
        ({"SCHEMA_REGISTRY_URL": "http://u:p@registry:8081"}, "contains credentials"),
        ({"KAFKA_SASL_MECHANISM": "KERBEROS"}, "not one of PLAIN"),
    ],
    ids=[
        "sasl-without-mechanism",
        "plain-without-user",
        "user-without-sasl",
        "ssl-option-without-ssl",
        "registry-auth-without-url",
        "registry-url-credentials",
        "unknown-mechanism",
    ],
)
def test_inconsistent_security_rejected(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ)

    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_certificate_without_key_rejected(pem_files: dict[str, str]) -> None:
    environ = {
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CERTIFICATE_LOCATION": pem_files["client.pem"],
    }

    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ)

    assert "only one of KAFKA_SSL_CERTIFICATE_LOCATION" in caught.value.problems[0]


def test_settings_are_frozen() -> None:
    settings = load_settings({})

    with pytest.raises(AttributeError):
        settings.kafka.topic_prefix = "other"  # type: ignore[misc]


# Client configurations built from the settings


def test_producer_config_is_idempotent() -> None:
    config = producer_config(load_settings({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}))

    assert config["bootstrap.servers"] == "k:9092"
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["compression.type"] == "zstd"
    assert config["partitioner"] == "murmur2_random"
    assert config["message.max.bytes"] >= 8 * 1024 * 1024


def test_consumer_config_stores_offsets_manually() -> None:
    config = consumer_config(load_settings({}), "stream-writer")

    assert config["group.id"] == "stream-writer"
    assert config["enable.auto.offset.store"] is False
    assert config["enable.auto.commit"] is True
    assert config["auto.offset.reset"] == "earliest"


def test_security_settings_reach_client_config(pem_files: dict[str, str]) -> None:
    settings = load_settings(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "KAFKA_SASL_USERNAME": "crawler",
            "KAFKA_SASL_PASSWORD": "kafka-secret",
            "KAFKA_SSL_CA_LOCATION": pem_files["ca.pem"],
        }
    )
    logger = logging.getLogger("tests.librdkafka")

    config = admin_config(settings, logger=logger, overrides={"socket.timeout.ms": 1000})

    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-256"
    assert config["sasl.username"] == "crawler"
    assert config["sasl.password"] == "kafka-secret"
    assert config["ssl.ca.location"] == pem_files["ca.pem"]
    assert config["logger"] is logger
    assert config["socket.timeout.ms"] == 1000
    description = describe_config(config)
    assert "kafka-secret" not in description
    assert "sasl.password=***" in description


def test_producer_config_accepted_by_librdkafka() -> None:
    from confluent_kafka import Consumer, KafkaException, Producer

    settings = load_settings({})
    config = producer_config(settings)

    # librdkafka rejects an unknown or invalid property in the constructor, so creating
    # the clients is the check. The queue length is not one: it counts the idempotent
    # producer's own requests, which depend on whether a broker is reachable.
    producer = Producer(config)
    consumer = Consumer(consumer_config(settings, "settings-test"))

    assert isinstance(producer, Producer)
    with pytest.raises(KafkaException):
        Producer({**config, "enable.idempotence": "maybe"})
    consumer.close()


def test_mongo_client_options() -> None:
    # The TLS CA file must be a real PEM bundle because pymongo loads it at once.
    settings = load_settings(
        {
            "MONGODB_URI": "mongodb://writer:pw@127.0.0.1:27017",
            "MONGODB_DATABASE": "wiki",
            "MONGODB_TLS_CA_FILE": certifi.where(),
        }
    )

    client = create_client(settings, "settings-test", connect=False)
    try:
        options = client.options
        assert options.pool_options.metadata["application"]["name"] == "settings-test"
        assert options.codec_options.tz_aware is True
        assert options.server_selection_timeout == 10
        assert options.pool_options.socket_timeout == 120
        assert get_database(client, settings).name == "wiki"
    finally:
        client.close()


def test_codec_follows_registry_setting() -> None:
    plain = create_codec(load_settings({}))
    registry = create_codec(load_settings({"SCHEMA_REGISTRY_URL": "http://127.0.0.1:1"}))

    assert isinstance(plain, SingleObjectCodec)
    assert isinstance(registry, ConfluentCodec)
