"""Typed connection settings, read from the environment in one place.

Naming rule: the field ``<group>.<field>`` is read from the variable
``<GROUP PREFIX>_<FIELD>`` in upper case. The group prefixes are ``KAFKA``,
``SCHEMA_REGISTRY`` and ``MONGODB``, so ``kafka.topic_prefix`` comes from
``KAFKA_TOPIC_PREFIX``. Every variable can instead name a file with ``<NAME>_FILE``
(for Docker and Kubernetes secrets); the file's content without its trailing newline is
the value. An empty variable counts as unset.

``load_settings()`` checks every variable, collects every problem, and raises one
``ConfigurationError`` that lists them all. Secrets are ``Secret`` objects whose repr
and str are ``***``; ``Settings.describe()`` gives a line for logs with secrets masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from schemas.topics import DEFAULT_PREFIX, prefix_problem

MASK: Final = "***"
FILE_SUFFIX: Final = "_FILE"

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")
# Mechanisms that authenticate with KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD.
_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_MONGODB_DATABASE_FORBIDDEN = re.compile(r'[/\\. "$*<>:|?\x00]')
_MONGODB_URI_CREDENTIALS = re.compile(r"^(mongodb(?:\+srv)?://)([^@/]*)@")
# URI options that can carry secrets: tlsCertificateKeyFilePassword, and
# authMechanismProperties, which may hold an AWS session token.
_MONGODB_URI_SECRET_OPTION = re.compile(
    r"([?&][^=&]*(?:password|token|secret|authmechanismproperties)[^=&]*=)[^&]*", re.I
)


class Secret:
    """A string that never shows its value in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class ConfigurationError(ValueError):
    """Invalid settings; ``problems`` contains one line per invalid variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        noun = "problem" if len(problems) == 1 else "problems"
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid configuration ({len(problems)} {noun}):\n{listing}")


def _meta(parse: Callable[[str], Any], hint: str, *, secret: bool = False) -> dict[str, Any]:
    """Return field metadata: the parser, the fix shown for bad values, and secrecy."""
    return {"parse": parse, "hint": hint, "secret": secret}


# Parsers: each returns the typed value or raises ValueError saying what is wrong.


def _text(value: str) -> str:
    return value


def _secret(value: str) -> Secret:
    return Secret(value)


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError("not an integer") from None
        if number < minimum or (maximum is not None and number > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ValueError(f"must be at least {minimum}{upper}")
        return number

    return parse


def _retention_ms(value: str) -> int:
    number = _integer(-1)(value)
    if number == 0:
        raise ValueError("0 would delete records at once")
    return number


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        normalized = value.strip().upper()
        if normalized not in choices:
            raise ValueError(f"not one of {', '.join(choices)}")
        return normalized

    return parse


def _existing_file(value: str) -> str:
    if not Path(value).is_file():
        raise ValueError("no such file")
    return value


def _bootstrap_servers(value: str) -> str:
    servers = [server.strip() for server in value.split(",")]
    for server in servers:
        host, separator, port = server.rpartition(":")
        if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{server!r} is not host:port with a port from 1 to 65535")
    return ",".join(servers)


def _topic_prefix(value: str) -> str:
    problem = prefix_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("contains credentials; put them in SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO")
    return value.rstrip("/")


def _user_info(value: str) -> Secret:
    user, separator, _ = value.partition(":")
    if not separator or not user:
        raise ValueError("not in the form user:password")
    return Secret(value)


def _mongodb_uri(value: str) -> Secret:
    parts = urlsplit(value)
    if parts.scheme not in ("mongodb", "mongodb+srv") or not parts.netloc.rpartition("@")[2]:
        raise ValueError("not a mongodb:// or mongodb+srv:// URI with a host")
    return Secret(value)


def _mongodb_database(value: str) -> str:
    if len(value) > 63:
        raise ValueError("longer than 63 characters")
    if _MONGODB_DATABASE_FORBIDDEN.search(value):
        raise ValueError('contains one of / \\ . space " $ * < > : | ?')
    return value


def redact_mongodb_uri(uri: str) -> str:
    """Return ``uri`` with its password and secret-bearing options replaced by ``***``."""

    def mask(match: re.Match[str]) -> str:
        user = match.group(2).partition(":")[0]
        return f"{match.group(1)}{user}:{MASK}@"

    redacted = _MONGODB_URI_CREDENTIALS.sub(mask, uri, count=1)
    return _MONGODB_URI_SECRET_OPTION.sub(rf"\g<1>{MASK}", redacted)


@dataclass(frozen=True)
class KafkaSettings:
    """Kafka connection and topic settings (variables ``KAFKA_*``)."""

    bootstrap_servers: str = field(
        default="127.0.0.1:9092",
        metadata=_meta(
            _bootstrap_servers, "set a comma-separated list of host:port broker addresses"
        ),
    )
    security_protocol: str = field(
        default="PLAINTEXT",
        metadata=_meta(_choice(SECURITY_PROTOCOLS), f"set one of {', '.join(SECURITY_PROTOCOLS)}"),
    )
    sasl_mechanism: str | None = field(
        default=None,
        metadata=_meta(_choice(SASL_MECHANISMS), f"set one of {', '.join(SASL_MECHANISMS)}"),
    )
    sasl_username: str | None = field(
        default=None,
        metadata=_meta(_text, "set the SASL user name"),
    )
    sasl_password: Secret | None = field(
        default=None,
        metadata=_meta(_secret, "set the SASL password", secret=True),
    )
    ssl_ca_location: str | None = field(
        default=None,
        metadata=_meta(
            _existing_file, "set the path of the PEM file with the broker's CA certificate"
        ),
    )
    ssl_certificate_location: str | None = field(
        default=None,
        metadata=_meta(_existing_file, "set the path of the PEM file with the client certificate"),
    )
    ssl_key_location: str | None = field(
        default=None,
        metadata=_meta(_existing_file, "set the path of the PEM file with the client private key"),
    )
    ssl_key_password: Secret | None = field(
        default=None,
        metadata=_meta(_secret, "set the password of the client private key", secret=True),
    )
    topic_prefix: str = field(
        default=DEFAULT_PREFIX,
        metadata=_meta(
            _topic_prefix,
            "set a prefix of letters, digits, '.', '_' and '-', for example 'confluence'",
        ),
    )
    topic_partitions: int = field(
        default=6,
        metadata=_meta(
            _integer(1, 100_000), "set the number of partitions per topic, for example 6"
        ),
    )
    topic_replication_factor: int = field(
        default=1,
        metadata=_meta(
            _integer(1, 32_767),
            "set the number of replicas per partition, at most the number of brokers",
        ),
    )
    topic_retention_ms: int = field(
        default=-1,
        metadata=_meta(
            _retention_ms, "set -1 to keep records forever, or a retention time in milliseconds"
        ),
    )


@dataclass(frozen=True)
class SchemaRegistrySettings:
    """Optional Confluent Schema Registry (variables ``SCHEMA_REGISTRY_*``).

    Without a URL, records use Avro single-object encoding and need no registry.
    """

    url: str | None = field(
        default=None,
        metadata=_meta(_http_url, "set the registry URL, for example http://registry:8081"),
    )
    basic_auth_user_info: Secret | None = field(
        default=None,
        metadata=_meta(
            _user_info, "set user:password for the registry's basic authentication", secret=True
        ),
    )


@dataclass(frozen=True)
class MongoSettings:
    """MongoDB connection (variables ``MONGODB_*``). The URI may carry credentials."""

    uri: Secret = field(
        default=Secret("mongodb://127.0.0.1:27017"),
        metadata=_meta(
            _mongodb_uri,
            "set a connection string such as mongodb://user:password@host:27017",
            secret=True,
        ),
    )
    database: str = field(
        default="confluence",
        metadata=_meta(_mongodb_database, "set a database name such as 'confluence'"),
    )
    tls_ca_file: str | None = field(
        default=None,
        metadata=_meta(
            _existing_file, "set the path of the PEM file with the server's CA certificate"
        ),
    )


# Group attribute on Settings -> (settings class, variable prefix).
_GROUPS: Final = {
    "kafka": (KafkaSettings, "KAFKA"),
    "schema_registry": (SchemaRegistrySettings, "SCHEMA_REGISTRY"),
    "mongodb": (MongoSettings, "MONGODB"),
}


@dataclass(frozen=True)
class Settings:
    """All connection settings of one process."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    schema_registry: SchemaRegistrySettings = field(default_factory=SchemaRegistrySettings)
    mongodb: MongoSettings = field(default_factory=MongoSettings)

    def describe(self) -> str:
        """Return one ``name=value`` line of every setting for logs, with secrets masked."""
        items: list[str] = []
        for group, _, settings_field in _iter_fields():
            value = getattr(getattr(self, group), settings_field.name)
            if group == "mongodb" and settings_field.name == "uri":
                shown = redact_mongodb_uri(value.get_secret_value())
            elif isinstance(value, Secret):
                shown = MASK
            else:
                shown = "" if value is None else str(value)
            items.append(f"{group}.{settings_field.name}={shown}")
        return " ".join(items)


