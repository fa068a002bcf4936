"""Record types and the catalogue of every Avro schema version kept in this package.

File naming rule: ``<record type>.avsc`` is the current schema of a record type, and
``<record type>.v<N>.avsc`` is an older version that records already on a topic may
have been written with. Decoders resolve every older version to the current one, so
a schema change must stay compatible in both directions: new fields get defaults and
removed fields must have had defaults.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).resolve().parent
NAMESPACE = "io.confluencestream"

_FILE_NAME = re.compile(r"^(?P<stem>[a-z_]+)(?:\.v(?P<version>[0-9]+))?\.avsc$")


class RecordType(enum.StrEnum):
    """Record types of the wire contract; the value is the schema file stem."""

    SPACE = "space"
    CONTENT = "content"
    STRUCTURE_LISTING = "structure_listing"
    RELATIONSHIP = "relationship"
    JOB = "job"

    @property
    def full_name(self) -> str:
        """Fully qualified Avro record name, for example ``io.confluencestream.Content``."""
        return _FULL_NAMES[self]


_FULL_NAMES = {
    RecordType.SPACE: f"{NAMESPACE}.Space",
    RecordType.CONTENT: f"{NAMESPACE}.Content",
    RecordType.STRUCTURE_LISTING: f"{NAMESPACE}.StructureListing",
    RecordType.RELATIONSHIP: f"{NAMESPACE}.Relationship",
    RecordType.JOB: f"{NAMESPACE}.Job",
}


def parse_schema_text(text: str, origin: str) -> tuple[dict[str, Any], Any]:
    """Parse Avro schema JSON into (JSON object, fastavro parsed schema).

    ``origin`` names where the text came from and appears in the error.
    """
    try:
        schema_json = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON in Avro schema {origin}: {error}") from error
    if not isinstance(schema_json, dict) or schema_json.get("type") != "record":
        raise ValueError(f"Avro schema {origin} is not a record schema; expected a JSON object")
    try:
        parsed = fastavro.parse_schema(schema_json)
    except (fastavro.schema.SchemaParseException, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"invalid Avro schema {origin}: {error}") from error
    return schema_json, parsed


def crc64_fingerprint(parsed_schema: Any) -> bytes:
    """Return the 8-byte CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form.

    The bytes are in the little-endian order that single-object encoding puts on the wire:
    fastavro's Rabin implementation returns the hex digits already in that order.
    """
    canonical = to_parsing_canonical_form(parsed_schema)
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


@dataclass(frozen=True)
class SchemaVersion:
    """One Avro schema file: its record type, version and parsed form."""

    record_type: RecordType
    version: int | None  # None for the current schema, -1 for one only the registry has
    path: Path
    schema_json: Mapping[str, Any]
    parsed: Any
    fingerprint: bytes

    @property
    def is_current(self) -> bool:
        return self.version is None

    @property
    def label(self) -> str:
        if self.version is None:
            suffix = "current"
        elif self.version < 0:
            suffix = "from the Schema Registry"
        else:
            suffix = f"v{self.version}"
        return f"{self.record_type.value} ({suffix}, {self.path.name})"


class SchemaCatalogue:
    """Every known schema version, indexed by CRC-64-AVRO fingerprint and by record type."""

    def __init__(self, versions: Iterable[SchemaVersion]) -> None:
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._current: dict[RecordType, SchemaVersion] = {}
        for version in versions:
            known = self._by_fingerprint.get(version.fingerprint)
            if known is not None and known.record_type != version.record_type:
                raise ValueError(
                    f"schema files {known.path} and {version.path} have the same fingerprint "
                    f"but different record types; remove one of them"
                )
            if known is None or version.is_current:
                self._by_fingerprint[version.fingerprint] = version
            if version.is_current:
                self._current[version.record_type] = version
        missing = [kind.value for kind in RecordType if kind not in self._current]
        if missing:
            raise ValueError(
                f"no current schema file for record types {missing}; "
                f"expected <record type>.avsc files in {SCHEMA_DIR}"
            )

    @classmethod
    def load(cls, extra_dirs: Iterable[Path] = ()) -> SchemaCatalogue:
        """Load the schemas of this package plus older versions from ``extra_dirs``.

        Current schemas (files without a version suffix) are taken from this package only.
        """
        versions = list(_load_dir(SCHEMA_DIR, allow_current=True))
        for directory in extra_dirs:
            versions.extend(_load_dir(Path(directory), allow_current=False))
        return cls(versions)

    def current(self, record_type: RecordType) -> SchemaVersion:
        return self._current[record_type]

    def by_fingerprint(self, fingerprint_bytes: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fingerprint_bytes)

    def record_type_for_name(self, full_name: str) -> RecordType | None:
        """Return the record type whose Avro full name is ``full_name``, if any."""
        for record_type in RecordType:
            if record_type.full_name == full_name:
                return record_type
        return None

    def versions(self) -> list[SchemaVersion]:
        """Return every known version, current ones included, sorted by file name."""
        return sorted(self._by_fingerprint.values(), key=lambda version: version.path.name)


def _load_dir(directory: Path, *, allow_current: bool) -> Iterable[SchemaVersion]:
    if not directory.is_dir():
        raise ValueError(f"schema directory {directory} does not exist")
    for path in sorted(directory.glob("*.avsc")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise ValueError(
                f"schema file name {path.name!r} in {directory} does not follow the naming rule "
                f"<record type>.avsc or <record type>.v<N>.avsc"
            )
        try:
            record_type = RecordType(match["stem"])
        except ValueError:
            raise ValueError(
                f"schema file {path} names unknown record type {match['stem']!r}; "
                f"known types: {[record_type.value for record_type in RecordType]}"
            ) from None
        version = int(match["version"]) if match["version"] is not None else None
        if version is None and not allow_current:
            raise ValueError(
                f"schema file {path} has no version suffix; files outside {SCHEMA_DIR} "
                f"must be older versions named <record type>.v<N>.avsc"
            )
        schema_json, parsed = parse_schema_text(path.read_text(encoding="utf-8"), str(path))
        if parsed["name"] != record_type.full_name:
            raise ValueError(
                f"schema file {path} defines record {parsed['name']!r}, "
                f"expected {record_type.full_name}"
            )
        yield SchemaVersion(
            record_type=record_type,
            version=version,
            path=path,
            schema_json=schema_json,
            parsed=parsed,
            fingerprint=crc64_fingerprint(parsed),
        )


@cache
def default_catalogue() -> SchemaCatalogue:
    """Return the catalogue of this package's schema files, loaded once per process."""
    return SchemaCatalogue.load()
