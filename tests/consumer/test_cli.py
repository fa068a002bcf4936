"""Tests of the ``confluence-consumer`` console script, run as real processes."""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from consumer.cli import _prepare, main
from schemas.catalogue import RecordType
from tests.consumer.conftest import (
    WAIT_DEADLINE_SECONDS,
    ConsumerEnv,
    RecordPublisher,
    committed_offsets,
    sample_content,
    start_console_script,
    wait_until,
)
from tests.tcp_proxy import OutageProxy

COUNTERS = re.compile(r"consumer counters consumer=\S+ consumed=(\d+) written=(\d+)")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "stream" in capsys.readouterr().out


def test_invalid_settings_exit_two(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "no-port")

    assert main(["stream"]) == 2
    assert "KAFKA_BOOTSTRAP_SERVERS='no-port' is invalid" in capsys.readouterr().err


def test_replay_needs_a_position(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", "--group", "g"])

    assert exit_info.value.code == 2
    assert "--from-beginning" in capsys.readouterr().err


def publish_pages(env: ConsumerEnv, count: int) -> dict[int, int]:
    """Publish pages 1..count; return the end offset per partition."""
    publisher = RecordPublisher(env)
    for number in range(1, count + 1):
        publisher.publish(
            RecordType.CONTENT, sample_content(source_id=env.source_id, id=str(number))
        )
    ends: dict[int, int] = {}
    for message in publisher.flush():
        partition, offset = message.partition(), message.offset()
        assert partition is not None
        assert offset is not None
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> int:
    process.send_signal(sig)
    return process.wait(WAIT_DEADLINE_SECONDS)


def final_counters(log_path: Path) -> tuple[int, int]:
    """Return (consumed, written) of the last counter line in a consumer log."""
    matches = COUNTERS.findall(log_path.read_text())
    assert matches, f"no counter line in {log_path}"
    consumed, written = matches[-1]
    return int(consumed), int(written)


def test_sigterm_commits_and_exits_zero(
    consumer_env: Callable[..., ConsumerEnv], tmp_path: Path
) -> None:
    env = consumer_env()
    ends = publish_pages(env, 30)
    group = env.group("cli-stream")
    log_path = tmp_path / "stream.log"
    process = start_console_script(
        env, ["stream", "--group", group, "--batch-timeout", "0.2"], log_path
    )
    collection = env.database()[env.stream_collection]
    try:
        wait_until(lambda: collection.count_documents({}) >= 30, "30 documents")
    finally:
        status = stop(process)

    assert status == 0, log_path.read_text()
    assert committed_offsets(env, group, env.topics.content) == ends
    assert "consumer stopped consumer=stream-writer" in log_path.read_text()
    assert final_counters(log_path) == (30, 30)


def test_sigkill_restart_has_no_gap(
    consumer_env: Callable[..., ConsumerEnv], tmp_path: Path
) -> None:
    env = consumer_env()
    # Enough batches of 5 that the writer is still mid-way when the kill arrives: the
    # writer inserts hundreds of documents per second, and the poll below waits 0.2 s.
    total = 2000
    publish_pages(env, total)
    arguments = ["stream", "--group", env.group("cli-kill"), "--batch-size", "5"]
    collection = env.database()[env.stream_collection]
    first = start_console_script(env, arguments, tmp_path / "first.log")
    try:
        wait_until(lambda: collection.count_documents({}) >= 20, "the first batches")
    finally:
        killed_status = stop(first, signal.SIGKILL)
    written_before_restart = collection.count_documents({})

    # The restarted member gets partitions only after the broker expires the killed member's
    # session (librdkafka's session.timeout.ms, 45 s by default), so this wait is long.
    second = start_console_script(env, arguments, tmp_path / "second.log")
    try:
        wait_until(lambda: collection.count_documents({}) >= total, f"{total} documents")
    finally:
        status = stop(second)

    assert killed_status == -signal.SIGKILL
    assert written_before_restart < total
    assert status == 0
    ids = sorted(document["_id"] for document in collection.find({}, {"_id": 1}))
    assert ids == sorted(f"content:{number}@v1" for number in range(1, total + 1))
    assert collection.count_documents({"current": True}) == total


def test_two_instances_share_partitions(
    consumer_env: Callable[..., ConsumerEnv], tmp_path: Path
) -> None:
    env = consumer_env(partitions=4)
    group = env.group("cli-pair")
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    arguments = ["stream", "--group", group, "--batch-timeout", "0.2"]
    processes = [start_console_script(env, arguments, path) for path in logs]
    content_partition = re.compile(re.escape(env.topics.content) + r"\[\d\]")

    def both_assigned() -> bool:
        return all(
            content_partition.search(
                "".join(
                    line for line in path.read_text().splitlines() if "partitions assigned" in line
                )
            )
            for path in logs
        )

    total = 80
    collection = env.database()[env.stream_collection]
    try:
        wait_until(both_assigned, "content partitions assigned to both instances")
        publish_pages(env, total)
        wait_until(lambda: collection.count_documents({}) >= total, f"{total} documents")
    finally:
        statuses = [stop(process) for process in processes]

    assert statuses == [0, 0]
    assert collection.count_documents({}) == total
    consumed = [final_counters(path)[0] for path in logs]
    assert sum(consumed) == total
    assert all(count > 0 for count in consumed)


def test_relationships_subcommand_runs(
    consumer_env: Callable[..., ConsumerEnv], tmp_path: Path
) -> None:
    env = consumer_env()
    log_path = tmp_path / "relationships.log"
    process = start_console_script(
        env, ["relationships", "--group", env.group("cli-relationships")], log_path
    )
    try:
        wait_until(
            lambda: "partitions assigned" in log_path.read_text(), "the relationships consumer"
        )
    finally:
        status = stop(process)

    assert status == 0, log_path.read_text()
    assert "consumer started consumer=relationships" in log_path.read_text()


class FlakyHandler:
    """A handler whose index creation fails with ``error`` ``failures`` times."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.calls = 0

    def prepare(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error


def test_prepare_retries_transient_errors(consumer_env: Callable[..., ConsumerEnv]) -> None:
    handler = FlakyHandler(AutoReconnect("127.0.0.1:27017: connection refused"), 3)
    waits: list[float] = []

    ready = _prepare(handler, consumer_env().settings, sleep=waits.append)  # type: ignore[arg-type]

    assert ready is True
    assert handler.calls == 4
    assert len(waits) == 3


def test_prepare_gives_up_on_other_errors(consumer_env: Callable[..., ConsumerEnv]) -> None:
    handler = FlakyHandler(OperationFailure("not authorized", code=13), 1)

    ready = _prepare(handler, consumer_env().settings, sleep=lambda _: None)  # type: ignore[arg-type]

    assert ready is False
    assert handler.calls == 1


def test_stream_waits_for_mongodb_at_start(
    consumer_env: Callable[..., ConsumerEnv], tmp_path: Path
) -> None:
    env = consumer_env()
    host, port = env.mongo_uri.split("://", 1)[1].rstrip("/").split("/")[0].rsplit(":", 1)
    proxy = OutageProxy(host, int(port)).start()
    proxy.refuse()
    ends = publish_pages(env, 10)
    proxied = dataclasses.replace(env, mongo_uri=f"mongodb://{proxy.address}/")
    log_path = tmp_path / "stream.log"
    process = start_console_script(
        proxied, ["stream", "--group", env.group("startup"), "--batch-timeout", "0.2"], log_path
    )
    collection = env.database()[env.stream_collection]
    try:
        wait_until(
            lambda: (
                "creating the MongoDB indexes failed with a transient error" in log_path.read_text()
            ),
            "a retry of the index creation",
        )
        proxy.restore()
        wait_until(lambda: collection.count_documents({}) >= 10, "10 documents")
    finally:
        status = stop(process)
        proxy.close()

    assert status == 0, log_path.read_text()
    assert committed_offsets(env, env.group("startup"), env.topics.content) == ends
