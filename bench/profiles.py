"""Sampling profiles of benchmark processes with py-spy, summarised as text.

``py-spy record --format raw`` writes one line per distinct stack: the frames from the
outermost to the innermost, separated by ``;``, then the number of samples. py-spy
leaves out idle threads by default, so the samples show where CPU time goes, not where
a thread waits for the network or the rate limiter.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SAMPLE_RATE = 100
TOP = 25
_PROCESS_FRAME = re.compile(r"^process \d+:")
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


@dataclass(frozen=True)
class ProfileSummary:
    """Samples by function: where the stack ends (self) and where it passes (total)."""

    samples: int
    self_samples: Counter[str]
    total_samples: Counter[str]

    def top_self(self, count: int) -> list[tuple[str, float]]:
        """Return the ``count`` functions with the most self samples and their share."""
        return [
            (name, samples / self.samples) for name, samples in self.self_samples.most_common(count)
        ]

    def render(self, title: str) -> str:
        """Return the summary as the text saved under ``docs/profiles``."""
        lines = [title, f"samples: {self.samples} (py-spy, {SAMPLE_RATE} Hz, idle excluded)", ""]
        lines.append("self time: the function was running")
        for name, samples in self.self_samples.most_common(TOP):
            lines.append(f"  {samples / self.samples:6.1%}  {name}")
        lines.append("")
        lines.append("total time: the function was on the stack")
        for name, samples in self.total_samples.most_common(TOP):
            lines.append(f"  {samples / self.samples:6.1%}  {name}")
        return "\n".join(lines) + "\n"


def frame_name(frame: str) -> str:
    """Return ``function (file)`` of a py-spy frame, shortening the file to its last parts."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    parts = Path(match["file"]).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else match["file"]
    return f"{match['function']} ({short})"


def summarise(lines: Iterable[str]) -> ProfileSummary:
    """Summarise py-spy raw output lines."""
    self_samples: Counter[str] = Counter()
    total_samples: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # With --subprocesses, py-spy puts a "process PID:command" frame at the root.
        frames = [
            frame_name(frame)
            for frame in stack.split(";")
            if frame and not _PROCESS_FRAME.match(frame)
        ]
        if not frames:
            continue
        samples += count
        self_samples[frames[-1]] += count
        for name in set(frames):
            total_samples[name] += count
    return ProfileSummary(samples, self_samples, total_samples)


def where_time_goes(summary: ProfileSummary, count: int = 4) -> str:
    """Return one sentence naming the functions with the most self time."""
    if summary.samples == 0:
        return "The profile recorded no active samples."
    parts = [f"{share:.0%} {name}" for name, share in summary.top_self(count)]
    return "CPU time by function (self): " + ", ".join(parts) + "."


def py_spy() -> str | None:
    """Return the py-spy executable beside the running interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def record(
    argv: Sequence[str],
    raw_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 3600.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` under ``py-spy record``; raise FileNotFoundError without py-spy."""
    executable = py_spy()
    if executable is None:
        raise FileNotFoundError(
            "py-spy is not installed; install the bench extra: pip install -e '.[bench]'"
        )
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        executable,
        "record",
        "--format",
        "raw",
        "--rate",
        str(SAMPLE_RATE),
        "--subprocesses",
        "--output",
        str(raw_path),
        "--",
        *argv,
    ]
    return subprocess.run(
        command,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
