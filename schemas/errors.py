"""Exceptions of the codec, one class per kind of bad message.

``CodecError`` is the root. A consumer catches it, and when ``poison`` is true
it sends the raw message to the dead-letter topic with ``dead_letter_headers()``
added, then moves past it. ``poison`` is false only for a Schema Registry that
could not be reached: the same message may decode once the registry is back, so
that error is retried, never dead-lettered.

    CodecError
    +-- MalformedPayloadError     bytes that are not a framed Avro record
    +-- UnknownSchemaError        a schema fingerprint or registry id nobody knows
    +-- IncompatibleSchemaError   a writer schema the current reader cannot resolve
    +-- UnexpectedRecordTypeError a valid record of another type than the topic's
    +-- RecordValidationError     a record that does not match its schema
    +-- SchemaRegistryUnavailableError  registry request failed (not poison)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

# Header values longer than this are cut, so one huge message cannot bloat the dead-letter record.
_MAX_HEADER_VALUE_CHARS = 2000


class CodecError(Exception):
    """Root of the codec errors; carries what a dead-letter record needs."""

    poison: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        record_type: str | None = None,
        schema_ref: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.record_type = record_type
        self.schema_ref = schema_ref

    def dead_letter_headers(self) -> list[tuple[str, bytes]]:
        """Return Kafka headers that describe this error, for the dead-letter copy."""
        headers = [
            ("codec.error.class", type(self).__name__.encode()),
            ("codec.error.message", self.message[:_MAX_HEADER_VALUE_CHARS].encode()),
        ]
        if self.record_type is not None:
            headers.append(("codec.record.type", self.record_type.encode()))
        if self.schema_ref is not None:
            headers.append(("codec.schema.ref", self.schema_ref.encode()))
        return headers


class MalformedPayloadError(CodecError):
    """The bytes are not a framed Avro record: wrong marker, too short, or a corrupt body."""


class UnknownSchemaError(CodecError):
    """The writer schema named by the frame is not among the known schema versions."""


class IncompatibleSchemaError(CodecError):
    """The writer schema is known but cannot be resolved to the current reader schema."""


class UnexpectedRecordTypeError(CodecError):
    """The record decoded fine but is of another record type than the caller expected."""


class RecordValidationError(CodecError):
    """A record does not match its schema; ``problems`` lists each mismatch."""

    def __init__(
        self,
        message: str,
        *,
        problems: Sequence[str],
        fields: Sequence[str],
        record_type: str | None = None,
        schema_ref: str | None = None,
    ) -> None:
        super().__init__(message, record_type=record_type, schema_ref=schema_ref)
        self.problems = tuple(problems)
        self.fields = tuple(fields)


class SchemaRegistryUnavailableError(CodecError):
    """A Schema Registry request failed for a reason other than an unknown schema id."""

    poison = False
