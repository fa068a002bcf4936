"""Kafka record keys and job ids of the wire contract.

A key is a UTF-8 string ``{source_id}:{kind}:{entity parts...}``. All records of one
entity get the same key, so the partitioner sends them to one partition and consumers
see them in order. Consumers also use keys as MongoDB ``_id`` values.

Entity parts are percent-encoded (RFC 3986 unreserved characters and ``~`` stay as they
are), so a ``:`` inside a title or label can never be confused with the separator and
``parse_key`` returns the original parts.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

SEPARATOR = ":"
_SOURCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_KINDS = ("space", "content", "structure", "job", "relationship")
# Link targets that were not resolved to a content id are keyed by what the link named.
UNRESOLVED_TARGET = "unresolved"


def validate_source_id(source_id: str) -> str:
    """Return ``source_id`` if it is usable in keys and collection names, else raise."""
    if not _SOURCE_ID.match(source_id):
        raise ValueError(
            f"invalid source id {source_id!r}: use 1 to 64 letters, digits, '_' or '-', "
            f"starting with a letter or digit"
        )
    return source_id


def _part(value: str | int, what: str) -> str:
    text = str(value)
    if not text:
        raise ValueError(f"empty {what} in a record key; every key part must be non-empty")
    return quote(text, safe="~")


def _key(source_id: str, kind: str, *parts: str) -> str:
    return SEPARATOR.join((validate_source_id(source_id), kind, *parts))


def space_key(source_id: str, key: str) -> str:
    """Return the key of a Space record, built from the space key."""
    return _key(source_id, "space", _part(key, "space key"))


def content_key(source_id: str, content_id: str) -> str:
    """Return the key of a Content record."""
    return _key(source_id, "content", _part(content_id, "content id"))


def structure_key(source_id: str, space_key_value: str) -> str:
    """Return the key of the StructureListing chunks of one space."""
    return _key(source_id, "structure", _part(space_key_value, "space key"))


def job_key(source_id: str, job_id: str) -> str:
    """Return the key of a Job record; the job-history topic compacts on it."""
    return _key(source_id, "job", _part(job_id, "job id"))


def relationship_key(
    source_id: str,
    from_type: str,
    from_id: str,
    relation: str,
    to_type: str,
    to_id: str | None,
    *,
    to_space_key: str | None = None,
    to_title: str | None = None,
) -> str:
    """Return the key of a Relationship record, deterministic from (from, relation, to).

    An unresolved link (``to_id`` None) is keyed by the space key and title it named, so
    the same unresolved link always maps to the same key.
    """
    if to_id is not None:
        target = _part(to_id, "target id")
    elif to_title is not None:
        space_part = _part(to_space_key, "target space key") if to_space_key else ""
        target = f"{UNRESOLVED_TARGET}{SEPARATOR}{space_part}{SEPARATOR}{_part(to_title, 'title')}"
    else:
        raise ValueError(
            f"relationship {from_type}:{from_id} {relation} {to_type} has neither a target id "
            f"nor a target title; pass to_id, or to_title for an unresolved link"
        )
    return _key(
        source_id,
        "relationship",
        _part(from_type, "source entity type"),
        _part(from_id, "source entity id"),
        _part(relation, "relation type"),
        _part(to_type, "target entity type"),
        target,
    )


@dataclass(frozen=True)
class ParsedKey:
    """A record key split into its source id, kind and decoded entity parts."""

    source_id: str
    kind: str
    parts: tuple[str, ...]


def parse_key(key: str | bytes) -> ParsedKey:
    """Split a record key built by this module; raise ``ValueError`` on any other string."""
    text = key.decode("utf-8") if isinstance(key, bytes) else key
    pieces = text.split(SEPARATOR)
    if len(pieces) < 3 or pieces[1] not in _KINDS:
        raise ValueError(
            f"invalid record key {text!r}: expected '<source id>:<kind>:<id>' with kind one "
            f"of {list(_KINDS)}"
        )
    validate_source_id(pieces[0])
    return ParsedKey(pieces[0], pieces[1], tuple(unquote(piece) for piece in pieces[2:]))


def new_job_id(started_at: datetime | None = None) -> str:
    """Return a new job id that sorts lexically by start time.

    Format: ``YYYYMMDDTHHMMSSmmmZ-<8 hex digits>``, the UTC start time with milliseconds
    followed by random digits, so two jobs started in the same millisecond still differ.
    """
    if started_at is not None and started_at.tzinfo is None:
        raise ValueError(
            f"job start time {started_at.isoformat()} has no time zone; pass an aware datetime"
        )
    moment = (started_at or datetime.now(UTC)).astimezone(UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}Z"
    return f"{stamp}-{secrets.token_hex(4)}"
