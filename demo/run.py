"""Orchestration of ``python -m demo up`` and ``python -m demo down``.

Every run gets a fresh topic prefix (``demo-{run id}``), consumer group ids and MongoDB
database (``demo_{run id}``), so a second ``make demo`` never reads the records of the
first. Before it starts, ``up`` stops the processes of the previous run and deletes that
run's topics and database, so repeated runs leave one run's data behind, not many.
The run's settings are kept in ``.services/demo/run.json``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from pymongo import MongoClient

from connections.kafka import admin_config
from connections.settings import load_settings
from demo import summary
from demo.changes import ControlClient, apply_changes, plan_changes
from demo.lag import CatchUpTimeout, ConsumerStopped, GroupTopics, wait_for_catch_up
from demo.processes import BackgroundProcess
from infra import ferretdb, kafka
from schemas.topics import Topics

log = logging.getLogger(__name__)

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = REPOSITORY_ROOT / ".services" / "demo"
BIN = Path(sys.executable).parent
SOURCE_ID = "demo"
USER_EMAIL = "demo@example.com"
CONSUMERS = ("stream", "relationships", "job-history")
EMULATOR_READY_TIMEOUT_SECONDS = 300.0


class DemoError(Exception):
    """A step of the demo failed; the message names the step and the fix."""


@dataclass
class RunState:
    """The settings of one demo run, kept in ``run.json``."""

    run_id: str
    topic_prefix: str
    database: str
    bootstrap: str
    mongo_uri: str
    emulator_port: int
    started_services: list[str] = field(default_factory=list)

    def group(self, consumer: str) -> str:
        return f"demo-{self.run_id}-{consumer}"

    def environ(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_TOPIC_PREFIX": self.topic_prefix,
            "MONGODB_URI": self.mongo_uri,
            "MONGODB_DATABASE": self.database,
        }

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"


@dataclass(frozen=True)
class SiteOptions:
    """The emulated site: generated, or imported from an HTML corpus when ``corpus`` is set."""

    pages: int = 2000
    spaces: int = 5
    seed: int = 1
    corpus: Path | None = None
    port: int = 0
    # Keys of the spaces to crawl; empty crawls every space.
    space_keys: tuple[str, ...] = ()


def state_file(folder: Path) -> Path:
    return folder / "run.json"


def load_state(folder: Path) -> RunState | None:
    try:
        data = json.loads(state_file(folder).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return RunState(**data)


def save_state(folder: Path, state: RunState) -> None:
    state_file(folder).write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")


def emulator_process(folder: Path) -> BackgroundProcess:
    return BackgroundProcess("emulator", folder, "confluence-emulator")


def consumer_process(folder: Path, consumer: str) -> BackgroundProcess:
    return BackgroundProcess(f"consumer-{consumer}", folder, "confluence-consumer")


def consumer_topics(topics: Topics) -> dict[str, tuple[str, ...]]:
    """Return the topics each consumer reads, as ``confluence-consumer`` subscribes them."""
    return {
        "stream": (topics.spaces, topics.content, topics.relationships),
        "relationships": (topics.content, topics.structure),
        "job-history": (topics.job_history,),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def say(text: str = "") -> None:
    print(text, flush=True)


# Services


def start_services() -> tuple[str, str, list[str]]:
    """Run ``python -m infra up``; return the Kafka and MongoDB addresses and what it started."""
    before = {"kafka": kafka.status().running, "mongo": ferretdb.status().running}
    say("== Starting Kafka and FerretDB (python -m infra up)")
    result = subprocess.run([sys.executable, "-m", "infra", "up"], cwd=REPOSITORY_ROOT, check=False)
    if result.returncode != 0:
        raise DemoError(
            f"`python -m infra up` exited with status {result.returncode}; read its message "
            "above, fix the cause and run `make demo` again"
        )
    kafka_status, mongo_status = kafka.status(), ferretdb.status()
    started = [name for name, running in before.items() if not running]
    return kafka_status.address, mongo_status.address, started


def remove_previous_run(previous: RunState) -> None:
    """Delete the topics and the database of the previous run."""
    environ = previous.environ()
    settings = load_settings(environ)
    admin = AdminClient(admin_config(settings, "demo-cleanup"))
    names = [spec.name for spec in Topics(prefix=previous.topic_prefix).specs()]
    existing = set(admin.list_topics(timeout=30).topics)
    doomed = [name for name in names if name in existing]
    if doomed:
        for name, future in admin.delete_topics(doomed, operation_timeout=30).items():
            try:
                future.result()
            except Exception as error:  # confluent-kafka raises KafkaException with any code.
                log.warning("deleting topic failed topic=%s error=%s", name, error)
    client: MongoClient[dict[str, Any]] = MongoClient(previous.mongo_uri)
    try:
        client.drop_database(previous.database)
    finally:
        client.close()
    say(
        f"removed the previous run's topics ({previous.topic_prefix}.*) and database "
        f"{previous.database}"
    )


def stop_processes(folder: Path) -> list[str]:
    """Stop the consumers, then the emulator, through their pid files; return what ran."""
    stopped: list[str] = []
    for process in [
        *(consumer_process(folder, name) for name in CONSUMERS),
        emulator_process(folder),
    ]:
        if process.stop():
            stopped.append(process.name)
    return stopped


# Emulator and consumers


def start_emulator(folder: Path, state: RunState, site: SiteOptions, token: str) -> None:
    command = [
        str(BIN / "confluence-emulator"),
        "serve",
        "--port",
        str(state.emulator_port),
        "--control",
        "--user-email",
        USER_EMAIL,
        # Passed as one argument with "=" because token_urlsafe can return a token that
        # starts with "-", which argparse would read as an option.
        f"--api-token={token}",
    ]
    if site.corpus is not None:
        command += ["--site", "corpus", "--corpus", str(site.corpus)]
    else:
        command += [
            "--pages",
            str(site.pages),
            "--spaces",
            str(site.spaces),
            "--seed",
            str(site.seed),
        ]
    process = emulator_process(folder)
    process.start(command, os.environ)
    control = ControlClient(state.origin)
    deadline = time.monotonic() + EMULATOR_READY_TIMEOUT_SECONDS
    try:
        while True:
            try:
                described = control.site()
                break
            except (OSError, ValueError) as error:
                last_error = error
            if process.exited():
                raise DemoError(
                    f"the emulator exited during start-up; its log {process.log_file} ends "
                    f"with:\n{process.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the emulator did not respond at {state.origin} within "
                    f"{EMULATOR_READY_TIMEOUT_SECONDS:.0f} s ({last_error}); read "
                    f"{process.log_file}"
                )
            time.sleep(0.5)
    finally:
        control.close()
    counts = described["counts"]
    kinds = ", ".join(f"{kind}={counts[kind]}" for kind in sorted(counts) if ":" not in kind)
    say(f"emulator at {state.origin} (pid file {process.pid_file}): {kinds}")


def start_consumers(folder: Path, state: RunState) -> None:
    for consumer in CONSUMERS:
        process = consumer_process(folder, consumer)
        command = [
            str(BIN / "confluence-consumer"),
            consumer,
            "--group",
            state.group(consumer),
            "--log-interval",
            "15",
        ]
        pid = process.start(command, state.environ())
        say(
            f"consumer {consumer:<13} pid {pid}, group {state.group(consumer)}, "
            f"log {process.log_file}"
        )


def write_sources(folder: Path, state: RunState, token: str, space_keys: tuple[str, ...]) -> Path:
    """Write the sources file of the demo; the API token goes to a 0600 file beside it."""
    token_file = folder / "api-token"
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    sources = folder / "sources.toml"
    sources.write_text(
        f"""# Sources file of the confluence-stream demo, written by `python -m demo up`.
