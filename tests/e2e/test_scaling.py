"""Two instances of each consumer share the partitions of one group and agree with one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from demo.processes import BackgroundProcess
from tests.e2e.conftest import BIN, E2ERun, launch_site, new_run
from tests.e2e.expected import crawled_items, expected_edges, stored_edges

SCALED = ("stream", "relationships")
JOIN_DEADLINE_SECONDS = 120.0
# Small batches make the instances take turns on the relationship state many times.
BATCH_SIZE = 20


def start_second_instances(run: E2ERun) -> list[BackgroundProcess]:
    """Start one more instance of each scaled consumer in the group of the first."""
    processes = []
    for consumer in SCALED:
        process = BackgroundProcess(f"consumer-{consumer}-2", run.folder, "confluence-consumer")
        command = [
            str(BIN / "confluence-consumer"),
            consumer,
            "--group",
            run.group(consumer),
            "--batch-timeout",
            "0.5",
            "--batch-size",
            str(BATCH_SIZE),
        ]
        process.start(command, run.environ())
        processes.append(process)
    return processes


def wait_for_members(admin: AdminClient, group: str, members: int) -> list[set[int]]:
    """Wait until ``group`` has ``members`` members that each own a partition."""
    deadline = time.monotonic() + JOIN_DEADLINE_SECONDS
    while True:
        description = admin.describe_consumer_groups([group])[group].result(timeout=30)
        owned = [
            {part.partition for part in member.assignment.topic_partitions}
            for member in description.members
        ]
        if len(owned) == members and all(owned):
            return owned
        if time.monotonic() > deadline:
            pytest.fail(f"group {group} has members owning {owned}, expected {members} members")
        time.sleep(1.0)


@pytest.mark.integration
def test_two_instances_share_partitions(
    kafka_bootstrap: str, mongo_uri: str, tmp_path: Path
) -> None:
    site = launch_site(tmp_path / "emulator")
    run = new_run(kafka_bootstrap, mongo_uri, tmp_path / "run")
    second: list[BackgroundProcess] = []
    try:
        run.start_consumers(batch_size=BATCH_SIZE)
        second = start_second_instances(run)
        admin = run.admin()
        for consumer in SCALED:
            wait_for_members(admin, run.group(consumer), 2)

        result = run.crawl(site.write_sources())
        assert result.returncode == 0, result.stderr[-3000:]
        run.wait_caught_up()

        for process in second:
            assert not process.exited(), process.log_tail()
        items = crawled_items(site.model, set(site.model.spaces))
        stream = run.database()[run.stream_collection]
        content = list(stream.find({"entity_type": "content", "current": True}))
        assert sorted(document["id"] for document in content) == sorted(items)
        relationships = list(stream.find({"entity_type": "relationship", "current": True}))
        stored = stored_edges(relationships)
        expected = expected_edges(site.model, items)
        assert sorted(expected - stored) == []
        assert sorted(stored - expected) == []
    finally:
        for process in second:
            process.stop()
        run.close()
        site.server.stop()
