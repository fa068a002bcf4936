"""Unit tests of the mapping from API JSON to Avro records, encoded with the real codec."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from producer.records import (
    RecordContext,
    RecordMappingError,
    content_record,
    space_record,
    structure_item,
)
from schemas.catalogue import RecordType
from schemas.codec import SingleObjectCodec

CONTEXT = RecordContext(
    "site_a", "20240501T120000000Z-0001abcd", "https://example.atlassian.net/wiki"
)
FETCHED = datetime(2024, 5, 1, 12, 0, 5, tzinfo=UTC)
ACCOUNT = "000000000000000000000001"
BODY = '<p>Hello <ac:link><ri:page ri:content-title="Other" /></ac:link> — ünïcode</p>'


def user(account_id: str = ACCOUNT) -> dict[str, Any]:
    return {"type": "known", "accountId": account_id, "displayName": "User One"}


def page_json() -> dict[str, Any]:
    """A page as /space/{key}/content/page returns it with the crawl's expansions."""
    return {
        "id": "98487",
        "type": "page",
        "status": "current",
        "title": "Overview",
        "space": {"id": 196612, "key": "DOCS", "name": "Docs", "type": "global"},
        "history": {
            "latest": True,
            "createdBy": user(),
            "createdDate": "2023-02-17T09:08:30.734Z",
        },
        "version": {
            "by": user("000000000000000000000002"),
            "when": "2023-03-01T10:00:00.000Z",
            "message": "",
            "number": 4,
            "minorEdit": True,
        },
        "ancestors": [
            {"id": "1", "type": "page", "title": "Root"},
            {"id": "7", "type": "page", "title": "Parent"},
        ],
        "body": {"storage": {"value": BODY, "representation": "storage"}},
        "metadata": {
            "labels": {
                "results": [
                    {"prefix": "global", "name": "howto", "id": "11"},
                    {"prefix": "my", "name": "todo", "id": "12"},
                ],
                "start": 0,
                "limit": 200,
                "size": 2,
            }
        },
        "restrictions": {
            "read": {
                "operation": "read",
                "restrictions": {
                    "user": {"results": [user()], "start": 0, "limit": 200, "size": 1},
                    "group": {"results": [{"type": "group", "name": "staff"}], "size": 1},
                },
            }
        },
        "extensions": {"position": 1421},
        "_links": {"webui": "/spaces/DOCS/pages/98487/Overview", "tinyui": "/x/FgAXPg"},
    }


def test_page_record_fields() -> None:
    record = content_record(page_json(), CONTEXT, FETCHED, space_key="DOCS")
    assert record["id"] == "98487"
    assert record["type"] == "page"
    assert record["status"] == "current"
    assert record["space_key"] == "DOCS"
    assert record["space_id"] == 196612
    assert record["version_number"] == 4
    assert record["version_created_at"] == datetime(2023, 3, 1, 10, tzinfo=UTC)
    assert record["version_author_account_id"] == "000000000000000000000002"
    assert record["version_message"] is None
    assert record["version_minor_edit"] is True
    assert record["created_at"] == datetime(2023, 2, 17, 9, 8, 30, 734000, tzinfo=UTC)
    assert record["created_by_account_id"] == ACCOUNT
    assert record["ancestor_ids"] == ["1", "7"]
    assert record["parent_id"] == "7"
    assert record["container_id"] is None
    assert record["position"] == 1421
    assert record["labels"] == ["global:howto", "my:todo"]
    assert record["read_restrictions"] == {"user_account_ids": [ACCOUNT], "group_names": ["staff"]}
    assert (
        record["web_url"] == "https://example.atlassian.net/wiki/spaces/DOCS/pages/98487/Overview"
    )
    assert record["fetched_at"] == FETCHED


def test_page_body_and_sha256() -> None:
    record = content_record(page_json(), CONTEXT, FETCHED, space_key="DOCS")
    assert record["body_storage"] == BODY
    assert record["body_storage_sha256"] == hashlib.sha256(BODY.encode("utf-8")).hexdigest()


def test_page_without_body_has_no_hash() -> None:
    item = page_json()
    del item["body"]
    record = content_record(item, CONTEXT, FETCHED, space_key="DOCS")
    assert record["body_storage"] is None
    assert record["body_storage_sha256"] is None


def test_empty_body_is_hashed() -> None:
    item = page_json()
    item["body"]["storage"]["value"] = ""
    record = content_record(item, CONTEXT, FETCHED, space_key="DOCS")
    assert record["body_storage"] == ""
    assert record["body_storage_sha256"] == hashlib.sha256(b"").hexdigest()


def test_records_encode_with_codec() -> None:
    codec = SingleObjectCodec()
    record = content_record(page_json(), CONTEXT, FETCHED, space_key="DOCS")
    decoded = codec.decode(codec.encode(RecordType.CONTENT, record), RecordType.CONTENT)
    assert decoded["body_storage"] == BODY
    assert decoded["labels"] == ["global:howto", "my:todo"]
    assert decoded["version_created_at"] == datetime(2023, 3, 1, 10, tzinfo=UTC)


