"""Start, find and stop the detached service processes that the local launchers own.

A launcher owns a process only through its pid file. Before it signals a pid it checks
that the process is alive and that its command line contains a path unique to the
services directory, so a pid reused by an unrelated program is never signalled.

NOTE: process checks read /proc, so the launchers run on Linux only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SERVICES_DIR_ENV = "LOCAL_SERVICES_DIR"
HOST = "127.0.0.1"
LOG_TAIL_LINES = 20
MAX_LOG_BYTES = 50 * 1024 * 1024
EMPTY_COMMAND_LINE_RETRIES = 20


class ServiceError(Exception):
    """An expected launcher failure, reported to the user as one line plus optional detail.

    `str(error)` is the one line that names the problem and the fix. `detail` contains
    extra lines, such as the last lines of a log file, shown after it.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def repository_root() -> Path:
    """Return the directory that contains the `infra` package."""
    return Path(__file__).resolve().parent.parent


def services_root() -> Path:
    """Return the folder for downloads, builds, data and logs of the local services.

    `LOCAL_SERVICES_DIR` overrides the default `.services` folder of the repository, so
    tests can run a second set of services without touching the shared one.
    """
    configured = os.environ.get(SERVICES_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    return repository_root() / ".services"


@dataclass(frozen=True)
class ServiceStatus:
    """The state of one local service as `up` and `status` report it."""

    service: str
    running: bool
    address: str
    pid: int | None = None
    started: bool = False
    already_running: bool = False
    port_answers: bool = True

    def describe(self) -> str:
        """Return the one-line report for the command-line interface."""
        if not self.running:
            if self.port_answers:
                return f"{self.service}: stopped, but {self.address} is served by another program"
            return f"{self.service}: stopped"
        if self.started:
            state = "started"
        elif self.already_running:
            state = "already running"
        elif self.port_answers:
            state = "running"
        else:
            state = "running but not answering yet"
        return f"{self.service}: {state} at {self.address} (pid {self.pid})"


@contextlib.contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_file` for the duration of the block.

    Two `up` runs at the same time, for example from two test sessions, then take turns
    instead of both starting a server. The second one finds the server of the first.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def port_from_env(name: str, default: int) -> int:
    """Read a TCP port from environment variable `name`, or return `default` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ServiceError(
            f"invalid port {raw!r} in environment variable {name}: "
            "set it to a number from 1 to 65535 or unset it to use the default "
            f"{default}"
        )
    return port


def port_accepts_connections(port: int, timeout: float = 1.0) -> bool:
    """Return True when a TCP connection to 127.0.0.1:`port` succeeds."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(port: int) -> bool:
    """Return True when 127.0.0.1:`port` can be bound now.

    SO_REUSEADDR lets the bind succeed over connections left in TIME_WAIT by a previous
    run, but it still fails while another socket listens on the port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def require_free_port(port: int, service: str, env_name: str) -> None:
    """Raise ServiceError when another program already uses `port` on 127.0.0.1."""
    if not port_is_free(port):
        raise ServiceError(
            f"port {port} on {HOST} is already in use by another program, so {service} "
            f"cannot listen on it: stop that program or set {env_name} to a free port"
        )


def find_executable(name: str, purpose: str, install_hint: str) -> str:
    """Return the path of `name` on PATH, or raise ServiceError with `install_hint`."""
    path = shutil.which(name)
    if path is None:
        raise ServiceError(f"{name} not found on PATH; it is needed to {purpose}: {install_hint}")
    return path


def read_log_tail(log_file: Path, start_offset: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last `lines` lines written to `log_file` after byte `start_offset`."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(start_offset)
            content = handle.read()
    except OSError:
        return ""
    text = content.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def log_size(log_file: Path) -> int:
    """Return the size of `log_file` in bytes, or 0 when it does not exist."""
    try:
        return log_file.stat().st_size
    except OSError:
        return 0


def run_logged(
    argv: Sequence[str],
    log_file: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run a command to completion with stdout and stderr appended to `log_file`.

    Returns the exit code. Raises ServiceError when the command cannot be executed.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        log.write(f"\n$ {' '.join(argv)}\n".encode())
        log.flush()
        try:
            completed = subprocess.run(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        except OSError as error:
            raise ServiceError(
                f"cannot run {argv[0]}: {error.strerror}: check that it is installed and executable"
            ) from error
    return completed.returncode


def _process_state(pid: int) -> str | None:
    """Return the state letter from /proc/<pid>/stat, or None when there is no process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may contain spaces, so split after its last ")".
    return stat.rsplit(")", 1)[1].split()[0]


def command_line(pid: int) -> str:
    """Return the command line of `pid` with arguments joined by spaces, or "" if gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace")


def _inheritable_descriptors() -> list[int]:
    """Return the open file descriptors above 2 that a spawned program would inherit."""
    descriptors = []
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd <= 2:
            continue
        try:
            if os.get_inheritable(fd):
                descriptors.append(fd)
        except OSError:
            continue  # the descriptor of the directory listing itself, already closed
    return descriptors


def _reap_if_child(pid: int) -> None:
    """Collect the exit status of `pid` if it is an exited child of this process."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@dataclass(frozen=True)
class ManagedProcess:
    """One detached service process, known through its pid file.

    `marker` is a string that the process's command line must contain, such as the
    path of its configuration file inside the services directory.
    """

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    def read_pid(self) -> int | None:
        try:
            text = self.pid_file.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return int(text)
        except ValueError:
            return None

    def is_ours(self, pid: int) -> bool:
        """Return True when `pid` is alive and its command line contains the marker."""
        for _ in range(EMPTY_COMMAND_LINE_RETRIES):
            _reap_if_child(pid)
            state = _process_state(pid)
            if state is None or state in ("Z", "X"):
                return False
            arguments = command_line(pid)
            if arguments:
                return self.marker in arguments
            # Right after exec, Linux can show an empty command line until the new
            # program's arguments are set up, so look again shortly.
            time.sleep(0.05)
        return False

    def is_alive(self, pid: int) -> bool:
        """Return True while `pid`, a process spawned by this Python process, has not exited.

        For a child of this process the exit status is authoritative, so this avoids
        the command-line check while exec is still in progress.
        """
        try:
            exited_pid, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return self.is_ours(pid)
        return exited_pid != pid

    def running_pid(self) -> int | None:
        """Return the pid from the pid file when that process is ours and alive."""
        pid = self.read_pid()
        if pid is None or not self.is_ours(pid):
            return None
        return pid

    def remove_stale_pid_file(self) -> bool:
        """Delete the pid file when it names no live process of ours; return True if deleted."""
        if self.pid_file.exists() and self.running_pid() is None:
            self.pid_file.unlink(missing_ok=True)
            logger.info("removed stale pid file %s", self.pid_file)
            return True
        return False

    def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> int:
        """Start `argv` in a new session with output appended to the log file.

        The process outlives this Python process. `os.posix_spawn` is used instead of
        `subprocess.Popen` so that no Popen object warns about a child still running.
        Returns the pid, which is also written to the pid file.
        """
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        if log_size(self.log_file) > MAX_LOG_BYTES:
            # Keep one previous log so a long-lived services folder does not grow forever.
            self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))
        with self.log_file.open("ab") as log:
            log.write(
                f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting {self.name}\n".encode()
            )
            log.write(f"$ {' '.join(argv)}\n".encode())
        file_actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (
                os.POSIX_SPAWN_OPEN,
                1,
                str(self.log_file),
                os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                0o644,
            ),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        # A server that inherited a pipe from its caller, such as a CI runner's output pipe,
        # would keep that pipe open for as long as it runs, so close every inherited one.
        file_actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_descriptors()]
        try:
            pid = os.posix_spawn(
                argv[0],
                list(argv),
                dict(env if env is not None else os.environ),
                file_actions=file_actions,
                setsid=True,
            )
        except OSError as error:
            raise ServiceError(
                f"cannot start {self.name} with {argv[0]}: {error.strerror}: "
                "check that the program exists and is executable"
            ) from error
        self.pid_file.write_text(f"{pid}\n")
        logger.info("started %s, pid %d, log %s", self.name, pid, self.log_file)
        return pid

    def stop(self, timeout: float) -> int | None:
        """Stop the process from the pid file: SIGTERM, then SIGKILL after `timeout` seconds.

        Returns the pid that was stopped, or None when no process of ours was running.
        The pid file is removed in both cases.
        """
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return None
        logger.info("sending SIGTERM to %s, pid %d", self.name, pid)
        _signal(pid, signal.SIGTERM)
        if not self._wait_for_exit(pid, timeout):
            logger.warning(
                "%s, pid %d, did not exit %.0f s after SIGTERM; sending SIGKILL",
                self.name,
                pid,
                timeout,
            )
            _signal(pid, signal.SIGKILL)
            if not self._wait_for_exit(pid, 10.0):
                raise ServiceError(
                    f"{self.name}, pid {pid}, is still running after SIGKILL: "
                    f"check it with `ps -p {pid}`"
                )
        self.pid_file.unlink(missing_ok=True)
        logger.info("%s, pid %d, stopped", self.name, pid)
        return pid

    def _wait_for_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_ours(pid):
                return True
            time.sleep(0.2)
        return not self.is_ours(pid)

    def exited_during_start(self, pid: int, log_offset: int, hint: str) -> ServiceError:
        """Build the error for a process that exited before it became ready."""
        self.pid_file.unlink(missing_ok=True)
        return ServiceError(
            f"{self.name} exited during start-up (pid {pid}): {hint}; "
            f"see {self.log_file} for the full log",
            detail=read_log_tail(self.log_file, log_offset),
        )


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
