"""Avro encoding and decoding of the wire-contract records with fastavro.

Two framings are supported:

- ``SingleObjectCodec`` (the default, no service needed): Avro single-object encoding,
  that is the marker ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the
  writer schema's Parsing Canonical Form, then the Avro binary body. The decoder finds
  the writer schema among the schema versions of ``schemas.catalogue`` and resolves it
  to the current schema of the same record type.
- ``ConfluentCodec`` (when a Schema Registry is configured): Confluent wire format, that
  is magic byte 0, the 4-byte big-endian schema id from the registry, then the body.
  Subjects follow the topic name strategy (``<topic>-value``).

Both use schemaless fastavro calls with schemas parsed once. Encoding writes first and
validates only when the write fails, so the error names each bad field without making
every valid record pay for a separate validation pass; pass ``validate=True`` to check
every record before it is written. Decoded timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import fastavro
from fastavro.schema import expand_schema
from fastavro.validation import ValidationError, validate

from schemas.catalogue import (
    NAMESPACE,
    RecordType,
    SchemaCatalogue,
    SchemaVersion,
    crc64_fingerprint,
    default_catalogue,
    parse_schema_text,
)
from schemas.errors import (
    IncompatibleSchemaError,
    MalformedPayloadError,
    RecordValidationError,
    SchemaRegistryUnavailableError,
    UnexpectedRecordTypeError,
    UnknownSchemaError,
)

log = logging.getLogger(__name__)

SINGLE_OBJECT_MARKER = b"\xc3\x01"
SINGLE_OBJECT_HEADER_SIZE = len(SINGLE_OBJECT_MARKER) + 8
CONFLUENT_MAGIC_BYTE = b"\x00"
CONFLUENT_HEADER_SIZE = 5

# Exceptions fastavro raises from a writer given a record of the wrong shape.
_WRITE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError, struct.error)
# Exceptions fastavro raises from a reader given corrupt or truncated bytes.
_READ_ERRORS = (EOFError, ValueError, TypeError, KeyError, IndexError, OverflowError, struct.error)
_MAX_DATUM_REPR = 80


class Codec(Protocol):
    """Encoder and decoder of wire-contract records, whatever the framing."""

    def encode(self, record_type: RecordType, record: Mapping[str, Any]) -> bytes:
        """Encode ``record`` with the current schema of ``record_type``."""
        ...

    def decode(self, data: bytes, expected: RecordType | None = None) -> dict[str, Any]:
        """Decode one framed record; raise ``UnexpectedRecordTypeError`` if not ``expected``."""
        ...


class SingleObjectCodec:
    """Avro single-object encoding against the schema versions kept in this package."""

    def __init__(self, catalogue: SchemaCatalogue | None = None, *, validate: bool = False) -> None:
        self._catalogue = catalogue if catalogue is not None else default_catalogue()
        self._validate = validate

    def encode(self, record_type: RecordType, record: Mapping[str, Any]) -> bytes:
        version = self._catalogue.current(record_type)
        buffer = io.BytesIO()
        buffer.write(SINGLE_OBJECT_MARKER)
        buffer.write(version.fingerprint)
        _write_body(buffer, version, record, self._validate, version.fingerprint.hex())
        return buffer.getvalue()

    def decode(self, data: bytes, expected: RecordType | None = None) -> dict[str, Any]:
        if len(data) < SINGLE_OBJECT_HEADER_SIZE or data[:2] != SINGLE_OBJECT_MARKER:
            raise MalformedPayloadError(
                f"message is not Avro single-object encoded: it starts with "
                f"{bytes(data[:2]).hex(' ') or 'nothing'} and has {len(data)} bytes, expected "
                f"marker c3 01 and at least {SINGLE_OBJECT_HEADER_SIZE} bytes; check that the "
                f"producer of this topic uses the same framing (no Schema Registry configured)",
                record_type=_value_or_none(expected),
            )
        writer_fingerprint = bytes(data[2:SINGLE_OBJECT_HEADER_SIZE])
        writer = self._catalogue.by_fingerprint(writer_fingerprint)
        if writer is None:
            raise UnknownSchemaError(
                f"unknown Avro schema fingerprint {writer_fingerprint.hex()}: no schema file in "
                f"this package version has it; deploy a consumer that ships the producer's schema "
                f"version (or keep the old version as <record type>.v<N>.avsc)",
                record_type=_value_or_none(expected),
                schema_ref=writer_fingerprint.hex(),
            )
        _check_expected(writer.record_type, expected, writer_fingerprint.hex())
        reader = self._catalogue.current(writer.record_type)
        return _read_body(data, SINGLE_OBJECT_HEADER_SIZE, writer, reader, writer_fingerprint.hex())


class SchemaRegistryClient(Protocol):
    """The part of ``confluent_kafka.schema_registry.SchemaRegistryClient`` the codec uses."""

    def register_schema(
        self, subject_name: str, schema: Any, normalize_schemas: bool = False
    ) -> int: ...

    def lookup_schema(
        self,
        subject_name: str,
        schema: Any,
        normalize_schemas: bool = False,
        fmt: str | None = None,
        deleted: bool = False,
    ) -> Any: ...

    def get_schema(
        self,
        schema_id: int,
        subject_name: str | None = None,
        fmt: str | None = None,
        reference_format: str | None = None,
    ) -> Any: ...


class ConfluentCodec:
    """Confluent wire format with schema ids from a Schema Registry.

    ``subject_for`` maps a record type to its registry subject, normally
    ``<topic>-value`` of the topic that carries the record type. With ``auto_register``
    the current schema is registered on first use; without it, it must already exist.
    """

    def __init__(
        self,
        registry: SchemaRegistryClient,
        subject_for: Callable[[RecordType], str],
        catalogue: SchemaCatalogue | None = None,
        *,
        auto_register: bool = True,
        validate: bool = False,
    ) -> None:
        self._registry = registry
        self._subject_for = subject_for
        self._catalogue = catalogue if catalogue is not None else default_catalogue()
        self._auto_register = auto_register
        self._validate = validate
        self._lock = threading.Lock()
        self._ids: dict[RecordType, int] = {}
        self._writers: dict[int, SchemaVersion] = {}

    def encode(self, record_type: RecordType, record: Mapping[str, Any]) -> bytes:
        version = self._catalogue.current(record_type)
        schema_id = self._ids.get(record_type)
        if schema_id is None:
            schema_id = self._register(version)
        buffer = io.BytesIO()
        buffer.write(CONFLUENT_MAGIC_BYTE)
        buffer.write(struct.pack(">I", schema_id))
        _write_body(buffer, version, record, self._validate, f"registry id {schema_id}")
        return buffer.getvalue()

    def decode(self, data: bytes, expected: RecordType | None = None) -> dict[str, Any]:
        if len(data) < CONFLUENT_HEADER_SIZE or data[:1] != CONFLUENT_MAGIC_BYTE:
            raise MalformedPayloadError(
                f"message is not in Confluent wire format: it starts with "
                f"{bytes(data[:1]).hex() or 'nothing'} and has {len(data)} bytes, expected magic "
                f"byte 00 and at least {CONFLUENT_HEADER_SIZE} bytes; check that the producer "
                f"of this topic uses the same Schema Registry settings",
                record_type=_value_or_none(expected),
            )
        (schema_id,) = struct.unpack_from(">I", data, 1)
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._fetch_writer(schema_id, expected)
        schema_ref = f"registry id {schema_id}"
        _check_expected(writer.record_type, expected, schema_ref)
        reader = self._catalogue.current(writer.record_type)
        return _read_body(data, CONFLUENT_HEADER_SIZE, writer, reader, schema_ref)

    def _register(self, version: SchemaVersion) -> int:
        # Imported here so single-object encoding works without the schemaregistry extra.
        from confluent_kafka.schema_registry import Schema

        subject = self._subject_for(version.record_type)
        schema = Schema(json.dumps(version.schema_json), "AVRO")
        try:
            if self._auto_register:
                schema_id = int(self._registry.register_schema(subject, schema))
            else:
                schema_id = int(self._registry.lookup_schema(subject, schema).schema_id)
        except Exception as error:
            # The registry client raises SchemaRegistryError for HTTP errors and requests'
            # exceptions for network failures; both mean the schema id is not available.
            action = "register" if self._auto_register else "look up"
            raise SchemaRegistryUnavailableError(
                f"could not {action} the {version.record_type.value} schema under subject "
                f"{subject!r} in the Schema Registry: {error}; check SCHEMA_REGISTRY_URL and "
                f"its credentials, and the subject's compatibility setting",
                record_type=version.record_type.value,
            ) from error
        with self._lock:
            self._ids[version.record_type] = schema_id
            self._writers.setdefault(schema_id, version)
        log.info(
            "schema id resolved record_type=%s subject=%s schema_id=%d",
            version.record_type.value,
            subject,
            schema_id,
        )
        return schema_id

    def _fetch_writer(self, schema_id: int, expected: RecordType | None) -> SchemaVersion:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        schema_ref = f"registry id {schema_id}"
        try:
            registered = self._registry.get_schema(schema_id)
        except SchemaRegistryError as error:
            if error.http_status_code == 404:
                raise UnknownSchemaError(
                    f"Schema Registry has no schema with id {schema_id}: {error}; check that "
                    f"producer and consumer use the same registry",
                    record_type=_value_or_none(expected),
                    schema_ref=schema_ref,
                ) from error
            raise SchemaRegistryUnavailableError(
                f"Schema Registry request for schema id {schema_id} failed: {error}",
                record_type=_value_or_none(expected),
                schema_ref=schema_ref,
            ) from error
        except Exception as error:
            raise SchemaRegistryUnavailableError(
                f"Schema Registry request for schema id {schema_id} failed: {error}; check "
                f"SCHEMA_REGISTRY_URL and that the registry is running",
                record_type=_value_or_none(expected),
                schema_ref=schema_ref,
            ) from error

        version = self._writer_from_registered(schema_id, registered.schema_str, expected)
        with self._lock:
            self._writers[schema_id] = version
        return version

    def _writer_from_registered(
        self, schema_id: int, schema_str: str, expected: RecordType | None
    ) -> SchemaVersion:
        schema_ref = f"registry id {schema_id}"
        try:
            schema_json, parsed = parse_schema_text(schema_str, f"with registry id {schema_id}")
        except ValueError as error:
            raise UnknownSchemaError(
                f"{error}; the registry schema is not a usable Avro record schema",
                record_type=_value_or_none(expected),
                schema_ref=schema_ref,
            ) from error
        record_type = self._catalogue.record_type_for_name(parsed["name"])
        if record_type is None:
            raise UnknownSchemaError(
                f"schema with registry id {schema_id} defines record {parsed['name']!r}, which is "
                f"not a record type of this contract",
                record_type=_value_or_none(expected),
                schema_ref=schema_ref,
            )
        fingerprint = crc64_fingerprint(parsed)
        known = self._catalogue.by_fingerprint(fingerprint)
        if known is not None:
            return known
        current = self._catalogue.current(record_type)
        return SchemaVersion(
            record_type=record_type,
            version=-1,
            path=current.path.with_name(f"registry-{schema_id}.avsc"),
            schema_json=schema_json,
            parsed=parsed,
            fingerprint=fingerprint,
        )


def _write_body(
    buffer: io.BytesIO,
    version: SchemaVersion,
    record: Mapping[str, Any],
    always_validate: bool,
    schema_ref: str,
) -> None:
    if not isinstance(record, Mapping):
        raise RecordValidationError(
            f"{version.record_type.value} record must be a mapping of field names to values, "
            f"got {type(record).__name__}",
            problems=[f"record is a {type(record).__name__}"],
            fields=[],
            record_type=version.record_type.value,
            schema_ref=schema_ref,
        )
    if always_validate:
        _validate_record(version, record, schema_ref, writer_error=None)
    try:
        fastavro.schemaless_writer(buffer, version.parsed, record)
    except _WRITE_ERRORS as error:
        _validate_record(version, record, schema_ref, writer_error=error)


def _validate_record(
    version: SchemaVersion,
    record: Mapping[str, Any],
    schema_ref: str,
    writer_error: Exception | None,
) -> None:
    """Raise ``RecordValidationError`` naming every field of ``record`` that is invalid."""
    # Each top-level field is validated on its own, so every bad field is listed and not
    # only the first. The expanded schema inlines named types, so each field type is
    # complete on its own.
    expanded: dict[str, Any] = expand_schema(dict(version.schema_json))  # type: ignore[assignment]
    # A union reports one error per branch; they are merged into one problem per field path.
    expected_by_path: dict[str, tuple[Any, list[str]]] = {}
    for field in expanded["fields"]:
        name = field["name"]
        datum = record.get(name, field.get("default"))
        try:
            validate(datum, field["type"], field=name, raise_errors=True)
        except ValidationError as error:
            for item in error.errors:
                path = _short_field_name(str(item.field) or name)
                _, expected = expected_by_path.setdefault(path, (item.datum, []))
                expected.append(_type_name(item.schema))
    fields = list(expected_by_path)
    problems = [
        _describe_problem(path, datum, " or ".join(expected))
        for path, (datum, expected) in expected_by_path.items()
    ]
    if problems:
        raise RecordValidationError(
            f"invalid {version.record_type.value} record: {'; '.join(problems)}; fix the code "
            f"that builds the record to match {version.path.name}",
            problems=problems,
            fields=fields,
            record_type=version.record_type.value,
            schema_ref=schema_ref,
        ) from writer_error
    if writer_error is not None:
        raise RecordValidationError(
            f"invalid {version.record_type.value} record: the Avro writer rejected it with "
            f"{type(writer_error).__name__}: {writer_error}; fix the code that builds the record "
            f"to match {version.path.name}",
            problems=[str(writer_error)],
            fields=[],
            record_type=version.record_type.value,
            schema_ref=schema_ref,
        ) from writer_error


def _read_body(
    data: bytes,
    offset: int,
    writer: SchemaVersion,
    reader: SchemaVersion,
    schema_ref: str,
) -> dict[str, Any]:
    stream = io.BytesIO(data)
    stream.seek(offset)
    reader_schema = None if writer.fingerprint == reader.fingerprint else reader.parsed
    try:
        record = fastavro.schemaless_reader(stream, writer.parsed, reader_schema)
    except fastavro.read.SchemaResolutionError as error:
        raise IncompatibleSchemaError(
            f"writer schema {writer.label} cannot be resolved to the current "
            f"{reader.record_type.value} schema: {error}; the schema change was not compatible",
            record_type=writer.record_type.value,
            schema_ref=schema_ref,
        ) from error
    except _READ_ERRORS as error:
        raise MalformedPayloadError(
            f"corrupt Avro body for {writer.label}: {type(error).__name__}: {error}",
            record_type=writer.record_type.value,
            schema_ref=schema_ref,
        ) from error
    trailing = len(data) - stream.tell()
    if trailing:
        raise MalformedPayloadError(
            f"corrupt Avro body for {writer.label}: {trailing} bytes left after the record; "
            f"the message was not written with this schema",
            record_type=writer.record_type.value,
            schema_ref=schema_ref,
        )
    if not isinstance(record, dict):
        raise MalformedPayloadError(
            f"Avro body for {writer.label} decoded to {type(record).__name__}, expected a record",
            record_type=writer.record_type.value,
            schema_ref=schema_ref,
        )
    return record


def _check_expected(actual: RecordType, expected: RecordType | None, schema_ref: str) -> None:
    if expected is not None and actual != expected:
        raise UnexpectedRecordTypeError(
            f"message contains a {actual.value} record, expected {expected.value}; a producer "
            f"wrote to the wrong topic",
            record_type=actual.value,
            schema_ref=schema_ref,
        )


def _short_field_name(field: str) -> str:
    """Drop the namespace from a nested field path such as ``io.confluencestream.Job.status``."""
    return field.removeprefix(NAMESPACE + ".")


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return " or ".join(_type_name(branch) for branch in schema)
    if isinstance(schema, dict):
        if "symbols" in schema:
            return f"one of {schema['symbols']}"
        if schema.get("logicalType"):
            return f"{schema['logicalType']} ({schema['type']})"
        return _short_field_name(str(schema.get("name") or schema.get("type")))
    return str(schema)


def _describe_problem(field: str, datum: Any, expected: str) -> str:
    if datum is None:
        return f"field {field!r} is missing or None, expected {expected}"
    shown = repr(datum)
    if len(shown) > _MAX_DATUM_REPR:
        shown = shown[:_MAX_DATUM_REPR] + "..."
    return f"field {field!r} is {shown} ({type(datum).__name__}), expected {expected}"


def _value_or_none(record_type: RecordType | None) -> str | None:
    return record_type.value if record_type is not None else None
