"""A full crawl through Kafka into MongoDB leaves exactly the emulator's site behind."""

from __future__ import annotations

import hashlib
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from emulator.model import Content
from tests.e2e.conftest import BIN, SOURCE_ID, E2ERun, EmulatorSite, launch_site, new_run
from tests.e2e.expected import body_sha256, crawled_items, expected_edges, stored_edges

# Fields a consumer sets at write time; everything else comes from the records.
WRITE_TIME_FIELDS = ("ingested_at", "first_ingested_at")


@dataclass
class FullCrawl:
    site: EmulatorSite
    run: E2ERun
    job_output: str
    items: dict[str, Content]


@pytest.fixture(scope="module")
def full_crawl(
    kafka_bootstrap: str, mongo_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FullCrawl]:
    """One full crawl of a small generated site, with all three consumers caught up."""
    folder = tmp_path_factory.mktemp("full-crawl")
    site = launch_site(folder / "emulator")
    run = new_run(kafka_bootstrap, mongo_uri, folder / "run")
    try:
        sources = site.write_sources()
        run.start_consumers()
        result = run.crawl(sources)
        assert result.returncode == 0, result.stderr[-3000:]
        run.wait_caught_up()
        items = crawled_items(site.model, set(site.model.spaces))
        yield FullCrawl(site, run, result.stdout, items)
    finally:
        run.close()
        site.server.stop()


def current_documents(run: E2ERun, entity_type: str) -> list[dict[str, Any]]:
    collection = run.database()[run.stream_collection]
    return list(collection.find({"entity_type": entity_type, "current": True}))


def test_stream_counts_match_site(full_crawl: FullCrawl) -> None:
    content = current_documents(full_crawl.run, "content")
    spaces = current_documents(full_crawl.run, "space")

    stored = Counter(document["type"] for document in content)
    expected = Counter(item.type.value for item in full_crawl.items.values())
    assert stored == expected
    assert sorted(document["key"] for document in spaces) == sorted(full_crawl.site.model.spaces)


def test_stream_versions_and_bodies_match_site(full_crawl: FullCrawl) -> None:
    documents = {
        document["id"]: document for document in current_documents(full_crawl.run, "content")
    }

    assert set(documents) == set(full_crawl.items)
    for content_id, item in full_crawl.items.items():
        document = documents[content_id]
        assert document["version_number"] == item.version.number, content_id
        assert document["body_storage_sha256"] == body_sha256(item), content_id
        if document["body_storage"] is not None:
            stored_hash = hashlib.sha256(document["body_storage"].encode("utf-8")).hexdigest()
            assert stored_hash == body_sha256(item), content_id


def test_each_entity_has_one_current_version(full_crawl: FullCrawl) -> None:
    collection = full_crawl.run.database()[full_crawl.run.stream_collection]
    current = Counter(
        document["entity_id"] for document in collection.find({"current": True}, {"entity_id": 1})
    )

    assert current, "the stream collection has no current documents"
    assert max(current.values()) == 1


def test_relationships_equal_site_edges(full_crawl: FullCrawl) -> None:
    stored = stored_edges(current_documents(full_crawl.run, "relationship"))
    expected = expected_edges(full_crawl.site.model, full_crawl.items)

    assert sorted(expected - stored) == []
    assert sorted(stored - expected) == []
    assert any(edge[2] == "links_to" for edge in expected), "the site has no links between pages"


def test_job_history_records_full_job(full_crawl: FullCrawl) -> None:
    jobs = list(full_crawl.run.database()["job_history"].find({"source_id": SOURCE_ID}))

    assert len(jobs) == 1
    job = jobs[0]
    assert job["_id"] in full_crawl.job_output
    assert job["status"] == "succeeded"
    assert job["mode"] == "full"
    assert job["errors"] == []
    assert job["api_calls"] > 0
    expected = Counter(item.type.value for item in full_crawl.items.values())
    for kind, number in expected.items():
        assert job["counts"][kind] == number, kind
    assert job["counts"]["space"] == len(full_crawl.site.model.spaces)


def snapshot(run: E2ERun) -> dict[str, dict[str, Any]]:
    """Return every stream document by ``_id``, without the fields set at write time."""
    documents = run.database()[run.stream_collection].find({})
    return {
        document["_id"]: {k: v for k, v in document.items() if k not in WRITE_TIME_FIELDS}
        for document in documents
    }


def replay(run: E2ERun, group: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "confluence-consumer"), "replay", "--group", group, "--from-beginning"],
        env=run.environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# Runs last in this module because it rebuilds the shared stream collection.
def test_replay_rebuilds_dropped_collection(full_crawl: FullCrawl) -> None:
    run = full_crawl.run
    before = snapshot(run)
    run.stop_consumers("stream")
    run.database().drop_collection(run.stream_collection)

    result = replay(run, run.group("stream"))
    assert result.returncode == 0, result.stderr[-2000:]
    run.start_consumers("stream")
    run.wait_caught_up("stream")
    after = snapshot(run)

    assert len(after) == len(before)
    assert after == before
