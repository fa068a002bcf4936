"""Incremental crawls after edits, moves, trashing and purging, and a job with a 403 space."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from demo.changes import ControlClient, apply_changes, plan_changes
from emulator.model import ContentStatus, ContentType, Site
from tests.e2e.conftest import SOURCE_ID, E2ERun, EmulatorSite
from tests.e2e.expected import body_sha256, crawled_items, expected_edges, stored_edges

EXIT_PARTIAL = 3


def page_facts(site: Site) -> list[dict[str, Any]]:
    """Return the pages of the model in the form of stream documents that plan_changes reads."""
    return [
        {
            "id": content.id,
            "title": content.title,
            "status": content.status.value,
            "space_key": content.space_key,
            "parent_id": content.parent_id,
        }
        for content in site.contents()
        if content.type is ContentType.PAGE
    ]


def full_crawl(site: EmulatorSite, run: E2ERun) -> None:
    sources = site.write_sources()
    run.start_consumers()
    result = run.crawl(sources)
    assert result.returncode == 0, result.stderr[-3000:]
    run.wait_caught_up()


def jobs(run: E2ERun) -> list[dict[str, Any]]:
    return list(run.database()["job_history"].find({"source_id": SOURCE_ID}).sort("_id", 1))


def current_relationships(run: E2ERun) -> list[dict[str, Any]]:
    collection = run.database()[run.stream_collection]
    return list(collection.find({"entity_type": "relationship", "current": True}))


def test_incremental_crawl_carries_only_changes(
    start_site: Callable[..., EmulatorSite], e2e_run: Callable[[], E2ERun]
) -> None:
    site, run = start_site(), e2e_run()
    full_crawl(site, run)
    changes = plan_changes(page_facts(site.model))
    bodies = {content.id: content.body_storage for content in site.model.contents()}
    control = ControlClient(site.origin)
    try:
        apply_changes(control, changes, bodies)
    finally:
        control.close()

    result = run.crawl(site.write_sources())
    assert result.returncode == 0, result.stderr[-3000:]
    run.wait_caught_up()

    first, second = jobs(run)
    assert second["mode"] == "incremental"
    assert second["status"] == "succeeded"
    assert second["previous_job_id"] == first["_id"]
    edited = {change.content_id for change in changes if change.action == "edit"}
    moved = {change.content_id for change in changes if change.action == "move"}
    collection = run.database()[run.stream_collection]
    written = {
        document["id"]: document
        for document in collection.find({"job_id": second["_id"], "entity_type": "content"})
    }
    # A move creates no version, but the emulator reports the moved page, its comments
    # and its attachments as modified, so an incremental job may carry them.
    moved_family = moved | {
        content.id for content in site.model.contents() if content.container_id in moved
    }
    assert edited <= set(written)
    assert set(written) - edited - moved_family == set()
    written_types = Counter(document["type"] for document in written.values())
    for kind in ("page", "blogpost", "comment", "attachment"):
        assert second["counts"].get(kind, 0) == written_types[kind], kind
    for content_id in edited:
        item = site.model.content(content_id)
        assert item is not None
        assert written[content_id]["current"] is True
        assert written[content_id]["version_number"] == item.version.number
        assert written[content_id]["body_storage_sha256"] == body_sha256(item)
        previous = collection.find_one({"_id": f"content:{content_id}@v{item.version.number - 1}"})
        assert previous is not None
        assert previous["current"] is False


def test_incremental_edges_follow_moves_and_deletions(
    start_site: Callable[..., EmulatorSite], e2e_run: Callable[[], E2ERun]
) -> None:
    site, run = start_site(), e2e_run()
    full_crawl(site, run)
    pages_before = {page["id"]: page for page in page_facts(site.model)}
    changes = plan_changes(pages_before.values())
    bodies = {content.id: content.body_storage for content in site.model.contents()}
    control = ControlClient(site.origin)
    try:
        apply_changes(control, changes, bodies)
    finally:
        control.close()

    result = run.crawl(site.write_sources())
    assert result.returncode == 0, result.stderr[-3000:]
    run.wait_caught_up()

    documents = current_relationships(run)
    items = crawled_items(site.model, set(site.model.spaces))
    expected = expected_edges(site.model, items)
    stored = stored_edges(documents)
    assert sorted(expected - stored) == []
    assert sorted(stored - expected) == []
    removed = {
        (document["from_id"], document["relation"], document["to_id"])
        for document in documents
        if document["op"] == "remove"
    }
    for change in changes:
        before = pages_before[change.content_id]
        if change.action in ("trash", "purge"):
            assert (before["space_key"], "space_contains", change.content_id) in removed
        if change.action == "move":
            assert (before["parent_id"], "parent_of", change.content_id) in removed
            assert ("page", change.new_parent_id, "parent_of", "page", change.content_id) in stored


def test_forbidden_space_partial_without_deletion(
    start_site: Callable[..., EmulatorSite], e2e_run: Callable[[], E2ERun]
) -> None:
    site, run = start_site(), e2e_run()
    full_crawl(site, run)
    keys = sorted(key for key, space in site.model.spaces.items() if space.type == "global")
    allowed, forbidden = keys[0], keys[1]
    trashed: dict[str, str] = {}
    for key in (allowed, forbidden):
        leaf = leaf_pages(site.model, key)[0]
        site.control("POST", f"/content/{leaf}/trash")
        trashed[key] = leaf
    site.control("POST", "/faults", {"rule": f"*:403space:1.0:{forbidden}"})

    result = run.crawl(site.write_sources())
    assert result.returncode == EXIT_PARTIAL, result.stderr[-3000:]
    run.wait_caught_up()

    second = jobs(run)[-1]
    assert second["status"] == "partial"
    assert second["errors"], "the partial job recorded no error"
    assert any(forbidden in str(error) for error in second["errors"]), second["errors"]
    assert any("403" in str(error) for error in second["errors"]), second["errors"]
    # Every version document, current or not: the remove records themselves show which
    # listings deleted something.
    collection = run.database()[run.stream_collection]
    removals = {
        (document["from_id"], document["to_id"])
        for document in collection.find(
            {"entity_type": "relationship", "relation": "space_contains", "op": "remove"}
        )
    }
    assert (allowed, trashed[allowed]) in removals
    assert (forbidden, trashed[forbidden]) not in removals


def leaf_pages(site: Site, space_key: str) -> list[str]:
    """Return current pages of ``space_key`` that have a parent and no children."""
    pages = [
        content
        for content in site.space_contents(space_key, ContentType.PAGE)
        if content.status is ContentStatus.CURRENT
    ]
    parents = {page.parent_id for page in pages}
    return [page.id for page in pages if page.parent_id and page.id not in parents]
