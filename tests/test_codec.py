"""Codec tests: round trips, single-object framing, Confluent framing, evolution, errors."""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fastavro
import pytest

from schemas.catalogue import RecordType, SchemaCatalogue, default_catalogue
from schemas.codec import ConfluentCodec, SingleObjectCodec
from schemas.errors import (
    CodecError,
    IncompatibleSchemaError,
    MalformedPayloadError,
    RecordValidationError,
    SchemaRegistryUnavailableError,
    UnexpectedRecordTypeError,
    UnknownSchemaError,
)
from schemas.topics import Topics

OLD_SCHEMAS = Path(__file__).parent / "schemas_old"
FETCHED_AT = datetime(2023, 6, 19, 8, 56, 1, 123000, tzinfo=UTC)
BODY = '<p>Say hello to <ac:link><ri:page ri:content-title="Getting started" /></ac:link></p>'


def sample_content(**changes: Any) -> dict[str, Any]:
    """Return a page record shaped like Confluence Cloud's page 98487 "Overview"."""
    record: dict[str, Any] = {
        "source_id": "cloud-example",
        "job_id": "20230619T085600000Z-0a1b2c3d",
        "id": "98487",
        "type": "page",
        "status": "current",
        "title": "Overview",
        "space_key": "~000000000000000000000001",
        "space_id": 98306,
        "version_number": 1,
        "version_created_at": datetime(2023, 2, 17, 9, 8, 30, 734000, tzinfo=UTC),
        "version_author_account_id": "000000000000000000000001",
        "version_message": None,
        "version_minor_edit": False,
        "created_at": datetime(2023, 2, 17, 9, 8, 30, 734000, tzinfo=UTC),
        "created_by_account_id": "000000000000000000000001",
        "ancestor_ids": [],
        "parent_id": None,
        "container_id": None,
        "container_type": None,
        "position": 1421,
        "labels": ["global:overview", "my:favourite"],
        "body_storage": BODY,
        "body_storage_sha256": hashlib.sha256(BODY.encode()).hexdigest(),
        "comment_location": None,
        "attachment_media_type": None,
        "attachment_file_size": None,
        "attachment_download_path": None,
        "read_restrictions": {"user_account_ids": ["000000000000000000000001"], "group_names": []},
        "web_url": "https://example.atlassian.net/wiki/spaces/~000000000000000000000001/overview",
        "fetched_at": FETCHED_AT,
    }
    record.update(changes)
    return record


def sample_attachment() -> dict[str, Any]:
    return sample_content(
        id="att1343497",
        type="attachment",
        title="diagram.png",
        ancestor_ids=["98487"],
        parent_id="98487",
        container_id="98487",
        container_type="page",
        position=None,
        labels=[],
        body_storage=None,
        body_storage_sha256=None,
        attachment_media_type="image/png",
        attachment_file_size=48213,
        attachment_download_path="/download/attachments/98487/diagram.png?version=1&api=v2",
        read_restrictions=None,
    )


def sample_comment() -> dict[str, Any]:
    return sample_content(
        id="1343500",
        type="comment",
        title="Re: Overview",
        container_id="98487",
        container_type="page",
        parent_id=None,
        comment_location="inline",
        labels=[],
        read_restrictions=None,
    )


def sample_space() -> dict[str, Any]:
    return {
        "source_id": "cloud-example",
        "job_id": "20230619T085600000Z-0a1b2c3d",
        "id": 196612,
        "key": "AIRBYTE",
        "name": "Airbyte",
        "type": "global",
        "status": "current",
        "description": "Integration test space",
        "homepage_id": "196733",
        "created_at": None,
        "created_by_account_id": None,
        "web_url": "https://example.atlassian.net/wiki/spaces/AIRBYTE",
        "fetched_at": FETCHED_AT,
        "deleted": False,
    }


def sample_structure_listing() -> dict[str, Any]:
    return {
        "source_id": "cloud-example",
        "job_id": "20230619T085600000Z-0a1b2c3d",
        "space_key": "AIRBYTE",
        "space_id": 196612,
        "listing_id": "AIRBYTE-20230619T085600000Z",
        "sequence": 0,
        "kind": "items",
        "items": [
            {
                "id": "196733",
                "type": "page",
                "parent_id": None,
                "version_number": 3,
                "status": "current",
            },
            {
                "id": "1343496",
                "type": "blogpost",
                "parent_id": None,
                "version_number": 1,
                "status": "current",
            },
        ],
        "content_types": ["page", "blogpost"],
        "item_count": None,
        "abort_reason": None,
        "started_at": FETCHED_AT,
        "fetched_at": FETCHED_AT,
    }


