"""Run a single-node Apache Kafka broker (KRaft, combined broker and controller) from jars.

Maven copies `org.apache.kafka:kafka_2.13` and a Log4j 2 binding, as pinned in
`infra/kafka/pom.xml`, into `<services dir>/kafka/lib`. The broker then runs as
`java -cp 'lib/*' kafka.Kafka server.properties` on 127.0.0.1, detached from the caller,
with its data in `<services dir>/kafka/data` and its log in `<services dir>/kafka/broker.log`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.process import (
    HOST,
    ManagedProcess,
    ServiceError,
    ServiceStatus,
    exclusive_lock,
    find_executable,
    log_size,
    port_accepts_connections,
    port_from_env,
    read_log_tail,
    require_free_port,
    run_logged,
    services_root,
)

logger = logging.getLogger(__name__)

PORT_ENV = "LOCAL_KAFKA_PORT"
CONTROLLER_PORT_ENV = "LOCAL_KAFKA_CONTROLLER_PORT"
DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
MIN_JAVA_VERSION = 17
START_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 60.0
NODE_ID = 1

POM_FILE = Path(__file__).resolve().parent / "kafka" / "pom.xml"
# Heap for one broker on a developer machine or CI runner; the Kafka scripts default to 1 GiB.
HEAP_OPTIONS = ("-Xms256m", "-Xmx1g")

# Broker and controller log at INFO into the broker log; the request logger is noisy.
SERVER_LOG4J2 = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.network.name = kafka.network.RequestChannel$
logger.network.level = WARN
"""

# The storage tool prints its whole configuration at INFO, so it only logs warnings.
TOOLS_LOG4J2 = """\
status = warn
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
"""


@dataclass(frozen=True)
class KafkaSettings:
    """Ports and file locations of the local Kafka broker."""

    root: Path
    port: int = DEFAULT_PORT
    controller_port: int = DEFAULT_CONTROLLER_PORT

    @classmethod
    def from_env(cls) -> KafkaSettings:
        """Read `LOCAL_KAFKA_PORT`, `LOCAL_KAFKA_CONTROLLER_PORT` and `LOCAL_SERVICES_DIR`."""
        settings = cls(
            root=services_root() / "kafka",
            port=port_from_env(PORT_ENV, DEFAULT_PORT),
            controller_port=port_from_env(CONTROLLER_PORT_ENV, DEFAULT_CONTROLLER_PORT),
        )
        if settings.port == settings.controller_port:
            raise ServiceError(
                f"{PORT_ENV} and {CONTROLLER_PORT_ENV} are both {settings.port}: "
                "the broker and the controller listener need two different ports"
            )
        return settings

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def lib_dir(self) -> Path:
        return self.root / "lib"

    @property
    def jars_marker(self) -> Path:
        """File written after a complete jar download; it stores the hash of the pom."""
        return self.lib_dir / ".complete"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def server_properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def server_log4j2(self) -> Path:
        return self.root / "log4j2.properties"

    @property
    def tools_log4j2(self) -> Path:
        return self.root / "tools-log4j2.properties"

    @property
    def cluster_id_file(self) -> Path:
        return self.root / "cluster-id"

    @property
    def log_file(self) -> Path:
        return self.root / "broker.log"

    @property
    def maven_log(self) -> Path:
        return self.root / "maven.log"

    @property
    def format_log(self) -> Path:
        return self.root / "storage-format.log"

    def process(self) -> ManagedProcess:
        # Every broker started here names this properties file, so the path identifies it.
        return ManagedProcess(
            name="Kafka broker",
            pid_file=self.root / "broker.pid",
            log_file=self.log_file,
            marker=str(self.server_properties),
        )


def render_server_properties(settings: KafkaSettings) -> str:
    """Return server.properties for one combined broker and controller node.

    The quorum is static (`controller.quorum.voters`), so a changed controller port only
    needs a restart, not a new storage format.
    """
    lines = [
        "process.roles=broker,controller",
        f"node.id={NODE_ID}",
        f"controller.quorum.voters={NODE_ID}@{HOST}:{settings.controller_port}",
        f"listeners=PLAINTEXT://{HOST}:{settings.port},CONTROLLER://{HOST}:{settings.controller_port}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{settings.port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={settings.data_dir}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # Topics are created explicitly with their configuration, never by a producer.
        "auto.create.topics.enable=false",
        # The cleaner checks for compactable logs every second instead of every 15 s, so
        # tests can observe compaction of topics with a short segment.ms.
        "log.cleaner.backoff.ms=1000",
    ]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """Return a random cluster id in Kafka's format: base64url of 16 bytes, no padding.

    Like Kafka's own `Uuid.randomUuid`, it never starts with "-", which command-line
    parsers such as the storage tool's would read as an option.
    """
    while True:
        value = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")
        if not value.startswith("-"):
            return value


