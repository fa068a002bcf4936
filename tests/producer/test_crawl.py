"""Crawl jobs against the emulator over HTTP and the real Kafka broker.

Each test gets its own emulator and its own topic prefix, runs ``CrawlJob`` with the
real client, publisher and job-history reader, and reads the published records back
from the topics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from connections.kafka import common_config, producer_config
from connections.settings import Settings
from producer.client import ConfluenceClient
from producer.config import SourceConfig
from producer.crawl import CrawlJob, CrawlOptions, JobResult
from producer.history import read_job_history
from producer.progress import Progress
from producer.publisher import KafkaPublisher
from schemas.catalogue import RecordType
from schemas.codec import SingleObjectCodec
from schemas.topics import Topics
from tests.producer.conftest import EmulatorSite, StartEmulator
from tests.producer.test_publisher import ReadRecord, kafka_settings, read_topic

__all__ = ["kafka_settings"]

CONTENT_KINDS = ("page", "blogpost", "comment", "attachment")


def run_job(
    settings: Settings,
    source: SourceConfig,
    *,
    full: bool = False,
    since: datetime | None = None,
    progress: Progress | None = None,
) -> JobResult:
    """Run one crawl job of ``source`` that publishes to the topics of ``settings``."""
    topics = Topics(prefix=settings.kafka.topic_prefix)
    codec = SingleObjectCodec()
    publisher = KafkaPublisher(producer_config(settings), topics, codec)
    consumer_settings = common_config(settings.kafka, "crawl-test-history")

    def load_history() -> list[dict[str, Any]]:
        return list(read_job_history(consumer_settings, topics.job_history, codec).values())

    with ConfluenceClient(source) as client:
        job = CrawlJob(
            source,
            client,
            publisher,
            load_history,
            options=CrawlOptions(full=full, since=since, flush_timeout=60),
            progress=progress,
        )
        return job.run()


@dataclass
class Published:
    """Records one job published, read back from the topics."""

    spaces: list[dict[str, Any]]
    content: list[dict[str, Any]]
    structure: list[dict[str, Any]]
    jobs: list[dict[str, Any]]

    def content_versions(self) -> dict[str, int]:
        return {record["id"]: record["version_number"] for record in self.content}

    def listings(self) -> dict[str, list[dict[str, Any]]]:
        """Structure chunks per space key, in sequence order."""
        by_space: dict[str, list[dict[str, Any]]] = {}
        for chunk in self.structure:
            by_space.setdefault(chunk["space_key"], []).append(chunk)
        for chunks in by_space.values():
            chunks.sort(key=lambda chunk: chunk["sequence"])
        return by_space


def read_published(settings: Settings, job_id: str) -> Published:
    topics = Topics(prefix=settings.kafka.topic_prefix)

    def of_job(records: Iterable[ReadRecord]) -> list[dict[str, Any]]:
        return [record.value for record in records if record.value["job_id"] == job_id]

    return Published(
        spaces=of_job(read_topic(settings, topics.spaces, RecordType.SPACE)),
        content=of_job(read_topic(settings, topics.content, RecordType.CONTENT)),
        structure=of_job(read_topic(settings, topics.structure, RecordType.STRUCTURE_LISTING)),
        jobs=of_job(read_topic(settings, topics.job_history, RecordType.JOB)),
    )


def expected_spaces(site: EmulatorSite) -> set[str]:
    """Keys of the current spaces, which the default selection covers."""
    return {space.key for space in site.server.site.spaces.values() if space.status == "current"}


def expected_content(site: EmulatorSite, spaces: set[str]) -> dict[str, int]:
    """Current content of ``spaces`` with versions.

    Comments and attachments count when their page or blog post is current or archived:
    CQL hides archived pages but still lists the current comments on them.
    """
    model = site.server.site
    expected: dict[str, int] = {}
    for item in model.contents():
        if item.space_key not in spaces or str(item.status) != "current":
            continue
        if item.container_id is not None:
            container = model.content(item.container_id)
            if container is None or str(container.status) not in ("current", "archived"):
                continue
        expected[item.id] = item.version.number
    return expected


def expected_structure(site: EmulatorSite, key: str) -> set[str]:
    """Ids a complete structure listing of ``key`` contains: its current content.

    Comments and attachments follow the rule of ``expected_content``.
    """
    return set(expected_content(site, {key}))


def trim_labels(site: EmulatorSite, keep: int = 200) -> None:
    """Remove labels past ``keep`` per item, for roots where ``/content/{id}/label`` is gone."""
    for item in list(site.server.site.contents()):
        for label in list(item.labels)[keep:]:
            site.control("DELETE", f"/content/{item.id}/labels/{quote(label.name, safe='')}")


def assert_complete_listings(published: Published, site: EmulatorSite, spaces: set[str]) -> None:
    listings = published.listings()
    assert set(listings) == spaces
    for key, chunks in listings.items():
        assert [chunk["sequence"] for chunk in chunks] == list(range(len(chunks)))
        assert chunks[-1]["kind"] == "complete", (key, chunks[-1]["abort_reason"])
        items = [item for chunk in chunks[:-1] for item in chunk["items"]]
        assert chunks[-1]["item_count"] == len(items)
        assert {item["id"] for item in items} == expected_structure(site, key)
        assert chunks[-1]["content_types"] == list(CONTENT_KINDS)
        assert len({chunk["listing_id"] for chunk in chunks}) == 1


def assert_full_crawl(settings: Settings, site: EmulatorSite, result: JobResult) -> Published:
    assert result.status == "succeeded", result.record["errors"]
    published = read_published(settings, result.job_id)
    spaces = expected_spaces(site)
    assert {record["key"] for record in published.spaces} == spaces
    assert len(published.spaces) == len(spaces)
    assert published.content_versions() == expected_content(site, spaces)
    assert len(published.content) == len(published.content_versions())
    assert_complete_listings(published, site, spaces)
    counts = Counter(record["type"] for record in published.content)
    for kind in CONTENT_KINDS:
        assert result.record["counts"].get(kind, 0) == counts[kind]
    assert result.record["counts"]["space"] == len(spaces)
    return published


def test_full_crawl_cloud(start_emulator: StartEmulator, kafka_settings: Settings) -> None:
    site = start_emulator()
    source = site.source("cloud", concurrency=4, page_size=25)
    result = run_job(kafka_settings, source)
    published = assert_full_crawl(kafka_settings, site, result)

    assert result.record["mode"] == "full"
    assert result.record["api_calls"] > 0
    assert [job["status"] for job in published.jobs] == ["running", "succeeded"]
    assert [job["sequence"] for job in published.jobs] == [1, 2]
    assert result.record["window_end"] == result.record["started_at"]
    pages = [record for record in published.content if record["type"] == "page"]
    assert all(record["body_storage"] for record in pages)
    assert all(record["body_storage_sha256"] for record in pages)
    assert any(record["labels"] for record in pages)
    comments = [record for record in published.content if record["type"] == "comment"]
    assert comments
    assert all(record["container_id"] for record in comments)


def test_full_crawl_datacenter(start_emulator: StartEmulator, kafka_settings: Settings) -> None:
    site = start_emulator(dc_quirks=True, dc_limit_cap=20)
    source = site.source("datacenter", concurrency=3, page_size=50)
    result = run_job(kafka_settings, source)
    assert_full_crawl(kafka_settings, site, result)


def test_full_crawl_oauth_gateway_v1_gone(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator(v1_gone=True)
    trim_labels(site)
    keys = sorted(expected_spaces(site))
    source = site.source("cloud-oauth", concurrency=2, page_size=25, spaces={"include": keys})
    result = run_job(kafka_settings, source)
    assert_full_crawl(kafka_settings, site, result)
    counters = site.control("GET", "/counters")
    assert counters


def test_unknown_space_fails_job(start_emulator: StartEmulator, kafka_settings: Settings) -> None:
    site = start_emulator()
    source = site.source("cloud", spaces={"include": ["ENG", "NOPE"]})
    result = run_job(kafka_settings, source)
    assert result.status == "failed"
    assert result.exit_code == 1
    (error,) = result.record["errors"]
    assert error["fatal"] is True
    assert "'NOPE'" in error["message"]
    published = read_published(kafka_settings, result.job_id)
    assert published.content == []
    assert [job["status"] for job in published.jobs] == ["running", "failed"]


def test_incremental_after_changes(start_emulator: StartEmulator, kafka_settings: Settings) -> None:
    site = start_emulator(time_zone="America/New_York")
    source = site.source("cloud", concurrency=3, page_size=25)
    first = run_job(kafka_settings, source)
    assert first.status == "succeeded", first.record["errors"]

    model = site.server.site
    pages = [
        item
        for item in model.space_contents("ENG")
        if str(item.type) == "page" and str(item.status) == "current" and item.parent_id
    ]
    edited, moved, trashed, purged = pages[-1], pages[-2], pages[-3], pages[-4]
    site.control("POST", f"/content/{edited.id}/edit", {"body": "<p>edited body</p>"})
    site.control("POST", f"/content/{moved.id}/move", {"parent_id": pages[0].id})
    site.control("POST", f"/content/{trashed.id}/trash")
    site.control("POST", f"/content/{purged.id}/trash")
    site.control("POST", f"/content/{purged.id}/purge")
    created = site.control(
        "POST",
        "/content",
        {"type": "page", "space": "ENG", "title": "Fresh page", "body": "<p>new</p>"},
    )

    second = run_job(kafka_settings, source)
    assert second.status == "succeeded", second.record["errors"]
    assert second.record["mode"] == "incremental"
    assert second.record["previous_job_id"] == first.job_id
    assert second.record["window_start"] < first.record["window_end"]

    published = read_published(kafka_settings, second.job_id)
    changed = {record["id"]: record for record in published.content}
    assert edited.id in changed
    assert changed[edited.id]["body_storage"] == "<p>edited body</p>"
    edited_now = model.content(edited.id)
    assert edited_now is not None
    assert changed[edited.id]["version_number"] == edited_now.version.number
    # A move creates no version, so CQL's lastmodified does not change: the move is seen
    # through the structure listing below, not as a content record.
    assert set(changed) == {edited.id, created["id"]}
    assert second.record["counts"]["page"] == 2

    listings = published.listings()
    eng_items = {item["id"]: item for chunk in listings["ENG"] for item in chunk["items"]}
    assert listings["ENG"][-1]["kind"] == "complete"
    assert trashed.id not in eng_items
    assert purged.id not in eng_items
    assert eng_items[moved.id]["parent_id"] == pages[0].id
    assert created["id"] in eng_items


def test_forbidden_space_partial(start_emulator: StartEmulator, kafka_settings: Settings) -> None:
    site = start_emulator(faults=("*:403space:1.0:OPE",))
    source = site.source("cloud", concurrency=2, page_size=25)
    result = run_job(kafka_settings, source)
    assert result.status == "partial"
    assert result.exit_code == 3
    units = {error["unit"] for error in result.record["errors"]}
    assert "space:OPE:structure" in units
    assert "space:OPE:page" in units
    assert all(error["status"] == 403 for error in result.record["errors"])
    published = read_published(kafka_settings, result.job_id)
    listings = published.listings()
    assert listings["OPE"][-1]["kind"] == "aborted"
    assert "403" in listings["OPE"][-1]["abort_reason"]
    assert listings["ENG"][-1]["kind"] == "complete"
    assert all(record["space_key"] != "OPE" for record in published.content)


def test_oauth_labels_past_200_partial(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    # The gateway has no /content/{id}/label, so labels past the expansion's 200 are lost,
    # and the job records the loss.
    site = start_emulator(v1_gone=True)
    keys = sorted(expected_spaces(site))
    source = site.source("cloud-oauth", page_size=50, spaces={"include": keys})
    result = run_job(kafka_settings, source)
    assert result.status == "partial"
    errors = result.record["errors"]
    assert errors
    assert all(error["unit"].endswith(":labels") for error in errors)
    assert all(error["status"] == 410 for error in errors)


def test_full_crawl_archived_space(start_emulator: StartEmulator, kafka_settings: Settings) -> None:
    site = start_emulator()
    archived = {key for key, space in site.server.site.spaces.items() if space.status == "archived"}
    assert archived
    source = site.source("cloud", page_size=50, spaces={"statuses": ["current", "archived"]})
    result = run_job(kafka_settings, source)
    assert result.status == "succeeded", result.record["errors"]
    published = read_published(kafka_settings, result.job_id)
    spaces = set(site.server.site.spaces)
    assert {record["key"] for record in published.spaces} == spaces
    assert published.content_versions() == expected_content(site, spaces)
    archived_kinds = {
        record["type"] for record in published.content if record["space_key"] in archived
    }
    assert {"page", "comment"} <= archived_kinds
    assert_complete_listings(published, site, spaces)


def test_purged_comment_and_attachment_left_out(
    start_emulator: StartEmulator, kafka_settings: Settings
) -> None:
    site = start_emulator()
    source = site.source("cloud", concurrency=3, page_size=25)
    first = run_job(kafka_settings, source)
    assert first.status == "succeeded", first.record["errors"]

    current = expected_structure(site, "ENG")
    model = site.server.site
    contained = [
        item
        for item in model.space_contents("ENG")
        if item.id in current and str(item.type) in ("comment", "attachment")
    ]
    # A reply would be purged with its parent comment, so take a comment without replies.
    parents = {item.parent_id for item in contained}
    comment = next(
        item for item in contained if str(item.type) == "comment" and item.id not in parents
    )
    attachment = next(item for item in contained if str(item.type) == "attachment")
    first_listing = read_published(kafka_settings, first.job_id).listings()["ENG"]
    first_items = {item["id"]: item for chunk in first_listing for item in chunk["items"]}
    assert first_items[comment.id]["type"] == "comment"
    assert first_items[comment.id]["parent_id"] == comment.container_id
    assert first_items[attachment.id]["type"] == "attachment"
    assert first_items[attachment.id]["parent_id"] == attachment.container_id
    for item in (comment, attachment):
        site.control("POST", f"/content/{item.id}/trash")
        site.control("POST", f"/content/{item.id}/purge")

    second = run_job(kafka_settings, source)

    assert second.status == "succeeded", second.record["errors"]
    assert second.record["mode"] == "incremental"
    listing = read_published(kafka_settings, second.job_id).listings()["ENG"]
    assert listing[-1]["kind"] == "complete"
    assert listing[-1]["content_types"] == list(CONTENT_KINDS)
    items = {item["id"] for chunk in listing for item in chunk["items"]}
    assert comment.id not in items
    assert attachment.id not in items
    assert items == current - {comment.id, attachment.id}
