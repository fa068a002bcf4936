"""Run a benchmark subprocess and measure its wall time and the peak RSS of its tree.

Peak memory is sampled from ``/proc``: every ``SAMPLE_SECONDS`` the resident set sizes of
the process and all its descendants are added up, and the largest sum is kept. A
short-lived peak between two samples can be missed, so the figure is a lower bound.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.05
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessRun:
    """Outcome of one measured subprocess."""

    argv: tuple[str, ...]
    returncode: int
    seconds: float
    peak_rss_bytes: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def failure(self) -> str:
        """Return a one-line reason for a failed run, from the end of its stderr."""
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s"
        tail = [line for line in self.stderr.strip().splitlines() if line.strip()][-1:]
        return f"exit status {self.returncode}: {tail[0][:300] if tail else 'no error output'}"


def child_pids(pid: int) -> list[int]:
    """Return the process ids of the direct children of ``pid``."""
    children: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return children
    for task in tasks:
        try:
            text = (task / "children").read_text()
        except OSError:
            continue
        children.extend(int(part) for part in text.split())
    return children


def _rss_bytes(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * _PAGE_SIZE


def tree_rss_bytes(pid: int) -> int:
    """Return the summed RSS of ``pid`` and every descendant that is still running."""
    total = 0
    pending = [pid]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        total += _rss_bytes(current)
        pending.extend(child_pids(current))
    return total


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 3600.0,
) -> ProcessRun:
    """Run ``argv`` to its end, sampling the RSS of its process tree, and time it."""
    peak = 0
    stop = threading.Event()
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_bytes(process.pid))
            stop.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        logger.warning("benchmark process timed out after %.0f s: %s", timeout, argv[:4])
        process.kill()
        stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    return ProcessRun(
        argv=tuple(argv),
        returncode=process.returncode,
        seconds=seconds,
        peak_rss_bytes=peak,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
    )
