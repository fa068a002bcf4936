"""Tests of the local service launchers (`python -m infra`) and the service fixtures.

Launcher tests that start servers use their own ports and their own services folder
(LOCAL_SERVICES_DIR), so the shared services on the default ports keep running. They
reuse the shared Kafka jars and FerretDB binary through hard links instead of
downloading and building them again.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import ferretdb, kafka
from infra.process import (
    ManagedProcess,
    ServiceError,
    ServiceStatus,
    exclusive_lock,
    port_from_env,
    services_root,
)
from tests.conftest import in_ci

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_SECONDS = 300


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cli_environment(services_dir: Path, **overrides: str) -> dict[str, str]:
    """Return an environment for the CLI with its own services folder and ports."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("LOCAL_") and name != "JAVA_HOME"
    }
    env["LOCAL_SERVICES_DIR"] = str(services_dir)
    env["LOCAL_KAFKA_PORT"] = str(free_port())
    env["LOCAL_KAFKA_CONTROLLER_PORT"] = str(free_port())
    env["LOCAL_MONGO_PORT"] = str(free_port())
    env.update(overrides)
    return env


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra", "--quiet", *args],
        cwd=REPOSITORY_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


def directory_with_links(tmp_path: Path, **programs: str) -> Path:
    """Return a folder for PATH that contains only symbolic links to the given programs."""
    bin_dir = tmp_path / "path-bin"
    bin_dir.mkdir()
    for name, target in programs.items():
        (bin_dir / name).symlink_to(target)
    return bin_dir


def shared_cache_unavailable(error: ServiceError) -> None:
    reason = f"the shared service cache could not be prepared: {error}"
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def shared_kafka_lib() -> Path:
    """Return the shared Kafka jar folder, downloading the jars if needed."""
    settings = kafka.KafkaSettings(root=services_root() / "kafka")
    try:
        with exclusive_lock(settings.root / ".lock"):
            kafka.fetch_jars(settings)
    except ServiceError as error:
        shared_cache_unavailable(error)
    return settings.lib_dir


@pytest.fixture(scope="module")
def shared_ferretdb_bin() -> Path:
    """Return the shared folder of the FerretDB binary, building it if needed."""
    settings = ferretdb.FerretDBSettings(root=services_root() / "ferretdb")
    try:
        with exclusive_lock(settings.root / ".lock"):
            ferretdb.build_binary(settings)
    except ServiceError as error:
        shared_cache_unavailable(error)
    return settings.binary.parent


def link_tree(source: Path, target: Path) -> None:
    """Copy a folder as hard links, which is instant and leaves the source untouched."""
    shutil.copytree(source, target, copy_function=os.link)


# Pure functions


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "11.0.2" 2019-01-15', 11),
        ("no version here", None),
    ],
)
def test_parse_java_version(output: str, expected: int | None) -> None:
    assert kafka.parse_java_version(output) == expected


def test_cluster_id_format() -> None:
    first = kafka.new_cluster_id()
    second = kafka.new_cluster_id()

    assert len(first) == 22
    assert len(base64.urlsafe_b64decode(first + "==")) == 16
    assert first != second


def test_cluster_id_never_starts_with_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xf8 encodes to "-" as the first base64url character, so the first draw is rejected.
    draws = iter([b"\xf8" + bytes(15), bytes(16)])
    monkeypatch.setattr(secrets, "token_bytes", lambda size: next(draws))

    assert kafka.new_cluster_id() == "A" * 22


def test_server_properties_settings(tmp_path: Path) -> None:
    settings = kafka.KafkaSettings(root=tmp_path, port=19092, controller_port=19093)
    properties = dict(
        line.split("=", 1) for line in kafka.render_server_properties(settings).splitlines()
    )

    assert properties["process.roles"] == "broker,controller"
    assert properties["listeners"] == ("PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093")
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert properties["auto.create.topics.enable"] == "false"
    assert int(properties["log.cleaner.backoff.ms"]) <= 1000
    assert properties["log.dirs"] == str(tmp_path / "data")