def _iter_fields() -> Iterator[tuple[str, str, Any]]:
    for group, (settings_class, prefix) in _GROUPS.items():
        for settings_field in fields(settings_class):
            yield group, f"{prefix}_{settings_field.name.upper()}", settings_field


def variable_names() -> tuple[str, ...]:
    """Return every environment variable the settings read, without the ``_FILE`` forms."""
    return tuple(name for _, name, _ in _iter_fields())


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every setting; raise ``ConfigurationError`` listing all problems."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {group: {} for group in _GROUPS}

    for group, name, settings_field in _iter_fields():
        secret = settings_field.metadata["secret"]
        raw = _read_variable(env, name, problems)
        if raw is None:
            continue
        try:
            values[group][settings_field.name] = settings_field.metadata["parse"](raw)
        except ValueError as error:
            shown = MASK if secret else repr(raw)
            hint = settings_field.metadata["hint"]
            problems.append(f"{name}={shown} is invalid: {error}; {hint}")

    kafka = values["kafka"]
    registry = values["schema_registry"]
    problems.extend(_check_kafka_security(kafka))
    if "basic_auth_user_info" in registry and "url" not in registry:
        problems.append(
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO is set but SCHEMA_REGISTRY_URL is not; "
            "set the registry URL or unset the credentials"
        )
    if problems:
        raise ConfigurationError(problems)
    return Settings(
        kafka=KafkaSettings(**kafka),
        schema_registry=SchemaRegistrySettings(**registry),
        mongodb=MongoSettings(**values["mongodb"]),
    )


