"""Record keys and job ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.keys import (
    content_key,
    job_key,
    new_job_id,
    parse_key,
    relationship_key,
    space_key,
    structure_key,
    validate_source_id,
)


def test_entity_keys_carry_source_and_id() -> None:
    assert content_key("cloud-example", "98487") == "cloud-example:content:98487"
    assert space_key("cloud-example", "AIRBYTE") == "cloud-example:space:AIRBYTE"
    assert structure_key("cloud-example", "AIRBYTE") == "cloud-example:structure:AIRBYTE"
    assert job_key("cloud-example", "20230619T085600000Z-0a1b2c3d") == (
        "cloud-example:job:20230619T085600000Z-0a1b2c3d"
    )


def test_personal_space_key_kept_readable() -> None:
    assert space_key("s1", "~000000000000000000000001") == "s1:space:~000000000000000000000001"


def test_relationship_key_deterministic() -> None:
    first = relationship_key("s1", "page", "98487", "parent_of", "page", "98500")
    second = relationship_key("s1", "page", "98487", "parent_of", "page", "98500")
    other = relationship_key("s1", "page", "98487", "ancestor_of", "page", "98500")

    assert first == second
    assert first == "s1:relationship:page:98487:parent_of:page:98500"
    assert first != other


def test_unresolved_link_keyed_by_title() -> None:
    key = relationship_key(
        "s1", "page", "98487", "links_to", "page", None, to_space_key="DOCS", to_title="A: B/C"
    )

    assert key == "s1:relationship:page:98487:links_to:page:unresolved:DOCS:A%3A%20B%2FC"
    assert parse_key(key).parts[-1] == "A: B/C"


def test_unresolved_link_without_space() -> None:
    key = relationship_key("s1", "page", "1", "links_to", "page", None, to_title="Home")

    assert key == "s1:relationship:page:1:links_to:page:unresolved::Home"


def test_relationship_needs_target() -> None:
    with pytest.raises(ValueError, match="neither a target id nor a target title"):
        relationship_key("s1", "page", "1", "links_to", "page", None)


def test_parse_key_round_trip() -> None:
    parsed = parse_key(content_key("s1", "12:34").encode())

    assert parsed.source_id == "s1"
    assert parsed.kind == "content"
    assert parsed.parts == ("12:34",)


@pytest.mark.parametrize("key", ["s1", "s1:page:1", "bad id:content:1", "s1:content"])
def test_parse_key_rejects_foreign_strings(key: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        parse_key(key)


@pytest.mark.parametrize("source_id", ["", "-lead", "has space", "colon:in", "x" * 65])
def test_invalid_source_id_rejected(source_id: str) -> None:
    with pytest.raises(ValueError, match="invalid source id"):
        validate_source_id(source_id)


def test_empty_entity_id_rejected() -> None:
    with pytest.raises(ValueError, match="empty content id"):
        content_key("s1", "")


def test_job_ids_sort_by_start_time() -> None:
    start = datetime(2026, 12, 4, 23, 59, 59, 999000, tzinfo=UTC)
    ids = [new_job_id(start + timedelta(milliseconds=step)) for step in (0, 1, 1000, 86_400_000)]

    assert ids == sorted(ids)
    assert ids[0].startswith("20261204T235959999Z-")
    assert len(ids[0]) == len("20261204T235959999Z-") + 8


def test_job_id_uses_utc() -> None:
    local = datetime(2026, 12, 5, 1, 0, tzinfo=timezone(timedelta(hours=2)))

    assert new_job_id(local).startswith("20261204T230000000Z-")


def test_same_millisecond_job_ids_differ() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)

    assert new_job_id(start) != new_job_id(start)


def test_naive_start_time_rejected() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        new_job_id(datetime(2026, 1, 1))
