"""Crawl job logic against a scripted client: requests sent, fallbacks and job outcomes.

The scripted client returns Confluence-shaped JSON written here and records every
request, so these tests check what the job requests without a server or a broker.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from producer.client import RequestStats
from producer.config import SourceConfig, parse_sources
from producer.crawl import CrawlJob, CrawlOptions, JobResult, _StructureListing
from producer.errors import FatalError, RetriableError
from producer.paging import Page
from producer.progress import Progress
from producer.publisher import DryRunPublisher, RecordTooLargeError
from schemas.catalogue import RecordType
from schemas.codec import SingleObjectCodec
from schemas.topics import Topics

BASE = "https://example.atlassian.net/wiki"
SPACE = {"id": 42, "key": "DOCS", "name": "Docs", "type": "global", "status": "current"}
Handler = Callable[[str, dict[str, str]], dict[str, Any]]


def source(**overrides: Any) -> SourceConfig:
    table: dict[str, Any] = {
        "deployment": "cloud",
        "base_url": "https://example.atlassian.net",
        "auth": {"method": "basic", "username": "a@example.com", "token_env": "UNIT_TOKEN"},
        "concurrency": 1,
        "page_size": 10,
    }
    table.update(overrides)
    return parse_sources({"sources": {"unit": table}})["unit"]


def listing(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "results": results,
        "start": 0,
        "limit": 10,
        "size": len(results),
        "_links": {"base": BASE, "context": "/wiki"},
    }


def page(content_id: str, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": content_id,
        "type": "page",
        "status": "current",
        "title": f"Page {content_id}",
        "version": {"number": 1, "when": "2024-01-01T00:00:00.000Z"},
        "ancestors": [],
        "body": {"storage": {"value": "<p>x</p>", "representation": "storage"}},
    }
    item.update(extra)
    return item


class ScriptedClient:
    """A client whose responses come from ``handler``; it records every request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.stats = RequestStats()
        self.user: dict[str, Any] = {"accountId": "1", "timeZone": "Europe/Berlin"}

    def get(
        self,
        path: str,
        params: Mapping[str, str | int] | None = None,
        *,
        max_retries: int | None = None,
    ) -> dict[str, Any]:
        del max_retries
        query = {key: str(value) for key, value in (params or {}).items()}
        self.requests.append((path, query))
        self.stats.count_call(200)
        return self.handler(path, query)

    def current_user(self) -> dict[str, Any]:
        return self.user

    def close(self) -> None:
        return None


def run(
    client: ScriptedClient,
    config: SourceConfig,
    *,
    history: list[dict[str, Any]] | None = None,
    options: CrawlOptions | None = None,
) -> JobResult:
    publisher = DryRunPublisher(Topics(prefix="unit"), SingleObjectCodec())
    job = CrawlJob(
        config,
        client,
        publisher,
        lambda: history or [],
        options=options,
    )
    return job.run()


def is_structure_search(query: Mapping[str, str]) -> bool:
    """Return True for the structure listing's search of comments and attachments."""
    return query.get("expand") == "container,version"


def default_handler(path: str, query: dict[str, str]) -> dict[str, Any]:
    if path == "/space":
        return listing([SPACE] if query.get("start") == "0" else [])
    if path.startswith("/space/DOCS/content/page") and query.get("start") == "0":
        return listing([page("1"), page("2")])
    return listing([])


def test_expand_sent_comma_separated() -> None:
    client = ScriptedClient(default_handler)
    result = run(client, source())
    assert result.status == "succeeded", result.record["errors"]
    expands = [query["expand"] for _, query in client.requests if "expand" in query]
    assert expands
    for expand in expands:
        assert "[" not in expand
        assert '"' not in expand
        assert " " not in expand
        # Confluence rejects more than 8 sub-expansions with a 400.
        assert len(expand.split(",")) <= 8
    page_expand = next(
        query["expand"] for path, query in client.requests if path == "/space/DOCS/content/page"
    )
    assert "body.storage" in page_expand.split(",")
    assert "metadata.labels" in page_expand.split(",")


def test_server_error_retried_without_restrictions() -> None:
    def handler(path: str, query: dict[str, str]) -> dict[str, Any]:
        if path == "/space/DOCS/content/page" and "restrictions" in query.get("expand", ""):
            raise RetriableError("HTTP 500 persisted", method="GET", url=path, status=500)
        return default_handler(path, query)

    client = ScriptedClient(handler)
    result = run(client, source())
    assert result.status == "succeeded", result.record["errors"]
    assert result.record["counts"]["page"] == 2
    page_expands = [
        query["expand"] for path, query in client.requests if path == "/space/DOCS/content/page"
    ]
    assert "restrictions" in page_expands[0]
    assert "restrictions" not in page_expands[-1]


