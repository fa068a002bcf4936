"""Topic names and configs, and topic administration against the real broker."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from connections.topics import (
    BrokerUnreachableError,
    ensure_topics,
    fetch_topic_config,
    fetch_topic_states,
    main,
)
from schemas.catalogue import RecordType
from schemas.topics import MAX_MESSAGE_BYTES, Topics, validate_prefix

REPO = Path(__file__).resolve().parent.parent


# Names and configs


def test_default_topic_names() -> None:
    topics = Topics()

    assert topics.spaces == "confluence.spaces"
    assert topics.content == "confluence.content"
    assert topics.structure == "confluence.structure"
    assert topics.relationships == "confluence.relationships"
    assert topics.job_history == "confluence.job-history"
    assert Topics.dead_letter_for(topics.content) == "confluence.content.dlq"


def test_prefix_applies_to_every_topic() -> None:
    names = [spec.name for spec in Topics(prefix="wiki.prod").specs()]

    assert len(names) == 10
    assert len(set(names)) == 10
    for name in names:
        assert name.startswith("wiki.prod."), name


def test_every_topic_has_dead_letter_topic() -> None:
    specs = Topics().specs()
    data = {spec.name for spec in specs if not spec.dead_letter}
    dead_letter = {spec.name for spec in specs if spec.dead_letter}

    assert {Topics.dead_letter_for(name) for name in data} == dead_letter
    assert {spec.record_type for spec in specs if not spec.dead_letter} == set(RecordType)


def test_job_history_is_compacted() -> None:
    topics = Topics()
    spec = next(spec for spec in topics.specs() if spec.name == topics.job_history)

    assert spec.config["cleanup.policy"] == "compact"
    assert float(spec.config["min.cleanable.dirty.ratio"]) < 0.5
    assert int(spec.config["segment.ms"]) < 7 * 24 * 3600 * 1000
    assert "retention.ms" not in spec.config


def test_other_topics_delete_with_retention() -> None:
    topics = Topics(retention_ms=86_400_000)

    for spec in topics.specs():
        if spec.name == topics.job_history:
            continue
        assert spec.config["cleanup.policy"] == "delete", spec.name
        assert spec.config["retention.ms"] == "86400000", spec.name
        assert spec.config["max.message.bytes"] == str(MAX_MESSAGE_BYTES), spec.name


def test_default_retention_keeps_forever() -> None:
    spec = next(spec for spec in Topics().specs() if spec.record_type is RecordType.CONTENT)

    assert spec.config["retention.ms"] == "-1"


def test_min_insync_replicas_follows_replication() -> None:
    single = Topics(replication_factor=1).specs()[0]
    triple = Topics(replication_factor=3).specs()[0]

    assert single.config["min.insync.replicas"] == "1"
    assert triple.config["min.insync.replicas"] == "2"


def test_registry_subjects_use_topic_names() -> None:
    assert Topics().value_subject(RecordType.CONTENT) == "confluence.content-value"


@pytest.mark.parametrize("prefix", ["", "wiki/prod", "wiki prod", "x" * 240])
def test_invalid_prefix_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid topic prefix"):
        validate_prefix(prefix)


def test_invalid_retention_rejected() -> None:
    with pytest.raises(ValueError, match="invalid retention 0 ms"):
        Topics(retention_ms=0)


# Command line without a broker


def test_unreachable_broker_one_line_error(unused_tcp_port: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "connections.topics", "create", "--timeout", "2"],
        cwd=REPO,
        env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{unused_tcp_port}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"confluence-topics: cannot reach Kafka at 127.0.0.1:{unused_tcp_port}"
    )
    assert "KAFKA_BOOTSTRAP_SERVERS" in lines[0]
    assert result.stdout == ""


def test_invalid_settings_reported(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_TOPIC_PARTITIONS", "many")

    status = main(["describe"])

    assert status == 1
    assert "KAFKA_TOPIC_PARTITIONS='many' is invalid" in capsys.readouterr().err


def test_bad_partitions_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["create", "--partitions", "0"])

    assert caught.value.code == 2
    assert "--partitions must be at least 1, got 0" in capsys.readouterr().err


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Against the real broker


@pytest.fixture
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def topics(admin: AdminClient) -> Iterator[Topics]:
    topics = Topics(prefix=f"test-topics-{uuid.uuid4().hex[:10]}")
    yield topics
    names = [
        name
        for name in admin.list_topics(timeout=30).topics
        if name.startswith(topics.prefix + ".")
    ]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()


def test_create_is_idempotent(admin: AdminClient, topics: Topics) -> None:
    first = ensure_topics(admin, topics.specs(), partitions=2, replication_factor=1)
    second = ensure_topics(admin, topics.specs(), partitions=2, replication_factor=1)

    assert [action.action for action in first] == ["created"] * 10
    assert [action.action for action in second] == ["unchanged"] * 10
    states = fetch_topic_states(admin, [spec.name for spec in topics.specs()])
    for spec in topics.specs():
        state = states[spec.name]
        assert state.partitions == 2, spec.name
        assert state.replication_factor == 1, spec.name
        for key, value in spec.config.items():
            assert state.config[key] == value, (spec.name, key)


def test_config_drift_is_altered(admin: AdminClient, topics: Topics) -> None:
    ensure_topics(admin, topics.specs(), partitions=1, replication_factor=1)
    drifted = Topics(prefix=topics.prefix, retention_ms=3_600_000)

    planned = ensure_topics(
        admin, drifted.specs(), partitions=1, replication_factor=1, dry_run=True
    )
    applied = ensure_topics(admin, drifted.specs(), partitions=1, replication_factor=1)

    content = {action.topic: action for action in applied}[topics.content]
    assert content.action == "altered"
    assert "retention.ms: -1 -> 3600000" in content.details
    assert {action.topic: action.action for action in planned}[topics.content] == "would-altered"
    assert {action.topic: action.action for action in applied}[topics.job_history] == "unchanged"
    assert fetch_topic_config(admin, topics.content)["retention.ms"] == "3600000"


def test_partitions_never_shrink(admin: AdminClient, topics: Topics) -> None:
    ensure_topics(admin, topics.specs(), partitions=2, replication_factor=1)

    fewer = ensure_topics(admin, topics.specs(), partitions=1, replication_factor=1)
    more = ensure_topics(admin, topics.specs(), partitions=3, replication_factor=1)
    grown = ensure_topics(
        admin, topics.specs(), partitions=3, replication_factor=1, increase_partitions=True
    )

    assert all(action.action == "unchanged" for action in fewer)
    assert any("partitions are never removed" in " ".join(a.details) for a in fewer)
    assert all(action.action == "unchanged" for action in more)
    assert any("--increase-partitions" in " ".join(a.details) for a in more)
    assert all(action.action == "partitions-increased" for action in grown)
    states = fetch_topic_states(admin, [topics.spaces])
    assert states[topics.spaces].partitions == 3


def test_cli_create_then_describe(
    kafka_bootstrap: str,
    topics: Topics,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)

    missing_status = main(["describe", "--prefix", topics.prefix])
    missing_output = capsys.readouterr()
    create_status = main(["create", "--prefix", topics.prefix, "--partitions", "1"])
    create_output = capsys.readouterr()
    describe_status = main(["describe", "--prefix", topics.prefix])
    describe_output = capsys.readouterr()

    assert missing_status == 1
    assert "10 topics are missing" in missing_output.err
    assert create_status == 0
    assert f"created {topics.job_history} partitions=1 replication_factor=1" in create_output.out
    assert describe_status == 0
    job_line = next(
        line
        for line in describe_output.out.splitlines()
        if line.startswith(f"exists {topics.job_history} ")
    )
    assert "cleanup.policy=compact" in job_line


def test_unreachable_broker_raises() -> None:
    admin = AdminClient({"bootstrap.servers": "127.0.0.1:9", "logger": _silent_logger()})

    with pytest.raises(BrokerUnreachableError, match="within 1 s"):
        fetch_topic_states(admin, ["any"], timeout=1)


def _silent_logger() -> object:
    import logging

    logger = logging.getLogger("tests.topics.librdkafka")
    logger.setLevel(logging.CRITICAL)
    return logger
