"""Background processes that outlive the command that started them.

Each process has a pid file and a log file in one folder. A process is stopped through its
pid file, and only when the command line of that pid still names the program that was
started, so a pid reused by the system after a reboot is never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 30.0
# Processes this interpreter started, so their exit status is collected through Popen
# (no zombie, and no ResourceWarning from a Popen dropped while its process runs).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class BackgroundProcess:
    """A named process with ``{name}.pid`` and ``{name}.log`` in ``folder``.

    ``marker`` is a string that the process's command line contains, for example the
    console script's name; it identifies the process behind a pid file.
    """

    name: str
    folder: Path
    marker: str

    @property
    def pid_file(self) -> Path:
        return self.folder / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.folder / f"{self.name}.log"

    def start(self, command: Sequence[str], environ: Mapping[str, str]) -> int:
        """Start ``command`` in its own session, logging to the log file; return the pid."""
        running = self.running_pid()
        if running is not None:
            raise RuntimeError(
                f"{self.name} is already running (pid {running}, pid file {self.pid_file}); "
                "stop it first with `make demo-down`"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log_stream:
            process = subprocess.Popen(
                list(command),
                env=dict(environ),
                stdin=subprocess.DEVNULL,
                stdout=log_stream,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _CHILDREN[process.pid] = process
        self.pid_file.write_text(f"{process.pid}\n", encoding="utf-8")
        log.debug("started name=%s pid=%d log=%s", self.name, process.pid, self.log_file)
        return process.pid

    def running_pid(self) -> int | None:
        """Return the pid of the process if it runs and is the one started, else None."""
        try:
            pid = int(self.pid_file.read_text(encoding="utf-8").strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def exited(self) -> bool:
        """Return True when the started process is gone (or was never started)."""
        return self.running_pid() is None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
        """Send SIGTERM, then SIGKILL after ``timeout`` seconds; return True if one ran."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._is_ours(pid):
            time.sleep(0.2)
        if self._is_ours(pid):
            log.warning(
                "no exit %.0f s after SIGTERM, sending SIGKILL name=%s pid=%d",
                timeout,
                self.name,
                pid,
            )
            self._signal(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 20) -> str:
        """Return the last ``lines`` lines of the log file, or an empty string."""
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _is_ours(self, pid: int) -> bool:
        child = _CHILDREN.get(pid)
        if child is not None:
            # A child of this interpreter is checked through Popen, because right after
            # the fork its command line is still this interpreter's, without the marker.
            if child.poll() is None:
                return True
            del _CHILDREN[pid]
            return False
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        if state and state[0] == "Z":
            _reap(pid)
            return False
        return self.marker.encode() in raw

    @staticmethod
    def _signal(pid: int, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _reap(pid: int) -> None:
    """Collect the exit status of a zombie child so it leaves the process table."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