def test_incremental_uses_cql_in_user_zone() -> None:
    client = ScriptedClient(default_handler)
    previous_end = datetime(2024, 7, 1, 10, 7, 42, tzinfo=UTC)
    previous = {
        "job_id": "20240701T100742000Z-00000001",
        "source_id": "unit",
        "status": "succeeded",
        "window_end": previous_end,
    }
    result = run(client, source(overlap_minutes=0), history=[previous])
    assert result.status == "succeeded", result.record["errors"]
    assert result.record["mode"] == "incremental"
    assert result.record["window_start"] == previous_end
    searches = [query for path, query in client.requests if path == "/content/search"]
    content_searches = [query["cql"] for query in searches if not is_structure_search(query)]
    structure_searches = [query["cql"] for query in searches if is_structure_search(query)]
    assert content_searches
    # 10:07:42 UTC is 12:07:42 in Berlin summer time, floored to the minute.
    assert all('lastmodified >= "2024-07-01 12:07"' in cql for cql in content_searches)
    # The structure listing of comments and attachments covers the whole space.
    assert structure_searches == ['space = "DOCS" and type in (comment, attachment)']
    # Offset lists in incremental mode are only the structure listings, without bodies.
    offset_expands = {
        query["expand"] for path, query in client.requests if path.startswith("/space/DOCS/content")
    }
    assert offset_expands == {"ancestors,version"}


def test_hidden_time_zone_fails_job() -> None:
    client = ScriptedClient(default_handler)
    client.user = {"accountId": "1", "timeZone": None}
    since = datetime.now(UTC) - timedelta(days=1)
    result = run(client, source(), options=CrawlOptions(since=since))
    assert result.status == "failed"
    (error,) = result.record["errors"]
    assert "time_zone" in error["message"]


def test_configured_time_zone_used() -> None:
    client = ScriptedClient(default_handler)
    client.user = {"accountId": "1", "timeZone": None}
    since = datetime(2024, 1, 15, 23, 30, tzinfo=UTC)
    result = run(client, source(time_zone="Asia/Kolkata"), options=CrawlOptions(since=since))
    assert result.status == "succeeded", result.record["errors"]
    searches = [
        query["cql"]
        for path, query in client.requests
        if path == "/content/search" and not is_structure_search(query)
    ]
    assert searches
    assert all('lastmodified >= "2024-01-16 05:00"' in cql for cql in searches)


def test_excluded_space_not_crawled() -> None:
    client = ScriptedClient(default_handler)
    result = run(client, source(spaces={"exclude": ["DOCS"]}))
    assert result.status == "succeeded"
    assert result.record["counts"] == {}
    assert all(not path.startswith("/space/DOCS") for path, _ in client.requests)


def test_progress_line_counts_records() -> None:
    progress = Progress(enabled=False, stream=io.StringIO(), interactive=True)
    progress.record("page", 3)
    progress.record("comment")
    progress.record("page")
    assert progress.snapshot() == {"comment": 1, "page": 4}
    line = progress.line()
    assert line.startswith("comment=1 page=4 elapsed=")
    assert "rate=" in line


def test_progress_terminal_line_ended_on_stop() -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream, interactive=True).start()
    progress.record("page")
    progress.stop()
    assert stream.getvalue().endswith("\n")


class RecordingPublisher(DryRunPublisher):
    """A dry-run publisher that also keeps every structure listing chunk it encoded."""

    def __init__(self) -> None:
        super().__init__(Topics(prefix="unit"), SingleObjectCodec())
        self.chunks: list[dict[str, Any]] = []

    def publish(self, record_type: RecordType, key: str, record: Mapping[str, Any]) -> None:
        super().publish(record_type, key, record)
        if record_type is RecordType.STRUCTURE_LISTING:
            self.chunks.append(dict(record))


def run_recording(client: ScriptedClient, config: SourceConfig) -> RecordingPublisher:
    publisher = RecordingPublisher()
    CrawlJob(config, client, publisher, lambda: [], options=CrawlOptions(full=True)).run()
    return publisher


def comment(content_id: str, container_id: str) -> dict[str, Any]:
    return {
        "id": content_id,
        "type": "comment",
        "status": "current",
        "title": f"Re: Page {container_id}",
        "version": {"number": 2},
        "container": {"id": container_id, "type": "page"},
    }


