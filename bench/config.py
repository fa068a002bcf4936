"""Sizes and repetitions of a benchmark run, and the paths and settings it shares."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The peers' virtual environment lives under .services, which git ignores.
PEER_VENV = ROOT / ".services" / "bench-venv"
WORK_DIR = ROOT / ".services" / "bench"
DOCS_DIR = ROOT / "docs"
# Confluence Cloud caps list requests that expand bodies at 100 items.
BODY_PAGE_SIZE = 100


@dataclass(frozen=True)
class Mode:
    """Sizes and repetitions of a run: ``full`` for the report, ``quick`` as a smoke test."""

    name: str
    runs: int
    crawl_pages: int
    latency_ms: float
    rate_per_second: float
    burst: int
    scale_pages: tuple[int, ...]
    produce_records: int
    sink_documents: int
    # A stream writer run stops after this long even if the topic is not written yet.
    sink_seconds: float
    # Records per run of bench/sink_throughput.py, which has no time limit of its own.
    sink_script_records: int
    emulator_rate_seconds: float
    timeout_seconds: float


FULL = Mode(
    name="full",
    runs=3,
    crawl_pages=10_000,
    latency_ms=50.0,
    rate_per_second=20.0,
    burst=20,
    scale_pages=(1_000, 10_000, 100_000),
    produce_records=50_000,
    sink_documents=50_000,
    sink_seconds=180.0,
    sink_script_records=2_000,
    emulator_rate_seconds=20.0,
    timeout_seconds=3600.0,
)
QUICK = Mode(
    name="quick",
    runs=1,
    crawl_pages=1_000,
    latency_ms=50.0,
    rate_per_second=20.0,
    burst=20,
    scale_pages=(1_000, 5_000),
    produce_records=5_000,
    sink_documents=5_000,
    sink_seconds=60.0,
    sink_script_records=500,
    emulator_rate_seconds=5.0,
    timeout_seconds=900.0,
)


@dataclass
class Context:
    """Settings shared by every benchmark of one run: mode, folders and Kafka settings."""

    mode: Mode
    work_dir: Path
    profiles_dir: Path
    topic_prefix: str
    profile: bool = True
    python: str = sys.executable
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def env(self, **extra: str) -> dict[str, str]:
        """Return the environment of a benchmark subprocess: Kafka topic prefix included."""
        values = dict(self.base_env)
        values["KAFKA_TOPIC_PREFIX"] = self.topic_prefix
        values.update(extra)
        return values

    def console_script(self, name: str) -> str:
        """Return the path of one of the project's console scripts in the running venv."""
        return str(Path(self.python).with_name(name))