[sources.{SOURCE_ID}]
deployment = "cloud"
base_url = "{state.origin}"
concurrency = 4
rate_limit = 1000.0
burst = 100

[sources.{SOURCE_ID}.auth]
method = "basic"
username = "{USER_EMAIL}"
token_file = "{token_file}"

[sources.{SOURCE_ID}.spaces]
statuses = ["current", "archived"]
include = [{", ".join(f'"{key}"' for key in space_keys)}]
""",
        encoding="utf-8",
    )
    return sources


# Crawls and waits


def crawl(folder: Path, state: RunState, sources: Path, number: int) -> int:
    """Run ``confluence-producer crawl``; its log goes to ``crawl-{number}.log``."""
    log_file = folder / f"crawl-{number}.log"
    command = [
        str(BIN / "confluence-producer"),
        "crawl",
        "--source",
        SOURCE_ID,
        "--sources",
        str(sources),
        "--no-progress",
    ]
    with log_file.open("ab") as stderr:
        result = subprocess.run(command, env=state.environ(), stderr=stderr, check=False)
    if result.returncode in (1, 2):
        raise DemoError(
            f"the crawl failed with exit status {result.returncode} (1: job failed, "
            f"2: configuration error); read {log_file}"
        )
    if result.returncode == 3:
        say(f"the job finished as partial: some units were skipped; read {log_file}")
    return result.returncode


def wait_for_consumers(folder: Path, state: RunState, timeout: float) -> float:
    settings = load_settings(state.environ())
    admin = AdminClient(admin_config(settings, "demo-lag"))
    topics = consumer_topics(Topics(prefix=state.topic_prefix))
    groups = [GroupTopics(state.group(name), topics[name]) for name in CONSUMERS]

    def report(lags: Mapping[str, int]) -> None:
        say(
            "  waiting, records still to consume: " + ", ".join(f"{g}={n}" for g, n in lags.items())
        )

    def dead_consumer() -> str | None:
        for name in CONSUMERS:
            process = consumer_process(folder, name)
            if process.exited():
                return (
                    f"consumer {name} exited; its log {process.log_file} ends with:\n"
                    f"{process.log_tail()}"
                )
        return None

    say(f"waiting until every consumer group has lag 0 (at most {timeout:.0f} s)")
    try:
        return wait_for_catch_up(admin, groups, timeout, report=report, still_running=dead_consumer)
    except ConsumerStopped as error:
        raise DemoError(str(error)) from None
    except CatchUpTimeout as error:
        raise DemoError(
            f"{error}. Read the consumer logs {folder}/consumer-*.log, or wait longer with "
            "`make demo TIMEOUT=SECONDS`"
        ) from None


# Output


def print_state(database: Any, state: RunState, heading: str) -> None:
    say(f"\n== {heading}: source_{SOURCE_ID}_stream in database {state.database}")
    for line in summary.format_counts(summary.count_stream(database, SOURCE_ID)):
        say(line)


def print_how_to_look(state: RunState, folder: Path) -> None:
    collection = summary.stream_collection(SOURCE_ID)
    say("\n== Look at the result")
    say(
        f"  MongoDB {state.mongo_uri}, database {state.database}: collections {collection}, "
        "job_history"
    )
    say("  with pymongo (mongosh is not needed):")
    say(
        f"    .venv/bin/python -c \"import pymongo; db = pymongo.MongoClient('{state.mongo_uri}')"
        f"['{state.database}']; print(db['{collection}'].find_one({{'type': 'page', "
        "'current': True}, {'title': 1, 'version_number': 1, 'ancestor_ids': 1}))\""
    )
    say(
        f"  with mongosh: mongosh '{state.mongo_uri}{state.database}' --eval "
        f"'db.{collection}.findOne({{type: \"page\"}})'"
    )
    say(
        f"  job history: KAFKA_BOOTSTRAP_SERVERS={state.bootstrap} "
        f"KAFKA_TOPIC_PREFIX={state.topic_prefix} .venv/bin/confluence-producer jobs"
    )
    say(f"  logs and pid files: {folder}")
    say("  stop everything the demo started: make demo-down")


# Commands


def up(site: SiteOptions, catch_up_timeout: float, folder: Path = DEMO_DIR) -> int:
    """Run the whole demo; return the exit status."""
    folder.mkdir(parents=True, exist_ok=True)
    previous = load_state(folder)
    stopped = stop_processes(folder)
    if stopped:
        say(f"stopped the previous run's processes: {', '.join(stopped)}")
    for old_log in folder.glob("*.log"):
        old_log.unlink()

    bootstrap, mongo_uri, started = start_services()
    if previous is not None:
        started = sorted(set(started) | set(previous.started_services))
        remove_previous_run(previous)

    run_id = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    state = RunState(
        run_id=run_id,
        topic_prefix=f"demo-{run_id}",
        database=f"demo_{run_id}",
        bootstrap=bootstrap,
        mongo_uri=mongo_uri,
        emulator_port=site.port or free_port(),
        started_services=started,
    )
    save_state(folder, state)

    say(f"\n== Creating the topics {state.topic_prefix}.*")
    result = subprocess.run(
        [str(BIN / "confluence-topics"), "create"], env=state.environ(), check=False
    )
    if result.returncode != 0:
        raise DemoError(f"confluence-topics create exited with status {result.returncode}")

    say("\n== Starting the emulator and the consumers")
    token = secrets.token_urlsafe(24)
    start_emulator(folder, state, site, token)
    sources = write_sources(folder, state, token, site.space_keys)
    start_consumers(folder, state)

    client: MongoClient[dict[str, Any]] = MongoClient(state.mongo_uri, tz_aware=True)
    try:
        database = client[state.database]
        return _crawls(folder, state, sources, database, catch_up_timeout)
    finally:
        client.close()


def _crawls(
    folder: Path, state: RunState, sources: Path, database: Any, catch_up_timeout: float
) -> int:
    say(f"\n== Full crawl (sources file {sources})")
    started = time.monotonic()
    crawl(folder, state, sources, 1)
    waited = wait_for_consumers(folder, state, catch_up_timeout)
    elapsed = time.monotonic() - started
    print_state(database, state, "After the full crawl")
    jobs = summary.jobs_of(database, SOURCE_ID)
    say("\n== Job record")
    for line in summary.format_job(jobs[-1]):
        say(line)
    items = sum(
        n for kind, n in (jobs[-1].get("counts") or {}).items() if kind != "structure_listing"
    )
    say(
        f"  end to end   {elapsed:.1f} s from crawl start to lag 0 ({waited:.1f} s waiting), "
        f"{items / elapsed:.1f} items/s"
    )

    pages = list(
        database[summary.stream_collection(SOURCE_ID)].find(
            {"entity_type": "content", "type": "page", "current": True},
            {"id": 1, "title": 1, "status": 1, "space_key": 1, "parent_id": 1, "body_storage": 1},
        )
    )
    changes = plan_changes(pages)
    bodies = {page["id"]: page.get("body_storage") or "" for page in pages}
    say("\n== Changing the site through the control API")
    control = ControlClient(state.origin)
    try:
        apply_changes(control, changes, bodies)
    finally:
        control.close()
    for change in changes:
        say(f"  {change.describe()}")

    say("\n== Incremental crawl")
    crawl(folder, state, sources, 2)
    wait_for_consumers(folder, state, catch_up_timeout)
    jobs = summary.jobs_of(database, SOURCE_ID)
    say("\n== Second job record")
    for line in summary.format_job(jobs[-1]):
        say(line)
    say(f"\n== Documents written from the second job's records ({jobs[-1]['_id']})")
    changed = summary.changed_documents(database, SOURCE_ID, str(jobs[-1]["_id"]))
    for line in summary.format_changed(changed):
        say(line)
    print_state(database, state, "After the incremental crawl")
    print_how_to_look(state, folder)
    return 0


def down(folder: Path = DEMO_DIR) -> int:
    """Stop the emulator and the consumers, then the services the demo started."""
    stopped = stop_processes(folder)
    say(f"stopped: {', '.join(stopped)}" if stopped else "no demo process was running")
    state = load_state(folder)
    services = state.started_services if state is not None else []
    for service in services:
        result = subprocess.run(
            [sys.executable, "-m", "infra", "down", service], cwd=REPOSITORY_ROOT, check=False
        )
        if result.returncode != 0:
            say(f"`python -m infra down {service}` exited with status {result.returncode}")
            return 1
    if state is not None and services:
        state.started_services = []
        save_state(folder, state)
    if not services:
        say(
            "Kafka and FerretDB were running before the demo started, so they keep running "
            "(stop them with `make services-down`)"
        )
    return 0