def test_port_from_env_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_MONGO_PORT", "70000")

    with pytest.raises(ServiceError, match="LOCAL_MONGO_PORT"):
        port_from_env("LOCAL_MONGO_PORT", 27017)


def test_port_from_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_MONGO_PORT", raising=False)

    assert port_from_env("LOCAL_MONGO_PORT", 27017) == 27017


def test_status_line_wording() -> None:
    assert ServiceStatus("kafka", False, "127.0.0.1:1", port_answers=False).describe() == (
        "kafka: stopped"
    )
    assert "another program" in ServiceStatus("kafka", False, "127.0.0.1:1").describe()
    assert ServiceStatus("mongo", True, "mongodb://x/", 7, started=True).describe() == (
        "mongo: started at mongodb://x/ (pid 7)"
    )


# Process handling, with small Python programs standing in for the servers


def python_program(code: str, marker: str) -> list[str]:
    """Return argv that runs `code`, with `marker` as an argument so `is_ours` can match it."""
    return [sys.executable, "-c", code, marker]


def test_spawn_and_stop(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    process = ManagedProcess("sleeper", tmp_path / "sleeper.pid", tmp_path / "sleeper.log", marker)

    pid = process.spawn(
        python_program("print('ready', flush=True); import time; time.sleep(60)", marker)
    )

    assert process.running_pid() == pid
    assert process.stop(timeout=30) == pid
    assert process.running_pid() is None
    assert not process.pid_file.exists()
    assert "sleeper" in process.log_file.read_text()


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    process = ManagedProcess(
        "stubborn", tmp_path / "stubborn.pid", tmp_path / "stubborn.log", marker
    )
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open(__import__('sys').argv[1] + '.ready', 'w').close()\n"
        "time.sleep(60)\n"
    )
    pid = process.spawn(python_program(code, marker))
    ready_file = Path(marker + ".ready")
    for _ in range(300):
        if ready_file.exists():
            break
        time.sleep(0.05)
    assert ready_file.exists()

    assert process.stop(timeout=0.5) == pid
    assert not process.is_ours(pid)
    assert not process.pid_file.exists()


