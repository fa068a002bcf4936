"""Run FerretDB v1, a MongoDB wire-protocol server, with its SQLite backend on 127.0.0.1.

The server is the small Go program in `infra/ferretdb/`, which embeds FerretDB v1.24.2.
`go build` writes it to `<services dir>/ferretdb/bin/ferretdb`; it is rebuilt only when
its Go sources or build flags change. It runs detached from the caller, with its SQLite
files in `<services dir>/ferretdb/data` and its log in `<services dir>/ferretdb/ferretdb.log`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from infra.process import (
    HOST,
    ManagedProcess,
    ServiceError,
    ServiceStatus,
    command_line,
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

PORT_ENV = "LOCAL_MONGO_PORT"
DEFAULT_PORT = 27017
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0

SOURCE_DIR = Path(__file__).resolve().parent / "ferretdb"
SOURCE_FILES = ("main.go", "idindex.go", "go.mod", "go.sum")
# The PostgreSQL backend is not used, and leaving it out makes the binary smaller.
BUILD_FLAGS = ("-trimpath", "-tags", "ferretdb_no_postgresql")


@dataclass(frozen=True)
class FerretDBSettings:
    """Port and file locations of the local FerretDB server."""

    root: Path
    port: int = DEFAULT_PORT

    @classmethod
    def from_env(cls) -> FerretDBSettings:
        """Read `LOCAL_MONGO_PORT` and `LOCAL_SERVICES_DIR`."""
        return cls(root=services_root() / "ferretdb", port=port_from_env(PORT_ENV, DEFAULT_PORT))

    @property
    def uri(self) -> str:
        return f"mongodb://{HOST}:{self.port}/"

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "ferretdb"

    @property
    def build_hash_file(self) -> Path:
        """File next to the binary that stores the hash of the sources it was built from."""
        return self.root / "bin" / "ferretdb.sha256"

    @property
    def build_log(self) -> Path:
        return self.root / "build.log"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "ferretdb.log"

    def process(self) -> ManagedProcess:
        return ManagedProcess(
            name="FerretDB",
            pid_file=self.root / "ferretdb.pid",
            log_file=self.log_file,
            marker=str(self.binary),
        )


def source_hash() -> str:
    """Return a hash of the Go sources and build flags that the binary depends on."""
    digest = hashlib.sha256()
    for name in SOURCE_FILES:
        digest.update(name.encode() + b"\0")
        digest.update((SOURCE_DIR / name).read_bytes() + b"\0")
    digest.update(" ".join(BUILD_FLAGS).encode())
    return digest.hexdigest()


def binary_is_current(settings: FerretDBSettings) -> bool:
    if not settings.binary.is_file():
        return False
    try:
        return settings.build_hash_file.read_text().strip() == source_hash()
    except FileNotFoundError:
        return False


def build_binary(settings: FerretDBSettings) -> None:
    """Build the server with `go build` unless the binary matches the current sources.

    The first build downloads modules from the Go module proxy and can take minutes.
    """
    if binary_is_current(settings):
        return
    go = find_executable(
        "go",
        "build the FerretDB server",
        "install Go 1.24 or newer and put its bin folder on PATH",
    )
    logger.info("mongo: building FerretDB into %s (the first build takes minutes)", settings.binary)
    settings.binary.parent.mkdir(parents=True, exist_ok=True)
    partial = settings.binary.with_name("ferretdb.partial")
    argv = [go, "build", *BUILD_FLAGS, "-o", str(partial), "."]
    offset = log_size(settings.build_log)
    exit_code = run_logged(argv, settings.build_log, cwd=SOURCE_DIR)
    if exit_code != 0:
        raise ServiceError(
            f"building FerretDB with go failed (exit code {exit_code}): check that Go is 1.24 "
            f"or newer and the Go module proxy is reachable, then rerun; see {settings.build_log}",
            detail=read_log_tail(settings.build_log, offset),
        )
    partial.replace(settings.binary)
    settings.build_hash_file.write_text(source_hash() + "\n")


def answers_ping(uri: str, timeout: float = 2.0) -> bool:
    """Return True when the server at `uri` responds to the MongoDB `ping` command."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    timeout_ms = int(timeout * 1000)
    client: MongoClient[dict[str, object]] = MongoClient(
        uri,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=timeout_ms,
    )
    try:
        client.admin.command("ping")
    except PyMongoError as error:
        logger.debug("mongo: ping to %s failed: %s", uri, error)
        return False
    finally:
        client.close()
    return True


def wait_until_ready(settings: FerretDBSettings, pid: int, log_offset: int, timeout: float) -> None:
    """Wait until the server responds to `ping`; raise ServiceError if it exits or times out."""
    process = settings.process()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive(pid):
            raise process.exited_during_start(
                pid, log_offset, f"check that {settings.data_dir} is a writable folder"
            )
        if port_accepts_connections(settings.port) and answers_ping(settings.uri):
            return
        time.sleep(0.2)
    raise ServiceError(
        f"FerretDB (pid {pid}) did not respond to ping at {settings.uri} within {timeout:.0f} s: "
        f"see {settings.log_file} for the cause; "
        "`python -m infra down mongo` stops a server that hangs",
        detail=read_log_tail(settings.log_file, log_offset),
    )


def up(
    settings: FerretDBSettings | None = None, timeout: float = START_TIMEOUT_SECONDS
) -> ServiceStatus:
    """Start the server unless it already runs, and wait until it responds to `ping`."""
    settings = settings or FerretDBSettings.from_env()
    settings.root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(settings.root / ".lock"):
        return _up_locked(settings, timeout)


def _up_locked(settings: FerretDBSettings, timeout: float) -> ServiceStatus:
    process = settings.process()
    pid = process.running_pid()
    if pid is not None:
        if f"-port={settings.port} " not in command_line(pid) + " ":
            raise ServiceError(
                f"FerretDB (pid {pid}) already runs from {settings.root} on another port than "
                f"{PORT_ENV}={settings.port}: stop it with `python -m infra down mongo` to "
                "restart it on the new port"
            )
        wait_until_ready(settings, pid, log_size(settings.log_file), timeout)
        return ServiceStatus("mongo", True, settings.uri, pid, already_running=True)
    process.remove_stale_pid_file()

    require_free_port(settings.port, "FerretDB", PORT_ENV)
    build_binary(settings)

    argv = [
        str(settings.binary),
        f"-host={HOST}",
        f"-port={settings.port}",
        f"-data-dir={settings.data_dir}",
    ]
    log_offset = log_size(settings.log_file)
    pid = process.spawn(argv)
    try:
        wait_until_ready(settings, pid, log_offset, timeout)
    except ServiceError:
        process.stop(STOP_TIMEOUT_SECONDS)
        raise
    return ServiceStatus("mongo", True, settings.uri, pid, started=True)


def down(settings: FerretDBSettings | None = None) -> int | None:
    """Stop the server started from this services folder; return its pid, or None."""
    settings = settings or FerretDBSettings.from_env()
    with exclusive_lock(settings.root / ".lock"):
        return settings.process().stop(STOP_TIMEOUT_SECONDS)


def status(settings: FerretDBSettings | None = None) -> ServiceStatus:
    settings = settings or FerretDBSettings.from_env()
    pid = settings.process().running_pid()
    answers = port_accepts_connections(settings.port)
    return ServiceStatus("mongo", pid is not None, settings.uri, pid, port_answers=answers)