def test_comment_reply_record() -> None:
    item = {
        "id": "500",
        "type": "comment",
        "status": "current",
        "title": "Re: Overview",
        "version": {"number": 1, "by": user(), "when": "2024-01-01T00:00:00.000Z"},
        "ancestors": [{"id": "499", "type": "comment"}],
        "container": {"id": "98487", "type": "page", "title": "Overview"},
        "body": {"storage": {"value": "<p>Thanks</p>", "representation": "storage"}},
        "extensions": {"location": "inline", "resolution": {"status": "open"}},
        "_links": {"webui": "/spaces/DOCS/pages/98487/Overview?focusedCommentId=500"},
    }
    record = content_record(item, CONTEXT, FETCHED, space_key="DOCS")
    assert record["type"] == "comment"
    assert record["container_id"] == "98487"
    assert record["container_type"] == "page"
    assert record["parent_id"] == "499"
    assert record["comment_location"] == "inline"
    assert record["attachment_media_type"] is None
    assert record["space_key"] == "DOCS"
    assert record["read_restrictions"] is None
    SingleObjectCodec().encode(RecordType.CONTENT, record)


def test_attachment_record() -> None:
    item = {
        "id": "98543",
        "type": "attachment",
        "status": "current",
        "title": "screenshot-1.jpg",
        "version": {"number": 2},
        "container": {"id": "98536", "type": "blogpost"},
        "extensions": {"mediaType": "image/jpeg", "fileSize": 4509285, "comment": ""},
        "_links": {
            "webui": "/spaces/ENG/pages/98536/X?preview=/98536/98543/screenshot-1.jpg",
            "download": "/download/attachments/98536/screenshot-1.jpg?version=2",
        },
    }
    record = content_record(item, CONTEXT, FETCHED, space_key="ENG")
    assert record["container_id"] == "98536"
    assert record["container_type"] == "blogpost"
    assert record["parent_id"] is None
    assert record["attachment_media_type"] == "image/jpeg"
    assert record["attachment_file_size"] == 4509285
    assert (
        record["attachment_download_path"]
        == "/download/attachments/98536/screenshot-1.jpg?version=2"
    )
    assert record["body_storage"] is None
    assert record["comment_location"] is None
    SingleObjectCodec().encode(RecordType.CONTENT, record)


def test_datacenter_user_key_used() -> None:
    item = page_json()
    item["version"]["by"] = {"type": "known", "userKey": "8a7f808a", "username": "jdoe"}
    record = content_record(item, CONTEXT, FETCHED, space_key="DOCS")
    assert record["version_author_account_id"] == "8a7f808a"


def test_unknown_type_and_status_mapped() -> None:
    item = page_json()
    item["type"] = "whiteboard"
    item["status"] = "locked"
    record = content_record(item, CONTEXT, FETCHED, space_key="DOCS")
    assert record["type"] == "unknown"
    assert record["status"] == "unknown"


def test_trashed_status_kept() -> None:
    item = page_json()
    item["status"] = "trashed"
    assert content_record(item, CONTEXT, FETCHED, space_key="DOCS")["status"] == "trashed"


def test_missing_version_rejected() -> None:
    item = page_json()
    del item["version"]
    with pytest.raises(RecordMappingError, match="98487"):
        content_record(item, CONTEXT, FETCHED, space_key="DOCS")


def test_missing_id_rejected() -> None:
    with pytest.raises(RecordMappingError, match="without an id"):
        content_record({"type": "page"}, CONTEXT, FETCHED, space_key="DOCS")


def test_space_record_fields() -> None:
    item = {
        "id": 196612,
        "key": "AIRBYTE",
        "name": "Airbyte",
        "type": "global",
        "status": "current",
        "description": {"plain": {"value": "Integration tests", "representation": "plain"}},
        "history": {"createdDate": "2022-01-02T03:04:05.000Z", "createdBy": user()},
        "_expandable": {"homepage": "/rest/api/content/98305"},
        "_links": {
            "webui": "/spaces/AIRBYTE",
            "self": "https://example.atlassian.net/wiki/rest/api/space/AIRBYTE",
        },
    }
    record = space_record(item, CONTEXT, FETCHED)
    assert record["id"] == 196612
    assert record["key"] == "AIRBYTE"
    assert record["description"] == "Integration tests"
    assert record["homepage_id"] == "98305"
    assert record["created_at"] == datetime(2022, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert record["created_by_account_id"] == ACCOUNT
    assert record["web_url"] == "https://example.atlassian.net/wiki/spaces/AIRBYTE"
    assert record["deleted"] is False
    SingleObjectCodec().encode(RecordType.SPACE, record)


def test_personal_archived_space() -> None:
    item = {
        "id": 5,
        "key": "~000000000000000000000001",
        "name": "User One",
        "type": "personal",
        "status": "archived",
        "homepage": {"id": "77", "type": "page"},
    }
    record = space_record(item, CONTEXT, FETCHED)
    assert record["type"] == "personal"
    assert record["status"] == "archived"
    assert record["homepage_id"] == "77"
    assert record["description"] is None


def test_space_without_id_rejected() -> None:
    with pytest.raises(RecordMappingError, match="space item"):
        space_record({"key": "X"}, CONTEXT, FETCHED)


def test_structure_item_page_parent() -> None:
    item = {
        "id": "10",
        "type": "page",
        "status": "current",
        "version": {"number": 3},
        "ancestors": [{"id": "1"}, {"id": "4"}],
    }
    assert structure_item(item) == {
        "id": "10",
        "type": "page",
        "parent_id": "4",
        "version_number": 3,
        "status": "current",
    }


def test_structure_item_root_and_comment() -> None:
    root = {
        "id": "1",
        "type": "page",
        "status": "current",
        "version": {"number": 1},
        "ancestors": [],
    }
    assert structure_item(root)["parent_id"] is None
    comment = {
        "id": "9",
        "type": "comment",
        "status": "current",
        "version": {"number": 1},
        "container": {"id": "1"},
    }
    assert structure_item(comment)["parent_id"] == "1"
