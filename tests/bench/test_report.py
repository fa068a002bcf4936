"""Tests of the benchmark tables: cell formatting, Markdown and the JSON round trip."""

from __future__ import annotations

import json

import pytest

from bench.report import (
    Report,
    Table,
    format_cell,
    format_number,
    format_percent,
    format_ratio,
    render_markdown,
    render_table,
    report_json,
    tables_from_json,
)
from bench.stats import Summary


def sample_table() -> Table:
    table = Table(
        name="crawl",
        title="Crawl",
        columns=["Contender", "Items/s", "Note"],
        setup=["10,000 pages"],
        measured_at="2026-01-02 03:04 UTC, full mode",
    )
    table.add_row("ours", Summary.of([1900.4, 1850.0, 1999.9]), "a | b")
    table.add_row("peer", None, "not installable: no wheel")
    table.notes.append("Where the time goes: parsing.")
    return table


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1234567.0, "1,234,567"),
        (1234.6, "1,235"),
        (42.25, "42.2"),
        (3.14159, "3.14"),
        (0.12345, "0.123"),
        (0.0, "0"),
        (15.0, "15"),
    ],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


def test_format_cell_summary_shows_range() -> None:
    assert format_cell(Summary.of([10.5, 12.5, 11.5])) == "11.5 (10.5-12.5)"


def test_format_cell_single_run_has_no_range() -> None:
    assert format_cell(Summary.of([11.5])) == "11.5"


def test_format_cell_none_and_text() -> None:
    assert format_cell(None) == "-"
    assert format_cell("failed: exit status 1") == "failed: exit status 1"


def test_format_ratio_and_percent() -> None:
    assert format_ratio(12.345) == "12.3x"
    assert format_ratio(None) == "-"
    assert format_percent(0.934) == "93%"
    assert format_percent(None) == "-"


def test_row_width_must_match_columns() -> None:
    table = Table(name="t", title="T", columns=["a", "b"])
    with pytest.raises(ValueError, match="2 columns"):
        table.add_row("only one")


def test_render_table_lines() -> None:
    lines = render_table(sample_table()).splitlines()
    assert lines[0] == "## Crawl"
    assert "- 10,000 pages" in lines
    assert "- Measured 2026-01-02 03:04 UTC, full mode." in lines
    assert "| Contender | Items/s | Note |" in lines
    assert "| ours | 1,900 (1,850-2,000) | a \\| b |" in lines
    assert "| peer | - | not installable: no wheel |" in lines
    assert "Where the time goes: parsing." in lines


def test_render_markdown_has_machine_and_tables() -> None:
    report = Report(
        title="Benchmarks",
        generated_at="2026-01-02 03:04 UTC",
        mode="quick",
        machine={"Cores": "2", "CPU": "Example CPU"},
        tables=[sample_table()],
        notes=["Numbers are noisy."],
    )
    text = render_markdown(report)
    assert text.startswith("# Benchmarks\n")
    assert "Generated 2026-01-02 03:04 UTC by a quick run." in text
    assert "| Cores | 2 |" in text
    assert "| CPU | Example CPU |" in text
    assert "Numbers are noisy." in text
    assert "## Crawl" in text


def test_json_round_trip_keeps_tables() -> None:
    report = Report(
        title="Benchmarks",
        generated_at="now",
        mode="full",
        machine={},
        tables=[sample_table()],
    )
    data = json.loads(json.dumps(report_json(report)))
    row = data["tables"][0]["rows"][0]
    assert row["Contender"] == "ours"
    assert row["Items/s"]["values"] == [1900.4, 1850.0, 1999.9]

    rebuilt = tables_from_json(data)
    assert render_table(rebuilt[0]) == render_table(sample_table())
