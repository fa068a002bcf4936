"""Crashes: a producer killed mid-crawl and a consumer killed mid-batch lose nothing."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable

from tests.e2e.conftest import SOURCE_ID, E2ERun, EmulatorSite
from tests.e2e.expected import crawled_items

# Deadline of the waits below; reaching it means a hang.
DEADLINE_SECONDS = 120.0


def assert_stream_matches_site(run: E2ERun, site: EmulatorSite) -> None:
    items = crawled_items(site.model, set(site.model.spaces))
    collection = run.database()[run.stream_collection]
    content = list(collection.find({"entity_type": "content"}))
    current = [document for document in content if document["current"]]

    assert sorted(document["id"] for document in current) == sorted(items)
    for document in current:
        assert document["version_number"] == items[document["id"]].version.number
    per_entity = Counter(document["entity_id"] for document in current)
    assert max(per_entity.values()) == 1
    # A full crawl fetches one version per item, so one document per item means no duplicate.
    assert len(content) == len(items)


def test_producer_killed_mid_crawl_next_run_completes(
    start_site: Callable[..., EmulatorSite], e2e_run: Callable[[], E2ERun]
) -> None:
    site, run = start_site(latency_ms=150.0), e2e_run()
    sources = site.write_sources(concurrency=1)
    crawl = run.start_crawl(sources)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        # The producer logs "space done" after it published a space's records; the
        # other spaces are still to come, so the kill lands mid-crawl.
        while "space done" not in run.crawl_log():
            assert crawl.poll() is None, "the crawl ended before it could be killed"
            assert time.monotonic() < deadline, "the crawl finished no space"
            time.sleep(0.1)
    finally:
        crawl.send_signal(signal.SIGKILL)
        status = crawl.wait(timeout=30)
    assert status == -signal.SIGKILL

    result = run.crawl(site.write_sources())
    assert result.returncode == 0, result.stderr[-3000:]
    run.start_consumers()
    run.wait_caught_up()

    assert_stream_matches_site(run, site)
    statuses = sorted(
        job["status"] for job in run.database()["job_history"].find({"source_id": SOURCE_ID})
    )
    assert statuses == ["running", "succeeded"]


def test_consumer_killed_mid_batch_leaves_no_gap(
    start_site: Callable[..., EmulatorSite], e2e_run: Callable[[], E2ERun]
) -> None:
    site, run = start_site(), e2e_run()
    result = run.crawl(site.write_sources())
    assert result.returncode == 0, result.stderr[-3000:]
    run.start_consumers("stream", batch_size=20)
    collection = run.database()[run.stream_collection]
    deadline = time.monotonic() + DEADLINE_SECONDS
    while collection.count_documents({"entity_type": "content"}) == 0:
        assert time.monotonic() < deadline, "the stream writer wrote nothing"
        time.sleep(0.1)
    pid = run.process("stream").running_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while run.process("stream").running_pid() is not None:
        time.sleep(0.1)
    written_before_restart = collection.count_documents({"entity_type": "content"})

    run.start_consumers("stream", batch_size=20)
    run.wait_caught_up("stream")

    assert written_before_restart < len(crawled_items(site.model, set(site.model.spaces)))
    assert_stream_matches_site(run, site)
