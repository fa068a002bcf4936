"""Tests of ``confluence-producer`` through its ``main`` function, with real services."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from connections.kafka import admin_config
from connections.settings import Settings
from producer import cli
from schemas.catalogue import RecordType
from schemas.topics import Topics
from tests.producer.conftest import EmulatorSite, StartEmulator
from tests.producer.test_publisher import kafka_settings, read_topic, unique_settings

__all__ = ["kafka_settings"]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def write_sources(path: Path, source_id: str, table: dict[str, Any]) -> Path:
    """Write a sources file with one source; nested tables become [sources.ID.NAME]."""
    lines = [f"[sources.{source_id}]"]
    nested = {key: value for key, value in table.items() if isinstance(value, dict)}
    for key, value in table.items():
        if key not in nested:
            lines.append(f"{key} = {toml_value(value)}")
    for name, inner in nested.items():
        lines.append(f"[sources.{source_id}.{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in inner.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def no_logging_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep pytest's log capture: the CLI would replace the root logger's handlers."""
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)


def use_kafka(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", settings.kafka.topic_prefix)


def sources_file(site: EmulatorSite, tmp_path: Path, **overrides: Any) -> Path:
    table = site.source_table("cloud", page_size=50, **overrides)
    return write_sources(tmp_path / "sources.toml", "docs", table)


def test_cli_crawl_succeeded_then_jobs(
    start_emulator: StartEmulator,
    kafka_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = start_emulator()
    use_kafka(monkeypatch, kafka_settings)
    monkeypatch.setenv(cli.SOURCES_ENV, str(sources_file(site, tmp_path)))

    code = cli.main(["crawl", "--source", "docs", "--no-progress"])
    output = capsys.readouterr().out
    assert code == cli.EXIT_SUCCEEDED
    assert " succeeded mode=full source=docs" in output
    assert "records: " in output
    assert "items_per_second=" in output

    code = cli.main(["crawl", "--source", "docs", "--no-progress"])
    assert code == cli.EXIT_SUCCEEDED
    assert " succeeded mode=incremental" in capsys.readouterr().out

    code = cli.main(["jobs", "--source", "docs", "--limit", "5"])
    table = capsys.readouterr().out.splitlines()
    assert code == cli.EXIT_SUCCEEDED
    assert table[0].startswith("JOB ID")
    assert len(table) == 3
    assert all(" succeeded " in row for row in table[1:])


def test_cli_crawl_partial_exit_code(
    start_emulator: StartEmulator,
    kafka_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = start_emulator(faults=("*:403space:1.0:OPE",))
    use_kafka(monkeypatch, kafka_settings)
    path = sources_file(site, tmp_path)
    code = cli.main(["crawl", "--source", "docs", "--sources", str(path), "--no-progress"])
    output = capsys.readouterr().out
    assert code == cli.EXIT_PARTIAL
    assert " partial " in output
    assert "error unit=space:OPE:" in output


def test_cli_crawl_failed_exit_code(
    start_emulator: StartEmulator,
    kafka_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = start_emulator()
    use_kafka(monkeypatch, kafka_settings)
    path = sources_file(site, tmp_path, spaces={"include": ["MISSING"]})
    code = cli.main(["crawl", "--source", "docs", "--sources", str(path), "--no-progress"])
    assert code == cli.EXIT_FAILED
    assert "'MISSING'" in capsys.readouterr().out


def test_cli_dry_run_publishes_nothing(
    start_emulator: StartEmulator,
    kafka_bootstrap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = start_emulator()
    settings = unique_settings(kafka_bootstrap)
    use_kafka(monkeypatch, settings)
    path = sources_file(site, tmp_path)
    code = cli.main(
        ["crawl", "--source", "docs", "--sources", str(path), "--dry-run", "--no-progress"]
    )
    output = capsys.readouterr().out
    assert code == cli.EXIT_SUCCEEDED
    assert "(dry run, nothing published)" in output
    assert "page=" in output
    admin = AdminClient(admin_config(settings, "crawl-test-admin"))
    names = admin.list_topics(timeout=30).topics
    assert not [name for name in names if name.startswith(settings.kafka.topic_prefix)]


def test_cli_unknown_source_exit_2(
    start_emulator: StartEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = start_emulator()
    path = sources_file(site, tmp_path)
    code = cli.main(["crawl", "--source", "dcos", "--sources", str(path)])
    assert code == cli.EXIT_CONFIGURATION
    assert "'dcos'" in capsys.readouterr().err


def test_cli_invalid_since_exit_2(
    start_emulator: StartEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = start_emulator()
    path = sources_file(site, tmp_path)
    code = cli.main(["crawl", "--source", "docs", "--sources", str(path), "--since", "last week"])
    assert code == cli.EXIT_CONFIGURATION
    assert "--since" in capsys.readouterr().err


def test_cli_missing_sources_file_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(cli.SOURCES_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["crawl", "--source", "docs"])
    assert code == cli.EXIT_CONFIGURATION
    assert "sources.toml" in capsys.readouterr().err


def test_cli_without_command_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == cli.EXIT_CONFIGURATION
    assert "crawl" in capsys.readouterr().out


def test_cli_jobs_reads_published_history(
    start_emulator: StartEmulator,
    kafka_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = start_emulator()
    use_kafka(monkeypatch, kafka_settings)
    path = sources_file(site, tmp_path)
    assert cli.main(["crawl", "--source", "docs", "--sources", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    topics = Topics(prefix=kafka_settings.kafka.topic_prefix)
    jobs = read_topic(kafka_settings, topics.job_history, RecordType.JOB)
    assert [record.value["status"] for record in jobs] == ["running", "succeeded"]
    assert cli.main(["jobs"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].startswith(jobs[0].value["job_id"])


def test_cli_check_runs_checks(
    start_emulator: StartEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = start_emulator()
    path = sources_file(site, tmp_path, spaces={"include": ["ENG"]})
    code = cli.main(["check", "--source", "docs", "--sources", str(path)])
    output = capsys.readouterr().out
    assert code == cli.EXIT_SUCCEEDED, output
    assert "credentials" in output
    assert "spaces" in output