def test_structure_lists_comments_and_attachments() -> None:
    def handler(path: str, query: dict[str, str]) -> dict[str, Any]:
        if is_structure_search(query):
            return listing([comment("11", "1")])
        return default_handler(path, query)

    client = ScriptedClient(handler)
    publisher = run_recording(client, source())

    final = publisher.chunks[-1]
    assert final["kind"] == "complete"
    assert final["content_types"] == ["page", "blogpost", "comment", "attachment"]
    items = {item["id"]: item for chunk in publisher.chunks for item in chunk["items"]}
    assert set(items) == {"1", "2", "11"}
    assert items["11"]["type"] == "comment"
    assert items["11"]["parent_id"] == "1"
    assert items["11"]["version_number"] == 2


def test_structure_aborted_when_comment_search_fails() -> None:
    def handler(path: str, query: dict[str, str]) -> dict[str, Any]:
        if is_structure_search(query):
            raise RetriableError(
                "HTTP 503 persisted", method="GET", url="/content/search", status=503
            )
        return default_handler(path, query)

    client = ScriptedClient(handler)
    publisher = run_recording(client, source())

    final = publisher.chunks[-1]
    assert final["kind"] == "aborted"
    assert "503" in final["abort_reason"]
    assert all(chunk["kind"] != "complete" for chunk in publisher.chunks)


def test_structure_types_follow_content_types() -> None:
    client = ScriptedClient(default_handler)
    publisher = run_recording(client, source(content_types=["page", "blogpost", "label"]))

    assert publisher.chunks[-1]["kind"] == "complete"
    assert publisher.chunks[-1]["content_types"] == ["page", "blogpost"]
    assert not [query for _, query in client.requests if is_structure_search(query)]


def test_configured_archived_space_recorded() -> None:
    archived = dict(SPACE, status="archived")

    def handler(path: str, query: dict[str, str]) -> dict[str, Any]:
        if path == "/space":
            return listing([archived] if query.get("start") == "0" else [])
        return default_handler(path, query)

    client = ScriptedClient(handler)
    result = run(client, source(spaces={"include": ["DOCS"]}))

    assert result.status == "partial"
    errors = result.record["errors"]
    assert [error["unit"] for error in errors] == ["space:DOCS"]
    assert "spaces.statuses" in errors[0]["message"]
    assert result.record["counts"].get("space", 0) == 0
    assert not [path for path, _ in client.requests if path.startswith("/space/DOCS")]


def test_datacenter_structure_ignores_total_size() -> None:
    def handler(path: str, query: dict[str, str]) -> dict[str, Any]:
        if is_structure_search(query):
            start = int(query["start"])
            results = [comment(str(100 + start), "1")] if start < 2 else []
            # The index counts one comment where two exist.
            return dict(listing(results), start=start, totalSize=1)
        return default_handler(path, query)

    client = ScriptedClient(handler)
    config = source(
        deployment="datacenter",
        base_url="https://confluence.example.com",
        auth={"method": "pat", "token_env": "UNIT_TOKEN"},
    )
    publisher = run_recording(client, config)

    assert publisher.chunks[-1]["kind"] == "complete"
    items = {item["id"] for chunk in publisher.chunks for item in chunk["items"]}
    assert {"100", "101"} <= items


class RejectingPublisher(RecordingPublisher):
    """Rejects the first structure chunk of items, as a broker client rejects a record."""

    def publish(self, record_type: RecordType, key: str, record: Mapping[str, Any]) -> None:
        if record_type is RecordType.STRUCTURE_LISTING and record["kind"] == "items":
            raise RecordTooLargeError(f"record {key} was rejected")
        super().publish(record_type, key, record)


def test_structure_aborted_when_publish_fails() -> None:
    client = ScriptedClient(default_handler)
    publisher = RejectingPublisher()

    result = CrawlJob(
        source(), client, publisher, lambda: [], options=CrawlOptions(full=True)
    ).run()

    assert result.status == "failed"
    assert [chunk["kind"] for chunk in publisher.chunks] == ["aborted"]
    assert "RecordTooLargeError" in publisher.chunks[0]["abort_reason"]


def is_structure_offset_list(path: str, query: Mapping[str, str]) -> bool:
    """Return True for a structure listing's own offset list of pages or blog posts."""
    return path.startswith("/space/DOCS/content/") and query.get("expand") == "ancestors,version"


def test_full_job_structure_from_content_walks() -> None:
    client = ScriptedClient(default_handler)
    publisher = run_recording(client, source(content_types=["page", "blogpost"]))

    assert not [path for path, query in client.requests if is_structure_offset_list(path, query)]
    final = publisher.chunks[-1]
    assert final["kind"] == "complete"
    assert final["content_types"] == ["page", "blogpost"]
    items = {item["id"] for chunk in publisher.chunks for item in chunk["items"]}
    assert items == {"1", "2"}
    assert final["item_count"] == 2


