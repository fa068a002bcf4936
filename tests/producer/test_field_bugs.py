"""Faults that other Confluence connectors got wrong, each reproduced against the emulator.

Every test runs whole crawl jobs against the emulator and the real broker and checks the
behaviour a correct crawler has for that fault.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from connections.settings import Settings
from tests.producer.conftest import EmulatorSite, StartEmulator
from tests.producer.test_crawl import (
    assert_full_crawl,
    expected_content,
    expected_spaces,
    read_published,
    run_job,
    trim_labels,
)
from tests.producer.test_publisher import kafka_settings

__all__ = ["kafka_settings"]

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def requested_routes(site: EmulatorSite) -> set[str]:
    """Route templates the emulator served, such as ``/content/search``."""
    return set(site.control("GET", "/counters")["requests"])


def test_field_bug_cql_start_ignored(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    # Cloud search ignores start and serves short pages mid-walk; a crawler paging by
    # start gets the first page again and again.
    site = start_emulator(search_short_page_rate=0.5)
    source = site.source("cloud", page_size=10)
    result = run_job(kafka_settings, source, since=LONG_AGO)
    assert result.status == "succeeded", result.record["errors"]
    assert result.record["mode"] == "incremental"
    published = read_published(kafka_settings, result.job_id)
    ids = [record["id"] for record in published.content]
    assert len(ids) == len(set(ids))
    assert published.content_versions() == expected_content(site, expected_spaces(site))


def test_field_bug_fifty_page_cap(start_emulator: StartEmulator, kafka_settings: Settings) -> None:
    site = start_emulator(pages=240, spaces=2)
    source = site.source("cloud", page_size=50)
    result = run_job(kafka_settings, source)
    published = assert_full_crawl(kafka_settings, site, result)
    pages_per_space = Counter(
        record["space_key"] for record in published.content if record["type"] == "page"
    )
    assert max(pages_per_space.values()) > 50


def test_field_bug_truncated_listing_no_deletions(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    # A cut-off response in the middle of a listing must never end the listing as complete.
    site = start_emulator(faults=("/space/ENG/content/page:truncate:1.0",))
    source = site.source("cloud", page_size=25, max_retries=1)
    result = run_job(kafka_settings, source)
    assert result.status == "partial"
    listings = read_published(kafka_settings, result.job_id).listings()
    assert listings["ENG"][-1]["kind"] == "aborted"
    assert listings["ENG"][-1]["abort_reason"]
    assert all(chunk["kind"] != "complete" for chunk in listings["ENG"])


def test_field_bug_retry_after_honoured(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator(faults=("/content/search:429:next=1:1", "/space/*:429:next=1:1"))
    source = site.source("cloud", page_size=25, concurrency=1)
    result = run_job(kafka_settings, source)
    assert_full_crawl(kafka_settings, site, result)
    assert result.record["rate_limit_waits"] >= 2
    # Each 429 asked for a 1-second wait.
    assert result.record["rate_limit_wait_seconds"] >= 2.0


def test_field_bug_datacenter_search_without_next(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator(dc_quirks=True, dc_limit_cap=20, pages=200, spaces=2)
    source = site.source("datacenter", page_size=20)
    result = run_job(kafka_settings, source, since=LONG_AGO)
    assert result.status == "succeeded", result.record["errors"]
    published = read_published(kafka_settings, result.job_id)
    assert published.content_versions() == expected_content(site, expected_spaces(site))
    assert Counter(record["space_key"] for record in published.content).most_common(1)[0][1] > 50


def test_field_bug_search_body_not_truncated(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    # /search hits carry shortened bodies; content bodies must come from content listings.
    site = start_emulator()
    site.control("POST", "/search", {"body_limit": 20})
    source = site.source("cloud", page_size=25)
    result = run_job(kafka_settings, source, since=LONG_AGO)
    assert result.status == "succeeded", result.record["errors"]
    model = site.server.site
    for record in read_published(kafka_settings, result.job_id).content:
        item = model.content(record["id"])
        assert item is not None
        if record["type"] in ("page", "blogpost", "comment"):
            assert record["body_storage"] == item.body_storage


def test_field_bug_permission_expansion_500(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    # Data Center returns 500 for permission expansions for non-administrators.
    site = start_emulator(faults=("*:500perm:1.0",))
    site.server.gate.admin_account_ids.clear()
    source = site.source("datacenter", page_size=25)
    result = run_job(kafka_settings, source)
    assert_full_crawl(kafka_settings, site, result)


def test_field_bug_watermark_is_job_start(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator()
    source = site.source("cloud", page_size=50, overlap_minutes=10)
    first = run_job(kafka_settings, source)
    assert first.status == "succeeded", first.record["errors"]
    assert first.record["window_end"] == first.record["started_at"]
    second = run_job(kafka_settings, source)
    assert second.record["window_start"] == first.record["started_at"] - timedelta(minutes=10)
    assert second.record["window_end"] == second.record["started_at"]


def test_field_bug_datacenter_limit_cap(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    # Data Center serves at most 20 rows but advances start in next as if 50 were served.
    site = start_emulator(dc_quirks=True, dc_limit_cap=20, pages=200, spaces=2)
    source = site.source("datacenter", page_size=50)
    result = run_job(kafka_settings, source)
    assert_full_crawl(kafka_settings, site, result)


def test_field_bug_archived_pages_skipped(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator()
    source = site.source("cloud", page_size=50)
    result = run_job(kafka_settings, source)
    published = assert_full_crawl(kafka_settings, site, result)
    model = site.server.site
    hidden = {item.id for item in model.contents() if str(item.status) != "current"}
    assert hidden
    assert not hidden & {record["id"] for record in published.content}
    assert {record["status"] for record in published.content} == {"current"}


def test_field_bug_unknown_space_visible(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator()
    source = site.source("cloud", spaces={"include": ["ENGG"]})
    result = run_job(kafka_settings, source)
    assert result.status == "failed"
    assert "'ENGG'" in result.record["errors"][0]["message"]
    assert result.record["counts"].get("page", 0) == 0


def test_field_bug_expand_comma_separated(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator()
    source = site.source("cloud", page_size=25)
    result = run_job(kafka_settings, source)
    published = assert_full_crawl(kafka_settings, site, result)
    model = site.server.site
    with_body = [
        record
        for record in published.content
        if record["type"] == "page" and (item := model.content(record["id"])) and item.body_storage
    ]
    assert with_body
    assert all(record["body_storage"] for record in with_body)


def test_field_bug_forbidden_unit_skipped(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator(faults=("*:403space:1.0:ENG",))
    source = site.source("cloud", page_size=25)
    result = run_job(kafka_settings, source)
    assert result.status == "partial"
    assert {error["unit"].split(":")[1] for error in result.record["errors"]} == {"ENG"}
    # A 403 is not retried: the account lacks permission, waiting does not help.
    assert result.record["retries"] == 0
    assert result.record["counts"].get("page", 0) > 0


def test_field_bug_cursor_paging_no_start(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator(v1_gone=True, search_short_page_rate=0.4)
    trim_labels(site)
    keys = sorted(expected_spaces(site))
    source = site.source("cloud-oauth", page_size=7, spaces={"include": keys})
    result = run_job(kafka_settings, source)
    assert_full_crawl(kafka_settings, site, result)


def test_field_bug_limit_is_hint(start_emulator: StartEmulator, kafka_settings: Settings) -> None:
    site = start_emulator(pages=300, spaces=1)
    source = site.source("cloud", page_size=1000)
    result = run_job(kafka_settings, source)
    assert_full_crawl(kafka_settings, site, result)


def test_field_bug_deleted_pages_reconciled(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator()
    source = site.source("cloud", page_size=50)
    assert run_job(kafka_settings, source).status == "succeeded"
    page = next(
        item
        for item in site.server.site.space_contents("ENG")
        if str(item.type) == "page" and str(item.status) == "current" and item.parent_id
    )
    site.control("POST", f"/content/{page.id}/trash")
    site.control("POST", f"/content/{page.id}/purge")
    second = run_job(kafka_settings, source)
    assert second.status == "succeeded", second.record["errors"]
    chunks = read_published(kafka_settings, second.job_id).listings()["ENG"]
    assert chunks[-1]["kind"] == "complete"
    listed = {item["id"] for chunk in chunks for item in chunk["items"]}
    assert page.id not in listed
    assert chunks[-1]["item_count"] == len(listed)


def test_field_bug_504_halves_page_size(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator(faults=("*:504limit:1.0:12",))
    source = site.source("cloud", page_size=50)
    result = run_job(kafka_settings, source)
    assert_full_crawl(kafka_settings, site, result)


def test_field_bug_no_plugin_endpoints(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    # The crawl needs only core REST v1 routes, so a missing plugin cannot stop it, and it
    # never fetches item by item what a list call returns.
    site = start_emulator()
    source = site.source("datacenter", page_size=50)
    result = run_job(kafka_settings, source)
    assert_full_crawl(kafka_settings, site, result)
    routes = requested_routes(site)
    # Labels past the first 200 of an item come from its label list, the one per-item call.
    assert routes <= {
        "GET /space",
        "GET /space/{key}/content/{type}",
        "GET /content/search",
        "GET /content/{id}/label",
    }
    assert "GET /content/{id}" not in routes


def test_field_bug_one_space_error_isolated(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator(faults=("/space/OPE/*:500:1.0",))
    source = site.source("datacenter", page_size=25, max_retries=1)
    result = run_job(kafka_settings, source)
    assert result.status == "partial"
    listings = read_published(kafka_settings, result.job_id).listings()
    assert listings["OPE"][-1]["kind"] == "aborted"
    others = [key for key in listings if key != "OPE"]
    assert others
    assert all(listings[key][-1]["kind"] == "complete" for key in others)


def test_field_bug_attachments_past_first_page(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    # The generated site has a page with 230 attachments; libraries that read only the
    # first page of child/attachment lose most of them.
    site = start_emulator(pages=200)
    source = site.source("cloud", page_size=50)
    result = run_job(kafka_settings, source)
    published = assert_full_crawl(kafka_settings, site, result)
    per_container = Counter(
        record["container_id"] for record in published.content if record["type"] == "attachment"
    )
    assert max(per_container.values()) >= 230


def test_field_bug_labels_past_first_page(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    # The metadata.labels expansion returns at most 200 labels; a page has 207.
    site = start_emulator(pages=200)
    source = site.source("cloud", page_size=50)
    result = run_job(kafka_settings, source)
    published = assert_full_crawl(kafka_settings, site, result)
    model = site.server.site
    crowded = max(model.contents(), key=lambda item: len(item.labels))
    assert len(crowded.labels) > 200
    (record,) = [record for record in published.content if record["id"] == crowded.id]
    assert len(record["labels"]) == len(crowded.labels)
    expected = {f"{label.prefix}:{label.name}" for label in crowded.labels}
    assert set(record["labels"]) == expected