def sample_relationship() -> dict[str, Any]:
    return {
        "source_id": "cloud-example",
        "job_id": "20230619T085600000Z-0a1b2c3d",
        "from_type": "page",
        "from_id": "98487",
        "relation": "links_to",
        "to_type": "page",
        "to_id": None,
        "to_space_key": "AIRBYTE",
        "to_title": "Getting started",
        "resolved": False,
        "depth": None,
        "op": "upsert",
        "derived_from": {
            "topic": "confluence.content",
            "partition": 3,
            "offset": 1207,
            "content_id": "98487",
            "content_version": 1,
            "listing_id": None,
        },
        "derived_at": FETCHED_AT,
    }


def sample_job() -> dict[str, Any]:
    return {
        "job_id": "20230619T085600000Z-0a1b2c3d",
        "source_id": "cloud-example",
        "sequence": 2,
        "status": "partial",
        "mode": "incremental",
        "window_start": datetime(2023, 6, 18, 8, 50, tzinfo=UTC),
        "window_end": datetime(2023, 6, 19, 8, 56, tzinfo=UTC),
        "previous_job_id": "20230618T085500000Z-99aa88bb",
        "started_at": datetime(2023, 6, 19, 8, 56, tzinfo=UTC),
        "finished_at": datetime(2023, 6, 19, 9, 1, 2, 500000, tzinfo=UTC),
        "counts": {"space": 1, "page": 12, "blogpost": 1, "comment": 4},
        "api_calls": 37,
        "retries": 2,
        "rate_limit_waits": 1,
        "rate_limit_wait_seconds": 4.5,
        "errors": [
            {
                "unit": "content:1343496",
                "method": "GET",
                "url": "https://example.atlassian.net/wiki/rest/api/content/1343496/child/comment",
                "status": 504,
                "message": "gateway timeout after 3 retries",
                "excerpt": "<html><body>504 Gateway Time-out</body></html>",
                "fatal": False,
                "occurred_at": datetime(2023, 6, 19, 8, 59, tzinfo=UTC),
            }
        ],
        "producer_version": "0.1.0",
    }


SAMPLES = {
    RecordType.SPACE: sample_space,
    RecordType.CONTENT: sample_content,
    RecordType.STRUCTURE_LISTING: sample_structure_listing,
    RecordType.RELATIONSHIP: sample_relationship,
    RecordType.JOB: sample_job,
}


# CRC-64-AVRO as the Avro specification defines it, written out here so the test does not
# trust the implementation it checks.
_CRC64_EMPTY = 0xC15D213AA4D7A795
_CRC64_TABLE = []
for _index in range(256):
    _value = _index
    for _ in range(8):
        _value = (_value >> 1) ^ (_CRC64_EMPTY & -(_value & 1))
    _CRC64_TABLE.append(_value & 0xFFFFFFFFFFFFFFFF)


def reference_crc64(data: bytes) -> int:
    fingerprint = _CRC64_EMPTY
    for byte in data:
        fingerprint = (fingerprint >> 8) ^ _CRC64_TABLE[(fingerprint ^ byte) & 0xFF]
    return fingerprint


def as_signed_long(value: int) -> int:
    return int(struct.unpack("<q", struct.pack("<Q", value))[0])


# Round trips


@pytest.mark.parametrize("record_type", list(RecordType), ids=lambda kind: kind.value)
def test_single_object_round_trip(record_type: RecordType) -> None:
    codec = SingleObjectCodec()
    record = SAMPLES[record_type]()

    decoded = codec.decode(codec.encode(record_type, record), expected=record_type)

    assert decoded == record


@pytest.mark.parametrize(
    "factory", [sample_attachment, sample_comment], ids=["attachment", "comment"]
)
def test_content_variants_round_trip(factory: Any) -> None:
    codec = SingleObjectCodec()
    record = factory()

    decoded = codec.decode(codec.encode(RecordType.CONTENT, record), RecordType.CONTENT)

    assert decoded == record


def test_decoded_timestamps_are_utc_aware() -> None:
    codec = SingleObjectCodec()

    decoded = codec.decode(codec.encode(RecordType.JOB, sample_job()))

    assert decoded["started_at"].tzinfo is not None
    assert decoded["started_at"].utcoffset().total_seconds() == 0
    assert decoded["finished_at"] == datetime(2023, 6, 19, 9, 1, 2, 500000, tzinfo=UTC)


