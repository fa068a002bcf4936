"""Description of the machine and the software versions behind a benchmark run."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match[1].strip() if match else "unknown"


def _memory() -> str:
    try:
        text = Path("/proc/meminfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return f"{int(match[1]) / 1024 / 1024:.1f} GiB" if match else "unknown"


def _java_version() -> str:
    try:
        result = subprocess.run(
            ["java", "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[0] if lines else "unknown"


def _kafka_version() -> str:
    folder = ROOT / ".services" / "kafka" / "lib"
    versions = sorted(
        match[1]
        for jar in folder.glob("kafka-server-*.jar")
        if (match := re.fullmatch(r"kafka-server-(\d[\w.-]*)\.jar", jar.name))
    )
    if not versions:
        return f"unknown (no kafka-server jar in {folder})"
    return versions[-1]


def _ferretdb_version() -> str:
    try:
        text = (ROOT / "infra" / "ferretdb" / "go.mod").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    match = re.search(r"github\.com/FerretDB/FerretDB\S*\s+(v\S+)", text)
    return match[1] if match else "unknown"


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _librdkafka_version() -> str:
    try:
        import confluent_kafka
    except ImportError:
        return "not installed"
    version: str = confluent_kafka.libversion()[0]
    return version


def _load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1, 5, 15 min) when the run started"


def describe_machine() -> dict[str, str]:
    """Return the machine's cores, memory, CPU model and the versions that the run used."""
    return {
        "CPU": _cpu_model(),
        "Cores": str(os.cpu_count() or "unknown"),
        "Memory": _memory(),
        "Load average": _load_average(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Java": _java_version(),
        "Kafka broker": _kafka_version(),
        "FerretDB": _ferretdb_version(),
        "confluent-kafka / librdkafka": (
            f"{_package_version('confluent-kafka')} / {_librdkafka_version()}"
        ),
        "pymongo": _package_version("pymongo"),
        "fastavro": _package_version("fastavro"),
    }
