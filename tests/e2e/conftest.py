"""Fixtures of the end-to-end tests: the emulator, the producer and the consumers together.

``e2e_run`` is a factory of ``E2ERun`` objects. Each has its own topic prefix (every topic
of the contract created, two partitions each), consumer group ids and MongoDB database,
all torn down at the end of the test. It runs the real console scripts as subprocesses:
``confluence-consumer`` in the background (``start_consumers``) and
``confluence-producer crawl`` (``crawl``), and waits until the consumer groups have lag 0
(``wait_caught_up``). ``start_site`` starts an emulator in this process, so a test can
read its model (``site.model``) for the expected result, and writes a sources file for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient

from connections.kafka import admin_config
from connections.settings import Settings, load_settings
from connections.topics import ensure_topics
from demo.lag import GroupTopics, wait_for_catch_up
from demo.processes import BackgroundProcess
from demo.run import consumer_topics
from emulator.app import ServerThread
from emulator.config import ServerOptions
from emulator.model import Site
from schemas.topics import Topics

# The console scripts installed beside the interpreter that runs the tests.
BIN = Path(sys.executable).parent

API_TOKEN = "e2e-token"
USER_EMAIL = "crawler@example.com"
SOURCE_ID = "e2e"
PARTITIONS = 2
# Upper bounds of the waits. They only guard against hangs, because a healthy run needs
# a few minutes at most, even on a loaded 2-core machine.
CATCH_UP_DEADLINE_SECONDS = 600.0
CRAWL_DEADLINE_SECONDS = 300.0
CONSUMERS = ("stream", "relationships", "job-history")


@dataclass
class EmulatorSite:
    """An emulator running in this process, with its model and a sources file for it."""

    server: ServerThread
    folder: Path

    @property
    def model(self) -> Site:
        return self.server.site

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call ``/_emulator{path}`` and return its JSON; fail the test on an error status."""
        response = requests.request(method, f"{self.origin}/_emulator{path}", json=body, timeout=30)
        assert response.status_code < 400, f"{method} {path}: {response.text[:500]}"
        return response.json()

    def write_sources(
        self,
        *,
        statuses: Sequence[str] = ("current", "archived"),
        include: Sequence[str] = (),
        **extra: Any,
    ) -> Path:
        """Write a sources file with source ``e2e`` for this emulator; return its path."""
        token_file = self.folder / "api-token"
        token_file.write_text(API_TOKEN + "\n", encoding="utf-8")
        token_file.chmod(0o600)
        settings = {"rate_limit": 1000.0, "burst": 100, "backoff_initial": 0.05, "backoff_max": 0.2}
        settings.update(extra)
        lines = [
            f"[sources.{SOURCE_ID}]",
            'deployment = "cloud"',
            f'base_url = "{self.origin}"',
            *(f"{key} = {_toml(value)}" for key, value in settings.items()),
            f"[sources.{SOURCE_ID}.auth]",
            'method = "basic"',
            f'username = "{USER_EMAIL}"',
            f'token_file = "{token_file}"',
            f"[sources.{SOURCE_ID}.spaces]",
            f"statuses = {_toml(list(statuses))}",
            f"include = {_toml(list(include))}",
        ]
        path = self.folder / "sources.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return str(value)


def launch_site(folder: Path, **overrides: Any) -> EmulatorSite:
    """Start an emulator with ``ServerOptions`` overrides; the caller stops ``site.server``."""
    values: dict[str, Any] = {
        "port": 0,
        "seed": 11,
        "pages": 20,
        "spaces": 2,
        "control": True,
        "api_token": API_TOKEN,
        "user_email": USER_EMAIL,
    }
    values.update(overrides)
    server = ServerThread(ServerOptions(**values)).start()
    folder.mkdir(parents=True, exist_ok=True)
    return EmulatorSite(server, folder)


@pytest.fixture
def start_site(tmp_path: Path) -> Iterator[Callable[..., EmulatorSite]]:
    """Return a function that starts an emulator with ``ServerOptions`` overrides."""
    sites: list[EmulatorSite] = []

    def start(**overrides: Any) -> EmulatorSite:
        site = launch_site(tmp_path / f"emulator-{len(sites) + 1}", **overrides)
        sites.append(site)
        return site

    yield start
    for site in sites:
        site.server.stop()