def test_optional_fields_take_defaults() -> None:
    codec = SingleObjectCodec()
    minimal = {
        "source_id": "s1",
        "job_id": "j1",
        "id": "7",
        "type": "blogpost",
        "status": "draft",
        "title": "Draft post",
        "space_key": "DOCS",
        "version_number": 1,
        "fetched_at": FETCHED_AT,
    }

    decoded = codec.decode(codec.encode(RecordType.CONTENT, minimal))

    assert decoded["labels"] == []
    assert decoded["ancestor_ids"] == []
    assert decoded["body_storage"] is None
    assert decoded["version_minor_edit"] is False


# Single-object framing


def test_reference_crc64_matches_spec_vectors() -> None:
    # Values from the Avro project's schema test data (share/test/data/schema-tests.txt),
    # which the other Avro implementations' tests assert too.
    assert as_signed_long(reference_crc64(b'"null"')) == 7195948357588979594
    assert as_signed_long(reference_crc64(b'"int"')) == 8247732601305521295
    assert as_signed_long(reference_crc64(b'"string"')) == -8142146995180207161


def test_canonical_form_of_record_matches_spec() -> None:
    schema = {"fields": [], "type": "record", "name": "foo"}
    canonical = fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(schema))

    assert canonical == '{"name":"foo","type":"record","fields":[]}'
    assert as_signed_long(reference_crc64(canonical.encode())) == -4824392279771201922


@pytest.mark.parametrize("record_type", list(RecordType), ids=lambda kind: kind.value)
def test_single_object_header_has_spec_fingerprint(record_type: RecordType) -> None:
    codec = SingleObjectCodec()
    schema_path = Path(default_catalogue().current(record_type).path)
    parsed = fastavro.parse_schema(json.loads(schema_path.read_text()))
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)

    encoded = codec.encode(record_type, SAMPLES[record_type]())

    assert encoded[:2] == b"\xc3\x01"
    expected = struct.pack("<Q", reference_crc64(canonical.encode()))
    assert encoded[2:10] == expected


def test_single_object_body_is_plain_avro() -> None:
    codec = SingleObjectCodec()
    record = sample_space()
    parsed = default_catalogue().current(RecordType.SPACE).parsed

    encoded = codec.encode(RecordType.SPACE, record)

    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, record)
    assert encoded[10:] == body.getvalue()


def test_bad_marker_is_malformed() -> None:
    codec = SingleObjectCodec()
    encoded = codec.encode(RecordType.SPACE, sample_space())

    with pytest.raises(MalformedPayloadError) as caught:
        codec.decode(b"\x00\x01" + encoded[2:], RecordType.SPACE)

    assert "00 01" in str(caught.value)
    assert caught.value.poison is True
    assert caught.value.record_type == "space"


@pytest.mark.parametrize("payload", [b"", b"\xc3", b"\xc3\x01\x00\x00"], ids=["empty", "1", "4"])
def test_short_payload_is_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedPayloadError):
        SingleObjectCodec().decode(payload)


def test_truncated_body_is_malformed() -> None:
    codec = SingleObjectCodec()
    encoded = codec.encode(RecordType.CONTENT, sample_content())

    with pytest.raises(MalformedPayloadError) as caught:
        codec.decode(encoded[:40])

    assert caught.value.schema_ref == encoded[2:10].hex()


def test_trailing_bytes_are_malformed() -> None:
    codec = SingleObjectCodec()
    encoded = codec.encode(RecordType.SPACE, sample_space())

    with pytest.raises(MalformedPayloadError) as caught:
        codec.decode(encoded + b"\x00\x00")

    assert "2 bytes left" in str(caught.value)


def test_unknown_fingerprint_is_reported() -> None:
    codec = SingleObjectCodec()
    encoded = codec.encode(RecordType.SPACE, sample_space())
    unknown = bytes.fromhex("0102030405060708")

    with pytest.raises(UnknownSchemaError) as caught:
        codec.decode(encoded[:2] + unknown + encoded[10:], RecordType.SPACE)

    assert caught.value.schema_ref == "0102030405060708"
    assert "0102030405060708" in str(caught.value)
    headers = dict(caught.value.dead_letter_headers())
    assert headers["codec.error.class"] == b"UnknownSchemaError"
    assert headers["codec.schema.ref"] == b"0102030405060708"
    assert headers["codec.record.type"] == b"space"