def parse_java_version(output: str) -> int | None:
    """Return the major version from `java -version` output, or None if none is found.

    Java 8 and older print `1.8.0_x`; Java 9 and newer print the major version first.
    """
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def find_java() -> str:
    """Return the java executable from JAVA_HOME or PATH, checking it is Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        java = str(Path(java_home) / "bin" / "java")
    else:
        java = find_executable(
            "java",
            "run the Kafka broker",
            f"install a Java {MIN_JAVA_VERSION} or newer runtime (for example "
            "`apt-get install openjdk-17-jre-headless`) or set JAVA_HOME",
        )
    try:
        completed = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ServiceError(
            f"cannot run `{java} -version` ({error}): check the Java installation or JAVA_HOME"
        ) from error
    version = parse_java_version(completed.stderr + completed.stdout)
    if version is None:
        raise ServiceError(
            f"cannot read the Java version from `{java} -version`: check the Java "
            "installation or set JAVA_HOME to a Java 17 or newer runtime"
        )
    if version < MIN_JAVA_VERSION:
        raise ServiceError(
            f"{java} is Java {version}, but the Kafka 4 broker needs Java "
            f"{MIN_JAVA_VERSION} or newer: install one and put it first on PATH or set JAVA_HOME"
        )
    return java


def pom_hash() -> str:
    return hashlib.sha256(POM_FILE.read_bytes()).hexdigest()


def jars_are_complete(settings: KafkaSettings) -> bool:
    """Return True when the jars of the current pom were copied completely."""
    try:
        return settings.jars_marker.read_text().strip() == pom_hash()
    except FileNotFoundError:
        return False


def fetch_jars(settings: KafkaSettings) -> None:
    """Copy the broker jars from Maven into the lib folder unless a complete copy exists.

    A copy counts as complete only once the marker file contains the hash of the current
    pom, so an interrupted download or a changed pom starts over from an empty folder.
    """
    if jars_are_complete(settings):
        return
    mvn = find_executable(
        "mvn",
        "download the Kafka broker jars",
        "install Apache Maven 3 (for example `apt-get install maven`)",
    )
    logger.info("kafka: downloading the broker jars with Maven into %s", settings.lib_dir)
    shutil.rmtree(settings.lib_dir, ignore_errors=True)
    settings.lib_dir.mkdir(parents=True)
    argv = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(POM_FILE),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={settings.lib_dir}",
        "-DincludeScope=runtime",
    ]
    offset = log_size(settings.maven_log)
    exit_code = run_logged(argv, settings.maven_log)
    if exit_code != 0:
        raise ServiceError(
            f"downloading the Kafka jars with Maven failed (exit code {exit_code}): check "
            f"access to Maven Central and rerun; see {settings.maven_log}",
            detail=read_log_tail(settings.maven_log, offset),
        )
    if not list(settings.lib_dir.glob("kafka_2.13-*.jar")):
        raise ServiceError(
            f"Maven finished but no kafka_2.13 jar is in {settings.lib_dir}: check "
            f"{POM_FILE} and {settings.maven_log}, then rerun"
        )
    settings.jars_marker.write_text(pom_hash() + "\n")


def write_config_files(settings: KafkaSettings) -> None:
    settings.root.mkdir(parents=True, exist_ok=True)
    settings.server_properties.write_text(render_server_properties(settings))
    settings.server_log4j2.write_text(SERVER_LOG4J2)
    settings.tools_log4j2.write_text(TOOLS_LOG4J2)


def cluster_id(settings: KafkaSettings) -> str:
    """Return the stored cluster id, generating and storing one on first use."""
    if settings.cluster_id_file.exists():
        return settings.cluster_id_file.read_text().strip()
    value = new_cluster_id()
    settings.cluster_id_file.write_text(value + "\n")
    return value


def format_storage(settings: KafkaSettings, java: str) -> None:
    """Format the KRaft storage once; a KRaft node does not start without it."""
    if (settings.data_dir / "meta.properties").exists():
        return
    logger.info("kafka: formatting the KRaft storage in %s", settings.data_dir)
    argv = [
        java,
        f"-Dlog4j2.configurationFile={settings.tools_log4j2}",
        "-cp",
        str(settings.lib_dir / "*"),
        "kafka.tools.StorageTool",
        "format",
        # The "=" form keeps an id that starts with "-" from being read as an option.
        f"--cluster-id={cluster_id(settings)}",
        f"--config={settings.server_properties}",
        "--ignore-formatted",
    ]
    offset = log_size(settings.format_log)
    exit_code = run_logged(argv, settings.format_log)
    if exit_code != 0:
        raise ServiceError(
            f"formatting the Kafka storage in {settings.data_dir} failed (exit code "
            f"{exit_code}): see {settings.format_log}; delete {settings.data_dir} to start "
            "over with empty storage",
            detail=read_log_tail(settings.format_log, offset),
        )


def broker_command(settings: KafkaSettings, java: str) -> list[str]:
    return [
        java,
        *HEAP_OPTIONS,
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-XX:ErrorFile={settings.root / 'hs_err_pid%p.log'}",
        f"-Dlog4j2.configurationFile={settings.server_log4j2}",
        "-cp",
        str(settings.lib_dir / "*"),
        "kafka.Kafka",
        str(settings.server_properties),
    ]


def serves_metadata(bootstrap_servers: str, timeout: float = 5.0) -> bool:
    """Return True when the broker returns cluster metadata that lists at least one broker."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # librdkafka logs through this module's logger instead of printing to stderr.
    config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, "logger": logger}
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as error:
        logger.debug("kafka: metadata request to %s failed: %s", bootstrap_servers, error)
        return False
    return len(metadata.brokers) > 0


