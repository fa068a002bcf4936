"""Structure checks of docker-compose.yml, the Dockerfile and .dockerignore.

No Docker engine is needed: the files are parsed and compared with the project's
console scripts, settings and command-line parsers.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from connections.settings import load_settings, variable_names
from connections.topics import build_parser as topics_parser
from emulator.cli import build_parser as emulator_parser
from producer.cli import build_parser as producer_parser
from producer.config import SourceConfig, load_sources, select_source
from producer.secrets import load_credentials

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
DOCKERFILE = (REPO / "Dockerfile").read_text()

APP_SERVICES = ("topics", "emulator", "producer", "stream-writer", "relationships", "job-history")
CONSUMERS = {
    "stream-writer": "stream",
    "relationships": "relationships",
    "job-history": "job-history",
}
SETTINGS_PREFIXES = ("KAFKA_", "MONGODB_", "SCHEMA_REGISTRY_")


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: use the mapping form of environment"
    return {str(name): str(value) for name, value in env.items()}


def test_expected_services() -> None:
    assert set(SERVICES) == {"mongodb", "kafka", *APP_SERVICES}


def test_infrastructure_images() -> None:
    assert SERVICES["mongodb"]["image"] == "mongo:7"
    assert re.fullmatch(r"apache/kafka:4\.[0-9]+\.[0-9]+", SERVICES["kafka"]["image"])


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_build_dockerfile(service: str) -> None:
    build = SERVICES[service]["build"]

    assert build["context"] == "."
    assert (REPO / build["dockerfile"]).is_file()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_ports_bind_loopback(service: str) -> None:
    for port in SERVICES[service].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"{service} publishes {port}"


def test_published_ports() -> None:
    assert SERVICES["mongodb"]["ports"] == ["127.0.0.1:27017:27017"]
    assert SERVICES["kafka"]["ports"] == ["127.0.0.1:9092:9092"]
    assert SERVICES["emulator"]["ports"] == ["127.0.0.1:8090:8090"]


def test_kafka_kraft_without_auto_creation() -> None:
    env = environment("kafka")

    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "INTERNAL://kafka:19092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "HOST://127.0.0.1:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


@pytest.mark.parametrize("service", ["topics", "producer", *CONSUMERS])
def test_settings_variables_known_and_valid(service: str) -> None:
    env = environment(service)
    ours = {name: value for name, value in env.items() if name.startswith(SETTINGS_PREFIXES)}

    unknown = set(ours) - set(variable_names())
    assert not unknown, f"{service} sets variables the settings do not read: {unknown}"
    assert ours["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    settings = load_settings(ours)
    assert settings.kafka.topic_prefix == "confluence"


@pytest.mark.parametrize("service", list(CONSUMERS))
def test_mongodb_settings_point_at_service(service: str) -> None:
    settings = load_settings(
        {name: value for name, value in environment(service).items() if name.startswith("MONGODB_")}
    )

    assert settings.mongodb.uri.get_secret_value() == "mongodb://mongodb:27017"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_commands_are_console_scripts(service: str) -> None:
    command = SERVICES[service]["command"]

    assert isinstance(command, list), f"{service}: use the exec form of command"
    assert command[0] in SCRIPTS


def test_consumer_commands() -> None:
    for service, subcommand in CONSUMERS.items():
        assert SERVICES[service]["command"] == ["confluence-consumer", subcommand]


def test_topics_command_parses() -> None:
    command = SERVICES["topics"]["command"]

    args = topics_parser().parse_args(command[1:])

    assert command[0] == "confluence-topics"
    assert args.command == "create"


def test_emulator_command_parses() -> None:
    command = SERVICES["emulator"]["command"]

    args = emulator_parser().parse_args(command[1:])

    assert command[0] == "confluence-emulator"
    assert args.command == "serve"
    assert args.host == "0.0.0.0"
    assert args.port == 8090


def producer_source() -> tuple[Path, SourceConfig]:
    """Return the host path of the producer's mounted sources file and its source."""
    args = producer_parser().parse_args(SERVICES["producer"]["command"][1:])
    mounts = {}
    for volume in SERVICES["producer"]["volumes"]:
        host, container, *_ = str(volume).split(":")
        mounts[container] = REPO / host
    assert str(args.sources) in mounts, f"--sources {args.sources} is not a mounted file"
    host_path = mounts[str(args.sources)]
    return host_path, select_source(load_sources(host_path), args.source)