def test_wrong_record_type_is_reported() -> None:
    codec = SingleObjectCodec()
    encoded = codec.encode(RecordType.JOB, sample_job())

    with pytest.raises(UnexpectedRecordTypeError) as caught:
        codec.decode(encoded, expected=RecordType.CONTENT)

    assert "job record, expected content" in str(caught.value)


# Validation on encode


def test_missing_required_field_names_field() -> None:
    record = sample_content()
    del record["title"]

    with pytest.raises(RecordValidationError) as caught:
        SingleObjectCodec().encode(RecordType.CONTENT, record)

    assert caught.value.fields == ("title",)
    assert "'title'" in str(caught.value)
    assert "content.avsc" in str(caught.value)


def test_unknown_enum_symbol_is_invalid() -> None:
    with pytest.raises(RecordValidationError) as caught:
        SingleObjectCodec().encode(RecordType.CONTENT, sample_content(type="folder"))

    assert caught.value.fields == ("type",)
    assert "'folder'" in str(caught.value)


def test_strict_validation_rejects_bool_as_int() -> None:
    # The fastavro writer stores True as 1; the validating codec rejects it before writing.
    record = sample_content(version_number=True)

    with pytest.raises(RecordValidationError) as caught:
        SingleObjectCodec(validate=True).encode(RecordType.CONTENT, record)

    assert caught.value.fields == ("version_number",)


def test_several_invalid_fields_are_all_listed() -> None:
    record = sample_job()
    del record["producer_version"]
    record["mode"] = "sometimes"

    with pytest.raises(RecordValidationError) as caught:
        SingleObjectCodec().encode(RecordType.JOB, record)

    assert set(caught.value.fields) == {"producer_version", "mode"}


def test_non_mapping_record_is_invalid() -> None:
    with pytest.raises(RecordValidationError):
        SingleObjectCodec().encode(RecordType.SPACE, ["not", "a", "record"])  # type: ignore[arg-type]


# Schema evolution


def test_old_content_version_still_decodes() -> None:
    catalogue = SchemaCatalogue.load(extra_dirs=[OLD_SCHEMAS])
    old = next(version for version in catalogue.versions() if version.version == 1)
    assert old.record_type is RecordType.CONTENT
    current_record = sample_content()
    old_record = {
        field["name"]: current_record[field["name"]] for field in old.schema_json["fields"]
    }
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old.parsed, old_record)
    framed = b"\xc3\x01" + old.fingerprint + body.getvalue()

    decoded = SingleObjectCodec(catalogue).decode(framed, RecordType.CONTENT)

    assert decoded["title"] == "Overview"
    assert decoded["labels"] == ["global:overview", "my:favourite"]
    assert decoded["position"] is None
    assert decoded["read_restrictions"] is None
    assert decoded["version_minor_edit"] is False
    assert decoded == sample_content(
        position=None, read_restrictions=None, container_type=None, version_minor_edit=False
    )


def test_structure_listing_v1_still_decodes() -> None:
    catalogue = default_catalogue()
    old = next(
        version
        for version in catalogue.versions()
        if version.record_type is RecordType.STRUCTURE_LISTING and version.version == 1
    )
    current_record = sample_structure_listing()
    old_record = {
        field["name"]: current_record[field["name"]] for field in old.schema_json["fields"]
    }
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old.parsed, old_record)
    framed = b"\xc3\x01" + old.fingerprint + body.getvalue()

    decoded = SingleObjectCodec(catalogue).decode(framed, RecordType.STRUCTURE_LISTING)

    assert "content_types" not in old_record
    assert decoded["content_types"] == []
    assert decoded == dict(current_record, content_types=[])


def test_old_version_unknown_without_catalogue_entry() -> None:
    catalogue = SchemaCatalogue.load(extra_dirs=[OLD_SCHEMAS])
    old = next(version for version in catalogue.versions() if version.version == 1)

    with pytest.raises(UnknownSchemaError):
        SingleObjectCodec().decode(b"\xc3\x01" + old.fingerprint + b"\x00")


def test_incompatible_old_version_is_reported() -> None:
    catalogue = SchemaCatalogue.load(extra_dirs=[OLD_SCHEMAS / "incompatible"])
    broken = next(version for version in catalogue.versions() if version.version == 2)
    record = {field["name"]: None for field in broken.schema_json["fields"]}
    record.update(sample_content(version_number="1"))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, broken.parsed, record)

    with pytest.raises(IncompatibleSchemaError) as caught:
        SingleObjectCodec(catalogue).decode(b"\xc3\x01" + broken.fingerprint + body.getvalue())

    assert "content.v2.avsc" in str(caught.value)


