"""The whole flow on a real documentation tree: Debian's python3.11-doc.

The tree has a real page hierarchy (Sphinx toctrees) and links across documents. Three
of its spaces are crawled, which keeps the run short; links into the other spaces are
unresolved edges.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import in_ci
from tests.e2e.conftest import SOURCE_ID, E2ERun, EmulatorSite
from tests.e2e.expected import body_sha256, crawled_items, expected_edges, stored_edges

CORPUS = Path("/usr/share/doc/python3.11/html")
CORPUS_SPACES = ("TUTORIAL", "HOWTO", "FAQ")


def test_corpus_crawl_matches_site(
    start_site: Callable[..., EmulatorSite], e2e_run: Callable[[], E2ERun]
) -> None:
    if not (CORPUS / "index.html").is_file():
        reason = f"{CORPUS} is missing; install it with `apt-get install python3.11-doc`"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    site, run = start_site(site="corpus", corpus=CORPUS), e2e_run()
    run.start_consumers()

    result = run.crawl(site.write_sources(include=CORPUS_SPACES))
    assert result.returncode == 0, result.stderr[-3000:]
    run.wait_caught_up()

    items = crawled_items(site.model, CORPUS_SPACES)
    collection = run.database()[run.stream_collection]
    content = {
        document["id"]: document
        for document in collection.find({"entity_type": "content", "current": True})
    }
    assert set(content) == set(items)
    for content_id, item in items.items():
        assert content[content_id]["version_number"] == item.version.number, content_id
        assert content[content_id]["body_storage_sha256"] == body_sha256(item), content_id
    relationships = collection.find({"entity_type": "relationship", "current": True})
    stored = stored_edges(relationships)
    expected = expected_edges(site.model, items)
    assert sorted(expected - stored) == []
    assert sorted(stored - expected) == []
    assert any(edge[2] == "links_to" for edge in stored)
    assert any(edge[2] == "ancestor_of" for edge in stored)
    job = run.database()["job_history"].find_one({"source_id": SOURCE_ID})
    assert job is not None
    assert job["status"] == "succeeded"