def _read_variable(env: Mapping[str, str], name: str, problems: list[str]) -> str | None:
    """Return the value of ``name`` or of the file named by ``name_FILE``; None when unset."""
    direct = env.get(name) or None
    file_name = name + FILE_SUFFIX
    path = env.get(file_name) or None
    if direct is not None and path is not None:
        problems.append(f"{name} and {file_name} are both set; set only one of them")
        return None
    if path is None:
        return direct
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        problems.append(
            f"{file_name}={path!r} is invalid: cannot read the file ({reason}); "
            f"set it to a readable UTF-8 file that holds the value of {name}"
        )
        return None
    value = content.rstrip("\r\n")
    if not value:
        problems.append(
            f"{file_name}={path!r} is invalid: the file is empty; write the value of {name} "
            f"into it or unset {file_name}"
        )
        return None
    return value


def _check_kafka_security(kafka: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    protocol = kafka.get("security_protocol", "PLAINTEXT")
    mechanism = kafka.get("sasl_mechanism")
    uses_sasl = protocol.startswith("SASL_")
    uses_ssl = protocol.endswith("SSL")
    if uses_sasl and mechanism is None:
        problems.append(
            f"KAFKA_SASL_MECHANISM is not set but KAFKA_SECURITY_PROTOCOL is {protocol}; "
            f"set one of {', '.join(SASL_MECHANISMS)}"
        )
    if not uses_sasl:
        for name in ("sasl_mechanism", "sasl_username", "sasl_password"):
            if name in kafka:
                problems.append(
                    f"KAFKA_{name.upper()} is set but KAFKA_SECURITY_PROTOCOL is {protocol}; "
                    f"set KAFKA_SECURITY_PROTOCOL to SASL_SSL or SASL_PLAINTEXT, or unset it"
                )
    if uses_sasl and mechanism in _PASSWORD_MECHANISMS:
        for name in ("sasl_username", "sasl_password"):
            if name not in kafka:
                problems.append(
                    f"KAFKA_{name.upper()} is not set but KAFKA_SASL_MECHANISM is {mechanism}; "
                    f"set the SASL {name.removeprefix('sasl_')}"
                )
    ssl_names = ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location")
    if not uses_ssl:
        for name in (*ssl_names, "ssl_key_password"):
            if name in kafka:
                problems.append(
                    f"KAFKA_{name.upper()} is set but KAFKA_SECURITY_PROTOCOL is {protocol}; "
                    f"set KAFKA_SECURITY_PROTOCOL to SSL or SASL_SSL, or unset it"
                )
    elif ("ssl_certificate_location" in kafka) != ("ssl_key_location" in kafka):
        problems.append(
            "only one of KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION is set; "
            "set both for client certificate authentication, or neither"
        )
    return problems