def emulator_serve_args() -> Any:
    return emulator_parser().parse_args(SERVICES["emulator"]["command"][1:])


def test_producer_command_parses() -> None:
    command = SERVICES["producer"]["command"]

    args = producer_parser().parse_args(command[1:])

    assert command[0] == "confluence-producer"
    assert args.command == "crawl"
    assert args.source == "emulator"
    assert str(args.sources) == "/etc/confluence-stream/sources.toml"


def test_producer_sources_file_mounted_read_only() -> None:
    host_path, _ = producer_source()
    volumes = [str(volume) for volume in SERVICES["producer"]["volumes"]]

    assert host_path.is_file()
    assert host_path == REPO / "examples" / "compose-sources.toml"
    assert all(volume.endswith(":ro") for volume in volumes)


def test_producer_source_points_at_emulator() -> None:
    _, source = producer_source()
    serve = emulator_serve_args()

    assert source.deployment == "cloud"
    # The producer shares the emulator's network namespace, so loopback reaches it.
    assert SERVICES["producer"]["network_mode"] == "service:emulator"
    assert source.base_url == f"http://127.0.0.1:{serve.port}"
    assert source.auth.method == "basic"
    assert source.auth.username == serve.user_email


def test_producer_environment_holds_named_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    _, source = producer_source()
    env = environment("producer")
    assert source.auth.token is not None
    assert source.auth.token.env is not None, "the compose source names its token by variable"
    assert source.auth.token.env in env
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    credentials = load_credentials(source.auth, where="sources.emulator.auth")

    assert credentials.token is not None
    assert credentials.token.reveal() == emulator_serve_args().api_token
    assert credentials.username == emulator_serve_args().user_email


def test_producer_sets_no_unread_confluence_variables() -> None:
    _, source = producer_source()
    named = {ref.env for ref in (source.auth.token,) if ref is not None and ref.env}
    unread = {
        name
        for name in environment("producer")
        if not name.startswith(SETTINGS_PREFIXES) and name not in named
    }

    assert not unread, f"the producer reads none of {sorted(unread)}"


def test_producer_under_crawl_profile() -> None:
    producer = SERVICES["producer"]

    assert producer["profiles"] == ["crawl"]
    assert producer["restart"] == "no"
    assert producer["command"][0] == "confluence-producer"


def test_healthchecks_present() -> None:
    for service in ("mongodb", "kafka", "emulator"):
        test = SERVICES[service]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), service


def test_dependency_conditions() -> None:
    assert SERVICES["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    for service in CONSUMERS:
        depends_on = SERVICES[service]["depends_on"]
        assert depends_on["topics"] == {"condition": "service_completed_successfully"}, service
        assert depends_on["mongodb"] == {"condition": "service_healthy"}, service
    producer = SERVICES["producer"]["depends_on"]
    assert producer["emulator"] == {"condition": "service_healthy"}
    assert producer["topics"] == {"condition": "service_completed_successfully"}


def test_dockerfile_base_and_install() -> None:
    from_lines = re.findall(r"^FROM (\S+)", DOCKERFILE, flags=re.MULTILINE)

    assert from_lines
    assert all(image == "python:3.11-slim" for image in from_lines)
    assert re.search(r"pip install --constraint constraints\.txt \.$", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^USER app$", DOCKERFILE, re.MULTILINE)


def test_dockerfile_copies_every_package() -> None:
    copied = set(re.findall(r"^COPY (\S+)/ \1/$", DOCKERFILE, flags=re.MULTILINE))
    included = {
        pattern.rstrip("*")
        for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }

    assert copied == included
    for package in copied:
        assert (REPO / package / "__init__.py").is_file(), package


def test_dockerfile_copy_sources_exist() -> None:
    for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE, flags=re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert (REPO / source).exists(), source


def test_dockerfile_installs_entry_points() -> None:
    # The image runs "pip install ." so every console script of pyproject.toml is on PATH;
    # each must point at a module the image copies.
    for script, target in SCRIPTS.items():
        module = target.split(":", 1)[0]
        package = module.split(".", 1)[0]
        assert f"COPY {package}/ {package}/" in DOCKERFILE, script
        assert (REPO / Path(*module.split("."))).with_suffix(".py").is_file(), script


def test_dockerignore_excludes_local_state() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }

    assert {".git", ".venv", ".services", "tests"} <= ignored