@pytest.mark.parametrize("directory", [OLD_SCHEMAS], ids=["schemas_old"])
def test_every_kept_version_resolves_to_current(directory: Path) -> None:
    catalogue = SchemaCatalogue.load(extra_dirs=[directory])
    old_versions = [version for version in catalogue.versions() if not version.is_current]
    assert old_versions
    for version in old_versions:
        current = catalogue.current(version.record_type)
        sample = SAMPLES[version.record_type]()
        record = {
            field["name"]: sample.get(field["name"]) for field in version.schema_json["fields"]
        }
        body = io.BytesIO()
        fastavro.schemaless_writer(body, version.parsed, record)
        body.seek(0)
        decoded = fastavro.schemaless_reader(body, version.parsed, current.parsed)
        for name, value in record.items():
            assert decoded[name] == value, f"{version.label}: {name}"


# Schema files


def test_catalogue_rejects_current_schema_outside_package(tmp_path: Path) -> None:
    (tmp_path / "content.avsc").write_text(
        (Path(default_catalogue().current(RecordType.CONTENT).path)).read_text()
    )

    with pytest.raises(ValueError, match="no version suffix"):
        SchemaCatalogue.load(extra_dirs=[tmp_path])


def test_catalogue_rejects_bad_file_name(tmp_path: Path) -> None:
    (tmp_path / "Content-old.avsc").write_text("{}")

    with pytest.raises(ValueError, match="naming rule"):
        SchemaCatalogue.load(extra_dirs=[tmp_path])


def _named_types(schema: Any, found: dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema, dict):
        if schema.get("type") in ("enum", "record", "fixed") and "name" in schema:
            found.setdefault(schema["name"], []).append(schema)
        for value in schema.values():
            _named_types(value, found)
    elif isinstance(schema, list):
        for item in schema:
            _named_types(item, found)
    return found


def test_shared_enums_are_identical_across_schemas() -> None:
    found: dict[str, Any] = {}
    for record_type in RecordType:
        _named_types(dict(default_catalogue().current(record_type).schema_json), found)

    assert len(found["ContentType"]) == 2
    assert len(found["ContentStatus"]) == 2
    for name in ("ContentType", "ContentStatus"):
        first, second = found[name]
        assert first == second, name