@dataclass
class E2ERun:
    """Topics, groups, database and processes of one end-to-end test."""

    run_id: str
    bootstrap: str
    mongo_uri: str
    folder: Path
    _clients: list[MongoClient[dict[str, Any]]] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"e2e-{self.run_id}"

    @property
    def database_name(self) -> str:
        return f"e2e_{self.run_id}"

    @property
    def topics(self) -> Topics:
        return Topics(prefix=self.prefix)

    @property
    def stream_collection(self) -> str:
        return f"source_{SOURCE_ID}_stream"

    def environ(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_TOPIC_PREFIX": self.prefix,
            "MONGODB_URI": self.mongo_uri,
            "MONGODB_DATABASE": self.database_name,
        }

    @property
    def settings(self) -> Settings:
        return load_settings(self.environ())

    def admin(self) -> AdminClient:
        return AdminClient(admin_config(self.settings, "e2e-admin"))

    def group(self, consumer: str) -> str:
        return f"e2e-{self.run_id}-{consumer}"

    def database(self) -> Any:
        client: MongoClient[dict[str, Any]] = MongoClient(self.mongo_uri, tz_aware=True)
        self._clients.append(client)
        return client[self.database_name]

    def process(self, consumer: str) -> BackgroundProcess:
        return BackgroundProcess(f"consumer-{consumer}", self.folder, "confluence-consumer")

    def start_consumers(self, *consumers: str, batch_size: int = 500) -> None:
        """Start ``confluence-consumer NAME`` for each name (default: all three)."""
        for consumer in consumers or CONSUMERS:
            command = [
                str(BIN / "confluence-consumer"),
                consumer,
                "--group",
                self.group(consumer),
                "--batch-timeout",
                "0.5",
                "--batch-size",
                str(batch_size),
            ]
            self.process(consumer).start(command, self.environ())

    def stop_consumers(self, *consumers: str) -> None:
        for consumer in consumers or CONSUMERS:
            self.process(consumer).stop()

    def crawl(self, sources: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run ``confluence-producer crawl --source e2e`` to its end and return the result."""
        return subprocess.run(
            [
                str(BIN / "confluence-producer"),
                "crawl",
                "--source",
                SOURCE_ID,
                "--sources",
                str(sources),
                "--no-progress",
                *arguments,
            ],
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=CRAWL_DEADLINE_SECONDS,
            check=False,
        )

    def start_crawl(self, sources: Path, *arguments: str) -> subprocess.Popen[bytes]:
        """Start a crawl in the background, for tests that kill it."""
        log_file = (self.folder / "crawl-background.log").open("ab")
        try:
            return subprocess.Popen(
                [
                    str(BIN / "confluence-producer"),
                    "crawl",
                    "--source",
                    SOURCE_ID,
                    "--sources",
                    str(sources),
                    "--no-progress",
                    *arguments,
                ],
                env=self.environ(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        finally:
            log_file.close()

    def crawl_log(self) -> str:
        """Return the output of the crawl started with ``start_crawl`` so far."""
        path = self.folder / "crawl-background.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def wait_caught_up(self, *consumers: str) -> None:
        """Wait until the groups of ``consumers`` (default: all) have lag 0 everywhere."""
        topics = consumer_topics(self.topics)
        names = consumers or CONSUMERS
        groups = [GroupTopics(self.group(name), topics[name]) for name in names]

        def dead_consumer() -> str | None:
            for name in names:
                process = self.process(name)
                if process.exited():
                    return f"consumer {name} exited; its log ends with:\n{process.log_tail()}"
            return None

        wait_for_catch_up(
            self.admin(), groups, CATCH_UP_DEADLINE_SECONDS, still_running=dead_consumer
        )

    def logs(self) -> str:
        """Return the tails of the consumer logs, for assertion messages."""
        return "\n".join(f"--- {name}\n{self.process(name).log_tail(10)}" for name in CONSUMERS)

    def create_topics(self) -> None:
        ensure_topics(
            self.admin(), self.topics.specs(), partitions=PARTITIONS, replication_factor=1
        )

    def close(self) -> None:
        self.stop_consumers()
        for opened in self._clients:
            opened.close()
        client: MongoClient[dict[str, Any]] = MongoClient(self.mongo_uri)
        try:
            client.drop_database(self.database_name)
        finally:
            client.close()
        names = [spec.name for spec in self.topics.specs()]
        # The client must stay referenced until the futures complete, or librdkafka
        # destroys its handle and fails them with _DESTROY.
        admin = self.admin()
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()


def new_run(bootstrap: str, mongo_uri: str, folder: Path) -> E2ERun:
    """Return an ``E2ERun`` with a fresh id and its topics created; the caller closes it."""
    folder.mkdir(parents=True, exist_ok=True)
    run = E2ERun(uuid.uuid4().hex[:10], bootstrap, mongo_uri, folder)
    run.create_topics()
    return run


@pytest.fixture
def e2e_run(kafka_bootstrap: str, mongo_uri: str, tmp_path: Path) -> Iterator[Callable[[], E2ERun]]:
    """Return a factory of ``E2ERun`` objects with their topics created."""
    created: list[E2ERun] = []

    def make() -> E2ERun:
        run = new_run(kafka_bootstrap, mongo_uri, tmp_path / f"run-{len(created) + 1}")
        created.append(run)
        return run

    yield make
    for run in created:
        run.close()