def test_stale_pid_file_removed(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    process = ManagedProcess("exited", tmp_path / "exited.pid", tmp_path / "exited.log", marker)
    pid = process.spawn(python_program("pass", marker))
    for _ in range(300):
        if not process.is_ours(pid):
            break
        time.sleep(0.05)

    assert process.running_pid() is None
    assert process.remove_stale_pid_file()
    assert not process.pid_file.exists()


# Expected failures of the CLI: one line on stderr, exit code 1, no traceback


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("service", "port_env"),
    [
        ("kafka", "LOCAL_KAFKA_PORT"),
        ("kafka", "LOCAL_KAFKA_CONTROLLER_PORT"),
        ("mongo", "LOCAL_MONGO_PORT"),
    ],
)
def test_up_port_in_use(tmp_path: Path, service: str, port_env: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        env = cli_environment(tmp_path / "services", **{port_env: str(port)})

        result = run_cli(env, "up", service)

    assert_one_line_error(result, f"port {port}", "already in use", port_env)


def test_up_invalid_port_env(tmp_path: Path) -> None:
    env = cli_environment(tmp_path / "services", LOCAL_MONGO_PORT="abc")

    result = run_cli(env, "up", "mongo")

    assert_one_line_error(result, "invalid port 'abc'", "LOCAL_MONGO_PORT")


def test_up_same_kafka_ports(tmp_path: Path) -> None:
    port = str(free_port())
    env = cli_environment(
        tmp_path / "services", LOCAL_KAFKA_PORT=port, LOCAL_KAFKA_CONTROLLER_PORT=port
    )

    result = run_cli(env, "up", "kafka")

    assert_one_line_error(result, "two different ports")


def test_up_without_java(tmp_path: Path) -> None:
    empty_bin = directory_with_links(tmp_path)
    env = cli_environment(tmp_path / "services", PATH=str(empty_bin))

    result = run_cli(env, "up", "kafka")

    assert_one_line_error(result, "java not found on PATH", "Java 17")


def test_up_with_old_java(tmp_path: Path) -> None:
    bin_dir = directory_with_links(tmp_path)
    fake_java = bin_dir / "java"
    fake_java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake_java.chmod(0o755)
    env = cli_environment(tmp_path / "services", PATH=str(bin_dir))

    result = run_cli(env, "up", "kafka")

    assert_one_line_error(result, "Java 11", "Java 17 or newer")


def test_up_without_maven(tmp_path: Path) -> None:
    java = shutil.which("java")
    if java is None:
        pytest.skip("java is not installed, so the check for mvn is never reached")
    bin_dir = directory_with_links(tmp_path, java=java)
    env = cli_environment(tmp_path / "services", PATH=str(bin_dir))

    result = run_cli(env, "up", "kafka")

    assert_one_line_error(result, "mvn not found on PATH", "Maven")


def test_up_without_go(tmp_path: Path) -> None:
    empty_bin = directory_with_links(tmp_path)
    env = cli_environment(tmp_path / "services", PATH=str(empty_bin))

    result = run_cli(env, "up", "mongo")

    assert_one_line_error(result, "go not found on PATH", "Go 1.24")


def test_down_leaves_foreign_process(tmp_path: Path) -> None:
    services_dir = tmp_path / "services"
    pid_file = services_dir / "kafka" / "broker.pid"
    pid_file.parent.mkdir(parents=True)
    foreign = subprocess.Popen(["sleep", "60"])
    try:
        pid_file.write_text(f"{foreign.pid}\n")

        down = run_cli(cli_environment(services_dir), "down", "kafka")
        status = run_cli(cli_environment(services_dir), "status", "kafka")

        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == "kafka: not running"
        assert foreign.poll() is None
        assert not pid_file.exists()
        assert status.stdout.strip() == "kafka: stopped"
    finally:
        foreign.kill()
        foreign.wait()


@pytest.mark.integration
def test_kafka_exit_reported(tmp_path: Path, shared_kafka_lib: Path) -> None:
    services_dir = tmp_path / "services"
    link_tree(shared_kafka_lib, services_dir / "kafka" / "lib")
    # Storage formatted for another node makes the broker exit right after it starts.
    data_dir = services_dir / "kafka" / "data"
    data_dir.mkdir()
    (data_dir / "meta.properties").write_text(
        "version=1\nnode.id=7\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\n"
        "directory.id=AAAAAAAAAAAAAAAAAAAAAQ\n"
    )
    env = cli_environment(services_dir)

    result = run_cli(env, "up", "kafka")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    first_line = result.stderr.splitlines()[0]
    assert "Kafka broker exited during start-up" in first_line
    assert str(services_dir / "kafka" / "broker.log") in first_line
    assert "Stored node id 7" in result.stderr
    assert not (services_dir / "kafka" / "broker.pid").exists()


@pytest.mark.integration
def test_ferretdb_exit_reported(tmp_path: Path, shared_ferretdb_bin: Path) -> None:
    services_dir = tmp_path / "services"
    link_tree(shared_ferretdb_bin, services_dir / "ferretdb" / "bin")
    # A file where the data folder belongs makes the server exit at start-up.
    (services_dir / "ferretdb" / "data").write_text("not a folder\n")
    env = cli_environment(services_dir)

    result = run_cli(env, "up", "mongo")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    first_line = result.stderr.splitlines()[0]
    assert "FerretDB exited during start-up" in first_line
    assert str(services_dir / "ferretdb" / "ferretdb.log") in first_line
    assert "cannot create data directory" in result.stderr
    assert not (services_dir / "ferretdb" / "ferretdb.pid").exists()


# Full lifecycle on separate ports


@pytest.fixture
def private_services(
    tmp_path: Path, shared_kafka_lib: Path, shared_ferretdb_bin: Path
) -> Iterator[dict[str, str]]:
    """Return the CLI environment of a second set of services, stopped again afterwards."""
    services_dir = tmp_path / "services"
    link_tree(shared_kafka_lib, services_dir / "kafka" / "lib")
    link_tree(shared_ferretdb_bin, services_dir / "ferretdb" / "bin")
    env = cli_environment(services_dir)
    try:
        yield env
    finally:
        run_cli(env, "down")


@pytest.mark.integration
def test_lifecycle_up_status_down(private_services: dict[str, str]) -> None:
    env = private_services
    bootstrap = f"127.0.0.1:{env['LOCAL_KAFKA_PORT']}"
    uri = f"mongodb://127.0.0.1:{env['LOCAL_MONGO_PORT']}/"

    first_up = run_cli(env, "up")
    assert first_up.returncode == 0, first_up.stderr
    first_lines = first_up.stdout.splitlines()
    assert first_lines[0].startswith(f"kafka: started at {bootstrap} (pid ")
    assert first_lines[1].startswith(f"mongo: started at {uri} (pid ")

    second_up = run_cli(env, "up")
    assert second_up.returncode == 0, second_up.stderr
    second_lines = second_up.stdout.splitlines()
    assert second_lines[0] == first_lines[0].replace("started", "already running")
    assert second_lines[1] == first_lines[1].replace("started", "already running")

    moved = {**env, "LOCAL_KAFKA_PORT": str(free_port()), "LOCAL_MONGO_PORT": str(free_port())}
    moved_up = run_cli(moved, "up")
    assert moved_up.returncode == 1
    assert "Traceback" not in moved_up.stderr
    assert "kafka: error: a Kafka broker" in moved_up.stderr
    assert "mongo: error: FerretDB" in moved_up.stderr
    assert moved["LOCAL_KAFKA_PORT"] in moved_up.stderr

    status = run_cli(env, "status")
    assert status.stdout.splitlines() == [
        line.replace("started", "running") for line in first_lines
    ]

    first_down = run_cli(env, "down")
    assert first_down.returncode == 0, first_down.stderr
    assert first_down.stdout.splitlines()[0].startswith("kafka: stopped (pid ")
    assert first_down.stdout.splitlines()[1].startswith("mongo: stopped (pid ")

    second_down = run_cli(env, "down")
    assert second_down.returncode == 0, second_down.stderr
    assert second_down.stdout.splitlines() == ["kafka: not running", "mongo: not running"]

    stopped = run_cli(env, "status")
    assert stopped.stdout.splitlines() == ["kafka: stopped", "mongo: stopped"]


# The fixtures, through the real services


def test_kafka_fixture_round_trip(kafka_bootstrap: str) -> None:
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    topic = f"test-infra-{uuid.uuid4().hex}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(topic, key=b"key", value=b"value")
        assert producer.flush(30) == 0

        consumer = Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": topic,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            consumer.subscribe([topic])
            message = None
            for _ in range(60):
                message = consumer.poll(1.0)
                if message is not None and message.error() is None:
                    break
            assert message is not None
            assert message.error() is None
            assert message.key() == b"key"
            assert message.value() == b"value"
        finally:
            consumer.close()

        # Topics are never created implicitly, so a produce to an unknown topic fails.
        errors: list[KafkaError | None] = []
        unknown = f"{topic}-unknown"
        strict_producer = Producer(
            {"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 5000}
        )
        strict_producer.produce(unknown, value=b"x", on_delivery=lambda e, _m: errors.append(e))
        strict_producer.flush(30)
        assert len(errors) == 1
        assert errors[0] is not None
        assert unknown not in admin.list_topics(timeout=10).topics
    finally:
        with contextlib.suppress(KafkaException):
            admin.delete_topics([topic])[topic].result(30)


def test_mongo_fixture_round_trip(mongo_uri: str) -> None:
    from pymongo import MongoClient

    database_name = f"test_infra_{uuid.uuid4().hex[:12]}"
    client: MongoClient[dict[str, object]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=10000)
    try:
        assert client.admin.command("ping")["ok"] == 1.0
        collection = client[database_name]["documents"]
        collection.update_one({"_id": "a"}, {"$set": {"version": 1}}, upsert=True)
        collection.update_one({"_id": "a"}, {"$set": {"version": 2}}, upsert=True)

        assert collection.find_one({"_id": "a"}) == {"_id": "a", "version": 2}
        assert collection.count_documents({}) == 1
    finally:
        client.drop_database(database_name)
        client.close()