def _all_fields(schema: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(schema, dict):
        if schema.get("type") == "record":
            for field in schema["fields"]:
                yield f"{schema['name']}.{field['name']}", field
        for value in schema.values():
            yield from _all_fields(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _all_fields(item)


@pytest.mark.parametrize("record_type", list(RecordType), ids=lambda kind: kind.value)
def test_schema_fields_documented_and_evolvable(record_type: RecordType) -> None:
    schema = dict(default_catalogue().current(record_type).schema_json)
    assert schema.get("doc")
    for name, field in _all_fields(schema):
        assert field.get("doc"), f"{name} has no doc"
        field_type = field["type"]
        if isinstance(field_type, list) and field_type[0] == "null":
            assert "default" in field, f"nullable {name} has no default"
            assert field["default"] is None, f"nullable {name} default is not null"


def test_millisecond_timestamps_survive() -> None:
    # Confluence timestamps carry milliseconds; timestamp-millis keeps them exactly.
    when = datetime.fromisoformat("2023-02-17T09:08:30.734+00:00")
    codec = SingleObjectCodec()

    decoded = codec.decode(codec.encode(RecordType.CONTENT, sample_content(created_at=when)))

    assert decoded["created_at"] == when


# Confluent wire format with an in-process Schema Registry


class FakeRegistry(ThreadingHTTPServer):
    """The two registry endpoints the codec uses, plus subject lookup, in memory."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RegistryHandler)
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, dict[str, int]] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class RegistryHandler(BaseHTTPRequestHandler):
    server: FakeRegistry

    def log_message(self, format: str, *args: Any) -> None:
        del format, args

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length", "0"))
        schema_str = json.loads(self.rfile.read(length))["schema"]
        registry = self.server
        with registry.lock:
            registry.requests.append(f"POST {path}")
            register = re.fullmatch(r"/subjects/([^/]+)/versions", path)
            lookup = re.fullmatch(r"/subjects/([^/]+)", path)
            match = register or lookup
            if match is None:
                self._send(404, {"error_code": 404, "message": f"no route {path}"})
                return
            subject = match.group(1)
            versions = registry.subjects.setdefault(subject, {})
            if schema_str not in versions:
                if lookup is not None:
                    self._send(404, {"error_code": 40403, "message": "Schema not found"})
                    return
                schema_id = len(registry.schemas) + 100
                registry.schemas[schema_id] = schema_str
                versions[schema_str] = schema_id
            schema_id = versions[schema_str]
            self._send(
                200,
                {"subject": subject, "id": schema_id, "version": 1, "schema": schema_str},
            )

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        registry = self.server
        with registry.lock:
            registry.requests.append(f"GET {path}")
            match = re.fullmatch(r"/schemas/ids/([0-9]+)", path)
            schema_str = registry.schemas.get(int(match.group(1))) if match else None
        if schema_str is None:
            self._send(404, {"error_code": 40403, "message": "Schema not found"})
            return
        self._send(200, {"schema": schema_str})


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def registry_client(url: str) -> Any:
    # Imported here so a missing schemaregistry extra fails only the registry tests.
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient({"url": url, "max.retries": 0})


def test_confluent_round_trip(registry: FakeRegistry) -> None:
    topics = Topics(prefix="confluence")
    producer_codec = ConfluentCodec(registry_client(registry.url), topics.value_subject)
    record = sample_content()

    encoded = producer_codec.encode(RecordType.CONTENT, record)

    assert encoded[:1] == b"\x00"
    (schema_id,) = struct.unpack(">I", encoded[1:5])
    assert registry.schemas[schema_id]
    assert "POST /subjects/confluence.content-value/versions" in registry.requests
    consumer_codec = ConfluentCodec(
        registry_client(registry.url), topics.value_subject, auto_register=False
    )
    assert consumer_codec.decode(encoded, RecordType.CONTENT) == record
    assert f"GET /schemas/ids/{schema_id}" in registry.requests


def test_confluent_registers_once(registry: FakeRegistry) -> None:
    codec = ConfluentCodec(registry_client(registry.url), Topics().value_subject)

    first = codec.encode(RecordType.SPACE, sample_space())
    second = codec.encode(RecordType.SPACE, sample_space())

    assert first == second
    assert registry.requests.count("POST /subjects/confluence.spaces-value/versions") == 1


def test_confluent_lookup_without_register(registry: FakeRegistry) -> None:
    topics = Topics()
    ConfluentCodec(registry_client(registry.url), topics.value_subject).encode(
        RecordType.JOB, sample_job()
    )
    reader = ConfluentCodec(
        registry_client(registry.url), topics.value_subject, auto_register=False
    )

    encoded = reader.encode(RecordType.JOB, sample_job())

    assert reader.decode(encoded) == sample_job()
    assert "POST /subjects/confluence.job-history-value" in registry.requests


def test_confluent_unregistered_subject_fails(registry: FakeRegistry) -> None:
    codec = ConfluentCodec(
        registry_client(registry.url), Topics().value_subject, auto_register=False
    )

    with pytest.raises(SchemaRegistryUnavailableError) as caught:
        codec.encode(RecordType.SPACE, sample_space())

    assert "confluence.spaces-value" in str(caught.value)


def test_confluent_unknown_id_is_reported(registry: FakeRegistry) -> None:
    codec = ConfluentCodec(registry_client(registry.url), Topics().value_subject)

    with pytest.raises(UnknownSchemaError) as caught:
        codec.decode(b"\x00" + struct.pack(">I", 4242) + b"\x00")

    assert caught.value.schema_ref == "registry id 4242"
    assert caught.value.poison is True


def test_confluent_bad_magic_is_malformed(registry: FakeRegistry) -> None:
    codec = ConfluentCodec(registry_client(registry.url), Topics().value_subject)
    soe = SingleObjectCodec().encode(RecordType.SPACE, sample_space())

    with pytest.raises(MalformedPayloadError) as caught:
        codec.decode(soe)

    assert "magic byte 00" in str(caught.value)


def test_confluent_registry_down_is_not_poison() -> None:
    server = FakeRegistry()
    url = server.url
    server.server_close()
    codec = ConfluentCodec(registry_client(url), Topics().value_subject)

    with pytest.raises(SchemaRegistryUnavailableError) as caught:
        codec.decode(b"\x00" + struct.pack(">I", 7) + b"\x00")

    assert caught.value.poison is False
    assert isinstance(caught.value, CodecError)