def test_structure_lists_types_not_crawled() -> None:
    client = ScriptedClient(default_handler)
    publisher = run_recording(client, source(content_types=["page"]))

    own_lists = [path for path, query in client.requests if is_structure_offset_list(path, query)]
    assert own_lists == ["/space/DOCS/content/blogpost"]
    assert publisher.chunks[-1]["kind"] == "complete"
    items = {item["id"] for chunk in publisher.chunks for item in chunk["items"]}
    assert items == {"1", "2"}


def test_content_failure_aborts_structure() -> None:
    def handler(path: str, query: dict[str, str]) -> dict[str, Any]:
        if path == "/space/DOCS/content/page" and "body.storage" in query.get("expand", ""):
            raise RetriableError("HTTP 503 persisted", method="GET", url=path, status=503)
        return default_handler(path, query)

    client = ScriptedClient(handler)
    publisher = RecordingPublisher()
    config = source(content_types=["page", "blogpost"])
    result = CrawlJob(config, client, publisher, lambda: [], options=CrawlOptions(full=True)).run()

    assert result.status == "partial"
    units = {error["unit"]: error for error in result.record["errors"]}
    assert units["space:DOCS:page"]["status"] == 503
    assert units["space:DOCS:structure"]["status"] == 503
    kinds = [chunk["kind"] for chunk in publisher.chunks]
    assert kinds == ["aborted"]
    assert "503" in publisher.chunks[-1]["abort_reason"]


def test_fatal_error_aborts_started_structure() -> None:
    def handler(path: str, query: dict[str, str]) -> dict[str, Any]:
        if path == "/content/search" and "type = comment" in query.get("cql", ""):
            raise FatalError("HTTP 400 from the search", method="GET", url=path, status=400)
        if path == "/space/DOCS/content/page" and query["start"] == "0":
            # Enough rows for one published chunk of the structure listing.
            return listing([page(str(number)) for number in range(1, 501)])
        return default_handler(path, query)

    client = ScriptedClient(handler)
    publisher = RecordingPublisher()
    # One worker runs the page walk, which publishes a chunk of the structure listing,
    # before the comment walk fails the job and the listing's other parts are left out.
    config = source(content_types=["page", "blogpost", "comment"])
    result = CrawlJob(config, client, publisher, lambda: [], options=CrawlOptions(full=True)).run()

    assert result.status == "failed"
    kinds = [chunk["kind"] for chunk in publisher.chunks]
    assert kinds == ["items", "aborted"]
    assert "fatal error in another unit" in publisher.chunks[-1]["abort_reason"]


def test_offset_walk_pages_in_order() -> None:
    rows = {0: ["1", "2"], 2: ["3", "4"], 4: ["5"]}

    def handler(path: str, query: dict[str, str]) -> dict[str, Any]:
        if path == "/space/DOCS/content/page":
            start = int(query["start"])
            response = listing([page(content_id) for content_id in rows[start]])
            response["start"] = start
            if start < 4:
                response["_links"]["next"] = f"/rest/api/space/DOCS/content/page?start={start + 2}"
            return response
        return default_handler(path, query)

    client = ScriptedClient(handler)
    publisher = run_recording(client, source(content_types=["page", "blogpost"]))

    starts = [
        query["start"] for path, query in client.requests if path == "/space/DOCS/content/page"
    ]
    assert starts == ["0", "2", "4"]
    items = [item["id"] for chunk in publisher.chunks for item in chunk["items"]]
    assert items == ["1", "2", "3", "4", "5"]


def test_abandoned_structure_listing_aborted() -> None:
    publisher = RecordingPublisher()
    job = CrawlJob(
        source(), ScriptedClient(default_handler), publisher, lambda: [], options=CrawlOptions()
    )
    job._start()
    started = _StructureListing(job, "DOCS", 42, parts=2)
    started.add(Page(results=[page(str(number)) for number in range(500)], raw={}, request_path=""))
    untouched = _StructureListing(job, "OTHER", 43, parts=1)

    # Another unit failed the job before the second part of either listing ran.
    started.abandon()
    untouched.abandon()

    assert [chunk["kind"] for chunk in publisher.chunks] == ["items", "aborted"]
    assert {chunk["space_key"] for chunk in publisher.chunks} == {"DOCS"}
    assert publisher.chunks[-1]["item_count"] == 500