def wait_until_ready(settings: KafkaSettings, pid: int, log_offset: int, timeout: float) -> None:
    """Wait until the broker accepts connections and returns metadata.

    Raises ServiceError when the process exits first or `timeout` seconds pass.
    """
    process = settings.process()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive(pid):
            raise process.exited_during_start(
                pid,
                log_offset,
                (
                    "read the error in the log, and if the storage is damaged or belongs to "
                    f"another node, delete {settings.data_dir} to start over with empty storage"
                ),
            )
        if port_accepts_connections(settings.port) and serves_metadata(settings.bootstrap_servers):
            return
        time.sleep(0.5)
    raise ServiceError(
        f"the Kafka broker (pid {pid}) did not serve metadata on {settings.bootstrap_servers} "
        f"within {timeout:.0f} s: see {settings.log_file} for the cause; "
        "`python -m infra down kafka` stops a broker that hangs",
        detail=read_log_tail(settings.log_file, log_offset),
    )


def up(
    settings: KafkaSettings | None = None, timeout: float = START_TIMEOUT_SECONDS
) -> ServiceStatus:
    """Start the broker unless it already runs, and wait until it serves metadata."""
    settings = settings or KafkaSettings.from_env()
    settings.root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(settings.root / ".lock"):
        return _up_locked(settings, timeout)


def _up_locked(settings: KafkaSettings, timeout: float) -> ServiceStatus:
    process = settings.process()
    pid = process.running_pid()
    if pid is not None:
        if settings.server_properties.read_text() != render_server_properties(settings):
            raise ServiceError(
                f"a Kafka broker (pid {pid}) already runs from {settings.root} with other "
                f"settings than {PORT_ENV}={settings.port} and {CONTROLLER_PORT_ENV}="
                f"{settings.controller_port}: see {settings.server_properties}, and stop it "
                "with `python -m infra down kafka` to restart it with the current settings"
            )
        wait_until_ready(settings, pid, log_size(settings.log_file), timeout)
        return ServiceStatus("kafka", True, settings.bootstrap_servers, pid, already_running=True)
    process.remove_stale_pid_file()

    require_free_port(settings.port, "the Kafka broker", PORT_ENV)
    require_free_port(settings.controller_port, "the Kafka controller", CONTROLLER_PORT_ENV)
    java = find_java()
    fetch_jars(settings)
    write_config_files(settings)
    format_storage(settings, java)

    log_offset = log_size(settings.log_file)
    pid = process.spawn(broker_command(settings, java))
    logger.info("kafka: waiting for the broker on %s", settings.bootstrap_servers)
    try:
        wait_until_ready(settings, pid, log_offset, timeout)
    except ServiceError:
        process.stop(STOP_TIMEOUT_SECONDS)
        raise
    return ServiceStatus("kafka", True, settings.bootstrap_servers, pid, started=True)


def down(settings: KafkaSettings | None = None) -> int | None:
    """Stop the broker started from this services folder; return its pid, or None."""
    settings = settings or KafkaSettings.from_env()
    with exclusive_lock(settings.root / ".lock"):
        return settings.process().stop(STOP_TIMEOUT_SECONDS)


def status(settings: KafkaSettings | None = None) -> ServiceStatus:
    settings = settings or KafkaSettings.from_env()
    pid = settings.process().running_pid()
    answers = port_accepts_connections(settings.port)
    return ServiceStatus(
        "kafka", pid is not None, settings.bootstrap_servers, pid, port_answers=answers
    )
